"""The canonical tables every loader produces and every later stage reads.

Two layers:

* **Raw hits** (what a loader returns): one row per *page view*, in session order, with the page
  as the export recorded it (``page_raw``). Columns are :data:`RAW_COLUMNS`.
* **Canonical hits** (``hits.parquet``): raw hits plus the normalised ``page`` and its
  ``page_group`` (see :mod:`clickstream.pages`), and the ``split`` a session belongs to.

Column meanings (DESIGN.md):

==================  ==========================  ================================================
column              dtype                       meaning
==================  ==========================  ================================================
session_id          str                         unique per session across all input files
visitor_id          str                         the visitor (GA ``fullVisitorId``, GA4
                                                ``user_pseudo_id``); equals session_id if unknown
session_start       datetime64[ns, UTC]         start of the session; drives the temporal split
step                int64                       0-based index of the page view in its session
page_raw            str                         page as exported (path or URL)
page_title          str, nullable               page title where the export has one
content_group       str, nullable               analytics content group where present
hit_time            datetime64[ns, UTC], NaT    time of the page view where known
time_on_page_s      float64, NaN                seconds until the next page view; NaN on the
                                                last page of a session unless the export knows
revenue             float64 >= 0                transaction revenue on this hit, else 0
is_transaction      bool                        a transaction was recorded on this hit
value               float64, NaN                a value the export gives the page view (a
                                                product's price, a score), where mapped; it can
                                                define page value on sites without revenue
page                str                         normalised page identity (canonical only)
page_group          str                         page group (canonical only)
split               str                         ``train`` / ``valid`` / ``test`` (canonical only)
==================  ==========================  ================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clickstream.errors import DataError

EXIT = "EXIT"
"""Special next-page token: the session ends. A prediction target and a transition state."""

ENTRY = "ENTRY"
"""Special transition source state: the session starts (its row is the entry distribution)."""

OTHER_GROUP = "other"
"""Page group for pages below the traffic threshold or matched by no rule."""

RAW_COLUMNS: dict[str, str] = {
    "session_id": "str",
    "visitor_id": "str",
    "session_start": "datetime64[ns, UTC]",
    "step": "int64",
    "page_raw": "str",
    "page_title": "str",
    "content_group": "str",
    "hit_time": "datetime64[ns, UTC]",
    "time_on_page_s": "float64",
    "revenue": "float64",
    "is_transaction": "bool",
    "value": "float64",
}

CANONICAL_COLUMNS: dict[str, str] = {
    **RAW_COLUMNS,
    "page": "str",
    "page_group": "str",
    "split": "str",
}

NULLABLE = {"page_title", "content_group", "hit_time", "time_on_page_s", "value"}
"""Columns that may hold missing values; every other column must be complete."""

OPTIONAL = {"value"}
"""Columns a hits table may lack (tables written before they existed): read as unknown."""

MAX_AMOUNT = 1e12
"""Largest revenue or value one page view may carry (a trillion): anything above is a unit or
parsing mistake (GA360 revenue in micros read as units, an id read as a price), and sums of
numbers such as 1e308 overflow to infinity in every table and in ``meta.json``."""

MAX_TIME_ON_PAGE_S = 1e9
"""Longest time on page accepted, in seconds (about 31 years): above is a unit mistake."""

SPLITS = ("train", "valid", "test")


@dataclass
class LoadResult:
    """What a loader returns.

    Attributes:
        hits: Raw hits, columns :data:`RAW_COLUMNS`, sorted by ``session_id``-order of
            appearance and ``step``.
        source: Loader name (``ga360``, ``ga4``, ``csv``, ``msnbc``, ``synthetic``).
        files: The input files that were read, in order.
        dropped: Counted, documented handling of bad or irrelevant records, e.g.
            ``{"sessions_without_page_views": 12}``; reported in ``meta.json``.
        info: Extra facts about the source worth recording (e.g. session-level revenue totals);
            plain values go to ``meta.json``.
        notices: What the loader guessed or decided for the user (a column read without being
            mapped, a sheet picked, a delimiter sniffed), one line each; printed as they happen
            and recorded in ``meta.json``.
        extra_outputs: Source-specific files to write with the prepared dataset, called by
            :func:`clickstream.prepare.prepare` as ``extra_outputs(out, meta, hits)`` with the
            open output folder, the meta dict (it may add keys) and the canonical hits (e.g.
            the synthetic store writes its true model and Bayes-optimal test log-loss).
    """

    hits: pd.DataFrame
    source: str
    files: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    extra_outputs: Callable[[Any, dict[str, Any], pd.DataFrame], None] | None = None


def empty_raw_hits() -> pd.DataFrame:
    """A zero-row raw hits table with the right dtypes."""
    return coerce_raw_hits(pd.DataFrame({c: [] for c in RAW_COLUMNS}))


def coerce_raw_hits(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with exactly :data:`RAW_COLUMNS`, in order, cast to their dtypes.

    Missing *nullable* columns are added empty; missing required columns raise.
    """
    missing = [c for c in RAW_COLUMNS if c not in df.columns and c not in NULLABLE]
    if missing:
        raise DataError(f"raw hits lack required column(s) {missing}", column=missing[0])
    out = {}
    n = len(df)
    for col, dtype in RAW_COLUMNS.items():
        if col not in df.columns:
            if dtype.startswith("datetime"):
                out[col] = pd.Series(pd.NaT, index=df.index, dtype=dtype)
            elif dtype == "float64":
                out[col] = pd.Series(np.nan, index=df.index, dtype=dtype)
            else:
                out[col] = pd.Series([None] * n, index=df.index, dtype="str")
            continue
        s = df[col]
        if dtype.startswith("datetime"):
            s = pd.to_datetime(s, utc=True).astype(dtype)
        elif dtype == "str":
            s = s.astype("str") if s.dtype != "category" else s
        else:
            s = s.astype(dtype)
        out[col] = s
    return pd.DataFrame(out, copy=False).reset_index(drop=True)


