"""Generic CSV / Parquet loader on small hand-made tables, with exact expected sessions."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clickstream import csv as csv_loader
from clickstream.errors import ClickstreamError
from clickstream.pages import PageConfig
from clickstream.prepare import canonical_hits
from clickstream.schema import RAW_COLUMNS, validate_hits
from clickstream.splits import SplitConfig

UTC = "UTC"

# Two sessions; rows of s1 out of time order and interleaved with s2. Lines: header = 1.
WITH_SESSIONS = """\
session_id,visitor_id,timestamp,page,revenue
s1,v1,2017-08-01T10:00:30Z,/cart,
s2,v2,2017-08-01T09:00:00Z,/home,0
s1,v1,2017-08-01T10:00:00Z,/home,
s1,v1,2017-08-01T10:01:30Z,/buy,12.50
s2,v2,2017-08-01T09:05:00+01:00,/about,0
"""


def write(tmp_path: Path, text: str | bytes, name: str = "hits.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def sessions(hits: pd.DataFrame) -> dict[str, list[str]]:
    """Session id -> pages in step order."""
    return {sid: list(g["page_raw"]) for sid, g in hits.groupby("session_id", sort=False)}


def error_of(path: Path | list[Path], **kw) -> str:
    with pytest.raises(ClickstreamError) as info:
        csv_loader.load(path, **kw)
    return str(info.value)


# --------------------------------------------------------------------------- happy paths


def test_session_ids_with_timestamps_exact_table(tmp_path: Path) -> None:
    path = write(tmp_path, WITH_SESSIONS)
    res = csv_loader.load(path)
    hits = res.hits
    assert res.source == "csv" and res.files == [str(path)] and res.dropped == {}
    assert list(hits.columns) == list(RAW_COLUMNS)
    validate_hits(hits, source="test")
    # s2 (09:00 UTC; its second view is 08:05 UTC, the first in time) starts before s1.
    assert sessions(hits) == {"s2": ["/about", "/home"], "s1": ["/home", "/cart", "/buy"]}
    assert hits["step"].tolist() == [0, 1, 0, 1, 2]
    assert hits["visitor_id"].tolist() == ["v2", "v2", "v1", "v1", "v1"]
    assert (
        hits["session_start"].tolist()
        == [pd.Timestamp("2017-08-01T08:05:00", tz=UTC)] * 2
        + [pd.Timestamp("2017-08-01T10:00:00", tz=UTC)] * 3
    )
    np.testing.assert_array_equal(
        hits["time_on_page_s"].to_numpy(), [3300.0, np.nan, 30.0, 60.0, np.nan]
    )
    assert hits["revenue"].tolist() == [0.0, 0.0, 0.0, 0.0, 12.5]
    assert hits["is_transaction"].tolist() == [False, False, False, False, True]
    assert hits["page_title"].isna().all() and hits["content_group"].isna().all()
    assert res.info["sessions"] == 2 and res.info["page_views"] == 5
    assert res.info["revenue"] == 12.5 and res.info["transactions"] == 1
    assert res.info["sessionised"] is False and res.info["timestamps"] is True


def test_equal_timestamps_keep_file_order(tmp_path: Path) -> None:
    text = "session_id,timestamp,page\na,2020-01-01 00:00:00,/x\na,2020-01-01 00:00:00,/y\n"
    text += "a,2019-12-31 23:59:59,/w\na,2020-01-01 00:00:00,/z\n"
    hits = csv_loader.load(write(tmp_path, text)).hits
    assert hits["page_raw"].tolist() == ["/w", "/x", "/y", "/z"]
    np.testing.assert_array_equal(hits["time_on_page_s"].to_numpy(), [1.0, 0.0, 0.0, np.nan])
    # Visitor defaults to the session.
    assert (hits["visitor_id"] == "a").all()


def test_sessionised_from_visitors_and_timestamps(tmp_path: Path) -> None:
    text = """\
visitor_id,timestamp,page,revenue
u1,2017-08-01T10:00:00Z,/a,
u2,2017-08-01T10:10:00Z,/b,
u1,2017-08-01T10:30:00Z,/c,5
u1,2017-08-01T11:00:01Z,/d,
u2,2017-08-01T10:05:00Z,/e,
"""
    res = csv_loader.load(write(tmp_path, text))
    hits = res.hits
    # u1: 10:00 -> 10:30 is exactly 30 min (same session), 10:30 -> 11:00:01 is 30 min 1 s.
    assert sessions(hits) == {"u1#0": ["/a", "/c"], "u2#0": ["/e", "/b"], "u1#1": ["/d"]}
    assert hits["visitor_id"].tolist() == ["u1", "u1", "u2", "u2", "u1"]
    np.testing.assert_array_equal(
        hits["time_on_page_s"].to_numpy(), [1800.0, np.nan, 300.0, np.nan, np.nan]
    )
    assert hits["is_transaction"].tolist() == [False, True, False, False, False]
    assert res.info["sessionised"] is True and res.info["session_timeout_s"] == 1800.0
    # A 20-minute timeout splits u1's 30-minute gap too.
    hits = csv_loader.load(write(tmp_path, text), session_timeout_s=1200).hits
    assert sorted(sessions(hits)) == ["u1#0", "u1#1", "u1#2", "u2#0"]


def test_no_timestamps_keeps_file_order_with_synthetic_start(tmp_path: Path) -> None:
    text = "session_id,page,time_on_page_s\nq,/a,3\nr,/b,\nq,/c,\nq,/a,7.5\n"
    res = csv_loader.load(write(tmp_path, text))
    hits = res.hits
    assert sessions(hits) == {"q": ["/a", "/c", "/a"], "r": ["/b"]}
    assert hits["step"].tolist() == [0, 1, 2, 0]
    epoch = pd.Timestamp("1970-01-01", tz=UTC)
    assert hits["session_start"].tolist() == [epoch] * 3 + [epoch + pd.Timedelta(seconds=1)]
    assert hits["hit_time"].isna().all()
    np.testing.assert_array_equal(hits["time_on_page_s"].to_numpy(), [3.0, np.nan, 7.5, np.nan])
    assert res.info["timestamps"] is False
    assert "i seconds" in str(res.info["session_start"])


def test_column_mapping_and_optional_fields(tmp_path: Path) -> None:
    text = """\
