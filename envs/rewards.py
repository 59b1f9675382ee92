"""Rewards: what a visitor landing on a page is worth to the site.

The simulator pays one reward each time a visitor lands on a page (the page after a step);
landing on ``EXIT`` pays 0. A reward is a table over the state vocabulary, ``(P + 1,)`` with
``EXIT`` last, so paying a batch is one gather. One reward per env config (DESIGN.md):

* ``page_value``: the landed page's Google Analytics page value (the study's choice): the
  revenue of transactions that followed a view of the page in the same session, over the page's
  unique pageviews (:mod:`clickstream.catalog`). It credits a page with *future* revenue, so a
  return summed over steps counts one transaction on every page before it: a shaping signal,
  not money earned.
* ``revenue``: only completed transactions pay, each once: the expected transaction revenue of
  one view of the landed page (non-zero only where transactions are recorded).
* ``engagement``: time on site: the expected time on the landed page, in seconds.
* ``pageviews``: 1 for every page viewed, so a return is the pages of a session after the
  first: the depth objective of sites that record neither revenue nor time (MSNBC).

Two sources:

* :func:`reward_from_catalog`: estimates from a page catalog (``pages.parquet``:
  :func:`clickstream.catalog.page_stats` of the sessions of the dataset's ``stats_split``), for
  simulators learnt from data. With the default ``stats_split: all`` (``meta.json`` records it)
  the table is computed from **every split**, valid and test included, while the visitor model
  and the baselines are fitted to the train sessions only; ``stats_split=train`` keeps the
  reward out of the held-out sessions (a page no train session viewed then has page value 0,
  revenue 0 and the mean time on page).
* :func:`reward_from_store`: the *true* rewards of a :class:`clickstream.synthetic.
  SyntheticStore`, for ground-truth environments. Revenue and time on page are store
  parameters; the true page value is not, and :func:`true_page_value` derives it from the
  store's visitor model (exactly, by linear algebra, up to :data:`EXACT_PAGE_VALUE_MAX_PAGES`
  pages; above that by simulation). Every table describes *organic* behaviour: page value is
  what a page is worth to visitors who are shown nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from clickstream.catalog import page_stats
from clickstream.errors import ConfigError, DataError, ModelError
from clickstream.schema import check_no_reserved_names

if TYPE_CHECKING:
    from clickstream.synthetic import SyntheticStore

REWARD_KINDS = ("page_value", "revenue", "engagement", "pageviews")
"""Names of the rewards an env config can choose."""

PAGE_VALUE_METHODS = ("auto", "exact", "sampled")
"""How :func:`true_page_value` computes the store's page value."""

