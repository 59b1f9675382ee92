"""Simulator fidelity: do simulated visitors, left alone, look like the real ones?

Before an agent learns anything in the simulator, its *organic* sessions (no recommendation
shown) should reproduce the held-out data. :func:`simulate_organic_sessions` runs a
:class:`~envs.core.SiteCore` with the "show nothing" action until a given number of whole
sessions exist; :func:`fidelity_report` compares them with real sessions (the test split).

**Figures** (computed identically on both sides, from page ids only):

* ``pages_per_session`` (mean) and ``median_pages_per_session``.
* ``bounce_rate``: share of sessions with one page view.
* ``conversion_rate``: share of sessions that view at least one *converting page*, a page with
  positive ``revenue`` in the page catalog (``pages.parquet``: transaction revenue recorded on
  the page's hits, e.g. ``/ordercompleted.html``). The simulator has no transactions, only
  pages, so the test split is scored by the same page rule, not by its transaction hits.
* Exit rate by page group: exits from the group's pages / page views of them; the last page
  view of every session is its exit (a simulated session cut at ``max_steps`` counts too, as
  real exports cut long sessions the same way; the report gives how many were cut).
* Total variation distance ``½ Σ |p - q|`` between the page-view frequencies (``tv_pages``), the
  page-group frequencies (``tv_groups``) and the session-length distributions
  (``tv_session_length``).

**Per page and per group** (JSON, every page and group either side viewed): the share of page
views on each side, the difference and its interval, and the contribution ``½ |p - q|`` to the
TV distance; per group also the exit rates above. A site of thousands of pages therefore gets
a report that *summarises* on screen (:func:`format_fidelity_table`, at most about 35 lines
whatever the site's size): the figures, the distances, the exit rates of every group when there
are few (at most ``2 · top + 2``), else of the ``top`` groups with the most test views and the
``top`` worst (``|exit-rate difference| × share of test views``: the exits misplaced per test
page view), and the ``top`` pages with the most test views and the ``top`` largest contributions
to ``tv_pages`` (the worst offenders). The full detail stays in the JSON.

**Uncertainty.** Both samples are finite. Sessions of each side are resampled with replacement
(``n_boot`` times, seeded) to give a 95 % percentile interval of every difference, and a TV
*noise floor*: the mean TV between a resample of the test split and the test split itself,
i.e. what sampling noise alone makes a perfect simulator score against a test split that small.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clickstream import checks
from clickstream.errors import ConfigError, DataError
from envs.click_model import NO_RECOMMENDATION, MultinomialBoost
from envs.core import SiteCore
from envs.dynamics import Dynamics
from envs.sequences import SessionSequences, Vocabulary

SCALAR_FIGURES = (
    "pages_per_session",
    "median_pages_per_session",
    "bounce_rate",
    "conversion_rate",
)
DISTANCES = ("tv_pages", "tv_groups", "tv_session_length")

DEFINITIONS = {
    "pages_per_session": "mean page views per session",
    "median_pages_per_session": "median page views per session",
    "bounce_rate": "share of sessions with one page view",
    "conversion_rate": (
        "share of sessions viewing a converting page (catalog revenue > 0), both sides"
    ),
    "exit_rate_by_group": (
        "exits from the group's pages / page views of them; a session's last page view is "
        "its exit (simulated sessions cut at max_steps included)"
    ),
    "tv_pages": "total variation distance 0.5·Σ|p - q| of page-view frequencies",
    "tv_groups": "total variation distance of page-group view frequencies",
    "tv_session_length": "total variation distance of the session-length distributions",
    "difference": "simulator - test split",
    "difference_ci95": "2.5 and 97.5 percentiles of the difference over session bootstraps",
    "noise_floor": "mean TV between a session bootstrap of the test split and the test split",
    "view_share": "share of all page views (the page's or the group's)",
    "tv_contribution": "0.5·|simulator share - test share|: the page's (group's) part of the TV",
    "worst_groups": "|exit-rate difference| × the group's share of test page views",
}

DEFAULT_TOP = 5
"""Pages and groups :func:`format_fidelity_table` lists per kind (most viewed, worst)."""


@dataclass
class SimulatedSessions(SessionSequences):
    """Simulated sessions: :class:`SessionSequences` plus which were cut at ``max_steps``.

    Attributes:
        truncated: The session reached the core's ``max_steps`` without leaving, ``(S,)``.
    """

    truncated: np.ndarray


def simulate_organic_sessions(
    core: SiteCore, n_sessions: int, *, seed: int | None = 0, progress: bool = False
) -> SimulatedSessions:
    """Run ``core`` with no recommendation until ``n_sessions`` whole sessions exist.

    The core is reset with ``seed`` and every visitor is shown nothing at every step. Sessions
    are numbered in order of arrival (visitors ``0..B-1`` first, then replacements in visitor
    order step by step) and the first ``n_sessions`` *started* are kept, stepping until the last
    of them ends. Keeping the first ones to *finish* instead would favour short sessions: the
    long ones are still running when the count is reached.

    Args:
        core: A simulator core built with ``allow_no_recommendation`` (its last action).
        n_sessions: Sessions to collect (any number; it need not be a multiple of B).
        seed: Seed of the core's generator (``None``: continue from its current state).
        progress: Show a progress bar of finished sessions.

    Returns:
        The sessions in arrival order, page ids in the core's vocabulary; ``session_ids`` are
        ``sim0``, ``sim1``, ...

    Raises:
        ClickstreamError: ``n_sessions < 1`` or the core has no "show nothing" action.
    """
    n = int(n_sessions)
    if n < 1:
        raise ConfigError(f"n_sessions must be >= 1, got {n_sessions}")
    if int(core.action_pages[-1]) != NO_RECOMMENDATION:
        raise ConfigError(
            "simulating organic sessions needs a core with the 'show nothing' action "
            "(allow_no_recommendation=True)"
        )
    b, dev = core.n_visitors, core.device
    nothing = torch.full((b,), core.n_actions - 1, dtype=torch.long, device=dev)
    core.reset(seed)
    sid = torch.arange(b, dtype=torch.long, device=dev)  # session number of each visitor
    next_id = b
    first = sid < n
    view_sid, view_page = [sid[first]], [core.history[first, -1]]  # entry pages
    truncated = np.zeros(n, dtype=bool)
    remaining = n
    with tqdm(total=n, desc="organic sessions", unit="session", disable=not progress) as bar:
        while remaining > 0:
            r = core.step(nothing)
            viewed = ~r.terminated & (sid < n)  # landed on a page (a cut session's last one too)
            view_sid.append(sid[viewed])
            view_page.append(r.landed[viewed])
            ended = r.terminated | r.truncated
            done = sid[ended]
            done = done[done < n]
            cut = sid[r.truncated]
            truncated[cut[cut < n].cpu().numpy()] = True
            remaining -= len(done)
            bar.update(len(done))
            k = int(ended.sum())
            if k:
                idx = ended.nonzero()[:, 0]
                sid[idx] = torch.arange(next_id, next_id + k, dtype=torch.long, device=dev)
                next_id += k
                new = sid[idx] < n
                view_sid.append(sid[idx][new])
                view_page.append(r.obs[idx, -1][new])
    sids = torch.cat(view_sid).cpu().numpy()
    pages = torch.cat(view_page).cpu().numpy()
    order = np.argsort(sids, kind="stable")  # views were recorded in time order
    lengths = np.bincount(sids, minlength=n)
    return SimulatedSessions(
        pages=pages[order].astype(np.int64),
        offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        time_bucket=np.zeros(len(pages), dtype=np.int64),
        session_ids=np.array([f"sim{i}" for i in range(n)], dtype=object),
        exit_id=core.n_pages,
        truncated=truncated,
    )


def simulate_organic(
    dynamics: Dynamics,
    n_sessions: int,
    *,
    max_steps: int,
    visitors: int = 4096,
    seed: int | None = 0,
    device: str | torch.device = "cpu",
) -> SimulatedSessions:
    """:func:`simulate_organic_sessions` of visitor ``dynamics`` alone: a core with no
    rewards whose click model is never used (nothing is recommended), ``min(n_sessions,
    visitors)`` visitors at a time, sessions cut at ``max_steps``."""
    core = SiteCore(
        dynamics,
        MultinomialBoost(),  # never used: nothing is recommended
        torch.zeros(dynamics.n_pages + 1),
        min(int(n_sessions), int(visitors)),
        max_steps=max_steps,
        device=device,
    )
    return simulate_organic_sessions(core, n_sessions, seed=seed)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """TV distance ``½ Σ |p̂ - q̂|`` of two count (or weight) vectors, normalised first.

    Vectors of different length are padded with zeros. Empty vectors give ``nan``.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    size = max(len(p), len(q))
    p, q = np.pad(p, (0, size - len(p))), np.pad(q, (0, size - len(q)))
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