Visit;User;When;URL;Amount;Secs;Title;Group;Bought
x9;alice;2021-03-01 12:00:00;/p1;;;Page one;shop;
x9;alice;2021-03-01 12:00:10;/p2;0;;;shop;yes
x9;alice;2021-03-01 12:00:40;/p3;20;4;Page three;;true
"""
    mapping = {
        "session_id": "Visit",
        "visitor_id": "User",
        "timestamp": "When",
        "page": "URL",
        "revenue": "Amount",
        "time_on_page_s": "Secs",
        "page_title": "Title",
        "content_group": "Group",
        "is_transaction": "Bought",
    }
    res = csv_loader.load(write(tmp_path, text), columns=mapping, delimiter=";")
    hits = res.hits
    assert hits["session_id"].tolist() == ["x9"] * 3
    assert hits["visitor_id"].tolist() == ["alice"] * 3
    assert hits["page_raw"].tolist() == ["/p1", "/p2", "/p3"]
    assert hits["page_title"].tolist()[::2] == ["Page one", "Page three"]
    assert pd.isna(hits["page_title"].iloc[1]) and pd.isna(hits["content_group"].iloc[2])
    # The given time on page wins on the last page; empty cells come from timestamps.
    assert hits["time_on_page_s"].tolist() == [10.0, 30.0, 4.0]
    assert hits["revenue"].tolist() == [0.0, 0.0, 20.0]
    # A 0-revenue transaction is allowed when the file says so.
    assert hits["is_transaction"].tolist() == [False, True, True]
    assert res.info["columns"] == {str(tmp_path / "hits.csv"): mapping}


def test_mapping_none_forces_sessionisation(tmp_path: Path) -> None:
    text = "session_id,visitor_id,timestamp,page\nS,v,2020-01-01T00:00:00Z,/a\n"
    text += "S,v,2020-01-01T05:00:00Z,/b\n"
    path = write(tmp_path, text)
    assert sessions(csv_loader.load(path).hits) == {"S": ["/a", "/b"]}
    hits = csv_loader.load(path, columns={"session_id": None}).hits
    assert sessions(hits) == {"v#0": ["/a"], "v#1": ["/b"]}


def test_numeric_epoch_and_custom_format(tmp_path: Path) -> None:
    text = "session_id,timestamp,page\na,1501581600500,/x\na,1501581602000,/y\n"
    hits = csv_loader.load(write(tmp_path, text), timestamp_unit="ms").hits
    assert hits["hit_time"].tolist() == [
        pd.Timestamp("2017-08-01T10:00:00.5", tz=UTC),
        pd.Timestamp("2017-08-01T10:00:02", tz=UTC),
    ]
    assert hits["time_on_page_s"].iloc[0] == 1.5
    text = "session_id,timestamp,page\na,01/08/2017 10:00,/x\na,01/08/2017 10:02,/y\n"
    hits = csv_loader.load(write(tmp_path, text), timestamp_format="%d/%m/%Y %H:%M").hits
    assert hits["session_start"].iloc[0] == pd.Timestamp("2017-08-01T10:00", tz=UTC)
    assert hits["time_on_page_s"].iloc[0] == 120.0


def test_bom_crlf_quotes_and_latin1(tmp_path: Path) -> None:
    text = '\ufeffsession_id,page,page_title\r\na,/x,"Hello, ""world"""\r\na,/y,"two\r\nlines"\r\n'
    hits = csv_loader.load(write(tmp_path, text)).hits
    assert hits["page_title"].tolist() == ['Hello, "world"', "two\r\nlines"]
    path = write(tmp_path, "session_id,page\na,/caf\xe9\n".encode("latin-1"), "l1.csv")
    assert csv_loader.load(path, encoding="latin-1").hits["page_raw"].tolist() == ["/café"]


