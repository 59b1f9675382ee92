"""MSNBC .seq loader on small hand-written files (plain, zipped, CRLF/LF) and bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clickstream import msnbc
from clickstream.errors import ClickstreamError
from clickstream.schema import RAW_COLUMNS, LoadResult, validate_hits

HEADER = [
    "% Different categories found in input file:",
    "",
    "frontpage news tech",
    "",
    "",
    "% Sequences:",
    "",
]
BODY = [
    "1 1 ",  # line 8
    "2 ",  # line 9
    "3 2 2 1 ",  # line 10
    "",  # line 11: an empty session, dropped
    "2",  # line 12
    "3",  # line 13, no newline at the end of the file (as in the UCI file)
]

# Expected sessions: (session_id, pages) in file order.
SESSIONS = [
    ("msnbc-8", ["frontpage", "frontpage"]),
    ("msnbc-9", ["news"]),
    ("msnbc-10", ["tech", "news", "news", "frontpage"]),
    ("msnbc-12", ["news"]),
    ("msnbc-13", ["tech"]),
]


def seq_text(body: list[str] = BODY, header: list[str] = HEADER, newline: str = "\r\n") -> str:
    return newline.join(header + body)


def write_seq(tmp_path: Path, text: str | bytes, name: str = "msnbc.seq") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def write_zip(tmp_path: Path, members: dict[str, str | bytes], name: str = "msnbc.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member, content in members.items():
            zf.writestr(member, content)
    return path


def check_small(result: LoadResult, start: str = "1999-09-28T00:00:00Z") -> None:
    hits = result.hits
    assert list(hits.columns) == list(RAW_COLUMNS)
    expected_sid = [sid for sid, pages in SESSIONS for _ in pages]
    expected_pages = [p for _, pages in SESSIONS for p in pages]
    expected_steps = [i for _, pages in SESSIONS for i in range(len(pages))]
    origin = pd.Timestamp(start)
    expected_start = [
        origin + pd.Timedelta(seconds=k) for k, (_, pages) in enumerate(SESSIONS) for _ in pages
    ]
    assert hits["session_id"].astype(str).tolist() == expected_sid
    assert hits["visitor_id"].astype(str).tolist() == expected_sid
    assert hits["page_raw"].astype(str).tolist() == expected_pages
    assert hits["content_group"].astype(str).tolist() == expected_pages
    assert hits["step"].tolist() == expected_steps
    assert hits["session_start"].tolist() == expected_start
    assert str(hits["session_start"].dtype) == "datetime64[ns, UTC]"
    assert str(hits["hit_time"].dtype) == "datetime64[ns, UTC]"
    assert hits["hit_time"].isna().all()
    assert hits["page_title"].isna().all()
    assert np.isnan(hits["time_on_page_s"].to_numpy()).all()
    assert (hits["revenue"].to_numpy() == 0.0).all()
    assert not hits["is_transaction"].to_numpy().any()
    assert result.source == "msnbc"
    assert result.dropped == {"empty_sessions": 1}
    assert result.info["categories"] == ["frontpage", "news", "tech"]
    assert result.info["category_counts"] == {"frontpage": 3, "news": 4, "tech": 2}
    assert result.info["sessions"] == 5
    assert result.info["page_views"] == 9
    validate_hits(hits, source="test")


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_seq_file(tmp_path: Path, newline: str) -> None:
    path = write_seq(tmp_path, seq_text(newline=newline))
    result = msnbc.load(path)
    check_small(result)
    assert result.files == [str(path)]


def test_trailing_newline_is_not_an_empty_session(tmp_path: Path) -> None:
    result = msnbc.load(write_seq(tmp_path, seq_text() + "\r\n"))
    assert result.dropped == {"empty_sessions": 1}  # still only line 11
    assert result.info["sessions"] == 5


def test_zip_in_memory_and_macos_twin_ignored(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path,
        {
            "msnbc990928.seq": seq_text(),
            "__MACOSX/._msnbc990928.seq": b"\x00\x05\x16\x07 not data",
        },
    )
    check_small(msnbc.load(path))
    assert [p.name for p in tmp_path.iterdir()] == ["msnbc.zip"]  # nothing extracted


def test_folder_with_one_file(tmp_path: Path) -> None:
    write_zip(tmp_path, {"msnbc990928.seq": seq_text()})
    check_small(msnbc.load(tmp_path))


def test_start_time_in_another_zone_is_converted_to_utc(tmp_path: Path) -> None:
    path = write_seq(tmp_path, seq_text())
    result = msnbc.load(path, start="2020-01-01T01:00:00+01:00")
    check_small(result, start="2020-01-01T00:00:00Z")
    naive = msnbc.load(path, start="2020-01-01 00:00:00")  # no zone: UTC
    assert naive.hits["session_start"].equals(result.hits["session_start"])


def test_two_digit_ids_tabs_and_extra_spaces(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(1, 18)]
    path = write_seq(
        tmp_path,
        seq_text(["17\t10  1", "  12 11 ", "009"], header=[" ".join(names)], newline="\n"),
    )
    result = msnbc.load(path)
    assert result.hits["page_raw"].astype(str).tolist() == ["c17", "c10", "c1", "c12", "c11", "c9"]
    assert result.hits["session_id"].astype(str).tolist() == ["msnbc-2"] * 3 + ["msnbc-3"] * 2 + [
        "msnbc-4"
    ]
    assert result.hits["step"].tolist() == [0, 1, 2, 0, 1, 0]
    assert result.dropped == {"empty_sessions": 0}


def test_more_categories_than_a_byte_holds(tmp_path: Path) -> None:
    # 300 names: ids above 127 once wrapped around (id 257 read as 'c1') or crashed (id 130).
    names = [f"c{i}" for i in range(1, 301)]
    path = write_seq(tmp_path, seq_text(["257 130", "300 1 128"], header=[" ".join(names)]))
    result = msnbc.load(path)
    assert result.hits["page_raw"].astype(str).tolist() == ["c257", "c130", "c300", "c1", "c128"]
    assert result.info["category_counts"]["c257"] == 1
    assert sum(result.info["category_counts"].values()) == 5
    validate_hits(result.hits, source="test")


def reference_parse(text: str) -> tuple[list[str], list[tuple[int, list[int]]]]:
    """Plain-Python reading of a .seq text: names and (line number, ids) of non-empty lines."""
    lines = text.splitlines()
    names_at = next(i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("%"))
    sessions = [
        (i + 1, [int(t) for t in ln.split()])
        for i, ln in enumerate(lines)
        if i > names_at and ln.strip() and not ln.startswith("%")
    ]
    return lines[names_at].split(), sessions


def test_random_files_match_a_plain_python_parse(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    names = [f"cat{i}" for i in range(1, 18)]
    seps = [" ", "  ", "\t", " \t "]
    for trial in range(20):
        body = []
        for _ in range(int(rng.integers(1, 60))):
            n = int(rng.integers(0, 15))  # 0: an empty line
            ids = rng.integers(1, 18, size=n)
            sep = seps[int(rng.integers(len(seps)))]
            body.append(sep.join(str(i) for i in ids) + (" " if rng.random() < 0.5 else ""))
        if not any(line.strip() for line in body):
            body.append("5")
        newline = "\r\n" if trial % 2 else "\n"
        text = seq_text(
            body, header=["% c", "", " ".join(names), "", "% Sequences:", ""], newline=newline
        )
        result = msnbc.load(write_seq(tmp_path, text, name=f"t{trial}.seq"))
        ref_names, ref = reference_parse(text)
        hits = result.hits
        got_ids = hits["page_raw"].cat.codes.to_numpy() + 1
        assert result.info["categories"] == ref_names
        assert got_ids.tolist() == [i for _, ids in ref for i in ids]
        assert hits["session_id"].astype(str).tolist() == [
            f"msnbc-{line}" for line, ids in ref for _ in ids
        ]
        first_body_line = ref[0][0]
        empty_after_first = sum(
            1 for ln in text.splitlines()[first_body_line - 1 :] if not ln.strip()
        )
        assert result.dropped == {"empty_sessions": empty_after_first}


# ----------------------------------------------------------------------------- bad input


def load_error(path: Path) -> str:
    with pytest.raises(ClickstreamError) as info:
        msnbc.load(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("bad_line", "token", "position"),
    [("1 x 2", "x", 2), ("1.5", "1.5", 1), ("2 -1", "-1", 2), ("3 2a", "2a", 2), ("% 1", "%", 1)],
)
def test_non_integer_token(tmp_path: Path, bad_line: str, token: str, position: int) -> None:
    path = write_seq(tmp_path, seq_text(["1 2", "3", bad_line, "1"]))
    msg = load_error(path)
    assert str(path) in msg
    assert "line 10" in msg
    assert f"token {position} is {token!r}" in msg


@pytest.mark.parametrize("bad_id", ["4", "0", "18", "99999999999999999999"])
def test_id_out_of_range(tmp_path: Path, bad_id: str) -> None:
    path = write_seq(tmp_path, seq_text(["1 2", "3 3", f"1 {bad_id}"]))
    msg = load_error(path)
    assert str(path) in msg
    assert "line 10" in msg
    assert f"category id {bad_id} out of range" in msg
    assert "1..3" in msg


def test_error_on_last_line_without_newline(tmp_path: Path) -> None:
    path = write_seq(tmp_path, seq_text(["1", "2", "", "3 7"]))
    msg = load_error(path)
    assert "line 11" in msg and str(path) in msg


def test_missing_header(tmp_path: Path) -> None:
    path = write_seq(tmp_path, "1 1\n2\n3 2 2\n")
    msg = load_error(path)
    assert str(path) in msg and "line 1" in msg and "missing header" in msg


def test_missing_names_line_in_uci_layout(tmp_path: Path) -> None:
    path = write_seq(tmp_path, seq_text(["1 1", "2"], header=["% Sequences:", ""]))
    msg = load_error(path)
    assert str(path) in msg and "line 3" in msg and "missing header" in msg


def test_header_only_comments(tmp_path: Path) -> None:
    path = write_seq(tmp_path, "% Different categories found in input file:\n\n% Sequences:\n")
    msg = load_error(path)
    assert str(path) in msg and "line 3" in msg and "missing header" in msg


@pytest.mark.parametrize(
    ("names", "what"),
    [("frontpage 2 news", "must not be numbers"), ("frontpage news frontpage", "more than once")],
)
def test_garbled_header(tmp_path: Path, names: str, what: str) -> None:
    header = [*HEADER[:2], names, *HEADER[3:]]
    path = write_seq(tmp_path, seq_text(header=header))
    msg = load_error(path)
    assert str(path) in msg and "line 3" in msg and "garbled header" in msg and what in msg


def test_header_not_utf8(tmp_path: Path) -> None:
    text = seq_text().encode("utf-8").replace(b"news", b"n\xffws", 1)
    path = write_seq(tmp_path, text)
    msg = load_error(path)
    assert str(path) in msg and "line 3" in msg and "not valid UTF-8" in msg


def test_body_not_utf8(tmp_path: Path) -> None:
    text = seq_text().encode("utf-8").replace(b"3 2 2 1", b"3 2 \xe9 1", 1)
    path = write_seq(tmp_path, text)
    msg = load_error(path)
    assert str(path) in msg and "line 10" in msg and "not valid UTF-8" in msg


def test_header_without_sessions(tmp_path: Path) -> None:
    path = write_seq(tmp_path, seq_text([""]))
    msg = load_error(path)
    assert str(path) in msg and "no sessions" in msg and "line 8" in msg


def test_empty_file(tmp_path: Path) -> None:
    path = write_seq(tmp_path, b"")
    msg = load_error(path)
    assert str(path) in msg and "empty" in msg


def test_zip_without_seq_member(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path, {"readme.txt": "hello", "__MACOSX/._msnbc990928.seq": b"\x00\x05\x16\x07"}
    )
    msg = load_error(path)
    assert str(path) in msg and "no .seq member" in msg


def test_zip_with_empty_seq_member(tmp_path: Path) -> None:
    path = write_zip(tmp_path, {"msnbc990928.seq": b""})
    msg = load_error(path)
    assert str(path) in msg and "msnbc990928.seq" in msg and "empty" in msg


def test_zip_errors_name_the_member_and_line(tmp_path: Path) -> None:
    path = write_zip(tmp_path, {"data/msnbc990928.seq": seq_text(["1", "2 z"])})
    msg = load_error(path)
    assert str(path) in msg and "data/msnbc990928.seq" in msg and "line 9" in msg


def test_not_a_zip(tmp_path: Path) -> None:
    path = write_seq(tmp_path, seq_text(), name="msnbc.zip")
    msg = load_error(path)
    assert str(path) in msg and "not a valid zip archive" in msg


def test_folder_with_two_inputs(tmp_path: Path) -> None:
    write_seq(tmp_path, seq_text())
    write_zip(tmp_path, {"msnbc990928.seq": seq_text()})
    with pytest.raises(ClickstreamError, match=r"expected one \.seq or \.zip file, got 2"):
        msnbc.load(tmp_path)


def test_bad_start(tmp_path: Path) -> None:
    with pytest.raises(ClickstreamError, match="start is not a valid timestamp"):
        msnbc.load(write_seq(tmp_path, seq_text()), start="yesterday-ish")
