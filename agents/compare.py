"""Two trained policies compared by training seed: the paired difference of their scores.

A deep agent's score varies from one training seed to the next (PPO on the intent store: a
standard deviation of about 3 between ten seeds in the truth, each seed scored on 106,496
sessions), so two policies' difference is measured seed by seed: policies trained with the same
seed start from the same network and exploration stream and, in ``scripts/evaluate.py``, are
played on the same simulation seed, so whatever the pair shares drops out of the difference.
Reported: the mean of the per-seed differences, its Student-t 95 % interval (``n - 1`` degrees
of freedom; the normal's 1.96 is too narrow for ten seeds) and its two-sided p-value.

A bar of the form "a scores at least what b scores" cannot be shown by a test against no
difference: a tie never resolves. What seeds can show is non-inferiority within a stated margin
``m``, the one-sided test of ``a - b <= -m`` against ``a - b > -m``
(``PairedComparison.non_inferiority``); ``PairedComparison.lower_bound`` is the least margin
the seeds rule out at 95 %.
``scripts/compare_policies.py`` reads the seeds' scores from the ``results.json`` files that
``scripts/evaluate.py`` writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from clickstream.errors import DataError
from clickstream.runfolder import read_json

_TINY = 1e-300


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz),
    which converges quickly for ``x < (a + 1) / (a + b + 2)``."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"the incomplete beta fraction did not converge (a={a}, b={b}, x={x})")


def regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function, for ``a, b > 0``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


def student_t_quantile(level: float, df: float) -> float:
    """The ``t`` with ``P(|T| <= t) = level`` (``level=0.95``: the 97.5 % quantile)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    lo, hi = 0.0, 1.0
    while student_t_two_sided_p(hi, df) > 1.0 - level:
        hi *= 2.0
    for _ in range(200):  # bisection to machine precision
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if student_t_two_sided_p(mid, df) > 1.0 - level else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` by training seed.

    Attributes:
        seeds: The seeds both have, ascending.
        a, b: Each one's score per seed in ``seeds``.
        only_a, only_b: Seeds one has and the other lacks (left out of the comparison).
        mean_a, mean_b: Their means over ``seeds``.
        difference: The mean of ``a - b`` over ``seeds``.
        sd: The standard deviation of ``a - b`` over ``seeds``.
        ahead: Seeds on which ``a`` scores more than ``b``.

    What is inferred from them (standard error, interval, p-values, bounds) is computed from
    ``difference`` and ``sd`` when asked.
    """

    seeds: tuple[int, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    only_a: tuple[int, ...]
    only_b: tuple[int, ...]
    mean_a: float
    mean_b: float
    difference: float
    sd: float
    ahead: int

    @property
    def standard_error(self) -> float:
        """The standard error of ``difference``."""
        return self.sd / math.sqrt(len(self.seeds))

    @property
    def half_width(self) -> float:
        """The 95 % Student-t half-width of ``difference`` (``n - 1`` degrees of freedom)."""
        return student_t_quantile(0.95, len(self.seeds) - 1) * self.standard_error

    @property
    def interval(self) -> tuple[float, float]:
        """The difference's 95 % interval."""
        return self.difference - self.half_width, self.difference + self.half_width

    @property
    def p_value(self) -> float:
        """Two-sided, against no difference."""
        se = self.standard_error
        if se == 0:  # the same difference on every seed: certain unless it is none
            return float(self.difference == 0)
        return student_t_two_sided_p(self.difference / se, len(self.seeds) - 1)

    @property
    def lower_bound(self) -> float:
        """The one-sided 95 % lower confidence bound of ``a - b`` (the two-sided 90 %
        interval's lower end): ``a`` is non-inferior to ``b`` at 95 % for every margin above
        ``-lower_bound``."""
        df = len(self.seeds) - 1
        return self.difference - student_t_quantile(0.90, df) * self.standard_error

    def non_inferiority(self, margin: float) -> float:
        """The one-sided p-value of "``a`` is worse than ``b`` by ``margin`` or more"
        (``a - b <= -margin``); below 0.05, ``a`` is shown non-inferior within ``margin``,
        which is the same as ``lower_bound > -margin``.

        Raises:
            ValueError: A negative or non-finite margin.
        """
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"the margin must be a finite number >= 0, got {margin}")
        shift = self.difference + margin
        if self.standard_error == 0:  # the same difference on every seed
            return 0.0 if shift > 0 else 1.0
        t = shift / self.standard_error
        two_sided = student_t_two_sided_p(t, len(self.seeds) - 1)
        return two_sided / 2 if t > 0 else 1.0 - two_sided / 2

    def seeds_to_resolve(self, power: float = 0.8) -> int | None:
        """About how many seeds a comparison as noisy as this one needs for its 95 % interval
        to exclude zero with probability ``power`` if the true difference is the one measured:
        the least ``n`` with ``(t(n - 1) + z(power)) · sd / √n <= |difference|``. ``None``
        when the difference is zero."""
        return _seeds_needed(self.sd, abs(self.difference), level=0.95, power=power)

    def seeds_to_show_non_inferiority(self, margin: float, power: float = 0.8) -> int | None:
        """About how many seeds would show ``a`` non-inferior within ``margin`` (one-sided,
        95 %) with probability ``power`` if the true difference is the one measured. ``None``
        when the measured difference is ``-margin`` or worse: no number of seeds would."""
        return _seeds_needed(self.sd, self.difference + margin, level=0.90, power=power)


def _seeds_needed(sd: float, effect: float, *, level: float, power: float) -> int | None:
    """The least ``n >= 2`` with ``(t_level(n - 1) + z(power)) · sd / √n <= effect``, where
    ``t_level`` is the two-sided ``level`` quantile of Student's t; ``None`` when
    ``effect <= 0``."""
    if effect <= 0:
        return None
    z_power = NormalDist().inv_cdf(power)

    def enough(m: int) -> bool:
        return (student_t_quantile(level, m - 1) + z_power) * sd / math.sqrt(m) <= effect

    if enough(2):
        return 2
    lo, hi = 2, 4  # enough(lo) is false; double hi until enough(hi), then bisect
    while not enough(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def paired_by_seed(a: dict[int, float], b: dict[int, float]) -> PairedComparison:
    """Compare two policies' per-seed scores on the seeds both have.

    Raises:
        ValueError: Fewer than two seeds in common (no interval can be formed).
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        raise ValueError(
            f"a paired comparison needs at least two training seeds in common; "
            f"seeds {sorted(a)} against {sorted(b)}"
        )
    xa = tuple(float(a[s]) for s in seeds)
    xb = tuple(float(b[s]) for s in seeds)
    diffs = [x - y for x, y in zip(xa, xb, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return PairedComparison(
        seeds=seeds,
        a=xa,
        b=xb,
        only_a=tuple(sorted(set(a) - set(b))),
        only_b=tuple(sorted(set(b) - set(a))),
        mean_a=sum(xa) / n,
        mean_b=sum(xb) / n,
        difference=mean,
        sd=sd,
        ahead=sum(d > 0 for d in diffs),
    )


def find_record(results: str | Path, policy: str, world: str) -> tuple[dict[str, Any], Path]:
    """The record of ``policy`` in ``world`` in an evaluation's ``results.json`` (a file, or
    the ``eval_dir`` that holds it), and the file's path.

    Raises:
        RunFolderError: The file is missing or not JSON.
        DataError: It has no such record (naming the policies and worlds it has).
    """
    path = Path(results)
    if path.is_dir():
        path = path / "results.json"
    report = read_json(path, "evaluation results")
    records = report.get("records") if isinstance(report, dict) else None
    if not isinstance(records, list):
        raise DataError("has no 'records' list: not an evaluation's results.json", file=str(path))
    records = [r for r in records if isinstance(r, dict)]
    for record in records:
        if record.get("policy") == policy and record.get("world") == world:
            return record, path
    present = sorted({f"{r.get('policy')} in {r.get('world')}" for r in records})
    raise DataError(
        f"no record of policy {policy!r} in world {world!r}; it has: {', '.join(present) or 'none'}",
        file=str(path),
    )


def record_scores(record: dict[str, Any], path: Path) -> dict[int, float]:
    """A ``results.json`` record's mean return per training seed (``path`` names the file in
    errors).

    Raises:
        DataError: The record's seeds and scores do not pair up one to one.
    """
    seeds, means = record.get("seeds"), record.get("seed_means")
    where = f"the record of {record.get('policy')!r} in {record.get('world')!r}"
    if not isinstance(seeds, list) or not isinstance(means, list) or len(seeds) != len(means):
        raise DataError(
            f"{where} has no seeds with one score each ('seeds', 'seed_means')", file=str(path)
        )
    if not all(type(x) is int for x in seeds) or not all(type(x) in (int, float) for x in means):
        raise DataError(f"{where} has a seed or score that is not a number", file=str(path))
    scores = {s: float(m) for s, m in zip(seeds, means, strict=True)}
    if len(scores) != len(seeds):
        raise DataError(f"{where} lists a seed twice: {seeds}", file=str(path))
    return scores


def seed_scores(results: str | Path, policy: str, world: str = "ground_truth") -> dict[int, float]:
    """A policy's mean return per training seed in one world, from an evaluation's
    ``results.json`` (a file, or the ``eval_dir`` that holds it).

    Raises:
        RunFolderError: The file is missing or not JSON.
        DataError: It has no record of ``policy`` in ``world`` (naming those it has), or the
            record's seeds and scores do not pair up one to one.
    """
    return record_scores(*find_record(results, policy, world))