def _typed_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_id": ["s1", "s2", "s1", "s1", "s2"],
            "visitor_id": ["v1", "v2", "v1", "v1", "v2"],
            "timestamp": pd.to_datetime(
                [
                    "2017-08-01T10:00:30Z",
                    "2017-08-01T09:00:00Z",
                    "2017-08-01T10:00:00Z",
                    "2017-08-01T10:01:30Z",
                    "2017-08-01T08:05:00Z",
                ],
                utc=True,
            ),
            "page": pd.Categorical(["/cart", "/home", "/home", "/buy", "/about"]),
            "revenue": [None, 0.0, None, 12.5, 0.0],
        }
    )


def test_parquet_gives_the_same_table_as_csv(tmp_path: Path) -> None:
    from_csv = csv_loader.load(write(tmp_path, WITH_SESSIONS)).hits
    typed = tmp_path / "typed.parquet"
    _typed_table().to_parquet(typed, index=False)
    pd.testing.assert_frame_equal(csv_loader.load(typed).hits, from_csv)
    # Parquet holding the CSV's text columns as they are.
    text = tmp_path / "text.parquet"
    pd.read_csv(write(tmp_path, WITH_SESSIONS), dtype=str, keep_default_na=False).to_parquet(
        text, index=False
    )
    pd.testing.assert_frame_equal(csv_loader.load(text).hits, from_csv)
    # Naive Parquet timestamps are UTC; integer epochs need their unit.
    naive = _typed_table().assign(timestamp=lambda d: d["timestamp"].dt.tz_localize(None))
    naive.to_parquet(typed, index=False)
    pd.testing.assert_frame_equal(csv_loader.load(typed).hits, from_csv)
    since = _typed_table()["timestamp"] - pd.Timestamp("1970-01-01", tz=UTC)
    epoch = _typed_table().assign(timestamp=since // pd.Timedelta(seconds=1))
    epoch.to_parquet(typed, index=False)
    pd.testing.assert_frame_equal(csv_loader.load(typed, timestamp_unit="s").hits, from_csv)


def test_folder_glob_list_and_gzip(tmp_path: Path) -> None:
    day1 = "session_id,timestamp,page\nA,2020-01-01T23:59:00Z,/a1\nB,2020-01-01T12:00:00Z,/b1\n"
    day2 = "session_id,timestamp,page\nA,2020-01-02T00:00:30Z,/a2\nC,2020-01-02T01:00:00Z,/c1\n"
    folder = tmp_path / "export"
    folder.mkdir()
    write(folder, day1, "day1.csv")
    write(folder, gzip.compress(day2.encode()), "day2.csv.gz")
    write(folder, "not data", "notes.txt")  # not a pattern: ignored
    expected = {"B": ["/b1"], "A": ["/a1", "/a2"], "C": ["/c1"]}
    res = csv_loader.load(folder)
    assert res.files == [str(folder / "day1.csv"), str(folder / "day2.csv.gz")]
    # Session A runs past midnight over the two daily files: joined again.
    assert sessions(res.hits) == expected
    assert res.hits["time_on_page_s"].iloc[1] == 90.0
    assert sessions(csv_loader.load(str(folder / "day*")).hits) == expected
    pd.testing.assert_frame_equal(
        csv_loader.load([folder / "day2.csv.gz", folder / "day1.csv"]).hits, res.hits
    )


def test_a_file_read_twice_is_refused(tmp_path: Path) -> None:
    """Named twice, through a link, or beside its compressed copy: every view would count
    twice (the audit's folder of views.csv and views.csv.gz gave 60 sessions for 30)."""
    text = "session_id,page,revenue\na,/x,\na,/buy,100\n"
    plain = write(tmp_path, text, "views.csv")
    assert csv_loader.load(plain).info["revenue"] == 100.0
    msg = error_of([plain, tmp_path / "." / "views.csv"])
    assert "given twice" in msg and "views.csv" in msg
    link = tmp_path / "link.csv"
    link.symlink_to(plain)
    msg = error_of([plain, link])
    assert "link.csv" in msg and "given twice (also as" in msg
    link.unlink()
    write(tmp_path, gzip.compress(text.encode()), "views.csv.gz")
    msg = error_of(tmp_path)
    assert "views.csv.gz" in msg and "compressed and not" in msg


def test_mixed_csv_and_parquet_folder(tmp_path: Path) -> None:
    write(tmp_path, WITH_SESSIONS.replace("s1", "t1").replace("s2", "t2"), "a.csv")
    _typed_table().to_parquet(tmp_path / "b.parquet", index=False)
    hits = csv_loader.load(tmp_path).hits
    assert sorted(hits["session_id"].unique()) == ["s1", "s2", "t1", "t2"]
    assert len(hits) == 10


def test_output_feeds_prepare(tmp_path: Path) -> None:
    res = csv_loader.load(write(tmp_path, WITH_SESSIONS))
    hits, _ = canonical_hits(res, PageConfig(), SplitConfig(train=0.5, valid=0.0, test=0.5))
    assert len(hits) == 5 and set(hits["split"]) == {"train", "test"}


# --------------------------------------------------------------------------- bad input


def test_missing_mapped_column_names_field_column_and_file_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "sid,url\na,/x\n")
    msg = error_of(path, columns={"session_id": "sid", "page": "URL"})
    assert "hits.csv" in msg and "line 1" in msg
    assert "'URL'" in msg and "field 'page'" in msg and "['sid', 'url']" in msg
    msg = error_of(path, columns={"page": "url", "revenue": "rev"})
    assert "missing column 'rev' for field 'revenue'" in msg
    # an unmapped page column is looked for under its usual names, and said so
    res = csv_loader.load(path, columns={"session_id": "sid"})
    assert res.hits["page_raw"].tolist() == ["/x"]
    assert res.notices == [
        "csv: field 'page' read from column 'url' (hits.csv): not mapped, found under its usual "
        "name; map another with data.columns=page=<column>"  # not page=null: a page is needed
    ]
    msg = error_of(write(tmp_path, "sid,address\na,/x\n"), columns={"session_id": "sid"})
    assert "no page column: map one with data.columns=page=<column>" in msg
    assert "['sid', 'address']" in msg


