"""The next-item evaluation protocol shared by every next-page model.

Each *step* of a :class:`~envs.sequences.SessionSequences` (what follows a page view: the next
page id, or ``EXIT`` = id ``P``) is scored by the model as log-probabilities over all ``P + 1``
outcomes. The protocol is the usual one of session-based recommendation, made exact:

* **Full ranking**, no sampled negatives: the target is ranked against every outcome.
* **Pessimistic ties**: ``rank = 1 + #(score > target) + #(other outcomes with score ==
  target)``. A model that gives every page the same score therefore ranks the target last,
  not first; ``-inf == -inf`` is a tie like any other.
* Metrics per step, averaged over steps: ``recall@k`` (rank ≤ k) for k in 1, 5, 10, 20,
  ``mrr@k`` (1 / rank if rank ≤ k, else 0) for k in 5, 20, ``ndcg@20`` (1 / log2(rank + 1)
  if rank ≤ 20, else 0; one relevant item, so the ideal DCG is 1), ``log_loss`` (mean
  ``-ln p(target)``; ``inf`` as soon as one target has probability 0: that is the truth about
  such a model, so it is reported, not clipped) and ``steps``.
* Two variants: ``with_exit`` (all ``P + 1`` outcomes, all steps) and ``without_exit``
  (the ``EXIT`` column removed, steps whose target is ``EXIT`` dropped, and the log-loss taken
  after renormalising over the ``P`` pages: ``log p - logsumexp(log p[:P])``).

:class:`RankingMetrics` accumulates one variant over chunks of steps (float64 sums), so test sets
of any size are scored with bounded memory; :func:`evaluate` drives a
:class:`NextPagePredictor` over a whole ``SessionSequences``; :func:`format_table` prints
results side by side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from envs.sequences import SessionSequences

RECALL_KS = (1, 5, 10, 20)
MRR_KS = (5, 20)
NDCG_K = 20
METRIC_KEYS = (
    *(f"recall@{k}" for k in RECALL_KS),
    *(f"mrr@{k}" for k in MRR_KS),
    f"ndcg@{NDCG_K}",
    "log_loss",
    "steps",
)
"""Keys of every metrics dict, in table order."""

VARIANTS = ("with_exit", "without_exit")

# Rank comparisons build an (n, P+1) boolean array: cap its size per pass (~16 M cells) so a
# big chunk from the caller does not double its memory.
_MAX_CELLS = 1 << 24


@runtime_checkable
class NextPagePredictor(Protocol):
    """What :func:`evaluate` needs from a next-page model (GRU, baselines, true model).

    Attributes:
        name: Short model name for tables (``"markov1"``, ``"gru"``...).
        n_outcomes: ``P + 1``: the pages and ``EXIT`` (last column).
    """

    @property
    def name(self) -> str: ...

    @property
    def n_outcomes(self) -> int: ...

    def iter_log_probs(
        self, seqs: SessionSequences, batch_sessions: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Log-probabilities of every step of ``seqs``, each step exactly once, any order.

        Yields:
            ``(step_index (n,) int64, log_probs (n, P + 1) float32 or float64)``: indices
            into the flat arrays of ``seqs`` and the next-outcome log-probabilities there.
        """
        ...


def as_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array or a torch tensor (any device; half floats widened)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach()
        if x.is_floating_point() and x.element_size() < 4:  # bfloat16 has no numpy dtype
            x = x.float()
        x = x.cpu().numpy()
    return np.asarray(x)


def target_ranks(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pessimistic rank of each target among all columns, shape ``(n,)`` (1 = best).

    ``rank = #(columns with score >= target score)``: the target itself counts once, so this
    is ``1 + #greater + #(other ties)``.

    Args:
        log_probs: Scores, shape ``(n, C)``; no NaN.
        targets: Target column of each row, shape ``(n,)``.
    """
    n = len(targets)
    ranks = np.empty(n, dtype=np.int64)
    step = max(1, _MAX_CELLS // max(1, log_probs.shape[1]))
    for lo in range(0, n, step):
        block = log_probs[lo : lo + step]
        t = block[np.arange(len(block)), targets[lo : lo + step]]
        ranks[lo : lo + step] = np.count_nonzero(block >= t[:, None], axis=1)
    return ranks


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp in float64, ``-inf`` for rows that are all ``-inf``, ``(n,)``."""
    m = x.max(axis=1).astype(np.float64)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - safe[:, None]).sum(axis=1, dtype=np.float64)) + safe


