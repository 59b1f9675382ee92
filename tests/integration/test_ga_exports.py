"""GA360 and GA4 exports as they really come, built at test time from the public sample.

A real year of GA360 daily files differs from day to day: days without a transaction have no
``transaction`` keys at all, BigQuery's JSON writes INT64 as text, some exports are one JSON
array document, warehouse exports (Snowflake) write nested fields as JSON text, and Parquet
files of different days have different nested schemas. Each variant below is written from
``../shared/data/ga_sample_20170801.parquet`` into one folder of "daily" files, and the loader's
counts must equal those of an independent pandas reading of the same files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clickstream import ga4, ga360
from clickstream.errors import ClickstreamError

pytestmark = pytest.mark.integration


def _as_text_ints(value: object) -> object:
    """BigQuery's NDJSON export: every INT64 written as a JSON string."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {k: _as_text_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text_ints(v) for v in value]
    return value


def _without_transactions(session: dict) -> dict:
    """A session as a day without any transaction writes it: no transaction keys at all."""
    out = dict(session)
    out["hits"] = [{k: v for k, v in h.items() if k != "transaction"} for h in session["hits"]]
    out["totals"] = {
        k: v
        for k, v in (session.get("totals") or {}).items()
        if k not in ("transactions", "transactionRevenue", "totalTransactionRevenue")
    }
    return out


def _converts(session: dict) -> bool:
    return any((h.get("transaction") or {}).get("transactionRevenue") for h in session["hits"])


