"""GA4 export loader on small hand-made events, as NDJSON and as Parquet, and bad input."""

from __future__ import annotations

import gzip
import json
import math
from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from clickstream import ga4
from clickstream.errors import ClickstreamError

T0 = 1_600_000_000_000_000  # microseconds since the epoch (2020-09-13 12:26:40 UTC)
S = 1_000_000  # one second in microseconds
URL = "https://shop.example.com"


def param(key: str, value: str | int | None) -> dict:
    """One ``event_params`` record, with all four value fields as BigQuery writes them."""
    return {
        "key": key,
        "value": {
            "string_value": value if isinstance(value, str) else None,
            "int_value": value if isinstance(value, int) else None,
            "float_value": None,
            "double_value": None,
        },
    }


def event(
    name: str,
    user: str | None,
    session: int | None,
    ts: int,
    *,
    page: str | None = None,
    revenue: float | None = None,
    extra: dict[str, str] | None = None,
) -> dict:
    params = [param("ga_session_number", 1)]
    if session is not None:
        params.append(param("ga_session_id", session))
    if page is not None:
        params.append(param("page_location", URL + page))
        params.append(param("page_title", page.strip("/").title() or "Home"))
    for key, value in (extra or {}).items():
        params.append(param(key, value))
    return {
        "event_date": "20200913",
        "event_timestamp": ts,
        "event_name": name,
        "event_params": params,
        "user_pseudo_id": user,
        "ecommerce": {"purchase_revenue_in_usd": revenue, "transaction_id": None},
    }


EVENTS = [
    # u1-111: home, (page view without a page), apparel, scroll, basket, two purchases, thanks
    event("session_start", "u1", 111, T0),
    event("page_view", "u1", 111, T0 + 1 * S, page="/home"),
    event("page_view", "u1", 111, T0 + 2 * S),
    event("page_view", "u1", 111, T0 + 5 * S, page="/apparel"),
    event("scroll", "u1", 111, T0 + 6 * S),
    event("page_view", "u1", 111, T0 + 11_500_000, page="/basket"),
    event("purchase", "u1", 111, T0 + 11_500_000, revenue=20.0),  # same microsecond: basket
    event("purchase", "u1", 111, T0 + 30 * S, revenue=5.5),  # adds up on basket
    event("page_view", "u1", 111, T0 + 70 * S, page="/thanks"),
    # u2-222 starts earlier, with a purchase before any page view (cannot be placed), then a
    # bounce with a purchase that carries no revenue value (a 0 USD transaction)
    event("purchase", "u2", 222, T0 - 100 * S, revenue=99.0),
    event("page_view", "u2", 222, T0 - 90 * S, page="/home"),
    event("purchase", "u2", 222, T0 - 80 * S, revenue=None),
    # u3-333: a purchase in a session without page views
    event("purchase", "u3", 333, T0 + 200 * S, revenue=12.0),
    # no ga_session_id: belong to no session
    event("page_view", "u4", None, T0 + 300 * S, page="/home"),
    event("purchase", "u4", None, T0 + 301 * S, revenue=7.0),
]


