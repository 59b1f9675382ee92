"""The GA4 event sample (../shared/data/ga4_events_sampled.parquet): known counts end to end.

The file is a random sample of single events, not whole sessions, so most purchases have no
page view of their session in it and cannot be placed; the counts below say so honestly.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from clickstream import ga4

pytestmark = pytest.mark.integration

# verified with plain DuckDB queries on the file
EVENTS = 24_219
PAGE_VIEWS = 7_498
PURCHASES = 624
PURCHASE_REVENUE = 41_529.0
SESSIONS_WITH_PAGE_VIEWS = 7_099
PLACED = 98
PLACED_REVENUE = 7_510.0


@pytest.fixture(scope="module")
def loaded(ga4_sample_path: Path) -> ga4.LoadResult:
    return ga4.load(ga4_sample_path, show_progress=False)


def test_known_counts(loaded: ga4.LoadResult) -> None:
    hits, info = loaded.hits, loaded.info
    assert info["source_events"] == EVENTS
    assert info["source_page_views"] == PAGE_VIEWS
    assert info["source_purchases"] == PURCHASES
    assert info["source_purchase_revenue"] == pytest.approx(PURCHASE_REVENUE, abs=1e-6)
    # every page view has a session id and a page_location: all of them are loaded
    assert len(hits) == PAGE_VIEWS
    assert hits["session_id"].nunique() == info["sessions"] == SESSIONS_WITH_PAGE_VIEWS
    assert info["events_without_session_id"] == 0
    assert loaded.dropped == {
        "page_views_without_session_id": 0,
        "purchases_without_session_id": 0,
        "page_views_without_page_location": 0,
        "purchases_without_page_view": PURCHASES - PLACED,  # 526: sampled events, not sessions
    }
    assert info["purchases_placed"] == PLACED
    assert hits["is_transaction"].sum() == PLACED  # no page view got two purchases here
    assert hits["revenue"].sum() == pytest.approx(PLACED_REVENUE, abs=1e-6)
    assert info["purchase_revenue_placed"] == pytest.approx(PLACED_REVENUE, abs=1e-6)
    placed_plus_dropped = (
        info["purchase_revenue_placed"]
        + info["purchase_revenue_without_page_view"]
        + info["purchase_revenue_without_session_id"]
    )
    assert placed_plus_dropped == pytest.approx(PURCHASE_REVENUE, abs=1e-6)
    # full URLs on three host names (3 of them http://), normalised later by clickstream.pages
    hosts = hits["page_raw"].str.extract(r"^(https?://[^/]+)/")[0].value_counts()
    assert hosts.to_dict() == {
        "https://shop.googlemerchandisestore.com": 6_894,
        "https://googlemerchandisestore.com": 374,
        "https://www.googlemerchandisestore.com": 227,
        "http://shop.googlemerchandisestore.com": 3,
    }


def test_sessions_are_well_formed(loaded: ga4.LoadResult) -> None:
    hits = loaded.hits
    assert (hits["session_start"] <= hits["hit_time"]).all()
    last = hits.groupby("session_id", sort=False)["step"].transform("max") == hits["step"]
    assert hits.loc[last, "time_on_page_s"].isna().all()
    top = hits.loc[~last, "time_on_page_s"].to_numpy()
    assert np.isfinite(top).all() and (top >= 0).all()
    assert (~last).sum() == PAGE_VIEWS - SESSIONS_WITH_PAGE_VIEWS


def test_revenue_placement_matches_an_asof_join(
    loaded: ga4.LoadResult, ga4_sample_path: Path
) -> None:
    # independent check: DuckDB's ASOF JOIN puts each purchase on the latest page view of its
    # session at or before it
    expected = duckdb.sql(
        f"""
        WITH e AS (
            SELECT user_pseudo_id || '-' ||
                   [p.value.int_value FOR p IN event_params IF p.key = 'ga_session_id'][1] AS sid,
                   event_timestamp AS t, event_name, ecommerce.purchase_revenue_in_usd AS rev
            FROM read_parquet('{ga4_sample_path}')
        ),
        pv AS (SELECT sid, t FROM e WHERE event_name = 'page_view'),
        pu AS (SELECT sid, t, rev FROM e WHERE event_name = 'purchase')
        SELECT pv.sid AS session_id, make_timestamp(pv.t) AS hit_time, sum(pu.rev) AS revenue
        FROM pu ASOF JOIN pv ON pu.sid = pv.sid AND pu.t >= pv.t
        GROUP BY ALL
        """
    ).df()
    got = loaded.hits.loc[loaded.hits["is_transaction"], ["session_id", "hit_time", "revenue"]]
    expected["hit_time"] = pd.to_datetime(expected["hit_time"]).dt.tz_localize("UTC")
    merged = got.merge(expected, on=["session_id", "hit_time"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all() and len(merged) == PLACED
    np.testing.assert_allclose(merged["revenue_x"], merged["revenue_y"])


def test_ndjson_and_flat_copies_load_to_the_same_table(
    loaded: ga4.LoadResult, ga4_sample_path: Path, tmp_path: Path
) -> None:
    ndjson = tmp_path / "events_sampled.json"
    duckdb.sql(
        f"COPY (SELECT * FROM read_parquet('{ga4_sample_path}')) TO '{ndjson}' (FORMAT json)"
    )
    from_json = ga4.load(ndjson, show_progress=False)
    pd.testing.assert_frame_equal(from_json.hits, loaded.hits)
    assert from_json.info == loaded.info and from_json.dropped == loaded.dropped
    flat = tmp_path / "flat.parquet"
    ga4.flatten(ga4_sample_path).to_parquet(flat)
    from_flat = ga4.load(flat, show_progress=False)
    pd.testing.assert_frame_equal(from_flat.hits, loaded.hits)
    assert from_flat.dropped == loaded.dropped
    assert from_flat.info["source_events"] == PAGE_VIEWS + PURCHASES  # only those rows
