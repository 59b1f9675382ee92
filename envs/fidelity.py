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

from clickstream.errors import ClickstreamError
from envs.click_model import NO_RECOMMENDATION
from envs.core import SiteCore
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
}


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
        raise ClickstreamError(f"n_sessions must be >= 1, got {n_sessions}")
    if int(core.action_pages[-1]) != NO_RECOMMENDATION:
        raise ClickstreamError(
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
        raise ClickstreamError(f"page catalog lacks column(s) {sorted(missing)}")
    revenue = pd.Series(catalog["revenue"].to_numpy(np.float64), index=catalog["page"].astype(str))
    revenue = revenue[~revenue.index.duplicated()]
    return (revenue.reindex(list(vocab.pages)).fillna(0.0).to_numpy() > 0).astype(bool)


class _Side:
    """Per-session aggregates of one sample, so a bootstrap only reweights sessions."""

    def __init__(
        self, seqs: SessionSequences, group: np.ndarray, converting: np.ndarray, n_groups: int
    ):
        if len(seqs) == 0:
            raise ClickstreamError("fidelity report: a sample holds no sessions")
        self.n = len(seqs)
        self.lengths = seqs.lengths
        self.pages = seqs.pages
        self.view_group = group[seqs.pages]
        self.exit_group = group[seqs.pages[seqs.offsets[1:] - 1]]
        conv_view = converting[seqs.pages].astype(np.int64)
        self.converted = np.add.reduceat(conv_view, seqs.offsets[:-1]) > 0
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


def fidelity_report(
    sim: SessionSequences,
    test: SessionSequences,
    vocab: Vocabulary,
    catalog: pd.DataFrame,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare simulated sessions with real ones (see the module docstring for definitions).

    Args:
        sim: Simulated sessions (:func:`simulate_organic_sessions`), page ids of ``vocab``.
        test: Real sessions, the test split, same vocabulary.
        vocab: The page vocabulary (page groups come from ``vocab.page_group``).
        catalog: The page catalog (``pages.parquet``) with ``page`` and ``revenue``.
        n_boot: Session bootstraps for the intervals and noise floors (0: none).
        seed: Seed of the bootstraps; the same inputs and seed give the same report.

    Returns:
        A JSON-ready dict: ``figures`` (per scalar figure: ``test``, ``simulator``,
        ``difference``, ``difference_ci95``), ``exit_rate_by_group`` (the same per group plus
        ``test_views`` and ``simulator_views``; ``None`` where a side never viewed the group),
        ``distances`` (``value`` and ``noise_floor`` of each TV distance), ``sizes``,
        ``converting_pages`` and ``definitions``.

    Raises:
        ClickstreamError: Empty samples, or samples of another vocabulary.
    """
    for name, seqs in (("simulated", sim), ("test", test)):
        if seqs.exit_id != vocab.exit_id:
            raise ClickstreamError(
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
    floors = {k: np.full(n_boot, np.nan) for k in DISTANCES}
    for i in range(n_boot):
        boot = {
            k: side.summary(np.bincount(rng.integers(0, side.n, side.n), minlength=side.n))
            for k, side in sides.items()
        }
        for k in SCALAR_FIGURES:
            diffs[k][i] = boot["simulator"][k] - boot["test"][k]
        exit_diffs[i] = boot["simulator"]["exit_rate"] - boot["test"]["exit_rate"]
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
    by_group = {}
    for g, name in enumerate(vocab.groups):
        te, se = _num(t["exit_rate"][g]), _num(s["exit_rate"][g])
        by_group[name] = {
            "test": te,
            "simulator": se,
            "difference": None if te is None or se is None else se - te,
            "difference_ci95": _ci(exit_diffs[:, g]),
            "test_views": int(t["group_views"][g]),
            "simulator_views": int(s["group_views"][g]),
        }
    distances = {
        k: {"value": v, "noise_floor": _num(floors[k].mean()) if n_boot else None}
        for k, v in _distances(s, t).items()
    }
    truncated = getattr(sim, "truncated", None)
    return {
        "figures": figures,
        "exit_rate_by_group": by_group,
        "distances": distances,
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


def _rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    def f(x: float | None, signed: bool = False) -> str:
        if x is None:
            return "—"
        return f"{x:+.4f}" if signed else f"{x:.4f}"

    def ci(v: list[float] | None) -> str:
        return "—" if v is None else f"[{v[0]:+.4f}, {v[1]:+.4f}]"

    rows = []
    for name, r in report["figures"].items():
        rows.append(
            (
                name,
                f(r["test"]),
                f(r["simulator"]),
                f(r["difference"], True),
                ci(r["difference_ci95"]),
            )
        )
    for group, r in report["exit_rate_by_group"].items():
        rows.append(
            (
                f"exit rate: {group}",
                f(r["test"]),
                f(r["simulator"]),
                f(r["difference"], True),
                ci(r["difference_ci95"]),
            )
        )
    for name, r in report["distances"].items():
        floor = r["noise_floor"]
        rows.append((name, "—", "—", f(r["value"]), "noise floor " + f(floor)))
    return rows


HEADER = ("figure", "test split", "simulator", "difference", "95% CI of difference")


def format_fidelity_table(report: Mapping[str, Any]) -> str:
    """The report as a fixed-width text table (one row per figure, group exit rate, distance)."""
    rows = [HEADER, *_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = []
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if j == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def format_fidelity_markdown(report: Mapping[str, Any], title: str = "Simulator fidelity") -> str:
    """The report as Markdown: sizes, the table, and the definitions used."""
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
        "Converting pages: " + (", ".join(f"`{p}`" for p in report["converting_pages"]) or "none"),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    lines += ["", "Definitions:", ""]
    lines += [f"- `{k}`: {v}" for k, v in report["definitions"].items()]
    return "\n".join(lines) + "\n"
