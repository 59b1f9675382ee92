"""Page catalog (traffic, GA page value, time on page, exit and bounce rates) and transitions.

All functions take canonical hits (rows of a session contiguous and in step order) and are
vectorised (timed on MSNBC's page views: docs/benchmarks.md, "Small timings").

Definitions (Google Analytics):

* ``pageviews``: page views of the page; ``unique_pageviews``: sessions that viewed it.
* ``page_value``: each transaction's revenue is credited once to every distinct page viewed in
  its session *before* the transaction; the credits are summed and divided by the page's unique
  pageviews. When a transaction happened depends on the export (``revenue_timing``):

  - ``with_view`` (GA360, CSV): the transaction rides on the page-view hit that carries it
    (GA360: usually the receipt page's), so the pages viewed *strictly before* that hit are
    credited; the page carrying it is credited only if it was also viewed earlier;
  - ``after_view`` (GA4): a purchase is an event of its own, booked on the last page view at or
    before it (:mod:`clickstream.ga4`), so that page view came before the purchase and is
    credited too: every page viewed at or before the purchase is credited.
* ``value``: mean of the export's ``value`` column (a product's price, a score) over the views
  where it is known (NaN where never known); on a site without revenue it can be the page value
  (:func:`clickstream.prepare.prepare`, ``page_value="value"``).
* ``avg_time_on_page_s``: mean time on page over the views where it is known (GA: total time on
  page / (pageviews - exits)); ``exit_rate``: exits / pageviews.
* ``bounces`` and ``bounce_rate``: *not* exactly GA's. A bounce here is a session with **one
  page view**, and ``bounce_rate`` is such sessions entering on the page / sessions entering on
  it (NaN for pages nobody entered on). GA counts a session with one *interaction hit*: a
  one-page session with an interaction event (a video play, a click tracked as an event) is no
  bounce in GA but is one here, since the loaders read page views only (interaction events are
  not loaded). On the GA360 sample day: 1,243 single-page sessions (48.63 %) against GA's 1,238
  ``totals.bounces`` (48.44 %).

Pages a catalog lists without any view in the hits it describes (``all_hits`` of
:func:`page_stats`: a split's statistics over the whole dataset's pages) have zero counts and
revenue, ``page_value`` 0, and ``value``, ``avg_time_on_page_s``, ``exit_rate`` and
``bounce_rate`` NaN (unknown).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clickstream.errors import ConfigError, DataError
from clickstream.schema import ENTRY, EXIT, check_no_reserved_names

REVENUE_TIMINGS = ("with_view", "after_view")
"""When a hit's transaction happened relative to its page view (module docstring)."""

_COUNT_COLUMNS = (
    "pageviews",
    "unique_pageviews",
    "entrances",
    "exits",
    "bounces",
    "transactions",
)
# unknown (NaN) for a page without a view in the hits a catalog describes
_UNKNOWN_COLUMNS = ("value", "avg_time_on_page_s", "exit_rate", "bounce_rate")
CATALOG_COLUMNS = (
    "page_id",
    "page",
    "page_group",
    *_COUNT_COLUMNS,
    "revenue",
    "page_value",
    *_UNKNOWN_COLUMNS,
)