def test_no_way_to_form_sessions(tmp_path: Path) -> None:
    path = write(tmp_path, "visitor_id,page\nv,/x\n")
    msg = error_of(path)
    assert "hits.csv" in msg and "cannot form sessions" in msg
    assert "['visitor_id', 'page']" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "file is empty"),  # caught by resolve_inputs
        ("\n\n  \n", "file is empty"),
        ("session_id,page\n", "header only"),
        ("session_id,page\n\n", "header only"),
    ],
)
def test_empty_and_header_only(tmp_path: Path, text: str, expected: str) -> None:
    msg = error_of(write(tmp_path, text))
    assert "hits.csv" in msg and expected in msg
    if expected == "header only":
        assert "line 1" in msg


def test_header_only_parquet(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pd.DataFrame(
        {"session_id": pd.Series([], dtype="str"), "page": pd.Series([], dtype="str")}
    ).to_parquet(path)
    assert "empty.parquet" in error_of(path) and "no rows" in error_of(path)


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"session_id,page\na,/x\nb,/caf\xe9\n")
    msg = error_of(path)
    assert "hits.csv, line 3" in msg and "not valid utf-8" in msg
    gz = write(tmp_path, gzip.compress(b"session_id,page\na,/\xff\n"), "h.csv.gz")
    assert "h.csv.gz, line 2" in error_of(gz)


def test_bad_timestamp(tmp_path: Path) -> None:
    text = "session_id,timestamp,page\na,2020-01-01T00:00:00Z,/x\na,yesterday,/y\n"
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 3, column 'timestamp'" in msg and "'yesterday'" in msg
    text = "session_id,when,page\na,2020-01-01T00:00:00Z,/x\na,1577836800,/y\n"
    msg = error_of(write(tmp_path, text), columns={"timestamp": "when"})
    assert "line 3, column 'when'" in msg and "timestamp_unit" in msg
    text = "session_id,timestamp,page\na,1577836800,/x\na,,/y\n"
    msg = error_of(write(tmp_path, text), timestamp_unit="s")
    assert "line 3, column 'timestamp'" in msg and "missing timestamp" in msg
    text = "session_id,timestamp,page\na,1577836800,/x\na,x,/y\n"
    assert "line 3" in error_of(write(tmp_path, text), timestamp_unit="s")
    text = "session_id,timestamp,page\na,2020-01-01,/x\n"
    msg = error_of(write(tmp_path, text), timestamp_format="%Q")
    assert "column 'timestamp'" in msg and "bad data.timestamp_format '%Q'" in msg
    text = "session_id,timestamp,page\na,9999-01-01,/x\n"  # beyond nanosecond timestamps
    assert "line 2, column 'timestamp'" in error_of(write(tmp_path, text))


def test_numeric_parquet_timestamps_need_a_unit(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"session_id": ["a"], "timestamp": [1577836800], "page": ["/x"]}).to_parquet(path)
    msg = error_of(path)
    assert "t.parquet, row 0, column 'timestamp'" in msg and "timestamp_unit" in msg


@pytest.mark.parametrize("value", ["-1", "nan", "NaN", "inf", "12 USD", "free"])
def test_bad_revenue(tmp_path: Path, value: str) -> None:
    text = f"session_id,page,revenue\na,/x,1\na,/y,{value}\n"
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 3, column 'revenue'" in msg and repr(value) in msg


def test_bad_revenue_in_parquet_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"

    def write_revenue(values: list[float | None]) -> None:
        # pyarrow directly: pandas would store NaN as null.
        revenue = pa.array(values, type=pa.float64())
        pq.write_table(
            pa.table({"session_id": ["a"] * 3, "page": ["/x"] * 3, "revenue": revenue}), path
        )

    write_revenue([None, 2.0, 1.0])  # null: no revenue
    assert csv_loader.load(path).hits["revenue"].tolist() == [0.0, 2.0, 1.0]
    write_revenue([None, 2.0, float("nan")])
    msg = error_of(path)
    assert "r.parquet, row 2, column 'revenue'" in msg and "nan" in msg
    write_revenue([0.0, -5.0, 1.0])
    assert "row 1, column 'revenue'" in error_of(path)


def test_duplicate_mapped_column(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "session_id,page,page\na,/x,/y\n"))
    assert "line 1, column 'page'" in msg and "2 times" in msg
    # A duplicate column nobody reads is fine; one column may serve two fields.
    path = write(tmp_path, "sid,page,x,x\na,/x,1,2\n")
    hits = csv_loader.load(path, columns={"session_id": "sid", "visitor_id": "sid"}).hits
    assert hits["visitor_id"].tolist() == ["a"]


