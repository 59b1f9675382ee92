"""Page value by Google Analytics' definition, on a hand-made fixture worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clickstream.catalog import page_stats

# (page, revenue on this hit) per session, in step order.
SESSIONS = {
    "s1": [("A", 0), ("B", 0), ("C", 100), ("D", 0)],
    "s2": [("A", 0), ("C", 0), ("A", 50), ("B", 0)],
    "s3": [("B", 0), ("B", 0)],
    "s4": [("A", 30)],
    "s5": [("C", 0), ("A", 20), ("C", 10)],
}
# Credits: a transaction's revenue goes once to each distinct page viewed *before* it.
#   s1: tx 100 at step 2 -> A, B get 100 (C only on the transaction hit, D after it)
#   s2: tx 50 at step 2  -> A, C get 50 (A counted once although viewed twice; B after)
#   s3: no transaction
#   s4: tx 30 at step 0  -> nothing was viewed before it
#   s5: tx 20 at step 1  -> C gets 20; tx 10 at step 2 -> C and A get 10 each
# Credited revenue: A 100 + 50 + 10 = 160;  B 100;  C 50 + 20 + 10 = 80;  D 0
# Unique pageviews (sessions viewing the page): A 4 (s1 s2 s4 s5), B 3, C 3, D 1
EXPECTED_PAGE_VALUE = {"A": 160 / 4, "B": 100 / 3, "C": 80 / 3, "D": 0.0}


def make_hits(sessions: dict[str, list[tuple[str, float]]], group: dict[str, str]) -> pd.DataFrame:
    rows = []
    for i, (sid, views) in enumerate(sessions.items()):
        for step, (page, revenue) in enumerate(views):
            rows.append(
                {
                    "session_id": sid,
                    "step": step,
                    "page": page,
                    "page_group": group[page],
                    "revenue": float(revenue),
                    "is_transaction": revenue > 0,
                    "time_on_page_s": np.nan if step == len(views) - 1 else 10.0 * (i + 1),
                    "session_start": pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=i),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def hits() -> pd.DataFrame:
    return make_hits(SESSIONS, {"A": "g1", "B": "g1", "C": "g2", "D": "g2"})


def test_page_value_matches_hand_computation(hits: pd.DataFrame) -> None:
    stats = page_stats(hits).set_index("page")
    for page, value in EXPECTED_PAGE_VALUE.items():
        assert stats.loc[page, "page_value"] == pytest.approx(value, rel=1e-12)
    assert stats["unique_pageviews"].to_dict() == {"A": 4, "B": 3, "C": 3, "D": 1}
    assert stats["pageviews"].to_dict() == {"A": 5, "B": 4, "C": 4, "D": 1}
    # revenue recorded on the page itself, and transactions
    assert stats["revenue"].to_dict() == {"A": 100.0, "B": 0.0, "C": 110.0, "D": 0.0}
    assert stats["transactions"].to_dict() == {"A": 3, "B": 0, "C": 2, "D": 0}  # s2 s4 s5; s1 s5


def test_group_value_credits_each_group_once_per_transaction(hits: pd.DataFrame) -> None:
    # Groups: g1 = {A, B}, g2 = {C, D}
    #   s1: tx 100 at step 2 -> g1 gets 100;  s2: tx 50 at step 2 -> g1, g2 get 50
    #   s4: nothing before;  s5: tx 20 -> g2 gets 20; tx 10 -> g2, g1 get 10
    # g1: 100 + 50 + 10 = 160 over 5 sessions (s1..s5 all view A or B) = 32
    # g2: 50 + 20 + 10 = 80 over 3 sessions (s1, s2, s5) = 26.67
    stats = page_stats(hits, key="page_group").set_index("page")
    assert stats.loc["g1", "page_value"] == pytest.approx(160 / 5)
    assert stats.loc["g2", "page_value"] == pytest.approx(80 / 3)


def test_rates_and_time_on_page(hits: pd.DataFrame) -> None:
    stats = page_stats(hits).set_index("page")
    # exits: s1 D, s2 B, s3 B, s4 A, s5 C; entrances: A (s1 s2 s4), B (s3), C (s5)
    assert stats["exits"].to_dict() == {"A": 1, "B": 2, "C": 1, "D": 1}
    assert stats.loc["B", "exit_rate"] == pytest.approx(2 / 4)
    assert stats["entrances"].to_dict() == {"A": 3, "B": 1, "C": 1, "D": 0}
    assert stats.loc["A", "bounce_rate"] == pytest.approx(1 / 3)  # s4 bounced
    assert np.isnan(stats.loc["D", "bounce_rate"])
    # A's known times: s1 10, s2 20, 20 (s2 step 2), s5 50; s4's single view is unknown
    assert stats.loc["A", "avg_time_on_page_s"] == pytest.approx((10 + 20 + 20 + 50) / 4)
    # ids by traffic, ties by name: A 5, B 4, C 4, D 1
    assert stats["page_id"].to_dict() == {"A": 0, "B": 1, "C": 2, "D": 3}


# GA4 (revenue_timing="after_view"): the same rows, but a row's revenue is a purchase that
# *followed* the view it is booked on, so that page was viewed before it and is credited too.
#   s1: 100 after C (step 2) -> A, B, C get 100 (D after it)
#   s2: 50 after A (step 2)  -> A, C get 50 (B after it)
#   s4: 30 after A (step 0)  -> A gets 30 (with_view: nothing)
#   s5: 20 after A (step 1)  -> C, A get 20; 10 after C (step 2) -> C, A get 10
# Credited revenue: A 100 + 50 + 30 + 30 = 210;  B 100;  C 100 + 50 + 30 = 180;  D 0
EXPECTED_AFTER_VIEW = {"A": 210 / 4, "B": 100 / 3, "C": 180 / 3, "D": 0.0}


def test_page_value_after_view_credits_the_page_the_purchase_is_booked_on(
    hits: pd.DataFrame,
) -> None:
    stats = page_stats(hits, revenue_timing="after_view").set_index("page")
    for page, value in EXPECTED_AFTER_VIEW.items():
        assert stats.loc[page, "page_value"] == pytest.approx(value, rel=1e-12)
    # counts and the revenue booked on each page do not depend on the timing
    plain = page_stats(hits).set_index("page")
    for column in ("pageviews", "unique_pageviews", "transactions", "revenue", "exits"):
        assert stats[column].to_dict() == plain[column].to_dict()
    # groups: g1 = {A, B} 100 + 50 + 30 + 30 over 5 sessions; g2 = {C, D} 100 + 50 + 30 over 3
    groups = page_stats(hits, key="page_group", revenue_timing="after_view").set_index("page")
    assert groups.loc["g1", "page_value"] == pytest.approx(210 / 5)
    assert groups.loc["g2", "page_value"] == pytest.approx(180 / 3)


def test_unknown_revenue_timing_is_refused(hits: pd.DataFrame) -> None:
    from clickstream.errors import ConfigError

    with pytest.raises(ConfigError, match="revenue_timing"):
        page_stats(hits, revenue_timing="before")