def _ndjson(path: Path, records: list[dict], opener=open) -> None:
    with opener(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def ga360_folder(ga_sample_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven daily files of every variant, together holding each sample session once."""
    sessions = pq.read_table(ga_sample_path).to_pylist()
    converting = [s for s in sessions if _converts(s)]
    plain = [s for s in sessions if not _converts(s)]
    folder = tmp_path_factory.mktemp("ga360_year")
    # day 1: BigQuery NDJSON, INT64 as text, with all the converting sessions
    _ndjson(folder / "ga_sessions_20170801.json", [_as_text_ints(s) for s in converting])
    # day 2: a day without transactions: no transaction keys anywhere
    _ndjson(folder / "ga_sessions_20170802.json", [_without_transactions(s) for s in plain[:400]])
    # day 3: one JSON document holding an array of sessions
    (folder / "ga_sessions_20170803.json").write_text(
        json.dumps(plain[400:800], indent=1), encoding="utf-8"
    )
    # day 4: Snowflake style, gzipped: nested fields as JSON text
    stringly = [
        {**s, "hits": json.dumps(s["hits"]), "totals": json.dumps(s["totals"])}
        for s in plain[800:1200]
    ]
    _ndjson(folder / "ga_sessions_20170804.json.gz", stringly, gzip.open)
    # day 5: Parquet of another schema: no totals, hits without contentGroup or transaction
    slim = [
        {
            "fullVisitorId": s["fullVisitorId"],
            "visitId": s["visitId"],
            "visitStartTime": s["visitStartTime"],
            "hits": [
                {k: v for k, v in h.items() if k not in ("contentGroup", "transaction", "product")}
                for h in s["hits"]
            ],
        }
        for s in plain[1200:1600]
    ]
    pq.write_table(pa.Table.from_pylist(slim), folder / "ga_sessions_20170805.parquet")
    # day 6: Parquet with hits as JSON text
    text_hits = [{**s, "hits": json.dumps(s["hits"])} for s in plain[1600:2000]]
    pq.write_table(pa.Table.from_pylist(text_hits), folder / "ga_sessions_20170806.parquet")
    # day 7: the sample's own Parquet schema
    pq.write_table(pa.Table.from_pylist(plain[2000:]), folder / "ga_sessions_20170807.parquet")
    return folder


def _pandas_reading(folder: Path) -> pd.DataFrame:
    """Page views of every file, read with pandas and json only: one row per page view with
    session, hit number, path and revenue (micros), independently of the loader."""
    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            layout_array = path.read_bytes()[:1] == b"["
            frame = pd.read_json(path, lines=not layout_array, dtype=False)
        for s in frame.to_dict("records"):
            hits = s["hits"]
            hits = json.loads(hits) if isinstance(hits, str) else list(hits)
            for h in hits:
                page = h.get("page") or {}
                if h.get("type") != "PAGE" or page.get("pagePath") is None:
                    continue
                tx = h.get("transaction") or {}
                revenue = tx.get("transactionRevenue")
                rows.append(
                    {
                        "session_id": f"{s['fullVisitorId']}-{int(s['visitId'])}",
                        "hit_number": int(h["hitNumber"]),
                        "page": page["pagePath"],
                        "revenue": 0 if revenue is None or pd.isna(revenue) else int(revenue),
                        "is_transaction": revenue is not None and not pd.isna(revenue),
                    }
                )
    return pd.DataFrame(rows)


def test_ga360_folder_of_differing_daily_files_matches_pandas(ga360_folder: Path) -> None:
    result = ga360.load(ga360_folder, show_progress=False)
    assert len(result.files) == 7
    expected = _pandas_reading(ga360_folder)
    hits = result.hits
    # the whole sample day, spread over seven files of different shapes
    assert len(hits) == len(expected) == 10_939
    assert hits["session_id"].nunique() == expected["session_id"].nunique()
    assert int(hits["is_transaction"].sum()) == int(expected["is_transaction"].sum()) == 45
    assert hits["revenue"].sum() == pytest.approx(expected["revenue"].sum() / 1e6)
    assert hits["revenue"].sum() == pytest.approx(8_902.00)
    # the same page sequence in every session
    ordered = expected.sort_values(["session_id", "hit_number"], kind="stable")
    want = ordered.groupby("session_id")["page"].apply(list).to_dict()
    got = hits.groupby("session_id")["page_raw"].apply(list).to_dict()
    assert got == want
    assert result.info["sessions_split_across_files"] == 0


def test_each_variant_alone_matches_pandas(ga360_folder: Path, tmp_path: Path) -> None:
    for path in sorted(ga360_folder.iterdir()):
        single = tmp_path / path.name
        single.write_bytes(path.read_bytes())
        hits = ga360.load(single, show_progress=False).hits
        expected = _pandas_reading(tmp_path)
        assert len(hits) == len(expected), path.name
        assert hits["session_id"].nunique() == expected["session_id"].nunique(), path.name
        single.unlink()


def test_string_encoded_hits_that_are_not_json_name_the_file(tmp_path: Path) -> None:
    bad = {"fullVisitorId": "1", "visitId": 2, "visitStartTime": 3, "hits": "[{not json"}
    path = tmp_path / "ga_sessions_20170809.json"
    _ndjson(path, [bad])
    with pytest.raises(ClickstreamError, match=r"ga_sessions_20170809\.json: cannot read"):
        ga360.load(path, show_progress=False)


def test_array_document_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ga_sessions_20170810.json"
    path.write_text('[\n {"fullVisitorId": "1",\n  "hits": [}\n]\n', encoding="utf-8")
    with pytest.raises(ClickstreamError, match=r"ga_sessions_20170810\.json, line 3: malformed"):
        ga360.load(path, show_progress=False)
    path.write_text('[{"fullVisitorId": "1"}, 7]', encoding="utf-8")
    with pytest.raises(ClickstreamError, match="element 1 of the JSON array is not an object"):
        ga360.load(path, show_progress=False)


def test_revenue_that_is_not_a_number_is_refused_naming_the_hit(tmp_path: Path) -> None:
    session = {
        "fullVisitorId": "7",
        "visitId": "8",
        "visitStartTime": "1500000000",
        "hits": [
            {"hitNumber": 1, "time": 0, "type": "PAGE", "page": {"pagePath": "/a"}},
            {
                "hitNumber": 2,
                "time": 5,
                "type": "PAGE",
                "page": {"pagePath": "/b"},
                "transaction": {"transactionRevenue": "twelve"},
            },
        ],
    }
    path = tmp_path / "ga_sessions_20170811.json"
    _ndjson(path, [session])
    with pytest.raises(
        ClickstreamError,
        match=r"column 'hits\.transaction\.transactionRevenue'.*not a number.*'7-8', hit 2",
    ):
        ga360.load(path, show_progress=False)
    session["hits"][1]["transaction"]["transactionRevenue"] = 1e308
    _ndjson(path, [session])
    with pytest.raises(ClickstreamError, match=r"\[0, 1e\+12\], got 1e\+302"):
        ga360.load(path, show_progress=False)


# --------------------------------------------------------------------------------------------
# GA4: the same variants


GA4_EVENTS = 8_000
"""Events of the GA4 sample used (the first ones: enough for every variant, seconds to read)."""


@pytest.fixture(scope="module")
def ga4_events(ga4_sample_path: Path) -> list[dict]:
    return pq.read_table(ga4_sample_path).slice(0, GA4_EVENTS).to_pylist()


def _ga4_pandas_page_views(folder: Path) -> int:
    """page_view events with a session id and a page, counted with pandas and json only."""
    n = 0
    for path in sorted(folder.iterdir()):
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            layout_array = path.read_bytes()[:1] == b"["
            frame = pd.read_json(path, lines=not layout_array, dtype=False)
        for e in frame.to_dict("records"):
            if e["event_name"] != "page_view" or e.get("user_pseudo_id") is None:
                continue
            params = e["event_params"]
            params = json.loads(params) if isinstance(params, str) else list(params)
            values = {p["key"]: p["value"] for p in params}
            session = (values.get("ga_session_id") or {}).get("int_value")
            page = (values.get("page_location") or {}).get("string_value")
            if session is not None and not pd.isna(session) and page is not None:
                n += 1
    return n


def test_ga4_folder_of_variants_matches_pandas(ga4_events: list[dict], tmp_path: Path) -> None:
    third = len(ga4_events) // 3
    folder = tmp_path / "export"
    folder.mkdir()
    # BigQuery NDJSON (INT64 as text), a JSON array document, Snowflake-style JSON text
    _ndjson(folder / "events_1.json", [_as_text_ints(e) for e in ga4_events[:third]])
    (folder / "events_2.json").write_text(
        json.dumps(ga4_events[third : 2 * third], default=str), encoding="utf-8"
    )
    stringly = [
        {
            **e,
            "event_params": json.dumps(e["event_params"]),
            "ecommerce": json.dumps(e["ecommerce"]),
        }
        for e in ga4_events[2 * third :]
    ]
    _ndjson(folder / "events_3.json.gz", stringly, gzip.open)
    loaded = ga4.load(folder, show_progress=False)
    assert len(loaded.files) == 3
    assert len(loaded.hits) == _ga4_pandas_page_views(folder)
    assert loaded.info["source_events"] == len(ga4_events)
    # the same page views and revenue as the same events in Parquet
    pq.write_table(pa.Table.from_pylist(ga4_events), tmp_path / "events.parquet")
    original = ga4.load(tmp_path / "events.parquet", show_progress=False)
    assert len(original.hits) == len(loaded.hits)
    assert np.isclose(original.hits["revenue"].sum(), loaded.hits["revenue"].sum())
    assert original.info["purchases_placed"] == loaded.info["purchases_placed"]
