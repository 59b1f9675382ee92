"""GA360 export loader on a small hand-made export, as NDJSON and as Parquet, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from clickstream import ga360
from clickstream.errors import ClickstreamError


def hit(
    number: int, time_ms: int, path: str, *, kind: str = "PAGE", revenue: int | None = None
) -> dict:
    return {
        "hitNumber": number,
        "time": time_ms,
        "type": kind,
        "page": {"pagePath": path, "pageTitle": path.strip("/").title() or "Home"},
        "transaction": {"transactionRevenue": revenue},
        "contentGroup": {
            "contentGroup1": "(not set)",
            "contentGroup2": "Apparel" if "apparel" in path else "(not set)",
            "contentGroup3": None,
            "contentGroup4": None,
            "contentGroup5": None,
        },
    }


def session(visitor: str, visit_id: int, start: int, hits: list[dict], revenue: int | None) -> dict:
    return {
        "fullVisitorId": visitor,
        "visitId": visit_id,
        "visitStartTime": start,
        "totals": {"transactions": 1 if revenue else None, "totalTransactionRevenue": revenue},
        "hits": hits,
    }


SESSIONS = [
    # v1: home -> apparel (event on apparel) -> basket -> ordercompleted with 25.50 USD
    session(
        "v1",
        100,
        1_500_000_000,
        [
            hit(1, 0, "/home"),
            hit(2, 4_000, "/google+redesign/apparel"),
            hit(3, 5_000, "/google+redesign/apparel", kind="EVENT"),
            hit(4, 10_500, "/basket.html"),
            hit(5, 70_500, "/ordercompleted.html", revenue=25_500_000),
        ],
        25_500_000,
    ),
    # v2: a bounce, starting earlier than v1
    session("v2", 200, 1_499_999_000, [hit(1, 0, "/home")], None),
    # v3: only an EVENT hit: a session without page views
    session("v3", 300, 1_500_000_500, [hit(1, 0, "/home", kind="EVENT")], None),
]


def write_ndjson(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def ndjson_to_parquet(src: Path, dst: Path) -> Path:
    duckdb.sql(
        f"COPY (SELECT * FROM read_json('{src}', format='newline_delimited')) TO '{dst}' (FORMAT parquet)"
    )
    return dst


@pytest.fixture
def export_json(tmp_path: Path) -> Path:
    return write_ndjson(tmp_path / "ga_sessions_20240101.json", SESSIONS)


def test_loads_page_views_only_with_times_and_revenue(export_json: Path) -> None:
    result = ga360.load(export_json, show_progress=False)
    hits = result.hits
    assert hits["session_id"].tolist() == ["v2-200"] + ["v1-100"] * 4  # ordered by start
    assert hits["step"].tolist() == [0, 0, 1, 2, 3]
    assert hits["page_raw"].tolist()[1:] == [
        "/home",
        "/google+redesign/apparel",
        "/basket.html",
        "/ordercompleted.html",
    ]
    # time on page is the gap to the next *page view* (the EVENT hit does not cut it short)
    np.testing.assert_allclose(hits["time_on_page_s"].to_numpy()[1:4], [4.0, 6.5, 60.0])
    assert np.isnan(hits["time_on_page_s"].iloc[0]) and np.isnan(hits["time_on_page_s"].iloc[4])
    assert hits["revenue"].tolist() == [0, 0, 0, 0, 25.5]
    assert hits["is_transaction"].tolist() == [False, False, False, False, True]
    assert hits["content_group"].iloc[2] == "Apparel" and pd.isna(hits["content_group"].iloc[1])
    assert hits["session_start"].iloc[1] == pd.Timestamp(1_500_000_000, unit="s", tz="UTC")
    assert result.dropped["sessions_without_page_views"] == 1
    assert result.info["source_event_hits"] == 2
    assert result.info["totals_transaction_revenue"] == pytest.approx(25.5)


def test_parquet_and_ndjson_give_the_same_table(export_json: Path, tmp_path: Path) -> None:
    parquet = ndjson_to_parquet(export_json, tmp_path / "ga_sessions_20240101.parquet")
    from_json = ga360.load(export_json, show_progress=False).hits
    from_parquet = ga360.load(parquet, show_progress=False).hits
    pd.testing.assert_frame_equal(from_json, from_parquet)


def test_glob_of_daily_files_keeps_midnight_split_sessions_apart(tmp_path: Path) -> None:
    day1 = [SESSIONS[0]]
    # GA360 writes the part of v1-100 after midnight to the next day's table, same visitId
    day2 = [session("v1", 100, 1_500_000_000, [hit(1, 90_000, "/home")], None), SESSIONS[1]]
    write_ndjson(tmp_path / "ga_sessions_20240101.json", day1)
    write_ndjson(tmp_path / "ga_sessions_20240102.json", day2)
    result = ga360.load(str(tmp_path / "ga_sessions_*.json"), show_progress=False)
    assert len(result.files) == 2
    assert result.hits["session_id"].nunique() == 3
    assert result.info["sessions_split_across_files"] == 1
    assert len(result.hits) == 6


def test_flat_table_from_the_bigquery_sql_loads_directly(export_json: Path, tmp_path: Path) -> None:
    flat = duckdb.sql(
        ga360.flatten_sql(f"read_json('{export_json}', format='newline_delimited')")
    ).df()
    flat_path = tmp_path / "flat.parquet"
    flat.to_parquet(flat_path)
    direct = ga360.load(export_json, show_progress=False).hits
    via_flat = ga360.load(flat_path, show_progress=False).hits
    pd.testing.assert_frame_equal(direct, via_flat)


def test_bigquery_sql_selects_the_same_columns() -> None:
    from importlib import resources

    text = resources.files("clickstream").joinpath("sql/ga360_flatten_bigquery.sql").read_text()
    for column in ga360.FLAT_COLUMNS:
        assert f"AS {column}" in text


def test_malformed_json_line_is_named(export_json: Path) -> None:
    lines = export_json.read_text().splitlines()
    lines.insert(1, '{"fullVisitorId": "x", "hits": [')
    export_json.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ClickstreamError, match=r"ga_sessions_20240101\.json, line 2: malformed JSON"
    ):
        ga360.load(export_json, show_progress=False)


def test_missing_column_is_named(tmp_path: Path) -> None:
    records = [{k: v for k, v in s.items() if k != "visitStartTime"} for s in SESSIONS]
    path = write_ndjson(tmp_path / "export.json", records)
    with pytest.raises(ClickstreamError, match=r"export\.json, column 'visitStartTime'"):
        ga360.load(path, show_progress=False)


def test_empty_file_and_no_match(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(ClickstreamError, match=r"empty\.json: file is empty"):
        ga360.load(empty, show_progress=False)
    with pytest.raises(ClickstreamError, match="glob matches no files"):
        ga360.load(str(tmp_path / "nothing_*.parquet"), show_progress=False)


def test_non_utf8_text_is_named(export_json: Path) -> None:
    export_json.write_bytes(export_json.read_bytes() + b'{"fullVisitorId": "caf\xe9"}\n')
    with pytest.raises(ClickstreamError, match=r"line 4: not valid utf-8"):
        ga360.load(export_json, show_progress=False)


def test_negative_revenue_is_rejected(tmp_path: Path) -> None:
    bad = [session("v9", 9, 1_500_000_000, [hit(1, 0, "/x", revenue=-5_000_000)], None)]
    path = write_ndjson(tmp_path / "neg.json", bad)
    with pytest.raises(
        ClickstreamError, match=r"neg\.json, column 'hits\.transaction\.transactionRevenue'"
    ):
        ga360.load(path, show_progress=False)


def test_export_without_page_views_is_an_error(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "events.json", [SESSIONS[2]])
    with pytest.raises(ClickstreamError, match="no page views"):
        ga360.load(path, show_progress=False)


def test_out_of_core_load_equals_the_in_memory_load(export_json: Path, tmp_path: Path) -> None:
    """memory_limit: flattened by DuckDB held to that memory, then the flat table loaded."""
    spill = tmp_path / "spill"
    spill.mkdir()
    direct = ga360.load(export_json, show_progress=False)
    out_of_core = ga360.load(export_json, show_progress=False, memory_limit="96MB", temp_dir=spill)
    pd.testing.assert_frame_equal(out_of_core.hits, direct.hits)
    assert out_of_core.dropped == direct.dropped
    assert out_of_core.info.pop("out_of_core_memory_limit") == "96MB"
    assert out_of_core.info == direct.info
    assert out_of_core.files == direct.files
    assert list(spill.iterdir()) == []  # its temporary folder is gone


def test_out_of_core_in_pieces_keeps_sessions_split_across_files_apart(tmp_path: Path) -> None:
    day1 = [SESSIONS[0], SESSIONS[2]]
    day2 = [session("v1", 100, 1_500_000_000, [hit(1, 90_000, "/home")], None), SESSIONS[1]]
    write_ndjson(tmp_path / "ga_sessions_20240101.json", day1)
    write_ndjson(tmp_path / "ga_sessions_20240102.json", day2)
    files = str(tmp_path / "ga_sessions_*.json")
    # pieces of one line each: every session flattened on its own, joined per input file
    counts = ga360.flatten_out_of_core(
        files, tmp_path / "flat", memory_limit="96MB", chunk_bytes=10, show_progress=False
    )
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert (counts["page_views"], counts["sessions"], counts["source_sessions"]) == (6, 2, 4)
    assert (counts["transactions"], counts["revenue"]) == (1, pytest.approx(25.5))
    assert counts["source_event_hits"] == 2 and counts["page_paths"] == 4
    direct = ga360.load(files, show_progress=False)
    via_flat = ga360.load(tmp_path / "flat", show_progress=False)
    pd.testing.assert_frame_equal(via_flat.hits, direct.hits)
    assert via_flat.info["sessions_split_across_files"] == 1


def test_out_of_core_refuses_an_array_document_and_an_existing_folder(tmp_path: Path) -> None:
    array = tmp_path / "export.json"
    array.write_text(json.dumps(SESSIONS), encoding="utf-8")
    with pytest.raises(ClickstreamError, match=r"export\.json: a JSON array document cannot"):
        ga360.flatten_out_of_core(array, tmp_path / "flat", show_progress=False)
    assert not (tmp_path / "flat").exists()
    lines = write_ndjson(tmp_path / "lines.json", SESSIONS)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ClickstreamError, match=r"taken: the output folder exists already"):
        ga360.flatten_out_of_core(lines, tmp_path / "taken", show_progress=False)


# repeated, overlapping and disordered records ----------------------------------------------


def test_a_repeated_session_record_is_read_once(export_json: Path, tmp_path: Path) -> None:
    """BigQuery exports occasionally hold a record twice: dropped, counted, not a split."""
    once = ga360.load(export_json, show_progress=False)
    path = write_ndjson(tmp_path / "dup.json", [*SESSIONS, SESSIONS[0]])
    twice = ga360.load(path, show_progress=False)
    pd.testing.assert_frame_equal(twice.hits, once.hits)
    pages = twice.hits.loc[twice.hits["session_id"] == "v1-100", "page_raw"].tolist()
    assert pages == ["/home", "/google+redesign/apparel", "/basket.html", "/ordercompleted.html"]
    assert twice.hits["revenue"].sum() == pytest.approx(25.5)
    assert twice.dropped == {
        "sessions_without_page_views": 1,  # v3 only: the copy is no phantom session
        "page_views_without_path": 0,
        "duplicate_session_records": 1,
    }
    assert twice.info["source_sessions"] == 4 and twice.info["sessions_split_across_files"] == 0
    assert twice.info["totals_transaction_revenue"] == pytest.approx(25.5)  # counted once
    assert len(twice.notices) == 2 and "1 session record repeated" in twice.notices[0]
    # the out-of-core path drops the same record
    spill = tmp_path / "spill"
    spill.mkdir()
    ooc = ga360.load(path, show_progress=False, memory_limit="96MB", temp_dir=spill)
    pd.testing.assert_frame_equal(ooc.hits, once.hits)
    assert ooc.dropped == twice.dropped


def test_a_record_repeated_in_another_file_is_read_once(tmp_path: Path) -> None:
    write_ndjson(tmp_path / "ga_sessions_20240101.json", SESSIONS)
    write_ndjson(tmp_path / "ga_sessions_20240102.json", [SESSIONS[1], SESSIONS[0]])
    result = ga360.load(str(tmp_path / "ga_sessions_*.json"), show_progress=False)
    assert result.hits["session_id"].tolist() == ["v2-200"] + ["v1-100"] * 4
    assert result.dropped["duplicate_session_records"] == 2
    assert result.dropped["sessions_without_page_views"] == 1
    assert result.info["sessions_split_across_files"] == 0
    assert result.hits["revenue"].sum() == pytest.approx(25.5)


def test_a_session_split_across_files_is_no_session_without_page_views(tmp_path: Path) -> None:
    day2 = [session("v1", 100, 1_500_000_000, [hit(1, 90_000, "/home")], None), SESSIONS[1]]
    write_ndjson(tmp_path / "ga_sessions_20240101.json", SESSIONS[::2])  # v1, v3
    write_ndjson(tmp_path / "ga_sessions_20240102.json", day2)
    result = ga360.load(str(tmp_path / "ga_sessions_*.json"), show_progress=False)
    assert result.hits["session_id"].nunique() == 3
    assert result.dropped["sessions_without_page_views"] == 1  # v3, not the second part of v1
    assert result.dropped["duplicate_session_records"] == 0


def test_overlapping_records_of_one_session_are_refused(tmp_path: Path) -> None:
    # a re-export of v1 with a late hit: not the same record, and not a later part either
    changed = session("v1", 100, 1_500_000_000, [*SESSIONS[0]["hits"], hit(6, 80_000, "/x")], None)
    path = write_ndjson(tmp_path / "one.json", [SESSIONS[0], changed])
    with pytest.raises(
        ClickstreamError,
        match=r"one\.json, column 'hits\.hitNumber': session 'v1-100' \(fullVisitorId-visitId\) "
        r"holds hit number 1 twice, in two different records",
    ):
        ga360.load(path, show_progress=False)
    write_ndjson(tmp_path / "ga_sessions_20240101.json", [SESSIONS[0]])
    write_ndjson(tmp_path / "ga_sessions_20240102.json", [changed])
    with pytest.raises(
        ClickstreamError,
        match=r"ga_sessions_20240101\.json, column 'hits\.hitNumber': session 'v1-100' "
        r"\(fullVisitorId-visitId\): hit 1 \('/home' at 0 ms\) is also in .*"
        r"ga_sessions_20240102\.json, in a record that differs",
    ):
        ga360.load(str(tmp_path / "ga_sessions_*.json"), show_progress=False)


def test_page_view_times_decreasing_with_hit_number_name_the_session(tmp_path: Path) -> None:
    bad = session(
        "v7", 7, 1_500_000_000, [hit(1, 0, "/a"), hit(2, 9_000, "/b"), hit(3, 4_000, "/c")], None
    )
    path = write_ndjson(tmp_path / "order.json", [SESSIONS[1], bad])
    with pytest.raises(
        ClickstreamError,
        match=r"order\.json, column 'hits\.time': session 'v7-7' \(fullVisitorId-visitId\): "
        r"page view hit 2 \('/b' at 9,000 ms\) is followed by hit 3 \('/c' at 4,000 ms\) after "
        r"the session start: page-view times must not decrease with hitNumber",
    ):
        ga360.load(path, show_progress=False)


def test_blank_page_paths_are_dropped_and_counted_not_read_as_home(tmp_path: Path) -> None:
    no_path = hit(3, 2_000, "/x")
    no_path["page"]["pagePath"] = None
    records = [
        session(
            "v1",
            1,
            1_500_000_000,
            [hit(1, 0, "/a"), hit(2, 1_000, ""), no_path, hit(4, 3_000, "  ")],
            None,
        ),
        session("v2", 2, 1_500_000_100, [hit(1, 0, " \t")], None),  # nothing left: no session
        SESSIONS[1],
    ]
    result = ga360.load(write_ndjson(tmp_path / "blank.json", records), show_progress=False)
    assert result.hits["page_raw"].tolist() == ["/home", "/a"]
    assert result.dropped == {
        "sessions_without_page_views": 1,
        "page_views_without_path": 4,
        "duplicate_session_records": 0,
    }
    assert any("4 page views without a page path" in n for n in result.notices)
    # /a's time on page runs to the next page view (GA), here one without a path
    a = result.hits.set_index("page_raw").loc["/a"]
    assert a["time_on_page_s"] == pytest.approx(1.0)
    assert result.info["transitions_across_dropped_page_views"] == 0  # nothing kept after


def test_page_view_without_a_path_ends_the_time_on_page_before_it(tmp_path: Path) -> None:
    # views at 0 s /a, 10 s (no path), 100 s /b: GA's time on /a is 10 s, not 100 s
    flat = pd.DataFrame(
        {
            "session_id": ["v-1"] * 3,
            "visitor_id": ["v"] * 3,
            "session_start_s": [1_500_000_000] * 3,
            "hit_number": [1, 2, 3],
            "hit_time_ms": [1_500_000_000_000, 1_500_000_010_000, 1_500_000_100_000],
            "page_path": ["/a", None, "/b"],
            "page_title": ["a", "x", "b"],
            "content_group": [None] * 3,
            "revenue": [None, 40.0, None],
            "is_transaction": [False, True, False],
        }
    )
    flat.to_parquet(tmp_path / "flat.parquet")
    result = ga360.load(tmp_path / "flat.parquet", show_progress=False)
    hits = result.hits
    assert hits["page_raw"].tolist() == ["/a", "/b"] and hits["step"].tolist() == [0, 1]
    assert hits["time_on_page_s"].iloc[0] == pytest.approx(10.0)
    assert np.isnan(hits["time_on_page_s"].iloc[1])
    assert result.dropped["page_views_without_path"] == 1
    # /a -> /b went through the dropped view, and its transaction is left out: both said
    assert result.info["transitions_across_dropped_page_views"] == 1
    assert result.info["revenue_on_page_views_without_path"] == pytest.approx(40.0)
    said = [n for n in result.notices if "without a page path" in n]
    assert len(said) == 1
    assert "1 transition between the page views around them" in said[0]
    assert "40.00 of transaction revenue on them left out" in said[0]


def test_repeated_rows_of_a_flat_table_are_read_once(export_json: Path, tmp_path: Path) -> None:
    flat = duckdb.sql(
        ga360.flatten_sql(f"read_json('{export_json}', format='newline_delimited')")
    ).df()
    pd.concat([flat, flat.iloc[:2]]).to_parquet(tmp_path / "flat.parquet")
    once = ga360.load(export_json, show_progress=False).hits
    result = ga360.load(tmp_path / "flat.parquet", show_progress=False)
    pd.testing.assert_frame_equal(result.hits, once)
    assert result.dropped["duplicate_flat_rows"] == 2
