"""Session bookkeeping shared by the loaders: ordering, steps, time on page, sessionisation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clickstream.errors import ConfigError, DataError
from clickstream.schema import coerce_raw_hits


def order_sessions(df: pd.DataFrame, hit_order: str | None = None) -> pd.DataFrame:
    """Sort page views by ``session_start``, ``session_id``, then their order within a session.

    Args:
        df: Page views with at least ``session_id`` and ``session_start``.
        hit_order: Column giving the order of page views inside a session (e.g. GA
            ``hitNumber`` or a timestamp). ``None`` keeps the input order (stable sort).
    """
    keys = ["session_start", "session_id"] + ([hit_order] if hit_order else [])
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def number_steps(df: pd.DataFrame) -> np.ndarray:
    """0-based position of each row within its (contiguous) session, shape ``(N,)``."""
    sid = df["session_id"].to_numpy()
    if len(sid) == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.r_[True, sid[1:] != sid[:-1]]
    idx = np.arange(len(sid))
    return idx - np.maximum.accumulate(np.where(new, idx, 0))


def time_to_next_page_view(df: pd.DataFrame) -> np.ndarray:
    """Seconds from each page view to the next one in its session, shape ``(N,)``.

    This is Google Analytics' *time on page*: the last page of a session has no next page view,
    so its time is unknown (NaN), as are rows whose ``hit_time`` is missing.
    """
    t = df["hit_time"]
    sid = df["session_id"].to_numpy()
    if len(sid) == 0:
        return np.zeros(0, dtype=np.float64)
    ns = _epoch_ns(t)
    # differences in integer nanoseconds: float seconds since 1970 lose sub-microsecond detail
    gap = np.r_[np.diff(ns), 0].astype(np.float64) / 1e9
    known = np.r_[(ns[1:] != _NAT) & (ns[:-1] != _NAT), False]
    same = np.r_[sid[1:] == sid[:-1], False]
    return np.where(same & known, gap, np.nan)


_NAT = np.iinfo(np.int64).min


def _epoch_ns(times: pd.Series) -> np.ndarray:
    """Nanoseconds since 1970 as int64 (NaT becomes int64 min), shape ``(N,)``."""
    return pd.to_datetime(times, utc=True).to_numpy(dtype="datetime64[ns]").view(np.int64)


def finish_raw_hits(df: pd.DataFrame, hit_order: str | None = None) -> pd.DataFrame:
    """Order sessions, number steps and fill unknown time on page from ``hit_time``.

    ``df`` holds one row per page view with the raw columns (``step`` may be absent). Rows whose
    ``time_on_page_s`` is already known keep it.
    """
    df = order_sessions(df, hit_order)
    df["step"] = number_steps(df)
    _fill_time_on_page(df)
    return coerce_raw_hits(df)


def finish_raw_hits_dropping(
    df: pd.DataFrame, drop: str, hit_order: str | None = None
) -> tuple[pd.DataFrame, int]:
    """:func:`finish_raw_hits`, leaving out the page views marked in the boolean column ``drop``
    (a page view without a page) *after* time on page is computed.

    Google Analytics' time on page runs to the next page-view hit, whatever its page, so the
    page view before a dropped one keeps the time to it (not to the next page view kept).

    Returns:
        ``(hits, bridged)``: the hits without the dropped rows (``drop`` removed, steps
        renumbered), and how many pairs of page views now follow each other with dropped page
        views between them: the hits show a transition between them that the visitor made
        through a page view without a page (the loader says so in a notice).
    """
    df = order_sessions(df, hit_order)
    _fill_time_on_page(df)
    dropped = df[drop].to_numpy(dtype=bool)
    df = df.drop(columns=[drop])
    kept = np.flatnonzero(~dropped)
    sid = df["session_id"].to_numpy()[kept]
    bridged = int(((np.diff(kept) > 1) & (sid[1:] == sid[:-1])).sum()) if len(kept) else 0
    df = df.iloc[kept].reset_index(drop=True)
    df["step"] = number_steps(df)
    return coerce_raw_hits(df), bridged


def _fill_time_on_page(df: pd.DataFrame) -> None:
    """Fill unknown ``time_on_page_s`` from ``hit_time`` (in place; rows in session order)."""
    if "hit_time" in df.columns:
        derived = time_to_next_page_view(
            df.assign(hit_time=pd.to_datetime(df["hit_time"], utc=True))
        )
        if "time_on_page_s" in df.columns:
            known = pd.to_numeric(df["time_on_page_s"], errors="coerce").to_numpy(np.float64)
            df["time_on_page_s"] = np.where(np.isnan(known), derived, known)
        else:
            df["time_on_page_s"] = derived


def sessionize(
    df: pd.DataFrame,
    *,
    visitor_col: str = "visitor_id",
    time_col: str = "hit_time",
    timeout_s: float = 1800.0,
) -> pd.Series:
    """Split each visitor's page views into sessions at gaps longer than ``timeout_s``.

    Google Analytics' default: a session ends after 30 minutes of inactivity. Rows need not be
    sorted; the returned session ids align with ``df.index``.

    Args:
        df: Page views with a visitor column and a timestamp column (no missing times).
        visitor_col: Column identifying the visitor.
        time_col: Column with the page view time (datetime-like).
        timeout_s: Inactivity gap, in seconds, that starts a new session. A gap exactly equal
            to the timeout stays in the same session.

    Returns:
        Session ids ``"<visitor>#<k>"`` (k = 0, 1, ... per visitor in time order), shape ``(N,)``.
    """
    if timeout_s <= 0:
        raise ConfigError(f"session timeout must be > 0 seconds, got {timeout_s}")
    times = pd.to_datetime(df[time_col], utc=True)
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise DataError("missing timestamp: cannot sessionise", row=row, column=time_col)
    visitor_codes, visitor_names = pd.factorize(df[visitor_col].astype("str"), sort=False)
    ns = _epoch_ns(times)
    order = np.lexsort((np.arange(len(df)), ns, visitor_codes))
    v, t = visitor_codes[order], ns[order]
    new_visitor = np.r_[True, v[1:] != v[:-1]] if len(v) else np.zeros(0, dtype=bool)
    # integer nanoseconds, so a gap exactly equal to the timeout is never rounded above it
    gap = np.r_[0, np.diff(t)] if len(t) else np.zeros(0, dtype=np.int64)
    new_session = new_visitor | (gap > round(timeout_s * 1e9))
    # k-th session of each visitor: sessions started so far minus those before this visitor
    started = np.cumsum(new_session)
    first_of_visitor = np.maximum.accumulate(np.where(new_visitor, started, 0))
    k = started - first_of_visitor
    ids = pd.Series(np.asarray(visitor_names, dtype=object)[v]) + "#" + pd.Series(k).astype("str")
    out = np.empty(len(df), dtype=object)
    out[order] = ids.to_numpy(dtype=object)
    return pd.Series(out, index=df.index, name="session_id", dtype="str")