class RankingMetrics:
    """Streaming accumulator of one variant of the protocol.

    Feed it chunks of steps with :meth:`update`; :meth:`result` gives the means over all steps
    so far. The sums are float64, so the result does not depend on the chunking beyond
    rounding.

    Args:
        exclude_exit: The ``without_exit`` variant: drop steps whose target is ``EXIT`` (the
            last column), rank among the ``P`` pages only and renormalise over them for the
            log-loss.

    Example:
        >>> m = RankingMetrics()
        >>> for rows, logp in model.iter_log_probs(seqs, 512):  # doctest: +SKIP
        ...     m.update(logp, targets[rows])
        >>> m.result()["recall@20"]  # doctest: +SKIP
    """

    def __init__(self, exclude_exit: bool = False) -> None:
        self.exclude_exit = exclude_exit
        self.n_outcomes: int | None = None
        self._hits = {k: 0 for k in RECALL_KS}
        self._rr = dict.fromkeys(MRR_KS, 0.0)
        self._ndcg = 0.0
        self._nll = 0.0
        self._steps = 0

    def update(self, log_probs: Any, targets: Any) -> None:
        """Add a chunk of steps.

        Args:
            log_probs: Log-probabilities (any normalisation for the ranking; normalised over
                all ``P + 1`` outcomes for the log-loss), shape ``(n, P + 1)``, ``EXIT`` last;
                numpy or torch.
            targets: Target outcome of each step in ``[0, P]``, shape ``(n,)``.

        Raises:
            ValueError: Shapes disagree, a target is out of range, or a score is NaN.
        """
        lp = as_numpy(log_probs)
        t = as_numpy(targets).astype(np.int64, copy=False)
        if lp.ndim != 2 or t.shape != (lp.shape[0],):
            raise ValueError(
                f"log_probs must be (n, P+1) and targets (n,); got {lp.shape} and {t.shape}"
            )
        c = lp.shape[1]
        if self.n_outcomes is not None and c != self.n_outcomes:
            raise ValueError(f"expected {self.n_outcomes} outcomes per row, got {c}")
        if len(t) and (t.min() < 0 or t.max() >= c):
            raise ValueError(f"targets must lie in [0, {c}), got [{t.min()}, {t.max()}]")
        if np.isnan(lp).any():
            raise ValueError("log_probs hold NaN: ranks and log-loss are undefined")
        self.n_outcomes = c  # only once the chunk is known good: bad input changes nothing
        if self.exclude_exit:
            keep = t != c - 1
            lp, t = lp[keep, : c - 1], t[keep]
        n = len(t)
        if n == 0:
            return
        ranks = target_ranks(lp, t)
        target_lp = lp[np.arange(n), t].astype(np.float64)
        if self.exclude_exit:
            norm = _logsumexp_rows(lp)
            # all pages impossible: the target page is too (-inf - -inf would be NaN)
            with np.errstate(invalid="ignore"):
                nll = np.where(np.isneginf(norm), np.inf, norm - target_lp)
        else:
            nll = -target_lp
        for k in RECALL_KS:
            self._hits[k] += int(np.count_nonzero(ranks <= k))
        rr = 1.0 / ranks
        for k in MRR_KS:
            self._rr[k] += float(rr[ranks <= k].sum())
        in_k = ranks <= NDCG_K
        self._ndcg += float((1.0 / np.log2(ranks[in_k] + 1.0)).sum())
        self._nll += float(nll.sum())
        self._steps += n

    def merge(self, other: RankingMetrics) -> RankingMetrics:
        """Add another accumulator's steps (e.g. from a parallel worker) into this one."""
        if other.exclude_exit != self.exclude_exit:
            raise ValueError("cannot merge the with_exit and without_exit variants")
        if None not in (self.n_outcomes, other.n_outcomes) and self.n_outcomes != other.n_outcomes:
            raise ValueError("cannot merge metrics over different numbers of outcomes")
        self.n_outcomes = self.n_outcomes or other.n_outcomes
        for k in RECALL_KS:
            self._hits[k] += other._hits[k]
        for k in MRR_KS:
            self._rr[k] += other._rr[k]
        self._ndcg += other._ndcg
        self._nll += other._nll
        self._steps += other._steps
        return self

    def result(self) -> dict[str, float]:
        """Means over all steps so far, keys :data:`METRIC_KEYS` (NaN metrics if no steps)."""
        n = self._steps
        if n == 0:
            out = dict.fromkeys(METRIC_KEYS, float("nan"))
            out["steps"] = 0
            return out
        out: dict[str, float] = {}
        for k in RECALL_KS:
            out[f"recall@{k}"] = self._hits[k] / n
        for k in MRR_KS:
            out[f"mrr@{k}"] = self._rr[k] / n
        out[f"ndcg@{NDCG_K}"] = self._ndcg / n
        out["log_loss"] = self._nll / n
        out["steps"] = n
        return out