def test_bad_time_on_page(tmp_path: Path) -> None:
    text = "session_id,page,secs\na,/x,-2\n"
    msg = error_of(write(tmp_path, text), columns={"time_on_page_s": "secs"})
    assert "line 2, column 'secs'" in msg and "'-2'" in msg


@pytest.mark.parametrize("page", ["", "   ", '""'])
def test_empty_page_is_an_error(tmp_path: Path, page: str) -> None:
    text = f"session_id,page\na,/x\nb,/y\nb,{page}\n"
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 4, column 'page'" in msg and "empty page" in msg


def test_null_page_in_parquet_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"session_id": ["a", "b"], "page": ["/x", None]}).to_parquet(path)
    assert "p.parquet, row 1, column 'page'" in error_of(path)


def test_empty_ids(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "session_id,page\na,/x\n,/y\n"))
    assert "line 3, column 'session_id'" in msg and "empty session id" in msg
    text = "visitor_id,timestamp,page\nv,2020-01-01,/x\n ,2020-01-01,/y\n"
    assert "line 3, column 'visitor_id'" in error_of(write(tmp_path, text))


@pytest.mark.parametrize(
    ("row", "fields"), [("a,/y,1,extra", 4), ("a,/y", 2), ("a", 1), ("a,/y,1,", 4)]
)
def test_ragged_rows(tmp_path: Path, row: str, fields: int) -> None:
    text = f"session_id,page,revenue\na,/x,1\n\n{row}\na,/z,2\n"  # blank line 3 is skipped
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 4" in msg and "ragged row" in msg
    assert f"{fields} field(s), the header has 3" in msg


def test_lines_count_physical_lines_of_quoted_fields(tmp_path: Path) -> None:
    head = 'session_id,page,page_title\na,/x,"a title\nover\nthree lines"\n'
    msg = error_of(write(tmp_path, head + "a,/y,t,oops\n"))
    assert "line 5" in msg and "ragged row" in msg
    msg = error_of(write(tmp_path, head + "\na,,t\n"))
    assert "line 6, column 'page'" in msg


def test_unclosed_quote_does_not_swallow_the_rest(tmp_path: Path) -> None:
    text = 'session_id,page\na,/x\na,"/y\nb,/z\nb,/w\n'
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 3" in msg and "never closed" in msg
    # A quote inside an unquoted field is text, not an error.
    hits = csv_loader.load(write(tmp_path, 'session_id,page\na,/tv-32"\n')).hits
    assert hits["page_raw"].tolist() == ['/tv-32"']


def test_a_quote_left_open_up_to_a_later_quote_swallows_nothing(tmp_path: Path) -> None:
    # An even number of quotes: the field opened on line 2 ran on to the stray quote on
    # line 4, taking session s2 with it (2 sessions and a page '/home\ns1,/shop\ns2,/xy').
    text = 'session_id,page\ns1,"/home\ns1,/shop\ns2,/x"y\ns3,/z\ns3,/w\n'
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 2" in msg and "a quoted field is followed by text" in msg
    # ... and when the field closes at a line end, the page itself gives it away.
    msg = error_of(write(tmp_path, 'session_id,page\ns1,"/home\ns2,"\ns3,/z\n'))
    assert "hits.csv, line 2, column 'page'" in msg and "holds a line break" in msg
    # Quoted line breaks where they belong (a title) still load.
    text = 'session_id,page,page_title\ns1,/a,"two\nlines"\ns1,/b,t\n'
    assert csv_loader.load(write(tmp_path, text)).info["page_views"] == 2


def test_a_header_repeated_with_its_byte_order_mark_is_refused(tmp_path: Path) -> None:
    bom = "\ufeff"
    text = f"{bom}session_id,page\ns1,/home\n{bom}session_id,page\ns2,/cart\n"  # cat a.csv b.csv
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 3" in msg and "repeats the header" in msg
    msg = error_of(write(tmp_path, f"session_id,page\ns1,/home\n{bom}s2,/cart\n"))
    assert "hits.csv, line 3, column 'session_id'" in msg and "byte order mark" in msg


def test_spaces_around_ids_are_read_without_and_said(tmp_path: Path) -> None:
    text = "session_id,page\ns1,/home\ns1 ,/shop\n s1,/cart\nS1,/x\n"
    res = csv_loader.load(write(tmp_path, text))
    assert sessions(res.hits) == {"s1": ["/home", "/shop", "/cart"], "S1": ["/x"]}
    assert res.notices[-1:] == [
        f"csv: 2 session id value(s) had spaces around them, read without ('s1 ' as 's1' at "
        f"{tmp_path / 'hits.csv'}, line 3)"
    ]