def _session_layout(
    hits: pd.DataFrame, what: str = "transitions"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Session code per row, first-row mask and last-row mask, each shape ``(N,)``."""
    if len(hits) == 0:
        raise DataError(f"cannot count {what} in zero page views")
    codes, _ = pd.factorize(hits["session_id"], sort=False)
    first = np.r_[True, codes[1:] != codes[:-1]]
    last = np.r_[codes[1:] != codes[:-1], True]
    return codes.astype(np.int64), first, last


def page_stats(
    hits: pd.DataFrame,
    key: str = "page",
    *,
    revenue_timing: str = "with_view",
    all_hits: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-page (or per-group, ``key="page_group"``) statistics, sorted by traffic.

    Args:
        hits: Canonical hits, shape ``(N, ...)``.
        key: ``page`` or ``page_group``.
        revenue_timing: ``with_view`` (the transaction rides on the hit carrying its revenue)
            or ``after_view`` (it followed that page view: GA4), see the module docstring.
        all_hits: Hits whose every ``key`` the catalog lists (the whole dataset, when ``hits``
            is one split); keys without a view in ``hits`` get the values of the module
            docstring. ``None``: the keys of ``hits``.

    Returns:
        One row per distinct ``key`` with the columns of :data:`CATALOG_COLUMNS` (for groups the
        ``page_group`` column repeats the key), ``page_id`` dense from 0 in order of descending
        page views (ties by name), so ids are stable for the same data.
    """
    if revenue_timing not in REVENUE_TIMINGS:
        raise ConfigError(
            f"revenue_timing must be one of {list(REVENUE_TIMINGS)}, got {revenue_timing!r}"
        )
    codes, first, last = _session_layout(hits, "a page catalog")
    keys, key_uniques = pd.factorize(hits[key], sort=False)
    n_keys = len(key_uniques)
    revenue = hits["revenue"].to_numpy(np.float64)

    # Revenue of transactions after each row's view, within its session: those on later rows,
    # plus the row's own when it was paid after the view (GA4). (A per-session cumsum keeps
    # round-off at the scale of one session's revenue.)
    session_total = np.bincount(codes, weights=revenue)
    cum_in_session = pd.Series(revenue).groupby(codes, sort=False).cumsum().to_numpy()
    if revenue_timing == "after_view":
        cum_in_session = cum_in_session - revenue
    revenue_after = np.maximum(session_total[codes] - cum_in_session, 0.0)

    # First view of each key in each session: credited once with the revenue that follows it.
    pair = codes * n_keys + keys
    _, first_view = np.unique(pair, return_index=True)
    unique_pageviews = np.bincount(keys[first_view], minlength=n_keys)
    credited = np.bincount(keys[first_view], weights=revenue_after[first_view], minlength=n_keys)

    single = first & last
    top = hits["time_on_page_s"].to_numpy(np.float64)
    known = ~np.isnan(top)
    pageviews = np.bincount(keys, minlength=n_keys)
    entrances = np.bincount(keys[first], minlength=n_keys)
    exits = np.bincount(keys[last], minlength=n_keys)
    bounces = np.bincount(keys[single], minlength=n_keys)
    time_sum = np.bincount(keys[known], weights=top[known], minlength=n_keys)
    time_n = np.bincount(keys[known], minlength=n_keys)
    tx = np.bincount(keys, weights=hits["is_transaction"].to_numpy(np.float64), minlength=n_keys)
    rev = np.bincount(keys, weights=revenue, minlength=n_keys)
    if "value" in hits.columns:  # tables written before the column existed lack it
        value = hits["value"].to_numpy(np.float64)
    else:
        value = np.full(len(hits), np.nan)
    has_value = ~np.isnan(value)
    value_sum = np.bincount(keys[has_value], weights=value[has_value], minlength=n_keys)
    value_n = np.bincount(keys[has_value], minlength=n_keys)

    with np.errstate(invalid="ignore", divide="ignore"):
        out = pd.DataFrame(
            {
                "page": np.asarray(key_uniques, dtype=object),
                "pageviews": pageviews.astype(np.int64),
                "unique_pageviews": unique_pageviews.astype(np.int64),
                "entrances": entrances.astype(np.int64),
                "exits": exits.astype(np.int64),
                "bounces": bounces.astype(np.int64),
                "transactions": tx.astype(np.int64),
                "revenue": rev,
                "page_value": credited / unique_pageviews,
                "value": np.where(value_n > 0, value_sum / np.maximum(value_n, 1), np.nan),
                "avg_time_on_page_s": np.where(
                    time_n > 0, time_sum / np.maximum(time_n, 1), np.nan
                ),
                "exit_rate": exits / pageviews,
                "bounce_rate": np.where(entrances > 0, bounces / np.maximum(entrances, 1), np.nan),
            }
        )
    if key == "page":  # a page has one group: read it from the page's first row
        first_row = np.unique(keys, return_index=True)[1]
        out.insert(1, "page_group", np.asarray(hits["page_group"].iloc[first_row], dtype=object))
    else:
        out.insert(1, "page_group", out["page"])
    if all_hits is not None:
        out = _add_unseen(out, all_hits, key)
    out = out.sort_values(["pageviews", "page"], ascending=[False, True], kind="stable")
    out.insert(0, "page_id", np.arange(len(out), dtype=np.int64))
    out = out.reset_index(drop=True)
    out["page"] = out["page"].astype("str")
    out["page_group"] = out["page_group"].astype("str")
    return out[list(CATALOG_COLUMNS)]


def _add_unseen(out: pd.DataFrame, all_hits: pd.DataFrame, key: str) -> pd.DataFrame:
    """``out`` plus a row for each ``key`` of ``all_hits`` it lacks (no view: zero counts,
    page value 0, unknown value, time and rates)."""
    names = all_hits[key].astype("str")
    unseen = ~names.isin(out["page"].astype("str")).to_numpy()
    if not unseen.any():
        return out
    rows = all_hits.loc[unseen].drop_duplicates(key)
    groups = rows["page_group"] if key == "page" else rows[key]
    n = len(rows)
    zeros = np.zeros(n, dtype=np.int64)
    missing = np.full(n, np.nan)
    extra = pd.DataFrame(
        {
            "page": rows[key].astype("str").to_numpy(dtype=object),
            "page_group": groups.astype("str").to_numpy(dtype=object),
            **{c: zeros for c in _COUNT_COLUMNS},
            "revenue": np.zeros(n),
            "page_value": np.zeros(n),
            **{c: missing for c in _UNKNOWN_COLUMNS},
        }
    )
    return pd.concat([out, extra[out.columns]], ignore_index=True)


def transition_counts(hits: pd.DataFrame, key: str = "page") -> pd.DataFrame:
    """First-order transition counts between pages (or groups) with ``ENTRY`` and ``EXIT``.

    Every session contributes ``ENTRY → first``, each ``page_t → page_{t+1}`` and
    ``last → EXIT``. ``EXIT`` is absorbing (``EXIT → EXIT``, count 0, probability 1), so every
    source row, ``EXIT`` included, sums to 1.

    Returns:
        Columns ``src``, ``dst``, ``count``, ``prob`` (count / row total), one row per observed
        pair, sorted by ``src`` then descending ``count``.
    """
    _, first, last = _session_layout(hits)
    codes, uniques = pd.factorize(hits[key], sort=False)  # ints: millions of rows stay fast
    names = np.asarray(uniques, dtype=object).astype(str).astype(object)
    check_no_reserved_names(names, key)
    k = len(names)
    entry_code, exit_code = k, k + 1
    src = np.concatenate([np.full(int(first.sum()), entry_code), codes])
    nxt = np.r_[codes[1:], exit_code]
    dst = np.concatenate([codes[first], np.where(last, exit_code, nxt)])
    pair, count = np.unique(src * (k + 2) + dst, return_counts=True)
    labels = np.r_[names, np.array([ENTRY, EXIT], dtype=object)]
    pairs = pd.DataFrame(
        {
            "src": np.r_[labels[pair // (k + 2)], [EXIT]],
            "dst": np.r_[labels[pair % (k + 2)], [EXIT]],
            "count": np.r_[count, 0].astype(np.int64),  # EXIT -> EXIT: absorbing
        }
    )
    totals = pairs.groupby("src")["count"].transform("sum").to_numpy(np.float64)
    pairs["prob"] = np.where(totals > 0, pairs["count"] / np.where(totals > 0, totals, 1), 1.0)
    pairs = pairs.sort_values(["src", "count", "dst"], ascending=[True, False, True], kind="stable")
    return pairs.reset_index(drop=True).astype({"src": "str", "dst": "str"})


def transition_matrix(
    hits: pd.DataFrame, pages: pd.Series | list[str], smoothing: float = 0.0, key: str = "page"
) -> tuple[np.ndarray, np.ndarray]:
    """Dense row-stochastic first-order transition matrix for prediction.

    Args:
        hits: Canonical hits (e.g. the train split only).
        pages: The state vocabulary in ``page_id`` order, length ``P``; hits on pages outside
            it raise.
        smoothing: Additive (Lidstone) pseudo-count per cell, so unseen transitions keep a
            non-zero probability; rows never seen get the uniform distribution.
        key: ``page`` or ``page_group``.

    Returns:
        ``(entry, matrix)``: entry distribution over pages, shape ``(P,)``, and transition
        probabilities, shape ``(P, P + 1)`` with ``EXIT`` as the last column. Rows sum to 1.
    """
    vocab = pd.Index(list(pages))
    check_no_reserved_names(vocab.to_numpy(), key)
    n = len(vocab)
    idx = vocab.get_indexer(hits[key].astype("str"))
    if (idx < 0).any():
        unknown = hits[key].to_numpy()[np.flatnonzero(idx < 0)[0]]
        raise DataError(f"page {unknown!r} is not in the vocabulary", column=key)
    _, first, last = _session_layout(hits)
    nxt = np.r_[idx[1:], n]
    dst = np.where(last, n, nxt)
    counts = np.bincount(idx * (n + 1) + dst, minlength=n * (n + 1)).reshape(n, n + 1).astype(float)
    counts += smoothing
    rows = counts.sum(axis=1, keepdims=True)
    matrix = np.divide(counts, rows, out=np.full_like(counts, 1.0 / (n + 1)), where=rows > 0)
    entry = np.bincount(idx[first], minlength=n).astype(float) + smoothing
    entry = entry / entry.sum() if entry.sum() > 0 else np.full(n, 1.0 / n)
    return entry, matrix
