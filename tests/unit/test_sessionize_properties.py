"""Property tests of sessionisation by inactivity timeout and of step numbering.

Times are whole milliseconds after a 2017 origin (the magnitude of real epoch times) and
timeouts whole seconds, so that a reference computed in exact integers can be compared with
:func:`clickstream.sessions.sessionize`, gaps exactly equal to the timeout included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickstream.errors import ClickstreamError
from clickstream.schema import validate_hits
from clickstream.sessions import finish_raw_hits, sessionize

ORIGIN = pd.Timestamp("2017-08-01", tz="UTC")
MS_PER_S = 1000

# Visitor names with '#' and the empty name: session ids "<visitor>#<k>" must still not collide.
visitors = st.sampled_from(["a", "b", "a#0", "a#1", "", "ü v"])
# Mostly whole seconds, so that gaps often equal the timeout exactly; sometimes any millisecond.
times_ms = st.one_of(
    st.integers(0, 4 * 3600).map(lambda s: s * MS_PER_S), st.integers(0, 4 * 3600 * MS_PER_S)
)
rows = st.lists(st.tuples(visitors, times_ms), min_size=1, max_size=60)
timeouts_s = st.one_of(st.sampled_from([1, 60, 300, 1800]), st.integers(1, 3600))

SETTINGS = settings(max_examples=150, deadline=None)


def frame(data: list[tuple[str, int]]) -> pd.DataFrame:
    """Page views: visitor, hit time, and the time in ms as an exact integer reference."""
    ms = np.array([t for _, t in data], dtype=np.int64)
    return pd.DataFrame(
        {
            "visitor_id": pd.Series([v for v, _ in data], dtype="str"),
            "hit_time": ORIGIN + pd.to_timedelta(ms, unit="ms"),
            "ms": ms,
            "page_raw": [f"/p{i}" for i in range(len(data))],  # tags each row
        }
    )


def expected_sessions(df: pd.DataFrame, timeout_s: int) -> int:
    """Reference count: one session per visitor plus one per gap longer than the timeout."""
    n = 0
    for _, group in df.groupby("visitor_id"):
        gaps = np.diff(np.sort(group["ms"].to_numpy()))
        n += 1 + int((gaps > timeout_s * MS_PER_S).sum())
    return n


@SETTINGS
@given(rows, timeouts_s)
def test_sessions_follow_the_inactivity_rule(data: list[tuple[str, int]], timeout_s: int) -> None:
    df = frame(data)
    sid = sessionize(df, timeout_s=timeout_s)
    assert sid.index.equals(df.index) and sid.notna().all()
    df = df.assign(session_id=sid)
    limit = timeout_s * MS_PER_S

    assert df["session_id"].nunique() == expected_sessions(df, timeout_s)
    for s, group in df.groupby("session_id"):
        # A session never mixes visitors, and its id names the visitor.
        assert group["visitor_id"].nunique() == 1
        visitor = group["visitor_id"].iloc[0]
        assert s.rsplit("#", 1)[0] == visitor
        # Every gap inside a session is at most the timeout.
        assert (np.diff(np.sort(group["ms"].to_numpy())) <= limit).all()
    for visitor, group in df.groupby("visitor_id"):
        spans = group.groupby("session_id")["ms"].agg(["min", "max"]).sort_values("min")
        # Sessions of a visitor are numbered 0, 1, ... in time order ...
        assert list(spans.index) == [f"{visitor}#{k}" for k in range(len(spans))]
        # ... and consecutive ones are separated by more than the timeout.
        assert (spans["min"].to_numpy()[1:] - spans["max"].to_numpy()[:-1] > limit).all()


@SETTINGS
@given(rows, timeouts_s, st.data())
def test_sessions_do_not_depend_on_row_order(
    data: list[tuple[str, int]], timeout_s: int, draw: st.DataObject
) -> None:
    df = frame(data)
    sid = sessionize(df, timeout_s=timeout_s)
    perm = draw.draw(st.permutations(range(len(df))))
    shuffled = df.iloc[list(perm)]
    # Aligned with the (shuffled) index: the same id for every row.
    again = sessionize(shuffled, timeout_s=timeout_s)
    assert again.index.equals(shuffled.index)
    pd.testing.assert_series_equal(again.sort_index(), sid)
    # Also with a fresh positional index.
    again = sessionize(shuffled.reset_index(drop=True), timeout_s=timeout_s)
    np.testing.assert_array_equal(again.to_numpy(), sid.to_numpy()[list(perm)])


@SETTINGS
@given(rows, timeouts_s, st.data())
def test_finish_raw_hits_orders_and_numbers_steps(
    data: list[tuple[str, int]], timeout_s: int, draw: st.DataObject
) -> None:
    df = frame(data)
    df["session_id"] = sessionize(df, timeout_s=timeout_s)
    df["session_start"] = df.groupby("session_id")["hit_time"].transform("min")
    df["revenue"] = 0.0
    df["is_transaction"] = False
    perm = draw.draw(st.permutations(range(len(df))))
    hits = finish_raw_hits(df.iloc[list(perm)].reset_index(drop=True), hit_order="hit_time")

    validate_hits(hits, source="property test")  # contiguous sessions, steps 0..n-1, one start
    assert sorted(hits["page_raw"]) == sorted(df["page_raw"])  # every page view, once
    sid = hits["session_id"].to_numpy()
    new = np.r_[True, sid[1:] != sid[:-1]]
    assert new.sum() == df["session_id"].nunique()
    sizes = np.diff(np.r_[np.flatnonzero(new), len(sid)])
    np.testing.assert_array_equal(
        hits["step"].to_numpy(), np.concatenate([np.arange(k) for k in sizes])
    )
    # Sessions in start order; page views in time order, each timed until the next one.
    assert hits["session_start"].is_monotonic_increasing
    secs = (hits["hit_time"] - ORIGIN).dt.total_seconds().to_numpy()
    same = ~new[1:]
    assert (np.diff(secs)[same] >= 0).all()
    expected = np.where(np.r_[same, False], np.r_[np.diff(secs), np.nan], np.nan)
    # Seconds since 1970 as float64 carry ~2e-7 s of rounding: exact to a microsecond.
    np.testing.assert_allclose(
        hits["time_on_page_s"].to_numpy(), expected, rtol=0, atol=1e-6, equal_nan=True
    )


def test_sessionize_rejects_bad_input() -> None:
    df = frame([("a", 0), ("a", 1000)])
    with pytest.raises(ClickstreamError, match="timeout"):
        sessionize(df, timeout_s=0)
    df.loc[1, "hit_time"] = pd.NaT
    with pytest.raises(ClickstreamError, match=r"row 1, column 'hit_time'"):
        sessionize(df, timeout_s=60)


def test_gap_equal_to_a_fractional_timeout_stays_in_the_session() -> None:
    t0 = pd.Timestamp("2017-08-01T15:08:12.360", tz="UTC")
    df = pd.DataFrame({"visitor_id": ["a", "a"], "hit_time": [t0, t0 + pd.Timedelta("100ms")]})
    assert sessionize(df, timeout_s=0.1).nunique() == 1