def test_times_with_and_without_a_zone_are_refused(tmp_path: Path) -> None:
    text = "session_id,timestamp,page\ns1,2017-08-01T10:00:00+02:00,/a\ns1,2017-08-01 10:45:00,/b\n"
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 3, column 'timestamp'" in msg
    assert "'2017-08-01 10:45:00' has no time zone" in msg and "line 2 has one" in msg
    # Across files too: one file's times carry zones, the other's do not.
    a = write(tmp_path, "session_id,timestamp,page\ns1,2017-08-01T10:00:00Z,/a\n", "a.csv")
    b = write(tmp_path, "session_id,timestamp,page\ns2,2017-08-01T10:00:00,/a\n", "b.csv")
    msg = error_of([a, b])
    assert str(b) in msg and "no time zone" in msg and str(a) in msg
    # All without (read as UTC) or all with: fine; a date alone has no zone.
    assert csv_loader.load(b).hits["hit_time"].iat[0] == pd.Timestamp("2017-08-01T10:00Z")
    dates = write(tmp_path, "session_id,timestamp,page\ns1,2017-08-01,/a\ns1,2017-08-02,/b\n")
    assert csv_loader.load(dates).info["page_views"] == 2


def test_order_by_dates_not_in_iso_are_refused_and_text_keys_said(tmp_path: Path) -> None:
    text = "sid;item;day;frame\n1;100;02/07/2017;5\n2;200;01/08/2017;1\n4;400;31/12/2016;1\n"
    path = write(tmp_path, text)
    cols = "session=sid,page=item"
    msg = error_of(path, columns=cols, order_by="day,frame")
    assert "hits.csv, line 2, column 'day'" in msg and "'02/07/2017'" in msg
    assert "not ISO 8601" in msg
    res = csv_loader.load(
        write(tmp_path, "sid,item,k\n1,/a,b10\n1,/b,b9\n"), columns=cols, order_by="k"
    )
    assert sessions(res.hits) == {"1": ["/a", "/b"]}  # as text 'b10' < 'b9'
    assert any("order_by column 'k' is compared as text" in n and "'b10'" in n for n in res.notices)


def test_order_by_against_the_timestamps_is_refused(tmp_path: Path) -> None:
    text = (
        "session_id,timestamp,seq,page\ns,2017-08-01T10:00:00Z,2,/a\ns,2017-08-01T10:05:00Z,1,/b\n"
    )
    msg = error_of(write(tmp_path, text), order_by="seq")
    assert "hits.csv, line 2, column 'timestamp'" in msg and "order and the times disagree" in msg
    assert "hits.csv, line 3" in msg  # the page view it was put after


def test_repeated_rows_are_counted_and_said(tmp_path: Path) -> None:
    text = (
        "session_id,timestamp,page,revenue\ns1,2017-08-01T10:00:00Z,/home,\n"
        "s1,2017-08-01T10:01:00Z,/thanks,100\ns1,2017-08-01T10:01:00Z,/thanks,100\n"
    )
    res = csv_loader.load(write(tmp_path, text))
    assert res.info["revenue"] == 200.0 and res.info["page_views"] == 3  # kept: said, not guessed
    assert res.notices[-1:] == [
        "csv: 1 page view(s) repeat an earlier row exactly (same session, time, page and "
        f"revenue; the first at {tmp_path / 'hits.csv'}, line 4), with revenue 100.00: kept and "
        "counted; if the export doubled rows, remove the copies"
    ]


def test_one_visitor_per_session(tmp_path: Path) -> None:
    text = "session_id,visitor_id,page\ns,v1,/a\nt,v9,/a\ns,v2,/b\n"
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 4, column 'visitor_id'" in msg and "'v2'" in msg and "'v1'" in msg


def test_transactions(tmp_path: Path) -> None:
    text = "session_id,page,revenue,is_transaction\na,/x,3,false\n"
    msg = error_of(write(tmp_path, text))
    assert "line 2, column 'is_transaction'" in msg and "not a transaction" in msg
    text = "session_id,page,revenue,is_transaction\na,/x,3,\na,/y,0,maybe\n"
    msg = error_of(write(tmp_path, text))
    assert "line 3, column 'is_transaction'" in msg and "'maybe'" in msg


def test_files_must_form_sessions_the_same_way(tmp_path: Path) -> None:
    a = write(tmp_path, "session_id,page\ns,/x\n", "a.csv")
    b = write(tmp_path, "visitor_id,timestamp,page\nv,2020-01-01,/x\n", "b.csv")
    msg = error_of([a, b])
    assert "b.csv" in msg and "a.csv" in msg and "'session_id'" in msg
    c = write(tmp_path, "session_id,timestamp,page\ns,2020-01-01,/x\n", "c.csv")
    assert "'timestamp'" in error_of([a, c])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"columns": {"sesion_id": "x"}}, "unknown field"),
        ({"columns": {"page": None}}, "page cannot be null"),
        ({"timestamp_unit": "h"}, "timestamp_unit"),
        ({"timestamp_unit": "s", "timestamp_format": "%Y"}, "not both"),
        ({"session_timeout_s": 0}, "session_timeout_s"),
        ({"session_timeout_s": float("nan")}, "session_timeout_s"),
        ({"delimiter": ";;"}, "delimiter"),
        ({"encoding": "no-such-codec"}, "encoding"),
        ({"session_timeout_s": "soon"}, "session_timeout_s"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict, expected: str) -> None:
    assert expected in error_of(write(tmp_path, "session_id,page\na,/x\n"), **options)