def validate_hits(df: pd.DataFrame, *, source: str, canonical: bool = False) -> None:
    """Check a hits table against the schema; raise :class:`ClickstreamError` naming the problem.

    Checks: every column present; required columns complete; ``revenue`` finite, >= 0 and at
    most :data:`MAX_AMOUNT`; ``value`` finite and at most :data:`MAX_AMOUNT` in size where
    known; ``time_on_page_s`` in ``[0, MAX_TIME_ON_PAGE_S]`` where known; ``is_transaction`` where revenue > 0; within each
    session, ``step`` runs 0, 1, 2, ... in row order and ``session_start`` is constant.

    Args:
        df: The table, raw (:data:`RAW_COLUMNS`) or canonical (:data:`CANONICAL_COLUMNS`).
        source: Where the table came from (a file path or a description), used in messages.
        canonical: Also require the canonical columns.
    """
    columns = CANONICAL_COLUMNS if canonical else RAW_COLUMNS
    for col in columns:
        if col not in df.columns and col not in OPTIONAL:
            raise DataError("missing required column", file=source, column=col)
    if len(df) == 0:
        raise DataError("no page views", file=source)
    for col in columns:
        if col in NULLABLE:
            continue
        bad = df[col].isna().to_numpy()
        if bad.any():
            raise DataError(
                "missing value in a required column", file=source, row=_first(bad), column=col
            )
    revenue = df["revenue"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(revenue) | (revenue < 0) | (revenue > MAX_AMOUNT)
    if bad.any():
        i = _first(bad)
        raise DataError(
            f"revenue must be a finite number >= 0 and at most {MAX_AMOUNT:.0e}, got "
            f"{float(revenue[i])!r}",
            file=source,
            row=i,
            column="revenue",
        )
    if "value" in df.columns:
        value = df["value"].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = np.isinf(value) | (np.abs(value) > MAX_AMOUNT)  # NaN: unknown, allowed
        if bad.any():
            i = _first(bad)
            raise DataError(
                f"value must be a finite number of size at most {MAX_AMOUNT:.0e}, got {value[i]!r}",
                file=source,
                row=i,
                column="value",
            )
    top = df["time_on_page_s"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = (top < 0) | (top > MAX_TIME_ON_PAGE_S)  # NaN compares False: unknown is allowed
    if bad.any():
        i = _first(bad)
        raise DataError(
            f"time on page must be >= 0 and at most {MAX_TIME_ON_PAGE_S:.0e} seconds, got "
            f"{float(top[i])!r}",
            file=source,
            row=i,
            column="time_on_page_s",
        )
    bad = (revenue > 0) & ~df["is_transaction"].to_numpy(dtype=bool)
    if bad.any():
        raise DataError(
            "revenue on a hit that is not a transaction",
            file=source,
            row=_first(bad),
            column="is_transaction",
        )
    if canonical:
        check_no_reserved_names(df["page"], "page")
        check_no_reserved_names(df["page_group"], "page_group")
    codes = session_codes(df)
    new_session = np.r_[True, codes[1:] != codes[:-1]]
    # codes number sessions in order of first appearance: contiguous iff each start is new
    if not np.array_equal(codes[new_session], np.arange(int(new_session.sum()))):
        first_split = _first_repeat(codes, new_session)
        raise DataError(
            "the rows of a session must be contiguous (sorted by session, then step)",
            file=source,
            row=first_split,
            column="session_id",
        )
    steps = df["step"].to_numpy(dtype=np.int64)
    expected = _steps_from_starts(new_session)
    bad = steps != expected
    if bad.any():
        i = _first(bad)
        raise DataError(
            f"step must run 0, 1, 2, ... within a session; expected {expected[i]}, got {steps[i]}",
            file=source,
            row=i,
            column="step",
        )
    start = df["session_start"].to_numpy(dtype="datetime64[ns]")  # not an object array
    starts_at_row = start[np.flatnonzero(new_session)][np.cumsum(new_session) - 1]
    bad = start != starts_at_row
    if bad.any():
        raise DataError(
            "session_start differs within a session",
            file=source,
            row=_first(bad),
            column="session_start",
        )


def check_no_reserved_names(names: np.ndarray | pd.Series, column: str = "page") -> None:
    """Raise if a page is literally named ``ENTRY`` or ``EXIT`` (it would merge with the token)."""
    present = set(pd.unique(np.asarray(names, dtype=object)))
    for token in (ENTRY, EXIT):
        if token in present:
            raise DataError(
                f"page name {token!r} is reserved for the {token} state; rename it with a "
                "pages.rewrite_rules entry",
                column=column,
            )


def session_codes(df: pd.DataFrame) -> np.ndarray:
    """Dense int codes of ``session_id`` in order of first appearance, shape ``(N,)``."""
    codes, _ = pd.factorize(df["session_id"], sort=False)
    return codes.astype(np.int64)


def session_boundaries(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask, shape ``(N,)``: True on the first row of each session (rows contiguous)."""
    codes = session_codes(df)
    return np.r_[True, codes[1:] != codes[:-1]] if len(codes) else np.zeros(0, dtype=bool)


def _steps_from_starts(new_session: np.ndarray) -> np.ndarray:
    idx = np.arange(len(new_session))
    last_start = np.maximum.accumulate(np.where(new_session, idx, 0))
    return idx - last_start


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _first_repeat(codes: np.ndarray, new_session: np.ndarray) -> int:
    seen: set[int] = set()
    for i in np.flatnonzero(new_session):
        c = int(codes[i])
        if c in seen:
            return int(i)
        seen.add(c)
    return 0
