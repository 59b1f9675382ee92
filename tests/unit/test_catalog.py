"""Page catalog statistics and transition tables on small hand-made canonical hits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickstream.catalog import CATALOG_COLUMNS, page_stats, transition_counts, transition_matrix
from clickstream.errors import ClickstreamError
from clickstream.schema import CANONICAL_COLUMNS, ENTRY, EXIT, coerce_raw_hits, validate_hits

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def canonical(
    sessions: Sequence[Sequence[str]],
    *,
    revenue: Sequence[Sequence[float]] | None = None,
    time_on_page: Sequence[Sequence[float]] | None = None,
    groups: dict[str, str] | None = None,
) -> pd.DataFrame:
    """A valid canonical hits table: session ``i`` is ``s<i>`` starting ``i`` hours after T0.

    Args:
        sessions: Pages of each session in step order.
        revenue: Revenue per step (a transaction where > 0); default 0.
        time_on_page: Seconds per step (NaN = unknown); default 10 s, NaN on the last page.
        groups: Page group of each page; default the page's first letter, lowercased.
    """
    rows = []
    for i, pages in enumerate(sessions):
        for step, page in enumerate(pages):
            rev = float(revenue[i][step]) if revenue is not None else 0.0
            top = (
                float(time_on_page[i][step])
                if time_on_page is not None
                else (np.nan if step == len(pages) - 1 else 10.0)
            )
            rows.append(
                {
                    "session_id": f"s{i}",
                    "visitor_id": f"v{i}",
                    "session_start": T0 + pd.Timedelta(hours=i),
                    "step": step,
                    "page_raw": page,
                    "page_title": None,
                    "content_group": None,
                    "hit_time": T0 + pd.Timedelta(hours=i, seconds=10 * step),
                    "time_on_page_s": top,
                    "revenue": rev,
                    "is_transaction": rev > 0,
                    "page": page,
                    "page_group": (groups or {}).get(page, page[:1].lower()),
                    "split": "train",
                }
            )
    df = coerce_raw_hits(pd.DataFrame(rows))
    for col in ("page", "page_group", "split"):
        df[col] = pd.Series([r[col] for r in rows], dtype="str")
    df = df[list(CANONICAL_COLUMNS)]
    validate_hits(df, source="test fixture", canonical=True)
    return df


NAN = np.nan
SESSIONS = [
    ["A", "B", "C"],  # s0
    ["A"],  # s1: bounce on A
    ["B", "A", "B"],  # s2
    ["C"],  # s3: bounce on C
    ["A", "C"],  # s4
    ["B", "D"],  # s5: nobody enters on D
]
TIMES = [[10, 20, NAN], [NAN], [5, 7, NAN], [NAN], [3, NAN], [4, NAN]]
REVENUE = [[0, 0, 0], [0], [0, 0, 0], [0], [0, 30], [0, 12.5]]


@pytest.fixture
def hits() -> pd.DataFrame:
    return canonical(
        SESSIONS, time_on_page=TIMES, revenue=REVENUE, groups={"A": "g1", "B": "g1", "C": "g2"}
    )


def test_page_stats_hand_computed(hits: pd.DataFrame) -> None:
    stats = page_stats(hits)
    assert list(stats.columns) == list(CATALOG_COLUMNS)
    # A and B tie at 4 page views: the name breaks the tie; then C (3), D (1)
    assert stats["page"].tolist() == ["A", "B", "C", "D"]
    assert stats["page_id"].tolist() == [0, 1, 2, 3]
    s = stats.set_index("page")
    assert s["page_group"].to_dict() == {"A": "g1", "B": "g1", "C": "g2", "D": "d"}
    assert s["pageviews"].to_dict() == {"A": 4, "B": 4, "C": 3, "D": 1}
    assert s["unique_pageviews"].to_dict() == {"A": 4, "B": 3, "C": 3, "D": 1}
    assert s["entrances"].to_dict() == {"A": 3, "B": 2, "C": 1, "D": 0}
    assert s["exits"].to_dict() == {"A": 1, "B": 1, "C": 3, "D": 1}
    assert s["bounces"].to_dict() == {"A": 1, "B": 0, "C": 1, "D": 0}
    assert s["transactions"].to_dict() == {"A": 0, "B": 0, "C": 1, "D": 1}
    assert s["revenue"].to_dict() == {"A": 0.0, "B": 0.0, "C": 30.0, "D": 12.5}
    assert s["exit_rate"].to_dict() == pytest.approx({"A": 0.25, "B": 0.25, "C": 1.0, "D": 1.0})
    assert s.loc["A", "bounce_rate"] == pytest.approx(1 / 3)
    assert s.loc["B", "bounce_rate"] == 0.0
    assert s.loc["C", "bounce_rate"] == 1.0
    assert np.isnan(s.loc["D", "bounce_rate"])  # no entrances
    # mean over the views whose time is known: A 10, 7, 3; B 20, 5, 4; C and D never known
    assert s.loc["A", "avg_time_on_page_s"] == pytest.approx(20 / 3)
    assert s.loc["B", "avg_time_on_page_s"] == pytest.approx(29 / 3)
    assert np.isnan(s.loc["C", "avg_time_on_page_s"])
    assert np.isnan(s.loc["D", "avg_time_on_page_s"])
    assert stats["pageviews"].sum() == len(hits)
    assert stats["entrances"].sum() == stats["exits"].sum() == len(SESSIONS)


def test_group_stats(hits: pd.DataFrame) -> None:
    g = page_stats(hits, key="page_group")
    assert g["page"].tolist() == ["g1", "g2", "d"]  # g1 8 views, g2 3, d 1
    assert g["page_group"].tolist() == g["page"].tolist()
    s = g.set_index("page")
    assert s["pageviews"].to_dict() == {"g1": 8, "g2": 3, "d": 1}
    # s2 = B A B is one session: one unique page view of g1, and A->B is not an exit
    assert s["unique_pageviews"].to_dict() == {"g1": 5, "g2": 3, "d": 1}
    assert s["entrances"].to_dict() == {"g1": 5, "g2": 1, "d": 0}
    assert s["exits"].to_dict() == {"g1": 2, "g2": 3, "d": 1}
    assert s["bounces"].to_dict() == {"g1": 1, "g2": 1, "d": 0}


def test_page_ids_are_stable_under_row_order_of_sessions(hits: pd.DataFrame) -> None:
    reversed_sessions = canonical(SESSIONS[::-1], time_on_page=TIMES[::-1], revenue=REVENUE[::-1])
    a = page_stats(hits)[["page_id", "page", "pageviews"]]
    b = page_stats(reversed_sessions)[["page_id", "page", "pageviews"]]
    pd.testing.assert_frame_equal(a, b)


def test_page_stats_of_zero_rows_raises(hits: pd.DataFrame) -> None:
    with pytest.raises(ClickstreamError, match="zero page views"):
        page_stats(hits.iloc[:0])


EXPECTED_TRANSITIONS = [
    ("A", "B", 2),
    ("A", "C", 1),
    ("A", EXIT, 1),
    ("B", "A", 1),
    ("B", "C", 1),
    ("B", "D", 1),
    ("B", EXIT, 1),
    ("C", EXIT, 3),
    ("D", EXIT, 1),
    (ENTRY, "A", 3),
    (ENTRY, "B", 2),
    (ENTRY, "C", 1),
    (EXIT, EXIT, 0),
]


def test_transition_counts_hand_computed(hits: pd.DataFrame) -> None:
    t = transition_counts(hits)
    assert list(t.columns) == ["src", "dst", "count", "prob"]
    assert list(zip(t["src"], t["dst"], t["count"], strict=True)) == EXPECTED_TRANSITIONS
    prob = {(s, d): p for s, d, p in zip(t["src"], t["dst"], t["prob"], strict=True)}
    assert prob[("A", "B")] == pytest.approx(0.5)
    assert prob[("A", "C")] == prob[("A", EXIT)] == pytest.approx(0.25)
    assert prob[("B", "D")] == pytest.approx(0.25)
    assert prob[("C", EXIT)] == prob[("D", EXIT)] == 1.0
    assert prob[(ENTRY, "A")] == pytest.approx(0.5)
    assert prob[(ENTRY, "C")] == pytest.approx(1 / 6)
    assert prob[(EXIT, EXIT)] == 1.0
    sums = t.groupby("src")["prob"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-12)


def test_transition_counts_by_group(hits: pd.DataFrame) -> None:
    t = transition_counts(hits, key="page_group")
    counts = {(s, d): c for s, d, c in zip(t["src"], t["dst"], t["count"], strict=True)}
    assert counts == {
        ("g1", "g1"): 3,  # s0 A->B, s2 B->A, s2 A->B
        ("g1", "g2"): 2,  # s0 B->C, s4 A->C
        ("g1", "d"): 1,
        ("g1", EXIT): 2,
        ("g2", EXIT): 3,
        ("d", EXIT): 1,
        (ENTRY, "g1"): 5,
        (ENTRY, "g2"): 1,
        (EXIT, EXIT): 0,
    }


sessions_strategy = st.lists(
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=8),
    min_size=1,
    max_size=25,
)


@settings(max_examples=100, deadline=None)
@given(sessions=sessions_strategy)
def test_transition_counts_rows_are_distributions(sessions: list[list[str]]) -> None:
    t = transition_counts(canonical(sessions))
    sums = t.groupby("src")["prob"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=0, atol=1e-12)
    per_src = t.groupby("src")["count"].sum().to_dict()
    visits = Counter(p for s in sessions for p in s)
    assert per_src == {**visits, ENTRY: len(sessions), EXIT: 0}
    assert (t["count"] > 0).sum() == len(t) - 1  # only EXIT -> EXIT has count 0
    assert not t.duplicated(["src", "dst"]).any()
    assert ENTRY not in set(t["dst"])
    exit_out = t[t["src"] == EXIT]
    assert exit_out[["dst", "count", "prob"]].values.tolist() == [[EXIT, 0, 1.0]]


def test_transition_matrix_hand_computed(hits: pd.DataFrame) -> None:
    pages = page_stats(hits)["page"]  # A, B, C, D
    entry, m = transition_matrix(hits, pages)
    assert entry.shape == (4,)
    assert m.shape == (4, 5)
    np.testing.assert_allclose(entry, [3 / 6, 2 / 6, 1 / 6, 0])
    np.testing.assert_allclose(
        m,
        [
            [0, 2 / 4, 1 / 4, 0, 1 / 4],
            [1 / 4, 0, 1 / 4, 1 / 4, 1 / 4],
            [0, 0, 0, 0, 1],
            [0, 0, 0, 0, 1],
        ],
    )


def test_transition_matrix_smoothing(hits: pd.DataFrame) -> None:
    entry, m = transition_matrix(hits, ["A", "B", "C", "D"], smoothing=1.0)
    np.testing.assert_allclose(m[0], np.array([1, 3, 2, 1, 2]) / 9)
    np.testing.assert_allclose(m[3], np.array([1, 1, 1, 1, 2]) / 6)
    np.testing.assert_allclose(entry, np.array([4, 3, 2, 1]) / 10)
    assert (m > 0).all()
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_transition_matrix_unseen_rows_are_uniform(hits: pd.DataFrame, smoothing: float) -> None:
    vocab = ["A", "B", "C", "D", "E", "F"]  # E and F never appear
    entry, m = transition_matrix(hits, vocab, smoothing=smoothing)
    assert m.shape == (6, 7)
    np.testing.assert_allclose(m[4], np.full(7, 1 / 7))
    np.testing.assert_allclose(m[5], np.full(7, 1 / 7))
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(entry.sum(), 1.0, atol=1e-12)
    if smoothing == 0:
        assert entry[4] == entry[5] == 0.0


@settings(max_examples=50, deadline=None)
@given(sessions=sessions_strategy, smoothing=st.sampled_from([0.0, 0.1, 1.0]))
def test_transition_matrix_rows_sum_to_one(sessions: list[list[str]], smoothing: float) -> None:
    hits = canonical(sessions)
    vocab = ["a", "b", "c", "d", "e", "z"]
    entry, m = transition_matrix(hits, vocab, smoothing=smoothing)
    assert m.shape == (6, 7)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(entry.sum(), 1.0, rtol=0, atol=1e-12)
    assert (m >= 0).all() and (entry >= 0).all()
    if smoothing == 0:
        # seen rows equal the transition_counts probabilities
        t = transition_counts(hits)
        for s, d, p in zip(t["src"], t["dst"], t["prob"], strict=True):
            if s in (ENTRY, EXIT):
                continue
            j = len(vocab) if d == EXIT else vocab.index(d)
            assert m[vocab.index(s), j] == pytest.approx(p, abs=1e-12)


def test_transition_matrix_unknown_page_raises(hits: pd.DataFrame) -> None:
    with pytest.raises(ClickstreamError, match="'D' is not in the vocabulary"):
        transition_matrix(hits, ["A", "B", "C"])


@pytest.mark.parametrize("fn", ["counts", "matrix"])
def test_transitions_of_zero_rows_raise_clickstream_error(hits: pd.DataFrame, fn: str) -> None:
    empty = hits.iloc[:0]
    with pytest.raises(ClickstreamError):
        if fn == "counts":
            transition_counts(empty)
        else:
            transition_matrix(empty, ["A", "B", "C", "D"])


def test_page_named_like_a_special_token_is_rejected_by_name() -> None:
    # validation of canonical hits refuses the reserved names ...
    with pytest.raises(ClickstreamError, match="'EXIT' is reserved"):
        canonical([["EXIT", "A"]])
    # ... and so do the transition builders, for tables that skipped validation
    hits = canonical([["X", "A"]])
    hits["page"] = hits["page"].replace({"X": ENTRY})
    with pytest.raises(ClickstreamError, match="'ENTRY' is reserved"):
        transition_counts(hits)
    with pytest.raises(ClickstreamError, match="'EXIT' is reserved"):
        transition_matrix(hits, ["A", EXIT])


def test_all_hits_lists_pages_the_described_hits_never_viewed(hits: pd.DataFrame) -> None:
    # statistics of s0..s3 only (a split), vocabulary of every session: D (viewed in s5 only)
    # and its group are listed with no views, page value 0 and unknown time and rates
    part = hits[hits["session_id"].isin(["s0", "s1", "s2", "s3"])]
    stats = page_stats(part, all_hits=hits)
    assert list(stats.columns) == list(CATALOG_COLUMNS)
    assert stats["page"].tolist() == ["A", "B", "C", "D"]  # by traffic, the unseen last
    assert stats["page_id"].tolist() == [0, 1, 2, 3]
    d = stats.set_index("page").loc["D"]
    assert d["page_group"] == "d"
    for column in ("pageviews", "unique_pageviews", "entrances", "exits", "bounces"):
        assert d[column] == 0
    assert d["transactions"] == 0 and d["revenue"] == 0.0 and d["page_value"] == 0.0
    for column in ("value", "avg_time_on_page_s", "exit_rate", "bounce_rate"):
        assert np.isnan(d[column])
    # the seen pages' statistics are those of the part alone
    alone = page_stats(part).set_index("page")
    pd.testing.assert_frame_equal(stats.set_index("page").loc[["A", "B", "C"]], alone)
    assert stats.dtypes.to_dict() == alone.reset_index()[list(CATALOG_COLUMNS)].dtypes.to_dict()
    groups = page_stats(part, "page_group", all_hits=hits).set_index("page")
    assert groups.loc["d", "pageviews"] == 0 and groups.loc["d", "page_value"] == 0.0