def converting_pages(catalog: pd.DataFrame, vocab: Vocabulary) -> np.ndarray:
    """Which vocabulary pages convert (catalog ``revenue > 0``), boolean ``(P,)``.

    Raises:
        ClickstreamError: The catalog has no ``page`` or ``revenue`` column.
    """
    missing = {"page", "revenue"} - set(catalog.columns)
    if missing:
        raise DataError(f"page catalog lacks column(s) {sorted(missing)}")
    revenue = pd.Series(catalog["revenue"].to_numpy(np.float64), index=catalog["page"].astype(str))
    revenue = revenue[~revenue.index.duplicated()]
    return (revenue.reindex(list(vocab.pages)).fillna(0.0).to_numpy() > 0).astype(bool)


def sessions_viewing(seqs: SessionSequences, pages: np.ndarray) -> np.ndarray:
    """Which sessions view at least one of ``pages`` (a boolean per page), ``(S,)``."""
    return np.add.reduceat(pages[seqs.pages].astype(np.int64), seqs.offsets[:-1]) > 0


class _Side:
    """Per-session aggregates of one sample, so a bootstrap only reweights sessions."""

    def __init__(
        self, seqs: SessionSequences, group: np.ndarray, converting: np.ndarray, n_groups: int
    ):
        if len(seqs) == 0:
            raise DataError("fidelity report: a sample holds no sessions")
        self.n = len(seqs)
        self.lengths = seqs.lengths
        self.pages = seqs.pages
        self.view_group = group[seqs.pages]
        self.exit_group = group[seqs.pages[seqs.offsets[1:] - 1]]
        self.converted = sessions_viewing(seqs, converting)
        self.n_pages, self.n_groups = len(group), n_groups

    def summary(self, w: np.ndarray | None = None) -> dict[str, Any]:
        """Figures with session weights ``w`` ``(S,)`` (counts of a bootstrap; ``None``: 1)."""
        w = np.ones(self.n) if w is None else w.astype(np.float64)
        total = w.sum()
        wv = np.repeat(w, self.lengths)
        length_hist = np.bincount(self.lengths, weights=w)
        group_views = np.bincount(self.view_group, weights=wv, minlength=self.n_groups)
        group_exits = np.bincount(self.exit_group, weights=w, minlength=self.n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            exit_rate = group_exits / group_views
        return {
            "pages_per_session": float((w * self.lengths).sum() / total),
            "median_pages_per_session": _median_from_hist(length_hist),
            "bounce_rate": float(w[self.lengths == 1].sum() / total),
            "conversion_rate": float(w[self.converted].sum() / total),
            "page_counts": np.bincount(self.pages, weights=wv, minlength=self.n_pages),
            "group_views": group_views,
            "exit_rate": exit_rate,
            "length_hist": length_hist,
        }


def _median_from_hist(hist: np.ndarray) -> float:
    """``np.median`` of the integers ``v`` repeated ``hist[v]`` times (integer counts)."""
    cum = np.cumsum(hist)
    n = round(float(cum[-1]))
    lo = int(np.searchsorted(cum, (n - 1) // 2, side="right"))
    hi = int(np.searchsorted(cum, n // 2, side="right"))
    return 0.5 * (lo + hi)


def _distances(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    return {
        "tv_pages": total_variation(a["page_counts"], b["page_counts"]),
        "tv_groups": total_variation(a["group_views"], b["group_views"]),
        "tv_session_length": total_variation(a["length_hist"], b["length_hist"]),
    }


def _ci(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def _cis(values: np.ndarray) -> list[list[float] | None]:
    """:func:`_ci` of every column of ``values`` ``(n_boot, K)``, vectorised."""
    if values.shape[0] == 0:
        return [None] * values.shape[1]
    lo, hi = np.percentile(values, [2.5, 97.5], axis=0)
    return [[float(a), float(b)] for a, b in zip(lo, hi, strict=True)]


def _page_table(
    point: Mapping[str, Mapping[str, Any]], diffs: np.ndarray, vocab: Vocabulary
) -> list[dict[str, Any]]:
    """Per-page view shares of both sides, pages either side viewed, worst offenders first."""
    test_share = _shares(point["test"]["page_counts"])
    sim_share = _shares(point["simulator"]["page_counts"])
    contribution = 0.5 * np.abs(sim_share - test_share)
    seen = np.flatnonzero((test_share > 0) | (sim_share > 0))
    # largest contribution first; ties by test share, then by page id (deterministic)
    seen = seen[np.lexsort((seen, -test_share[seen], -contribution[seen]))]
    cis = _cis(diffs[:, seen])
    return [
        {
            "page": vocab.pages[i],
            "group": vocab.groups[int(vocab.page_group[i])],
            "test_share": float(test_share[i]),
            "simulator_share": float(sim_share[i]),
            "difference": float(sim_share[i] - test_share[i]),
            "difference_ci95": ci,
            "tv_contribution": float(contribution[i]),
        }
        for i, ci in zip(seen.tolist(), cis, strict=True)
    ]


def _summary(
    by_group: Mapping[str, Mapping[str, Any]], pages: list[dict[str, Any]], top: int
) -> dict[str, Any]:
    """Which groups and pages a screen-sized table shows (names; the JSON has them all)."""
    names = list(by_group)
    out: dict[str, Any] = {"top": int(top), "n_groups": len(names), "n_pages": len(pages)}
    if len(names) <= 2 * top + 2:
        out["groups_all"] = names
    else:
        by_views = sorted(names, key=lambda g: (-by_group[g]["test_views"], g))[:top]

        def misplaced(g: str) -> float:
            r = by_group[g]
            return -1.0 if r["difference"] is None else abs(r["difference"]) * r["test_share"]

        rest = [g for g in names if g not in by_views and misplaced(g) > 0]
        out["top_groups"] = by_views
        out["worst_groups"] = sorted(rest, key=lambda g: (-misplaced(g), g))[:top]
    by_views = sorted(pages, key=lambda r: (-r["test_share"], r["page"]))[:top]
    shown = {r["page"] for r in by_views}
    out["top_pages"] = [r["page"] for r in by_views]
    # `pages` is sorted worst first already
    out["worst_pages"] = [
        r["page"] for r in pages if r["page"] not in shown and r["tv_contribution"] > 0
    ][:top]
    return out


def check_report_options(n_boot: object, top: object) -> tuple[int, int]:
    """``n_boot`` (0: no intervals) and ``top`` as ints, or a ``ConfigError`` naming the key:
    a negative ``n_boot`` would fail deep in numpy, a ``top`` of 0 print an empty summary."""
    return (
        checks.whole("n_boot", n_boot, 0, floats=False),
        checks.whole("top", top, 1, floats=False),
    )


def fidelity_report(
    sim: SessionSequences,
    test: SessionSequences,
    vocab: Vocabulary,
    catalog: pd.DataFrame,
    *,
    n_boot: int = 200,
    seed: int = 0,
    top: int = DEFAULT_TOP,
) -> dict[str, Any]:
    """Compare simulated sessions with real ones (see the module docstring for definitions).

    Args:
        sim: Simulated sessions (:func:`simulate_organic_sessions`), page ids of ``vocab``.
        test: Real sessions, the test split, same vocabulary.
        vocab: The page vocabulary (page groups come from ``vocab.page_group``).
        catalog: The page catalog (``pages.parquet``) with ``page`` and ``revenue``.
        n_boot: Session bootstraps for the intervals and noise floors (0: none).
        seed: Seed of the bootstraps; the same inputs and seed give the same report.
        top: How many pages and groups the summary names per kind (most viewed, worst).

    Returns:
        A JSON-ready dict: ``figures`` (per scalar figure: ``test``, ``simulator``,
        ``difference``, ``difference_ci95``), ``exit_rate_by_group`` (the same per group plus
        ``test_views``, ``simulator_views``, ``test_share``, ``simulator_share``,
        ``share_difference_ci95`` and ``tv_contribution``; ``None`` where a side never viewed
        the group), ``distances`` (``value`` and ``noise_floor`` of each TV distance),
        ``pages`` (one record per page either side viewed, largest ``tv_contribution``
        first: ``page``, ``group``, the shares, ``difference``, ``difference_ci95``,
        ``tv_contribution``), ``summary`` (the names of the groups and pages the table
        shows: ``groups_all`` or ``top_groups`` and ``worst_groups``, ``top_pages``,
        ``worst_pages``), ``sizes``, ``converting_pages`` and ``definitions``.

    Raises:
        ClickstreamError: Empty samples, or samples of another vocabulary; ``n_boot`` below 0
            or ``top`` below 1.
    """
    n_boot, top = check_report_options(n_boot, top)
    for name, seqs in (("simulated", sim), ("test", test)):
        if seqs.exit_id != vocab.exit_id:
            raise DataError(
                f"{name} sessions use {seqs.exit_id} pages, the vocabulary {vocab.exit_id}"
            )
    converting = converting_pages(catalog, vocab)
    group = np.asarray(vocab.page_group, dtype=np.int64)
    n_groups = len(vocab.groups)
    sides = {
        k: _Side(v, group, converting, n_groups) for k, v in (("test", test), ("simulator", sim))
    }
    point = {k: s.summary() for k, s in sides.items()}
    t, s = point["test"], point["simulator"]

    rng = np.random.default_rng(seed)
    diffs = {k: np.full(n_boot, np.nan) for k in SCALAR_FIGURES}
    exit_diffs = np.full((n_boot, n_groups), np.nan)
    share_diffs = {
        "page_counts": np.full((n_boot, len(group)), np.nan, dtype=np.float32),
        "group_views": np.full((n_boot, n_groups), np.nan),
    }
    floors = {k: np.full(n_boot, np.nan) for k in DISTANCES}
    for i in range(n_boot):
        boot = {
            k: side.summary(np.bincount(rng.integers(0, side.n, side.n), minlength=side.n))
            for k, side in sides.items()
        }
        for k in SCALAR_FIGURES:
            diffs[k][i] = boot["simulator"][k] - boot["test"][k]
        exit_diffs[i] = boot["simulator"]["exit_rate"] - boot["test"]["exit_rate"]
        for k, out in share_diffs.items():
            out[i] = _shares(boot["simulator"][k]) - _shares(boot["test"][k])
        for k, v in _distances(boot["test"], t).items():
            floors[k][i] = v

    figures = {
        k: {
            "test": t[k],
            "simulator": s[k],
            "difference": s[k] - t[k],
            "difference_ci95": _ci(diffs[k]),
        }
        for k in SCALAR_FIGURES
    }
    group_share = {k: _shares(v["group_views"]) for k, v in point.items()}
    group_share_ci = _cis(share_diffs["group_views"])
    by_group = {}
    for g, name in enumerate(vocab.groups):
        te, se = _num(t["exit_rate"][g]), _num(s["exit_rate"][g])
        ts, ss = float(group_share["test"][g]), float(group_share["simulator"][g])
        by_group[name] = {
            "test": te,
            "simulator": se,
            "difference": None if te is None or se is None else se - te,
            "difference_ci95": _ci(exit_diffs[:, g]),
            "test_views": int(t["group_views"][g]),
            "simulator_views": int(s["group_views"][g]),
            "test_share": ts,
            "simulator_share": ss,
            "share_difference_ci95": group_share_ci[g],
            "tv_contribution": 0.5 * abs(ss - ts),
        }
    pages = _page_table(point, share_diffs["page_counts"], vocab)
    distances = {
        k: {"value": v, "noise_floor": _num(floors[k].mean()) if n_boot else None}
        for k, v in _distances(s, t).items()
    }
    truncated = getattr(sim, "truncated", None)
    return {
        "figures": figures,
        "exit_rate_by_group": by_group,
        "distances": distances,
        "pages": pages,
        "summary": _summary(by_group, pages, top),
        "sizes": {
            "test_sessions": len(test),
            "test_page_views": test.n_steps,
            "simulator_sessions": len(sim),
            "simulator_page_views": sim.n_steps,
            "simulator_truncated": None if truncated is None else int(np.sum(truncated)),
        },
        "converting_pages": [p for p, c in zip(vocab.pages, converting, strict=True) if c],
        "n_boot": int(n_boot),
        "bootstrap_seed": int(seed),
        "definitions": dict(DEFINITIONS),
    }


# ---- presentation ----------------------------------------------------------------------------

Row = tuple[str, str, str, str, str]
LABEL_WIDTH = 48  # page names are cut to this in tables (the JSON has them whole)


def _f(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _ci_text(v: list[float] | None) -> str:
    return "—" if v is None else f"[{v[0]:+.4f}, {v[1]:+.4f}]"


def _label(text: str) -> str:
    return text if len(text) <= LABEL_WIDTH else text[: LABEL_WIDTH - 1] + "…"


def _sections(report: Mapping[str, Any]) -> list[tuple[str, list[Row]]]:
    """The summary's rows in titled sections: figures, group exit rates, page view shares."""

    def row(label: str, r: Mapping[str, Any]) -> Row:
        return (
            _label(label),
            _f(r["test"]),
            _f(r["simulator"]),
            _f(r["difference"], True),
            _ci_text(r["difference_ci95"]),
        )

    figures = [row(name, r) for name, r in report["figures"].items()]
    for name, r in report["distances"].items():
        figures.append((name, "—", "—", _f(r["value"]), "noise floor " + _f(r["noise_floor"])))
    sections = [("", figures)]

    groups = report["exit_rate_by_group"]
    summary = report.get("summary") or {"groups_all": list(groups)}
    if "groups_all" in summary:
        names = summary["groups_all"]
        title = f"exit rate by page group ({len(names)})"
    else:
        names = [*summary["top_groups"], *summary["worst_groups"]]
        title = (
            f"exit rate by page group: the {len(summary['top_groups'])} most viewed of "
            f"{summary['n_groups']:,}"
        )
        if summary["worst_groups"]:
            title += f", then the {len(summary['worst_groups'])} worst (|difference| × view share)"
    sections.append((title, [row(f"exit rate: {g}", groups[g]) for g in names]))

    pages = {r["page"]: r for r in report.get("pages", [])}
    top, worst = summary.get("top_pages", []), summary.get("worst_pages", [])
    if top or worst:
        title = f"page view share: the {len(top)} most viewed of {len(pages):,} pages"
        if worst:
            title += f", then the {len(worst)} largest other contributions to tv_pages"
        rows = []
        for name in [*top, *worst]:
            r = pages[name]
            rows.append(
                (
                    _label(f"{name} ({r['group']})" if r["group"] != name else name),
                    _f(r["test_share"]),
                    _f(r["simulator_share"]),
                    _f(r["difference"], True),
                    _ci_text(r["difference_ci95"]),
                )
            )
        sections.append((title, rows))
    return sections


HEADER = ("figure", "test split", "simulator", "difference", "95% CI of difference")


def format_fidelity_table(report: Mapping[str, Any]) -> str:
    """The report's summary as a fixed-width text table that fits on a screen.

    The scalar figures and distances, the exit rates of the groups the summary picked (all of
    them on sites of few groups) and the view shares of the most viewed pages and of the worst
    offenders; at most ``4·top + 14`` lines whatever the number of pages. The JSON holds the
    rest.
    """
    sections = _sections(report)
    rows = [HEADER, *(r for _, rs in sections for r in rs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]

    def line(row: Row | tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells)

    lines = [line(HEADER)]
    lines.append("-" * len(lines[0]))
    for title, rs in sections:
        if title:
            lines.append(f"-- {title}")
        lines += [line(r) for r in rs]
    summary = report.get("summary")
    if summary is not None:
        lines.append(
            f"({summary['n_groups']:,} groups and {summary['n_pages']:,} pages in the JSON "
            "report, each with its shares and interval)"
        )
    return "\n".join(lines)


def format_fidelity_markdown(report: Mapping[str, Any], title: str = "Simulator fidelity") -> str:
    """The report as Markdown: sizes, the summary tables, and the definitions used."""
    sizes = report["sizes"]
    lines = [
        f"# {title}",
        "",
        f"Test split: {sizes['test_sessions']:,} sessions, {sizes['test_page_views']:,} page "
        f"views. Simulator: {sizes['simulator_sessions']:,} sessions, "
        f"{sizes['simulator_page_views']:,} page views"
        + (
            f", {sizes['simulator_truncated']:,} cut at max_steps."
            if sizes.get("simulator_truncated") is not None
            else "."
        ),
        "",
        "Converting pages: " + _converting_text(report["converting_pages"]),
    ]
    for section, rows in _sections(report):
        lines += [""]
        if section:
            lines += [f"**{section[0].upper()}{section[1:]}**", ""]
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    summary = report.get("summary")
    if summary is not None:
        lines += [
            "",
            f"Every one of the {summary['n_groups']:,} groups and {summary['n_pages']:,} pages "
            "is in the JSON report (`exit_rate_by_group`, `pages`).",
        ]
    lines += ["", "Definitions:", ""]
    lines += [f"- `{k}`: {v}" for k, v in report["definitions"].items()]
    return "\n".join(lines) + "\n"


def _converting_text(pages: list[str], limit: int = 10) -> str:
    """The converting pages, at most ``limit`` named (an item shop can have thousands)."""
    if not pages:
        return "none"
    named = ", ".join(f"`{p}`" for p in pages[:limit])
    return named if len(pages) <= limit else f"{named} and {len(pages) - limit:,} more"