def evaluate(
    predictor: NextPagePredictor,
    seqs: SessionSequences,
    *,
    batch_sessions: int = 512,
    exclude_exit: bool | None = None,
) -> dict[str, dict[str, float]]:
    """Score a predictor on every step of ``seqs`` with the full protocol.

    Args:
        predictor: Any :class:`NextPagePredictor`.
        seqs: The sessions to score (its ``exit_id`` must be the predictor's ``P``).
        batch_sessions: Passed to ``predictor.iter_log_probs``.
        exclude_exit: ``None`` computes both variants; ``True`` only ``without_exit``;
            ``False`` only ``with_exit``.

    Returns:
        ``{"with_exit": {...}, "without_exit": {...}}`` (the variants asked for), each with
        keys :data:`METRIC_KEYS`.

    Raises:
        ValueError: The predictor's outcomes do not match ``seqs``, or it skipped or repeated
            a step.
    """
    n_out = int(predictor.n_outcomes)
    if n_out != seqs.exit_id + 1:
        raise ValueError(
            f"predictor has {n_out} outcomes but the sequences have P + 1 = {seqs.exit_id + 1}"
        )
    variants = {
        None: VARIANTS,
        True: ("without_exit",),
        False: ("with_exit",),
    }[exclude_exit]
    acc = {v: RankingMetrics(exclude_exit=v == "without_exit") for v in variants}
    targets = seqs.targets()
    seen = np.zeros(seqs.n_steps, dtype=bool)
    for rows, log_probs in predictor.iter_log_probs(seqs, batch_sessions):
        rows = as_numpy(rows).astype(np.int64, copy=False)
        if seen[rows].any() or len(np.unique(rows)) != len(rows):
            raise ValueError(f"{getattr(predictor, 'name', predictor)} yielded a step twice")
        seen[rows] = True
        lp = as_numpy(log_probs)
        for m in acc.values():
            m.update(lp, targets[rows])
    if not seen.all():
        missing = int(np.count_nonzero(~seen))
        raise ValueError(
            f"{getattr(predictor, 'name', predictor)} skipped {missing} of {seqs.n_steps} steps"
        )
    return {v: acc[v].result() for v in variants}


def format_table(
    results: Mapping[str, Mapping[str, Any]],
    variant: str = "with_exit",
    metrics: Sequence[str] = METRIC_KEYS,
) -> str:
    """Fixed-width comparison table: one row per model, one column per metric.

    Args:
        results: Model name → :func:`evaluate` output (the ``variant`` is picked from it), or
            model name → one variant's metrics dict.
        variant: ``with_exit`` or ``without_exit``.
        metrics: Columns, in order.

    Returns:
        The table as text (a title line naming the variant, a header, a rule, the rows).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    name_w = max([5, *(len(str(n)) for n in results)])
    col_w = max(10, *(len(m) for m in metrics))
    header = f"{'model':<{name_w}}" + "".join(f" {m:>{col_w}}" for m in metrics)
    lines = [f"next-page metrics ({variant})", header, "-" * len(header)]
    for name, res in results.items():
        row = res.get(variant, res)
        cells = []
        for m in metrics:
            v = row.get(m, float("nan"))
            cells.append(f"{int(v):,d}" if m == "steps" else f"{float(v):.4f}")
        lines.append(f"{name!s:<{name_w}}" + "".join(f" {c:>{col_w}}" for c in cells))
    return "\n".join(lines)