def test_missing_input(tmp_path: Path) -> None:
    assert "no such file" in error_of(tmp_path / "nope.csv")
    (tmp_path / "empty_dir").mkdir()
    assert "no files matching" in error_of(tmp_path / "empty_dir")


# --------------------------------------------------------------------------- real exports (#18)


DIGINETICA = """\
sessionId;userId;itemId;timeframe;eventdate
1;;81766;526309;2016-05-09
1;;31331;1031018;2016-05-09
1;;32118;243569;2016-05-09
2;;9654;75848;2016-05-10
2;;33043;1154136;2016-05-09
2;;9654;9999;2016-05-10
3;;4018;0;2016-05-08
"""


def test_composite_order_and_sniffed_semicolons(tmp_path: Path) -> None:
    path = write(tmp_path, DIGINETICA, "train-item-views.csv")
    res = csv_loader.load(
        path,
        columns="session=sessionId,page=itemId,visitor=null",
        order_by=["eventdate", "timeframe"],
    )
    # within a session: by date, then time frame as a number (9999 < 75848), not as text
    assert sessions(res.hits) == {
        "3": ["4018"],
        "1": ["32118", "81766", "31331"],
        "2": ["33043", "9654", "9654"],
    }
    # sessions in order of their first (date, time frame): the split follows the data
    assert res.hits.drop_duplicates("session_id")["session_id"].tolist() == ["3", "1", "2"]
    assert res.info["order_by"] == ["eventdate", "timeframe"]
    assert res.info["delimiters"] == {str(path): ";"}
    assert res.notices == [
        "csv: train-item-views.csv: delimiter semicolon (';'), sniffed from the first lines; "
        "set data.delimiter=comma|tab|semicolon|pipe to choose"
    ]
    # a guessed visitor column that is empty names the way out
    msg = error_of(path, columns="session=sessionId,page=itemId", order_by="eventdate,timeframe")
    assert "line 2, column 'userId': empty visitor id" in msg
    assert "or none with visitor_id=null" in msg
    msg = error_of(path, columns="session=sessionId,page=itemId", order_by=["date"])
    assert "data.order_by names column 'date', which the file lacks" in msg


def test_empty_order_key_names_the_line(tmp_path: Path) -> None:
    text = "sid,page,pos\na,/x,1\na,/y,\n"
    msg = error_of(write(tmp_path, text), columns="session=sid", order_by="pos")
    assert "hits.csv, line 3, column 'pos': empty data.order_by key 'pos'" in msg


@pytest.mark.parametrize(
    ("delimiter", "named"),
    [("\t", "tab"), ("\t", "\\t"), (";", "semicolon"), ("|", "pipe"), (",", "comma")],
)
def test_named_delimiters(tmp_path: Path, delimiter: str, named: str) -> None:
    text = f"session_id{delimiter}page\na{delimiter}/x\na{delimiter}/y\n"
    hits = csv_loader.load(write(tmp_path, text), delimiter=named).hits
    assert hits["page_raw"].tolist() == ["/x", "/y"]
    sniffed = csv_loader.load(write(tmp_path, text, "h.txt"))
    assert sniffed.hits["page_raw"].tolist() == ["/x", "/y"]
    assert sniffed.info["delimiters"] == {str(tmp_path / "h.txt"): delimiter}


def test_column_map_as_one_string_a_yaml_file_or_aliases(tmp_path: Path) -> None:
    text = "sid,item,ts,price\na,11,2020-01-01T00:00:00Z,9.5\na,12,2020-01-01T00:00:10Z,\n"
    path = write(tmp_path, text)
    (tmp_path / "cols.yaml").write_text("session: sid\nitem: item\ntime: ts\nprice: price\n")
    for columns in (
        "session=sid,page=item,time=ts,value=price",
        "session=sid page=item time=ts price=price",
        "session:sid,item:item,ts:ts,value:price",
        str(tmp_path / "cols.yaml"),
        {"session": "sid", "item": "item", "time": "ts", "price": "price"},
    ):
        res = csv_loader.load(path, columns=columns)
        assert res.hits["page_raw"].tolist() == ["11", "12"], columns
        assert res.hits["time_on_page_s"].tolist()[0] == 10.0
        np.testing.assert_array_equal(res.hits["value"].to_numpy(), [9.5, np.nan])
        assert res.notices == [] and res.info["value_column"] == "price"
    assert "cannot read 'sid'" in error_of(path, columns="session=sid,sid")
    msg = error_of(path, columns="page=Page URL")  # a name with a space: the mapping form
    assert "cannot read 'URL'" in msg and "data.columns='{page: \"Page URL\"}'" in msg
    assert "unknown field(s) ['colour']" in error_of(path, columns="colour=sid")
    assert "names the field 'page' twice" in error_of(path, columns="page=item,item=item")
    assert "cannot read the column map" in error_of(path, columns=str(tmp_path / "no.yaml"))


