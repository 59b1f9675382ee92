"""MSNBC loader on the full UCI file (989,818 sessions), checked against a plain-Python reading."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clickstream import msnbc
from clickstream.schema import LoadResult

pytestmark = pytest.mark.integration

CATEGORIES = [
    "frontpage",
    "news",
    "tech",
    "local",
    "opinion",
    "on-air",
    "misc",
    "weather",
    "msn-news",
    "health",
    "living",
    "business",
    "msn-sports",
    "sports",
    "summary",
    "bbs",
    "travel",
]
FIRST_SESSION_LINE = 8  # 7 header lines: comment, blank, names, blank, blank, comment, blank


@pytest.fixture(scope="module")
def loaded(msnbc_path: Path) -> LoadResult:
    return msnbc.load(msnbc_path)


@pytest.fixture(scope="module")
def plain_lines(msnbc_path: Path) -> list[str]:
    """The .seq lines, read independently of the loader."""
    with zipfile.ZipFile(msnbc_path) as zf:
        return zf.read("msnbc990928.seq").decode("utf-8").splitlines()


def test_counts_and_categories(loaded: LoadResult) -> None:
    hits = loaded.hits
    assert len(hits) == 4_698_794
    assert hits["session_id"].nunique() == 989_818
    assert loaded.info["sessions"] == 989_818
    assert loaded.info["page_views"] == 4_698_794
    assert loaded.info["categories"] == CATEGORIES
    assert sum(loaded.info["category_counts"].values()) == 4_698_794
    assert loaded.dropped == {"empty_sessions": 0}
    assert (hits["step"].to_numpy() == 0).sum() == 989_818


def test_category_counts_match_a_plain_count(loaded: LoadResult, plain_lines: list[str]) -> None:
    assert plain_lines[2].split() == CATEGORIES
    tokens = Counter(tok for line in plain_lines[FIRST_SESSION_LINE - 1 :] for tok in line.split())
    plain = {CATEGORIES[int(k) - 1]: n for k, n in tokens.items()}
    assert loaded.info["category_counts"] == plain
    # Two fixed anchors, so that a change in the file or both readers shows up.
    assert plain["frontpage"] == 940_469
    assert plain["travel"] == 16_972
    views = loaded.hits["page_raw"].value_counts()
    assert int(views["frontpage"]) == 940_469
    assert int(views["bbs"]) == 25_249


def test_first_10000_sessions_match_the_file(loaded: LoadResult, plain_lines: list[str]) -> None:
    body = plain_lines[FIRST_SESSION_LINE - 1 : FIRST_SESSION_LINE - 1 + 10_000]
    expected = [
        (f"msnbc-{FIRST_SESSION_LINE + i}", [CATEGORIES[int(t) - 1] for t in line.split()])
        for i, line in enumerate(body)
    ]
    n_rows = sum(len(pages) for _, pages in expected)
    head = loaded.hits.iloc[:n_rows]
    assert head["session_id"].astype(str).tolist() == [s for s, pages in expected for _ in pages]
    assert head["page_raw"].astype(str).tolist() == [p for _, pages in expected for p in pages]
    assert head["step"].tolist() == [i for _, pages in expected for i in range(len(pages))]
    # The next row starts session 10,001.
    assert str(loaded.hits["session_id"].iloc[n_rows]) == f"msnbc-{FIRST_SESSION_LINE + 10_000}"


def test_file_order_is_time_order(loaded: LoadResult, plain_lines: list[str]) -> None:
    hits = loaded.hits
    start = hits["session_start"]
    origin = pd.Timestamp("1999-09-28T00:00:00Z")
    assert start.iloc[0] == origin
    assert start.iloc[-1] == origin + pd.Timedelta(seconds=989_817)
    assert start.is_monotonic_increasing
    last_line = len(plain_lines)
    assert str(hits["session_id"].iloc[-1]) == f"msnbc-{last_line}"
    assert hits["page_raw"].iloc[-1] == CATEGORIES[int(plain_lines[-1].split()[-1]) - 1]
    assert hits["hit_time"].isna().all()
    assert not np.any(hits["revenue"].to_numpy())