def write_ndjson(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def to_parquet(src: Path, dst: Path) -> Path:
    duckdb.sql(
        f"COPY (SELECT * FROM read_json('{src}', format='newline_delimited', sample_size=-1)) "
        f"TO '{dst}' (FORMAT parquet)"
    )
    return dst


def int64_as_strings(obj: object) -> object:
    """BigQuery's NDJSON export writes INT64 values as JSON strings."""
    if isinstance(obj, dict):
        return {k: int64_as_strings(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [int64_as_strings(v) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool):
        return str(obj)
    return obj


@pytest.fixture
def export_json(tmp_path: Path) -> Path:
    return write_ndjson(tmp_path / "events_20200913.json", EVENTS)


@pytest.fixture
def loaded(export_json: Path) -> ga4.LoadResult:
    return ga4.load(export_json, show_progress=False)


def test_page_views_sessions_and_time_on_page(loaded: ga4.LoadResult) -> None:
    hits = loaded.hits
    assert hits["session_id"].tolist() == ["u2-222"] + ["u1-111"] * 4  # ordered by start
    assert hits["visitor_id"].tolist() == ["u2"] + ["u1"] * 4
    assert hits["step"].tolist() == [0, 0, 1, 2, 3]
    assert hits["page_raw"].tolist() == [
        URL + p for p in ("/home", "/home", "/apparel", "/basket", "/thanks")
    ]
    assert hits["page_title"].tolist()[1:] == ["Home", "Apparel", "Basket", "Thanks"]
    # the gap to the next *page view* (GA): the scroll does not count; the page view without a
    # page at T0 + 2 s does (dropped only after: /home's time runs to it, 1 s, not to /apparel)
    np.testing.assert_allclose(hits["time_on_page_s"].to_numpy()[1:4], [1.0, 6.5, 58.5])
    assert np.isnan(hits["time_on_page_s"].iloc[0]) and np.isnan(hits["time_on_page_s"].iloc[4])
    # a session starts with its first event of any kind (session_start; a purchase for u2)
    assert hits["session_start"].iloc[1] == pd.Timestamp(T0, unit="us", tz="UTC")
    assert hits["session_start"].iloc[0] == pd.Timestamp(T0 - 100 * S, unit="us", tz="UTC")
    assert hits["hit_time"].iloc[3] == pd.Timestamp(T0 + 11_500_000, unit="us", tz="UTC")
    assert hits["content_group"].isna().all()


def test_revenue_goes_to_the_last_page_view_at_or_before_the_purchase(
    loaded: ga4.LoadResult,
) -> None:
    hits = loaded.hits
    assert hits["revenue"].tolist() == [0.0, 0.0, 0.0, 25.5, 0.0]
    # u2's purchase without a revenue value is still a transaction, of 0 USD
    assert hits["is_transaction"].tolist() == [True, False, False, True, False]


def test_dropped_counts_and_info(loaded: ga4.LoadResult) -> None:
    assert loaded.dropped == {
        "page_views_without_session_id": 1,
        "purchases_without_session_id": 1,
        "page_views_without_page_location": 1,
        "purchases_without_page_view": 2,  # u2's first purchase and u3's
    }
    info = loaded.info
    assert info["source_events"] == 15
    assert info["source_page_views"] == 7
    assert info["source_purchases"] == 6
    assert info["source_purchase_revenue"] == pytest.approx(143.5)
    assert info["events_without_session_id"] == 2
    assert info["purchases_placed"] == 3
    assert info["purchases_without_revenue"] == 1
    assert info["purchase_revenue_placed"] == pytest.approx(25.5)
    assert info["purchase_revenue_without_page_view"] == pytest.approx(111.0)
    assert info["purchase_revenue_without_session_id"] == pytest.approx(7.0)
    assert info["sessions"] == 2
    assert info["raw_page_paths"] == 4


def test_parquet_and_ndjson_give_the_same_result(
    loaded: ga4.LoadResult, export_json: Path, tmp_path: Path
) -> None:
    parquet = to_parquet(export_json, tmp_path / "events_20200913.parquet")
    from_parquet = ga4.load(parquet, show_progress=False)
    pd.testing.assert_frame_equal(loaded.hits, from_parquet.hits)
    assert from_parquet.dropped == loaded.dropped and from_parquet.info == loaded.info


def test_bigquery_ndjson_with_int64_as_strings_gzipped(
    loaded: ga4.LoadResult, tmp_path: Path
) -> None:
    path = tmp_path / "events_20200913.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(int64_as_strings(e)) + "\n" for e in EVENTS)
    from_gz = ga4.load(path, show_progress=False)
    pd.testing.assert_frame_equal(loaded.hits, from_gz.hits)
    assert from_gz.info == loaded.info


def test_a_session_over_two_daily_files_is_one_session(
    loaded: ga4.LoadResult, tmp_path: Path
) -> None:
    # GA4 keeps ga_session_id past midnight; each day's table holds its part of the events
    write_ndjson(tmp_path / "events_20200913.json", EVENTS[:6])
    write_ndjson(tmp_path / "events_20200914.json", EVENTS[6:])
    result = ga4.load(str(tmp_path / "events_*.json"), show_progress=False)
    assert len(result.files) == 2
    pd.testing.assert_frame_equal(loaded.hits, result.hits)
    assert result.dropped == loaded.dropped and result.info == loaded.info


def test_flat_table_loads_directly(loaded: ga4.LoadResult, export_json: Path, tmp_path: Path):
    flat = ga4.flatten(export_json)
    assert list(flat.columns) == [*ga4.FLAT_COLUMNS, "content_group"]
    assert len(flat) == 13  # page views and purchases; session_start and scroll are gone
    flat.to_parquet(tmp_path / "flat.parquet")
    flat.to_csv(tmp_path / "flat.csv", index=False)
    for name in ("flat.parquet", "flat.csv"):
        via_flat = ga4.load(tmp_path / name, show_progress=False)
        pd.testing.assert_frame_equal(loaded.hits, via_flat.hits)
        assert via_flat.dropped == loaded.dropped
        assert via_flat.info["source_purchase_revenue"] == pytest.approx(143.5)


def test_hand_written_flat_csv_keeps_ids_exact(tmp_path: Path) -> None:
    path = tmp_path / "bigquery_result.csv"
    path.write_text(
        "session_id,visitor_id,session_start_us,event_timestamp,event_name,page_location,"
        "page_title,revenue\n"
        f"1234567890.1234567890-42,1234567890.1234567890,{T0},{T0},page_view,{URL}/a,A,\n"
        f"1234567890.1234567890-42,1234567890.1234567890,{T0},{T0 + 3 * S},page_view,{URL}/b,,\n"
        f"1234567890.1234567890-42,1234567890.1234567890,{T0},{T0 + 4 * S},purchase,,,10.25\n",
        encoding="utf-8",
    )
    hits = ga4.load(path, show_progress=False).hits
    # read as text: an id that looks like a decimal number keeps all its digits
    assert hits["visitor_id"].tolist() == ["1234567890.1234567890"] * 2
    assert hits["time_on_page_s"].iloc[0] == pytest.approx(3.0)
    assert hits["revenue"].tolist() == [0.0, 10.25]
    assert pd.isna(hits["page_title"].iloc[1])


def test_bigquery_sql_selects_the_flat_columns() -> None:
    text = resources.files("clickstream").joinpath("sql/ga4_bigquery.sql").read_text()
    for column in ga4.FLAT_COLUMNS:
        assert f"AS {column}" in text or f"  {column},\n" in text
    assert "_TABLE_SUFFIX BETWEEN" in text and "'ga_session_id'" in text


def test_page_field_picks_another_parameter(tmp_path: Path) -> None:
    events = [
        event("page_view", "u1", 1, T0, extra={"page_path": "/a"}),
        event("page_view", "u1", 1, T0 + S, extra={"page_path": "/b"}),
    ]
    path = write_ndjson(tmp_path / "events.json", events)
    hits = ga4.load(path, page_field="page_path", show_progress=False).hits
    assert hits["page_raw"].tolist() == ["/a", "/b"]
    with pytest.raises(ClickstreamError, match="no page views"):
        ga4.load(path, show_progress=False)  # no page_location parameter at all


# bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["event_params", "user_pseudo_id", "event_timestamp"])
def test_missing_column_is_named(tmp_path: Path, column: str) -> None:
    records = [{k: v for k, v in e.items() if k != column} for e in EVENTS]
    path = write_ndjson(tmp_path / "events.json", records)
    with pytest.raises(ClickstreamError, match=rf"events\.json, column '{column}'"):
        ga4.load(path, show_progress=False)


def test_missing_flat_column_is_named(export_json: Path, tmp_path: Path) -> None:
    ga4.flatten(export_json).drop(columns="session_start_us").to_parquet(tmp_path / "flat.parquet")
    with pytest.raises(ClickstreamError, match=r"flat\.parquet, column 'session_start_us'"):
        ga4.load(tmp_path / "flat.parquet", show_progress=False)


def test_neither_export_nor_flat_table(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "other.json", [{"a": 1}])
    with pytest.raises(ClickstreamError, match=r"other\.json, column 'session_id': neither"):
        ga4.load(path, show_progress=False)


def test_malformed_json_line_is_named(export_json: Path) -> None:
    lines = export_json.read_text().splitlines()
    lines.insert(2, '{"event_name": "page_view", "event_params": [')
    export_json.write_text("\n".join(lines) + "\n")
    with pytest.raises(ClickstreamError, match=r"events_20200913\.json, line 3: malformed JSON"):
        ga4.load(export_json, show_progress=False)


def test_line_without_an_object_is_named(export_json: Path) -> None:
    export_json.write_text(export_json.read_text() + "\n[1, 2]\n")
    with pytest.raises(ClickstreamError, match=r"events_20200913\.json, line 17: a line must"):
        ga4.load(export_json, show_progress=False)


def test_malformed_gzipped_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "events.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(EVENTS[0]) + "\n{oops\n")
    with pytest.raises(ClickstreamError, match=r"events\.json\.gz, line 2: malformed JSON"):
        ga4.load(path, show_progress=False)


def test_non_utf8_text_is_named(export_json: Path) -> None:
    export_json.write_bytes(export_json.read_bytes() + b'{"event_name": "caf\xe9"}\n')
    with pytest.raises(ClickstreamError, match=r"events_20200913\.json, line 16: not valid utf-8"):
        ga4.load(export_json, show_progress=False)


def test_empty_file_and_no_match(tmp_path: Path) -> None:
    empty = tmp_path / "events_empty.json"
    empty.write_bytes(b"")
    with pytest.raises(ClickstreamError, match=r"events_empty\.json: file is empty"):
        ga4.load(empty, show_progress=False)
    with pytest.raises(ClickstreamError, match="glob matches no files"):
        ga4.load(str(tmp_path / "nothing_*.parquet"), show_progress=False)


def test_negative_revenue_names_file_line_and_column(tmp_path: Path) -> None:
    events = [*EVENTS[:3], event("purchase", "u1", 111, T0 + 3 * S, revenue=-5.0)]
    path = write_ndjson(tmp_path / "neg.json", events)
    path.write_text("\n" + path.read_text())  # a blank first line: the line count still holds
    with pytest.raises(
        ClickstreamError,
        match=r"neg\.json, line 5, column 'ecommerce\.purchase_revenue_in_usd': purchase revenue",
    ):
        ga4.load(path, show_progress=False)


def test_nan_revenue_in_parquet_names_the_row(tmp_path: Path) -> None:
    events = [*EVENTS[:3], event("purchase", "u1", 111, T0 + 3 * S, revenue=math.nan)]
    parquet = to_parquet(write_ndjson(tmp_path / "nan.json", events), tmp_path / "nan.parquet")
    with pytest.raises(
        ClickstreamError, match=r"nan\.parquet, row 3, column 'ecommerce\.purchase_revenue_in_usd'"
    ):
        ga4.load(parquet, show_progress=False)


def test_negative_revenue_in_flat_csv_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    path.write_text(
        "session_id,visitor_id,session_start_us,event_timestamp,event_name,page_location,"
        "page_title,revenue\n"
        f"s-1,s,{T0},{T0},page_view,{URL}/a,A,\n"
        f"s-1,s,{T0},{T0 + S},purchase,,,-3\n",
        encoding="utf-8",
    )
    with pytest.raises(ClickstreamError, match=r"flat\.csv, line 3, column 'revenue'"):
        ga4.load(path, show_progress=False)


def test_export_without_page_views_is_an_error(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "events.json", [EVENTS[0], EVENTS[4], EVENTS[12]])
    with pytest.raises(
        ClickstreamError, match=r"events\.json: no page views: 3 events read, 0 of them page_view"
    ):
        ga4.load(path, show_progress=False)


# repeated events, blank pages, revenue bounds ---------------------------------------------


def test_repeated_events_are_counted_once(loaded: ga4.LoadResult, tmp_path: Path) -> None:
    """GA4 exports hold exact duplicate rows: page views and revenue must not count twice."""
    repeated = EVENTS[1:9]  # u1's 5 page views (one without a page), a scroll, 2 purchases
    path = write_ndjson(tmp_path / "events.json", [*EVENTS, *repeated])
    result = ga4.load(path, show_progress=False)
    pd.testing.assert_frame_equal(result.hits, loaded.hits)
    assert result.hits["revenue"].sum() == pytest.approx(25.5)
    assert result.dropped == {**loaded.dropped, "duplicate_events": 7}  # the scroll is neither
    info = result.info
    assert info["source_purchase_revenue"] == pytest.approx(143.5 + 25.5)
    assert info["purchase_revenue_duplicate"] == pytest.approx(25.5)
    assert info["purchase_revenue_placed"] == pytest.approx(25.5)
    assert any(
        "7 events repeat an earlier event in every field (5 page views, 2 purchases of 25.50" in n
        for n in result.notices
    )
    # the same events in a Parquet file beside the JSON one: read once as well
    folder = tmp_path / "both"
    folder.mkdir()
    to_parquet(write_ndjson(folder / "events_a.json", EVENTS), folder / "events_b.parquet")
    both = ga4.load(folder, show_progress=False)
    pd.testing.assert_frame_equal(both.hits, loaded.hits)
    assert both.dropped["duplicate_events"] == 13  # every page view and purchase
    assert both.info["purchase_revenue_duplicate"] == pytest.approx(143.5)


def test_events_at_one_microsecond_that_differ_are_kept(tmp_path: Path) -> None:
    events = [
        event("page_view", "u1", 1, T0, page="/a"),
        event("page_view", "u1", 1, T0, page="/a", extra={"page_referrer": "x"}),
        event("purchase", "u1", 1, T0 + S, revenue=5.0, extra={"transaction_id": "t1"}),
        event("purchase", "u1", 1, T0 + S, revenue=5.0, extra={"transaction_id": "t2"}),
    ]
    result = ga4.load(write_ndjson(tmp_path / "events.json", events), show_progress=False)
    assert len(result.hits) == 2 and "duplicate_events" not in result.dropped
    assert result.hits["revenue"].sum() == pytest.approx(10.0)


def test_blank_page_location_is_dropped_not_read_as_home(tmp_path: Path) -> None:
    blank = [event("page_view", "u1", 1, T0 + k * S, page="/x") for k in (1, 2)]
    for record, text in zip(blank, ["", "   "], strict=True):
        record["event_params"][2] = param("page_location", text)
    events = [event("page_view", "u1", 1, T0, page="/a"), *blank]
    result = ga4.load(write_ndjson(tmp_path / "events.json", events), show_progress=False)
    assert result.hits["page_raw"].tolist() == [URL + "/a"]
    assert result.dropped["page_views_without_page_location"] == 2
    assert any("2 page views without a page" in n for n in result.notices)
    flat = tmp_path / "flat.csv"
    flat.write_text(
        "session_id,visitor_id,session_start_us,event_timestamp,event_name,page_location,"
        "page_title,revenue\n"
        f"s-1,s,{T0},{T0},page_view,{URL}/a,A,\n"
        f"s-1,s,{T0},{T0 + S},page_view,  ,B,\n",
        encoding="utf-8",
    )
    from_flat = ga4.load(flat, show_progress=False)
    assert from_flat.hits["page_raw"].tolist() == [URL + "/a"]
    assert from_flat.dropped["page_views_without_page_location"] == 1


@pytest.mark.parametrize("value", ["Infinity", "-inf", "1e13"])
def test_infinite_or_absurd_revenue_names_the_file_line_and_column(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "flat.csv"
    path.write_text(
        "session_id,visitor_id,session_start_us,event_timestamp,event_name,page_location,"
        "page_title,revenue\n"
        f"s-1,s,{T0},{T0},page_view,{URL}/a,A,\n"
        f"s-1,s,{T0},{T0 + S},purchase,,,{value}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ClickstreamError,
        match=r"flat\.csv, line 3, column 'revenue': purchase revenue must be a finite number "
        r">= 0 and at most 1e\+12",
    ):
        ga4.load(path, show_progress=False)
    # in an export, revenue written as text ("Infinity") is named by its line too
    events = [*EVENTS[:3], event("purchase", "u1", 111, T0 + 3 * S)]
    events[-1]["ecommerce"]["purchase_revenue_in_usd"] = value
    export = write_ndjson(tmp_path / "events.json", events)
    with pytest.raises(
        ClickstreamError,
        match=r"events\.json, line 4, column 'ecommerce\.purchase_revenue_in_usd': purchase "
        r"revenue must be a finite number",
    ):
        ga4.load(export, show_progress=False)


def test_page_value_credits_the_page_view_a_purchase_followed(tmp_path: Path) -> None:
    # GA: a page viewed before the purchase is credited. u1 views /a, then /basket, then
    # purchases 100 USD (on /ordercompleted, not viewed); u2 views /basket only. The purchase
    # is booked on u1's /basket view, which came before it: /basket's page value is 100 / 2.
    from clickstream.catalog import page_stats

    events = [
        event("page_view", "u1", 1, T0, page="/a"),
        event("page_view", "u1", 1, T0 + 10 * S, page="/basket"),
        event("purchase", "u1", 1, T0 + 20 * S, revenue=100.0),
        event("page_view", "u2", 2, T0, page="/basket"),
    ]
    result = ga4.load(write_ndjson(tmp_path / "events.json", events), show_progress=False)
    hits = result.hits.assign(page=result.hits["page_raw"].str.removeprefix(URL), page_group="g")
    # what clickstream.prepare passes to the catalog
    timing = str(result.info.get("revenue_timing", "with_view"))
    stats = page_stats(hits, revenue_timing=timing).set_index("page")
    assert stats.loc["/basket", "page_value"] == pytest.approx(50.0)
    assert stats.loc["/a", "page_value"] == pytest.approx(100.0)
    assert timing == "after_view"
    assert stats.loc["/basket", "transactions"] == 1  # booked on the page view it followed


def test_page_view_without_a_page_ends_the_time_on_page_before_it(tmp_path: Path) -> None:
    # GA's time on page runs to the next page view, with a page or not: /a 10 s (not 100 s)
    blank = event("page_view", "u1", 1, T0 + 10 * S, page="/x")
    blank["event_params"][2] = param("page_location", "")
    events = [
        event("page_view", "u1", 1, T0, page="/a"),
        blank,
        event("page_view", "u1", 1, T0 + 100 * S, page="/b"),
        event("page_view", "u1", 1, T0 + 130 * S, page="/c"),
    ]
    result = ga4.load(write_ndjson(tmp_path / "events.json", events), show_progress=False)
    hits = result.hits
    assert hits["page_raw"].tolist() == [URL + p for p in ("/a", "/b", "/c")]
    assert hits["step"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(hits["time_on_page_s"].to_numpy()[:2], [10.0, 30.0])
    assert result.dropped["page_views_without_page_location"] == 1
    # /a -> /b went through the dropped view: counted and said, not passed off as direct
    assert result.info["transitions_across_dropped_page_views"] == 1
    said = [n for n in result.notices if "without a page" in n]
    assert len(said) == 1 and "1 transition between the page views around them" in said[0]