EXACT_PAGE_VALUE_MAX_PAGES = 3000
"""Largest store whose page value ``auto`` computes exactly: the exact method inverts a dense
``(P, P)`` matrix per intent, ``O(P³)`` (timings: docs/benchmarks.md, "Small timings")."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensor fields has no single truth value
class RewardTable:
    """A reward per landed state.

    Attributes:
        name: The reward kind (one of :data:`REWARD_KINDS`).
        per_page: Reward of landing on each page, shape ``(P + 1,)``, float32, ``EXIT`` last
            and 0.
    """

    name: str
    per_page: torch.Tensor

    def __post_init__(self) -> None:
        t = self.per_page
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() < 2:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ModelError(f"reward {self.name!r}: per_page must be (P + 1,), got {shape}")
        t = t.to(torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise ModelError(f"reward {self.name!r}: per_page holds NaN or infinite values")
        if float(t[-1]) != 0.0:
            raise ModelError(
                f"reward {self.name!r}: landing on EXIT (the last entry) must pay 0, "
                f"got {float(t[-1])}"
            )
        object.__setattr__(self, "per_page", t)

    @property
    def n_pages(self) -> int:
        """P, the number of pages (``EXIT`` excluded)."""
        return self.per_page.numel() - 1

    @property
    def device(self) -> torch.device:
        """Device of :attr:`per_page`."""
        return self.per_page.device

    def __call__(self, landed: torch.Tensor) -> torch.Tensor:
        """Reward of each visitor's landed state.

        Args:
            landed: Landed page per visitor, long, shape ``(B,)`` (any shape works), values in
                ``[0, P]`` with ``P`` = ``EXIT``; on the table's device.

        Returns:
            Rewards, float32, same shape as ``landed``.
        """
        # no range check: this runs every simulator step (and a CUDA check would sync)
        return self.per_page[landed]

    def to(self, device: torch.device | str) -> RewardTable:
        """The same table on ``device``."""
        return dataclasses.replace(self, per_page=self.per_page.to(device))


def _check_kind(kind: str) -> None:
    if kind not in REWARD_KINDS:
        raise ConfigError(f"reward must be one of {list(REWARD_KINDS)}, got {kind!r}")


def _table(kind: str, values: np.ndarray) -> RewardTable:
    """Append ``EXIT`` (pays 0) to per-page values ``(P,)``."""
    per_page = torch.from_numpy(np.r_[np.asarray(values, dtype=np.float64), 0.0])
    return RewardTable(kind, per_page.to(torch.float32))


def _align(names: Sequence[str], vocab_pages: Sequence[str], what: str) -> np.ndarray:
    """Row of each vocabulary page in ``names``, shape ``(P,)``; a missing page raises."""
    vocab = np.asarray([str(p) for p in vocab_pages], dtype=object)
    if len(vocab) == 0:
        raise DataError("the vocabulary holds no pages")
    check_no_reserved_names(vocab)
    index = pd.Index([str(n) for n in names])
    if not index.is_unique:
        dup = index[index.duplicated()][0]
        raise DataError(f"page {dup!r} appears more than once in the {what}")
    rows = index.get_indexer(vocab)
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"vocabulary page {vocab[missing[0]]!r} is not in the {what}{more}", column="page"
        )
    return rows


def reward_from_catalog(kind: str, pages: pd.DataFrame, vocab_pages: Sequence[str]) -> RewardTable:
    """A reward estimated from a page catalog.

    Args:
        kind: One of :data:`REWARD_KINDS`.
        pages: Page catalog (:data:`clickstream.catalog.CATALOG_COLUMNS`; at least ``page``
            and the columns the kind reads: ``page_value``; ``revenue`` and ``pageviews``;
            ``avg_time_on_page_s``). Pages outside the vocabulary are ignored.
        vocab_pages: The simulator's pages in state order, length ``P``.

    Returns:
        The table, aligned to ``vocab_pages`` by page name, ``EXIT`` last:

        * ``page_value``: the catalog's page value;
        * ``revenue``: ``revenue / pageviews``, the mean transaction revenue of one view (0
          for a page with no views);
        * ``engagement``: ``avg_time_on_page_s``; a page with no known time (GA knows none for
          pages only ever viewed last) gets the mean over the vocabulary pages that have one,
          or 0 if none does;
        * ``pageviews``: 1 for every page.

    Raises:
        ClickstreamError: Unknown kind; a vocabulary page missing from the catalog (or named
            twice in it); a missing column; a non-finite page value or revenue.
    """
    _check_kind(kind)
    needed = {
        "page_value": ["page_value"],
        "revenue": ["revenue", "pageviews"],
        "engagement": ["avg_time_on_page_s"],
        "pageviews": [],
    }[kind]
    absent = [c for c in ["page", *needed] if c not in pages.columns]
    if absent:
        raise DataError(f"the page catalog lacks column(s) {absent} needed by {kind!r}")
    vocab = [str(p) for p in vocab_pages]  # a Series would index by label below
    rows = _align(pages["page"].tolist(), vocab, "page catalog")

    def column(name: str) -> np.ndarray:
        return pd.to_numeric(pages[name]).to_numpy(np.float64)[rows]

    if kind == "pageviews":
        values = np.ones(len(vocab))
    elif kind == "engagement":
        values = column("avg_time_on_page_s")
        known = np.isfinite(values)
        values = np.where(known, values, values[known].mean() if known.any() else 0.0)
    else:
        if kind == "page_value":
            values = column("page_value")
        else:
            revenue, views = column("revenue"), column("pageviews")
            values = np.divide(revenue, views, out=np.zeros_like(revenue), where=views > 0)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(
                f"page {vocab[bad[0]]!r} has no finite {needed[0]} in the catalog",
                column=needed[0],
            )
    return _table(kind, values)


def check_learnable(
    table: RewardTable,
    source: str,
    *,
    key: str = "env.reward",
    alternatives: Sequence[str] | None = None,
) -> RewardTable:
    """``table`` unchanged, or an error if it pays 0 on every page (every policy would score 0:
    nothing to learn or compare).

    Args:
        table: The reward table.
        source: Where it comes from (the dataset folder), named in the message.
        key: The configuration key the calling script reads the reward from (``env.reward``
            for the pipeline and ``train.py``, ``reward`` for ``check_simulator.py``).
        alternatives: Rewards the data does pay (``clickstream.prepare.reward_support``);
            default the ones that need no transactions, this one excluded.
    """
    if bool(table.per_page.any()):
        return table
    missing = {
        "page_value": "no transactions with revenue and no value column",
        "revenue": "no transactions with revenue",
        "engagement": "no time on page known",
    }.get(table.name, "nothing to pay")
    others = [
        r
        for r in (alternatives if alternatives is not None else ("engagement", "pageviews"))
        if r != table.name
    ] or ["pageviews"]
    raise ConfigError(
        f"reward {table.name!r} is 0 on every page of {source} ({missing}); choose "
        f"{key}={' or '.join(others)}"
    )


def reward_from_store(
    kind: str,
    store: SyntheticStore,
    vocab_pages: Sequence[str] | None = None,
    *,
    page_value_method: str = "auto",
    n_sessions: int = 200_000,
    seed: int = 0,
) -> RewardTable:
    """The true reward of a synthetic store.

    Args:
        kind: One of :data:`REWARD_KINDS`.
        store: The store.
        vocab_pages: The simulator's pages in state order, length ``P``; default the store's
            own order (``store.pages``). Each must be a store page.
        page_value_method: ``page_value`` only: see :func:`true_page_value`.
        n_sessions: ``page_value`` with the sampled method only: sessions simulated.
        seed: ``page_value`` with the sampled method only: sampling seed.

    Returns:
        The table, ``EXIT`` last:

        * ``revenue``: ``store.expected_revenue``, the mean order value on
          ``/ordercompleted.html``, 0 elsewhere (the sampled hits round it to cents and floor
          it at 0.99 USD: a negligible difference);
        * ``engagement``: the log-normal mean ``exp(μ + σ² / 2)`` of time on the page, seconds;
        * ``pageviews``: 1 for every page;
        * ``page_value``: :func:`true_page_value`.

    Raises:
        ClickstreamError: Unknown kind or method; a vocabulary page the store does not have.
    """
    _check_kind(kind)
    rows = (
        np.arange(store.n_pages)
        if vocab_pages is None
        else _align(store.pages, vocab_pages, "synthetic store")
    )
    if kind == "revenue":
        values = np.asarray(store.expected_revenue, dtype=np.float64)
    elif kind == "engagement":
        values = np.exp(store.time_mu + store.time_sigma**2 / 2.0)
    elif kind == "pageviews":
        values = np.ones(store.n_pages)
    else:
        values = true_page_value(store, page_value_method, n_sessions=n_sessions, seed=seed)
    return _table(kind, values[rows])


def true_page_value(
    store: SyntheticStore, method: str = "auto", *, n_sessions: int = 200_000, seed: int = 0
) -> np.ndarray:
    """The Google Analytics page value of every store page under its true visitor model.

    GA's page value of page ``i`` is (revenue of transactions after the first view of ``i`` in
    a session, summed over sessions) / (sessions viewing ``i``). Over many sessions this tends
    to ``E[revenue after the first view of i | the session views i]``, which the store's
    model gives exactly. Given the intent z a session is a Markov chain with substochastic
    page-to-page matrix ``Q_z`` (P, P) (the rest of each row is ``EXIT``), and with
    ``N_z = (I - Q_z)^-1`` (expected views of each page, starting from each page):

    * ``V_z = N_z Q_z r``: expected revenue strictly after a view of each page (``r`` =
      expected revenue of a view); after the *first* view the future is the chain from ``i``;
    * ``h_z = (entry_z N_z) / diag(N_z)``: probability that a session views the page (expected
      views over expected views given one), since views of ``i`` after the first are the
      chain's returns to ``i``;
    * ``page_value(i) = Σ_z prior_z h_z(i) V_z(i) / Σ_z prior_z h_z(i)`` (0 for pages no
      session reaches).

    The exact method ignores the cut of sessions at ``max_steps`` (fewer than one in a million
    sessions of the default store reach it).

    Args:
        store: The store.
        method: ``exact`` (above; ``O(Z · P³)`` time, ``P²`` floats of memory), ``sampled``
            (simulate ``n_sessions`` sessions and apply :func:`clickstream.catalog.page_stats`;
            revenue of each view is set to its expected value, which keeps the estimate
            unbiased but removes the noise of heavy-tailed order values; pages no sampled
            session views get 0), or ``auto`` (exact up to
            :data:`EXACT_PAGE_VALUE_MAX_PAGES` pages, else sampled).
        n_sessions: Sessions simulated by the sampled method.
        seed: Seed of the sampled method.

    Returns:
        Page value per page in ``store.pages`` order, shape ``(P,)``, float64, finite, >= 0.
    """
    if method not in PAGE_VALUE_METHODS:
        raise ConfigError(
            f"page value method must be one of {list(PAGE_VALUE_METHODS)}, got {method!r}"
        )
    if method == "auto":
        method = "exact" if store.n_pages <= EXACT_PAGE_VALUE_MAX_PAGES else "sampled"
    if method == "exact":
        return _exact_page_value(store)
    return _sampled_page_value(store, n_sessions, seed)


def _exact_page_value(store: SyntheticStore) -> np.ndarray:
    p, z_count = store.n_pages, store.n_intents
    r = np.asarray(store.expected_revenue, dtype=np.float64)
    rows = np.repeat(np.arange(z_count * p), np.diff(store.indptr))
    credited = np.zeros(p)  # Σ_z prior_z h_z V_z
    viewed = np.zeros(p)  # Σ_z prior_z h_z
    for z in range(z_count):
        sel = (rows >= z * p) & (rows < (z + 1) * p) & (store.indices < p)  # EXIT dropped
        q = np.zeros((p, p))
        q[rows[sel] - z * p, store.indices[sel]] = store.probs[sel]  # CSR: no duplicate cells
        n = np.linalg.inv(np.eye(p) - q)
        after = n @ (q @ r)
        reach = (store.entry[z] @ n) / np.diagonal(n)  # diag(N) >= 1: the view itself
        credited += store.prior[z] * reach * after
        viewed += store.prior[z] * reach
    value = np.divide(credited, viewed, out=np.zeros(p), where=viewed > 0)
    return np.maximum(value, 0.0)  # round-off only: every term is >= 0


def _sampled_page_value(store: SyntheticStore, n_sessions: int, seed: int) -> np.ndarray:
    if n_sessions < 1:
        raise ConfigError(f"n_sessions must be >= 1, got {n_sessions}")
    sim = store.simulate(n_sessions, seed)
    names = np.asarray(store.pages, dtype=object)
    r = np.asarray(store.expected_revenue, dtype=np.float64)
    # the columns page_stats reads; one definition of page value for data and truth
    hits = pd.DataFrame(
        {
            "session_id": np.repeat(np.arange(len(sim)), sim.lengths),
            "page": names[sim.pages],
            "page_group": np.asarray(store.page_groups, dtype=object)[sim.pages],
            "time_on_page_s": np.full(len(sim.pages), np.nan),
            "revenue": r[sim.pages],
            "is_transaction": r[sim.pages] > 0,
        }
    )
    stats = page_stats(hits)
    value = stats.set_index("page")["page_value"].reindex(store.pages).fillna(0.0)
    return value.to_numpy(np.float64)