def test_guessed_columns_are_said_and_none_when_absent(tmp_path: Path) -> None:
    text = "Session ID,Item-Id,Category\na,11,shoes\na,12,bags\n"
    res = csv_loader.load(write(tmp_path, text))
    assert res.hits["page_raw"].tolist() == ["11", "12"]
    assert res.hits["content_group"].tolist() == ["shoes", "bags"]
    assert [n.split(" (")[0] for n in res.notices] == [
        "csv: field 'session_id' read from column 'Session ID'",
        "csv: field 'page' read from column 'Item-Id'",
        "csv: field 'content_group' read from column 'Category'",
    ]
    # mapped to none: not read, nothing said
    res = csv_loader.load(write(tmp_path, text), columns="category=null")
    assert res.hits["content_group"].isna().all()
    assert not any("content_group" in n for n in res.notices)


def test_header_repeated_inside_the_file_is_refused(tmp_path: Path) -> None:
    text = WITH_SESSIONS + WITH_SESSIONS  # two exports joined with `cat`
    msg = error_of(write(tmp_path, text))
    assert "hits.csv, line 7: this record repeats the header" in msg
    assert "Delete the repeated header lines (keep the first), 1 in this file" in msg


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        (
            "revenue",
            "1e308",
            "revenue must be a number in [0, 1e+12] (empty for none), got '1e308'",
        ),
        ("revenue", "inf", "got 'inf'"),
        ("price", "-inf", "value must be a finite number of size at most 1e+12"),
        ("price", "1e13", "got '1e13'"),
        ("secs", "4e9", "time on page must be a number of seconds in [0, 1e+09]"),
    ],
)
def test_absurd_numbers_are_refused_naming_the_line(
    tmp_path: Path, column: str, value: str, words: str
) -> None:
    rows = {"revenue": ["", ""], "price": ["1", "2"], "secs": ["", ""]}
    rows[column][1] = value
    text = "session_id,page,revenue,price,secs\n" + "".join(
        f"s,/{i},{rows['revenue'][i]},{rows['price'][i]},{rows['secs'][i]}\n" for i in range(2)
    )
    msg = error_of(write(tmp_path, text), columns="time_on_page=secs")
    assert f"hits.csv, line 3, column '{column}'" in msg and words in msg


def test_zstd_and_gzip_by_content(tmp_path: Path) -> None:
    codec = pa.Codec("zstd")
    write(tmp_path, codec.compress(WITH_SESSIONS.encode(), asbytes=True), "a.csv.zst")
    other = WITH_SESSIONS.replace("s1", "t1").replace("s2", "t2")
    write(tmp_path, gzip.compress(other.encode()), "b.csv.gz")
    hits = csv_loader.load(tmp_path).hits
    assert len(hits) == 10 and hits["session_id"].nunique() == 4
    write(tmp_path, b"\x28\xb5\x2f\xfd" + b"garbage", "c.csv.zst")
    assert "c.csv.zst: cannot decompress (zstd)" in error_of(tmp_path / "c.csv.zst")


def test_spreadsheets(tmp_path: Path) -> None:
    pytest.importorskip("openpyxl")
    frame = pd.DataFrame(
        {
            "session": ["a", "a", "b"],
            "item": [101, 102, 101],  # numbers in cells: ids, not 101.0
            "when": pd.to_datetime(["2020-01-01 10:00", "2020-01-01 10:01", "2020-01-02 00:00"]),
            "price": [9.5, 12.0, 9.5],
        }
    )
    path = tmp_path / "clicks.xlsx"
    with pd.ExcelWriter(path) as xl:
        pd.DataFrame({"about": ["notes"]}).to_excel(xl, sheet_name="readme", index=False)
        frame.to_excel(xl, sheet_name="clicks", index=False)
    res = csv_loader.load(path, columns="page=item,time=when,value=price", sheet="clicks")
    assert sessions(res.hits) == {"a": ["101", "102"], "b": ["101"]}
    assert res.hits["time_on_page_s"].tolist()[0] == 60.0
    assert res.hits["value"].tolist() == [9.5, 12.0, 9.5]
    assert any("read sheet 'clicks' of 2" in n for n in res.notices)
    # the first sheet by default: it has no page column, and the error says which file
    msg = error_of(path, columns="page=item,time=when")
    assert "clicks.xlsx" in msg and "missing column 'when'" in msg and "['about']" in msg
    frame.loc[1, "price"] = float("inf")
    frame.to_excel(path, index=False)
    msg = error_of(path, columns="page=item,time=when,value=price")
    assert "clicks.xlsx, row 1, column 'price'" in msg and "(spreadsheet row 3)" in msg


def test_xls_without_its_reader_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_calamine(name, *args, **kwargs):
        if name == "python_calamine":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    path = write(tmp_path, b"\xd0\xcf\x11\xe0" + bytes(60), "old.xls")
    monkeypatch.setattr(builtins, "__import__", no_calamine)
    assert "needs the python-calamine package: pip install python-calamine" in error_of(path)
    monkeypatch.undo()
    assert "old.xls: cannot read as a spreadsheet" in error_of(path)


def test_numeric_ids_in_parquet_stay_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"session_id": [7, 7, 8], "item_id": [123456, 123457, 123456]})
    frame.to_parquet(tmp_path / "ids.parquet")
    res = csv_loader.load(tmp_path / "ids.parquet")
    assert res.hits["page_raw"].tolist() == ["123456", "123457", "123456"]
    assert res.info["page_column"] == "item_id"
