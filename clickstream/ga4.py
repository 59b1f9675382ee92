"""Google Analytics 4 BigQuery export (``events_*``) loader.

Reads the export as it really comes (Parquet, newline-delimited JSON or one JSON document
holding an array of events; plain, gzip or zstd): one file, a folder of daily files, a glob or a
list. Each file is read with its own schema (a day without purchases has no ``ecommerce``
revenue field, a parameter no event of the day has is absent: both read as null); JSON files
are read with the GA4 fields typed explicitly (:data:`JSON_STRUCTURE`), so that numbers written
as text (BigQuery's INT64) and nested fields written as JSON text (``"event_params":
"[{...}]"``, as Snowflake and other warehouse exports write them) read the same as native ones;
JSON text in a Parquet column is parsed the same way. GA4 stores one row per *event*, with the page and the
session in the repeated ``event_params`` key/value records; DuckDB SQL picks them out
(:data:`FLATTEN_SQL`). The same flattening in BigQuery's dialect
(``clickstream/sql/ga4_bigquery.sql``) lets a user with the full dataset run the heavy part where
the data lives; its output, the *flat table* (:data:`FLAT_COLUMNS`, Parquet, CSV or NDJSON), is
recognised by its ``session_id`` column and loaded directly. :func:`flatten` writes the same flat
table from an export with DuckDB.

What the hits table takes from the export:

* page views are events with ``event_name = 'page_view'``; every other event is only counted;
* ``session_id`` is ``user_pseudo_id-ga_session_id`` (``ga_session_id`` is the ``int_value`` of
  that event parameter); ``visitor_id`` is ``user_pseudo_id``. Events lacking either (GA4's
  consent-mode pings have neither) belong to no session: dropped and counted;
* ``session_start`` is the earliest ``event_timestamp`` (microseconds since the epoch, UTC) of
  *all* the session's events, page views or not (GA4 has no session start field);
* ``hit_time`` is ``event_timestamp``; page views are ordered by it (ties: file, then row order),
  and time on page is the gap to the next page view (unknown on the session's last page);
* ``page_raw`` is the ``page_location`` parameter (a full URL; normalised later by
  :mod:`clickstream.pages`), ``page_title`` and ``content_group`` the parameters of those names.
  Page views without a page (the parameter absent, null, empty or only whitespace) are dropped
  and counted, never read as the home page; the page view before one keeps its time on page up
  to it (GA's time to the next page view), and the page views around it then follow each other
  in the hits, a transition the visitor did not make directly, counted in
  ``info["transitions_across_dropped_page_views"]`` and said in the notice;
* ``revenue``: each ``purchase`` event's ``ecommerce.purchase_revenue_in_usd`` is booked on the
  last page view of the same session at or before the purchase (a page view at the very same
  microsecond counts), which gets ``is_transaction = True``; several purchases on one page view
  add up. A purchase with no such page view cannot be placed: dropped and counted, its revenue
  recorded in ``info``. A purchase with no revenue value counts as a transaction of 0 USD
  (counted in ``info``). Revenue that is negative, not a number, infinite or above
  :data:`clickstream.schema.MAX_AMOUNT` raises :class:`ClickstreamError` naming the file, the
  line (NDJSON, CSV) or row (Parquet) and the column: a refund belongs in
  ``ecommerce.refund_value_in_usd``, so a negative purchase means a broken export.

**Page value** (:mod:`clickstream.catalog`). A GA360 transaction rides on the hit of the page
it happens on (the receipt page), and the pages viewed before that hit are credited. A GA4
purchase is an event of its own, *after* the page view it is booked on, so every page viewed
at or before the purchase is credited, the page view it is booked on included
(``info["revenue_timing"] = "after_view"``, which :func:`clickstream.prepare.prepare` passes to
the catalog); a page viewed after the purchase is not. The receipt page (the purchase's own
``page_location``, which is not read) is credited when its page view came before the purchase,
as GA credits every page viewed before a transaction. The catalog's ``transactions`` and
``revenue`` of a page count the purchases that followed a view of it with no other page view
between.

**Repeated events.** GA4 exports are known to hold exact duplicate rows, and overlapping
exports repeat events. A page view or purchase equal to an earlier one in every field the
loader reads (session, visitor, ``event_timestamp`` to the microsecond, event name, page, title,
content group, revenue) and, in an export, in all its ``event_params`` (keys and values) is the
same event written twice: it is dropped, counted and noticed, so that neither page views nor
revenue count twice. Events that differ in any of these are kept.

A GA4 session that runs past midnight keeps its ``ga_session_id``; its events land in two daily
tables and are joined again here (unlike GA360, whose split sessions stay apart).

``LoadResult.dropped`` keys: ``page_views_without_session_id``, ``purchases_without_session_id``,
``page_views_without_page_location``, ``purchases_without_page_view``, and ``duplicate_events``
where some were repeated (page views and purchases together). ``LoadResult.info`` keys:
``source_events`` (events read; for a flat table only its page view and purchase rows),
``source_page_views``, ``source_purchases``, ``source_purchase_revenue`` (all purchases, placed or
not), ``events_without_session_id``, ``purchases_placed``, ``purchase_revenue_placed``,
``purchase_revenue_without_session_id``, ``purchase_revenue_without_page_view``,
``purchase_revenue_duplicate`` (of the repeated purchases), ``purchases_without_revenue``,
``sessions``, ``raw_page_paths``, ``page_column``, ``revenue_timing`` (``after_view``),
``transitions_across_dropped_page_views``. Placed plus the three dropped revenues equal the source
revenue. Each nonzero ``dropped`` count is also said in a notice.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clickstream.errors import DataError
from clickstream.io import (
    PathSpec,
    check_json,
    check_utf8,
    duckdb_df,
    duckdb_errors,
    first_line,
    iter_text_lines,
    json_layout,
    notice,
    resolve_inputs,
    unwrap_json,
)
from clickstream.schema import MAX_AMOUNT, LoadResult, validate_hits
from clickstream.sessions import finish_raw_hits_dropping

PATTERNS = (
    "*.parquet",
    "*.json",
    "*.jsonl",
    "*.ndjson",
    "*.json.gz",
    "*.jsonl.gz",
    "*.ndjson.gz",
    "*.json.zst",
    "*.jsonl.zst",
    "*.ndjson.zst",
    "*.csv",
)
"""Files a folder contributes: the export formats, plus CSV for the flat table."""

PAGE_VIEW = "page_view"
PURCHASE = "purchase"

NESTED_REQUIRED = ("event_name", "event_timestamp", "user_pseudo_id", "event_params")
"""Columns a GA4 export must have (``ecommerce`` is optional: without it purchases carry 0)."""

FLAT_COLUMNS = (
    "session_id",
    "visitor_id",
    "session_start_us",
    "event_timestamp",
    "event_name",
    "page_location",
    "page_title",
    "revenue",
)
"""Columns of the flat table (output of ``sql/ga4_bigquery.sql`` and :func:`flatten`).

One row per ``page_view`` or ``purchase`` event. ``session_start_us`` and ``event_timestamp``
are microseconds since the epoch; ``revenue`` is the purchase revenue in USD (null on page
views). An optional ``content_group`` column is used where present. With ``page_field`` other
than ``page_location``, the page column is named after it.
"""

REVENUE_FIELD = "ecommerce.purchase_revenue_in_usd"

JSON_STRUCTURE: dict[str, str] = {
    "event_name": '"VARCHAR"',
    "event_timestamp": '"VARCHAR"',
    "user_pseudo_id": '"VARCHAR"',
    "event_params": (
        '[{"key": "VARCHAR", "value": {"string_value": "VARCHAR", "int_value": "VARCHAR", '
        '"float_value": "DOUBLE", "double_value": "DOUBLE"}}]'
    ),
    "ecommerce": '{"purchase_revenue_in_usd": "VARCHAR"}',
}
"""The GA4 fields the loader reads, as ``from_json`` structures: JSON files are read with them
(absent fields null; revenue as text so that a value that is not a number is refused)."""

FLATTEN_SQL = """
CREATE OR REPLACE TEMP TABLE ga4_events AS
SELECT
    row_number() OVER () - 1                                  AS record,
    CAST(e.event_name AS VARCHAR)                             AS event_name,
    CAST(e.user_pseudo_id AS VARCHAR)                         AS visitor_id,
    TRY_CAST(e.event_timestamp AS BIGINT)                     AS event_timestamp,
    {session_param}                                           AS ga_session_id,
    -- only page views need their page: skip the list scans for other events
    CASE WHEN e.event_name = 'page_view' THEN {page_param} END  AS page_location,
    CASE WHEN e.event_name = 'page_view' THEN {title_param} END AS page_title,
    CASE WHEN e.event_name = 'page_view' THEN {group_param} END AS content_group,
    CASE WHEN e.event_name = 'purchase' THEN {revenue} END      AS revenue_raw,
    -- all event parameters, to tell a repeated event from another one at the same microsecond
    CASE WHEN e.event_name IN ('page_view', 'purchase') THEN {params_fp} END AS params_fp
FROM {source} AS e;
"""
"""DuckDB: one slim row per event of the export ``{source}`` (parameters picked from
``event_params``); :data:`SESSIONS_SQL` then sessionises it. Placeholders are filled by
:func:`_flatten_nested` from the export's actual schema (BigQuery's NDJSON writes INT64 as
strings, and a field no record has is absent)."""

SESSIONS_SQL = """
WITH sessions AS (
    SELECT *, visitor_id || '-' || CAST(ga_session_id AS VARCHAR) AS session_id
    FROM ga4_events
)
SELECT
    record,
    session_id,
    visitor_id,
    -- the session starts with its first event of any kind (GA4 has no session start field)
    min(event_timestamp) OVER (PARTITION BY session_id)       AS session_start_us,
    event_timestamp,
    event_name,
    page_location,
    page_title,
    content_group,
    TRY_CAST(revenue_raw AS DOUBLE)                           AS revenue,
    revenue_raw IS NOT NULL                                   AS has_revenue,
    params_fp
FROM sessions
QUALIFY event_name IN ('page_view', 'purchase')
"""


def load(
    path: PathSpec, *, page_field: str = "page_location", show_progress: bool = True
) -> LoadResult:
    """Load GA4 exports (nested events or the flat table) into raw page-view hits.

    Args:
        path: A file, folder, glob, or list of them. ``.parquet`` and ``.json``/``.jsonl``/
            ``.ndjson`` (optionally ``.gz``) hold the export or the flat table; ``.csv`` holds
            the flat table only.
        page_field: The ``event_params`` key (export) or column (flat table) holding the page.
            ``page_location`` (the full URL) is what GA4 always records; a custom parameter
            such as ``page_path`` can be used instead.
        show_progress: Show a progress bar over files.

    Returns:
        Raw hits sorted by session start, session and hit time, with revenue placed on page
        views. ``dropped`` and ``info`` hold the counts and revenue totals listed in the module
        docstring; ``notices`` says each drop.

    Raises:
        ClickstreamError: A file is empty, not UTF-8, holds a malformed JSON line, lacks a
            required column, has a page view or purchase without a valid ``event_timestamp``,
            or a negative / NaN / infinite / non-numeric / absurdly large purchase revenue (the
            message names the file and the line, row or column); or no page view survives.
    """
    files = resolve_inputs(path, PATTERNS)
    con = duckdb.connect()
    info: dict[str, float | int] = {
        "source_events": 0,
        "source_page_views": 0,
        "source_purchases": 0,
        "source_purchase_revenue": 0.0,
        "events_without_session_id": 0,
        "purchases_without_revenue": 0,
    }
    frames = []
    for file_index, file in enumerate(
        tqdm(files, desc="ga4", unit="file", disable=not show_progress)
    ):
        flat = _read_file(con, file, page_field, info)
        flat["file_index"] = file_index
        frames.append(flat)
    events = pd.concat(frames, ignore_index=True)
    notices: list[str] = []
    events, repeated = _drop_repeated_events(events, info, files, notices)
    hits, dropped = _place_purchases(events, info, files)
    if repeated:  # only then: a clean export keeps the four keys it always had
        dropped["duplicate_events"] = repeated
    hits, bridged = finish_raw_hits_dropping(hits, "no_page", hit_order="hit_time")
    info["transitions_across_dropped_page_views"] = bridged
    _notice_drops(dropped, page_field, notices, bridged)
    validate_hits(hits, source=", ".join(str(f) for f in files))
    info["sessions"] = int(hits["session_id"].nunique())
    info["raw_page_paths"] = int(hits["page_raw"].nunique())
    info["page_column"] = page_field  # type: ignore[assignment]
    # the purchase followed the page view it is booked on: the catalog credits that page too
    info["revenue_timing"] = "after_view"  # type: ignore[assignment]
    return LoadResult(
        hits=hits,
        source="ga4",
        files=[str(f) for f in files],
        dropped=dropped,
        info=info,
        notices=notices,
    )


def flatten(path: PathSpec, *, page_field: str = "page_location") -> pd.DataFrame:
    """The flat table (:data:`FLAT_COLUMNS`) of GA4 exports, computed with DuckDB.

    The local counterpart of ``sql/ga4_bigquery.sql``: save it (e.g. as Parquet) and
    :func:`load` reads it back directly, skipping the nested parsing.

    Args:
        path: A file, folder, glob, or list of them, as for :func:`load` (exports only).
        page_field: The ``event_params`` key holding the page; names the page column.
    """
    files = resolve_inputs(path, PATTERNS)
    con = duckdb.connect()
    frames = []
    for file in files:
        relation, _ = _relation(file, con)
        columns = _describe(con, relation, file)
        if "session_id" in columns:
            raise DataError("already a flat table", file=str(file))
        frames.append(_flatten_nested(con, relation, columns, file, page_field, None))
    flat = pd.concat(frames, ignore_index=True)
    columns = [page_field if c == "page_location" else c for c in FLAT_COLUMNS]
    flat = flat.rename(columns={"page_location": page_field})
    flat["content_group"] = flat["content_group"].astype("str")  # all-null stays text
    return flat[[*columns, "content_group"]]


def _read_file(
    con: duckdb.DuckDBPyConnection, file: Path, page_field: str, info: dict
) -> pd.DataFrame:
    """Page view and purchase rows of one file, flat, with ``record`` (0-based row) kept."""
    relation, is_text = _relation(file, con)
    columns = _describe(con, relation, file)
    if "session_id" in columns:
        flat = _read_flat(con, relation, columns, file, page_field)
        revenue_column = "revenue"
        info["source_events"] += len(flat)
        info["events_without_session_id"] += int(flat["session_id"].isna().sum())
    elif any(c in columns for c in NESTED_REQUIRED):
        flat = _flatten_nested(con, relation, columns, file, page_field, info)
        revenue_column = REVENUE_FIELD
    else:
        missing = [c for c in FLAT_COLUMNS if c not in columns]
        raise DataError(
            f"neither a GA4 export (needs {list(NESTED_REQUIRED)}) nor a flat GA4 table "
            f"(missing {missing}); columns found: {sorted(columns)}",
            file=str(file),
            column=missing[0],
        )
    _check_rows(flat, file, is_text, revenue_column)
    is_page_view = flat["event_name"].to_numpy() == PAGE_VIEW
    purchases = flat.loc[~is_page_view]
    info["source_page_views"] += int(is_page_view.sum())
    info["source_purchases"] += len(purchases)
    info["source_purchase_revenue"] += float(purchases["revenue"].fillna(0.0).sum())
    info["purchases_without_revenue"] += int((~purchases["has_revenue"]).sum())
    return flat


def _flatten_nested(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    columns: dict[str, duckdb.DuckDBPyType],
    file: Path,
    page_field: str,
    info: dict | None,
) -> pd.DataFrame:
    """Flat rows (as :func:`_read_flat` returns them) of one GA4 export file."""
    for col in NESTED_REQUIRED:
        if col not in columns:
            raise DataError("missing required column of a GA4 export", file=str(file), column=col)
    for col in ("event_name", "user_pseudo_id"):
        if columns[col].id != "varchar":
            raise DataError(
                f"expected text, found {columns[col]} (mixed types across events?)",
                file=str(file),
                column=col,
            )
    value_fields = _param_value_fields(columns["event_params"], file)
    ecommerce = _struct_fields(columns["ecommerce"]) if "ecommerce" in columns else None
    has_revenue_field = ecommerce is not None and "purchase_revenue_in_usd" in ecommerce
    sql = FLATTEN_SQL.format(
        source=relation,
        session_param=_param(value_fields, "ga_session_id", as_int=True),
        page_param=_param(value_fields, page_field, as_int=False),
        title_param=_param(value_fields, "page_title", as_int=False),
        group_param=_param(value_fields, "content_group", as_int=False),
        revenue="e.ecommerce.purchase_revenue_in_usd" if has_revenue_field else "NULL",
        params_fp=_params_fingerprint(value_fields),
    )
    _execute(con, sql, file)
    counts = _query(
        con,
        "SELECT count(*) AS n, count(*) FILTER (WHERE visitor_id IS NULL "
        "OR ga_session_id IS NULL) AS no_session FROM ga4_events",
        file,
    )
    if info is not None:
        info["source_events"] += int(counts["n"].iloc[0])
        info["events_without_session_id"] += int(counts["no_session"].iloc[0])
    flat = _query(con, SESSIONS_SQL, file)
    con.execute("DROP TABLE ga4_events")
    return flat


def _read_flat(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    columns: dict[str, duckdb.DuckDBPyType],
    file: Path,
    page_field: str,
) -> pd.DataFrame:
    needed = [page_field if c == "page_location" else c for c in FLAT_COLUMNS]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"flat GA4 table lacks {missing} (columns found: {sorted(columns)})",
            file=str(file),
            column=missing[0],
        )
    group = "CAST(content_group AS VARCHAR)" if "content_group" in columns else "NULL"
    page = '"' + page_field.replace('"', '""') + '"'
    sql = f"""
        WITH src AS (SELECT row_number() OVER () - 1 AS record, * FROM {relation})
        SELECT
            record,
            CAST(session_id AS VARCHAR)                 AS session_id,
            CAST(visitor_id AS VARCHAR)                 AS visitor_id,
            TRY_CAST(session_start_us AS BIGINT)        AS session_start_us,
            TRY_CAST(event_timestamp AS BIGINT)         AS event_timestamp,
            CAST(event_name AS VARCHAR)                 AS event_name,
            CAST({page} AS VARCHAR)                     AS page_location,
            CAST(page_title AS VARCHAR)                 AS page_title,
            {group}                                     AS content_group,
            TRY_CAST(revenue AS DOUBLE)                 AS revenue,
            revenue IS NOT NULL AND event_name = 'purchase' AS has_revenue,
            CAST(NULL AS UBIGINT)                       AS params_fp
        FROM src
        WHERE event_name IN ('page_view', 'purchase')
    """
    flat = _query(con, sql, file)
    # a flat table may leave the visitor unknown: the schema then uses the session id
    flat["visitor_id"] = flat["visitor_id"].fillna(flat["session_id"])
    return flat


def _check_rows(flat: pd.DataFrame, file: Path, is_text: bool, revenue_column: str) -> None:
    """Reject page views and purchases without a time, and purchases with invalid revenue
    (negative, not a number, infinite or above :data:`~clickstream.schema.MAX_AMOUNT`)."""
    bad = flat["event_timestamp"].isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{flat['event_name'].iloc[i]} event without a valid timestamp (integer "
            "microseconds since the epoch)",
            column="event_timestamp",
            **_where(file, int(flat["record"].iloc[i]), is_text),
        )
    is_purchase = flat["event_name"].to_numpy() == PURCHASE
    revenue = flat["revenue"].to_numpy(np.float64, na_value=np.nan)
    has_value = flat["has_revenue"].to_numpy(bool)
    # NaN stored as a float and text that is no number both end up NaN here; the bounds are
    # validate_hits' own, checked here so that the message names the file's line or row
    with np.errstate(invalid="ignore"):
        out_of_range = ~np.isfinite(revenue) | (revenue < 0) | (revenue > MAX_AMOUNT)
    invalid = is_purchase & has_value & out_of_range
    if invalid.any():
        i = int(np.flatnonzero(invalid)[0])
        shown = "a value that is not a number" if np.isnan(revenue[i]) else repr(float(revenue[i]))
        raise DataError(
            f"purchase revenue must be a finite number >= 0 and at most {MAX_AMOUNT:.0e} "
            f"(refunds belong in refund_value_in_usd), got {shown}",
            column=revenue_column,
            **_where(file, int(flat["record"].iloc[i]), is_text),
        )


_EVENT_KEY = (
    "session_id",
    "visitor_id",
    "event_timestamp",
    "event_name",
    "page_location",
    "page_title",
    "content_group",
    "revenue",
    "has_revenue",
    "params_fp",
)
"""What makes two rows the same event (``params_fp``: a hash of all its ``event_params``, null
for a flat table, which has none). ``session_start_us`` is not part of an event: an export's
is computed from the file's events."""


def _drop_repeated_events(
    events: pd.DataFrame, info: dict, files: list[Path], notices: list[str]
) -> tuple[pd.DataFrame, int]:
    """Drop page views and purchases equal to an earlier one (:data:`_EVENT_KEY`): the same
    event written twice (duplicate export rows, overlapping exports). The first is kept, in
    file and row order; the repeated purchases' revenue goes to ``info``."""
    repeated = events.duplicated(subset=list(_EVENT_KEY), keep="first").to_numpy()
    revenue = events["revenue"].to_numpy(np.float64, na_value=np.nan)
    info["purchase_revenue_duplicate"] = float(np.nansum(revenue[repeated]))
    if not repeated.any():
        return events, 0
    is_pv = events["event_name"].to_numpy() == PAGE_VIEW
    first = events.loc[repeated].iloc[0]
    notice(
        f"ga4: {int(repeated.sum()):,} events repeat an earlier event in every field "
        f"({int((repeated & is_pv).sum()):,} page views, {int((repeated & ~is_pv).sum()):,} "
        f"purchases of {info['purchase_revenue_duplicate']:,.2f} USD; the first: "
        f"{first['event_name']} of session {first['session_id']!r} at event_timestamp "
        f"{first['event_timestamp']} in {files[int(first['file_index'])]}): each counted once "
        "(dropped.duplicate_events)",
        notices,
    )
    return events.loc[~repeated].reset_index(drop=True), int(repeated.sum())


_DROPS = {
    "page_views_without_session_id": (
        "page view",
        "without a session id (user_pseudo_id and ga_session_id)",
    ),
    "purchases_without_session_id": (
        "purchase",
        "without a session id (user_pseudo_id and ga_session_id; revenue in "
        "info.purchase_revenue_without_session_id)",
    ),
    "page_views_without_page_location": (
        "page view",
        "without a page ({field} absent, null, empty or only whitespace; not read as the "
        "home page)",
    ),
    "purchases_without_page_view": (
        "purchase",
        "without a page view of the same session at or before the purchase (revenue in "
        "info.purchase_revenue_without_page_view)",
    ),
}
"""What each count of :func:`_place_purchases` drops: (noun, the rest of the sentence)."""


def _notice_drops(
    dropped: dict[str, int], page_field: str, notices: list[str], bridged: int = 0
) -> None:
    """One notice for each nonzero count of :func:`_place_purchases` (repeats: said apart);
    ``bridged``: transitions across dropped page views without a page."""
    for key, (noun, text) in _DROPS.items():
        n = dropped.get(key, 0)
        if n:
            what = f"{n:,} {noun}{'' if n == 1 else 's'} {text.format(field=page_field)}"
            if key == "page_views_without_page_location":
                what += (
                    "; the page view before each keeps its time on page up to it (GA's time to "
                    "the next page view)"
                )
                if bridged:
                    what += (
                        f"; {bridged:,} transition{'' if bridged == 1 else 's'} between the "
                        "page views around them now read as direct though the visitor went "
                        "through a page view without a page "
                        "(info.transitions_across_dropped_page_views)"
                    )
            notice(f"ga4: dropped {what} (dropped.{key})", notices)


def _blank(text: pd.Series) -> np.ndarray:
    """Where ``text`` is null, empty or only whitespace, shape ``(N,)``."""
    stripped = text.astype(object).where(text.notna(), "").astype(str).str.strip()
    return (stripped == "").to_numpy(dtype=bool)


def _place_purchases(
    events: pd.DataFrame, info: dict, files: list[Path]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop what cannot be used, credit each purchase to its page view; page-view rows out.

    Page views without a page are kept, marked in ``no_page``, for the time on page of the
    page view before them; no purchase is placed on them."""
    name = events["event_name"].to_numpy()
    is_pv = name == PAGE_VIEW
    no_session = events["session_id"].isna().to_numpy()
    revenue = events["revenue"].to_numpy(np.float64, na_value=np.nan)
    revenue = np.where(np.isnan(revenue), 0.0, revenue)  # validated: NaN only where absent
    no_page = _blank(events["page_location"])  # "" or "  " is no page, not the home page
    dropped = {
        "page_views_without_session_id": int((is_pv & no_session).sum()),
        "purchases_without_session_id": int((~is_pv & no_session).sum()),
        "page_views_without_page_location": int((is_pv & ~no_session & no_page).sum()),
        "purchases_without_page_view": 0,
    }
    info["purchase_revenue_without_session_id"] = float(revenue[~is_pv & no_session].sum())
    # a session runs over several daily files: its start is its earliest event in any of them
    start = events["session_start_us"].fillna(events["event_timestamp"])
    events = events.assign(
        session_start_us=start.groupby(events["session_id"]).transform("min"),
        revenue=revenue,
        kind=np.where(is_pv, 0, 1),  # a page view at the purchase's microsecond comes first
    )
    # page views without a page stay until time on page is computed (finish_raw_hits_dropping)
    events = events.assign(no_page=is_pv & no_page)
    events = events.loc[~no_session].sort_values(
        ["session_id", "event_timestamp", "kind", "file_index", "record"], kind="stable"
    )
    events = events.reset_index(drop=True)
    any_pv = events["kind"].to_numpy() == 0
    is_pv = any_pv & ~events["no_page"].to_numpy(bool)  # page views with a page
    n = len(events)
    if not is_pv.any():
        raise DataError(
            f"no page views: {info['source_events']:,} events read, "
            f"{info['source_page_views']:,} of them page_view, none with a session id "
            f"(user_pseudo_id + ga_session_id) and a page",
            file=", ".join(str(f) for f in files),
        )
    # last page view so far, in (session, time) order; valid if it is in the same session
    session_code = pd.factorize(events["session_id"], sort=False)[0]
    last_pv = np.maximum.accumulate(np.where(is_pv, np.arange(n), -1))
    is_purchase = ~any_pv
    placed = is_purchase & (last_pv >= 0)
    placed[placed] = session_code[last_pv[placed]] == session_code[placed]
    unplaced = is_purchase & ~placed
    revenue = events["revenue"].to_numpy(np.float64)
    credited = np.bincount(last_pv[placed], weights=revenue[placed], minlength=n)
    n_purchases = np.bincount(last_pv[placed], minlength=n)
    dropped["purchases_without_page_view"] = int(unplaced.sum())
    info["purchases_placed"] = int(placed.sum())
    info["purchase_revenue_placed"] = float(revenue[placed].sum())
    info["purchase_revenue_without_page_view"] = float(revenue[unplaced].sum())
    pv = events.loc[any_pv]
    hits = pd.DataFrame(
        {
            "session_id": pv["session_id"],
            "visitor_id": pv["visitor_id"],
            "session_start": pd.to_datetime(pv["session_start_us"], unit="us", utc=True),
            "hit_time": pd.to_datetime(pv["event_timestamp"], unit="us", utc=True),
            "page_raw": pv["page_location"],
            "page_title": pv["page_title"],
            "content_group": pv["content_group"],
            "revenue": credited[any_pv],
            "is_transaction": n_purchases[any_pv] > 0,
            "no_page": pv["no_page"].to_numpy(bool),
        }
    )
    return hits.reset_index(drop=True), dropped


def _relation(file: Path, con: duckdb.DuckDBPyConnection | None = None) -> tuple[str, bool]:
    """DuckDB relation reading ``file``, and whether the file is text (errors give lines)."""
    name = file.name.lower()
    quoted = "'" + str(file).replace("'", "''") + "'"
    if name.endswith(".parquet"):
        relation = f"read_parquet({quoted})"
        return _parse_json_text_columns(con, relation, file), False
    if name.endswith(".csv"):
        check_utf8(file)
        # all text: user_pseudo_id looks like a decimal number and must keep every digit
        return f"read_csv({quoted}, header=true, all_varchar=true)", True
    layout, keys = check_json(file, "event")
    fmt = "array" if layout == "array" else "newline_delimited"
    if "session_id" in keys or not any(k in keys for k in NESTED_REQUIRED):
        return f"read_json({quoted}, format='{fmt}', sample_size=-1)", True
    wanted = ", ".join(f"{k}: 'JSON'" for k in JSON_STRUCTURE if k in keys)
    raw = f"read_json({quoted}, format='{fmt}', columns={{{wanted}}})"
    exprs = ", ".join(
        f"from_json({unwrap_json(k)}, '{JSON_STRUCTURE[k]}') AS {k}"
        for k in JSON_STRUCTURE
        if k in keys
    )
    return f"(SELECT {exprs} FROM {raw})", True


def _parse_json_text_columns(
    con: duckdb.DuckDBPyConnection | None, relation: str, file: Path
) -> str:
    """A Parquet relation whose nested GA4 columns stored as JSON text are parsed."""
    if con is None:
        return relation
    columns = _describe(con, relation, file)
    text = [
        c
        for c in ("event_params", "ecommerce")
        if c in columns and columns[c].id == "varchar" and "session_id" not in columns
    ]
    if not text:
        return relation
    exprs = ", ".join(f"from_json({c}::JSON, '{JSON_STRUCTURE[c]}') AS {c}" for c in text)
    return f"(SELECT * REPLACE ({exprs}) FROM {relation})"


def _describe(
    con: duckdb.DuckDBPyConnection, relation: str, file: Path
) -> dict[str, duckdb.DuckDBPyType]:
    try:
        rel = con.sql(f"SELECT * FROM {relation}")
        return dict(zip(rel.columns, rel.types, strict=True))
    except duckdb.Error as exc:
        raise DataError(f"cannot read: {first_line(exc)}", file=str(file)) from None


def _struct_fields(dtype: duckdb.DuckDBPyType) -> dict[str, duckdb.DuckDBPyType] | None:
    return dict(dtype.children) if dtype.id == "struct" else None


def _param_value_fields(dtype: duckdb.DuckDBPyType, file: Path) -> set[str]:
    """Fields of ``event_params[].value`` present in this file's schema."""
    record = dict(dtype.children).get("child") if dtype.id == "list" else None
    fields = _struct_fields(record) if record is not None else None
    value = fields.get("value") if fields and "key" in fields else None
    value_fields = _struct_fields(value) if value is not None else None
    if value_fields is None:
        raise DataError(
            f"expected a list of {{key, value}} records, found {dtype}",
            file=str(file),
            column="event_params",
        )
    return set(value_fields)


def _param(value_fields: set[str], key: str, *, as_int: bool) -> str:
    """SQL picking parameter ``key`` of event ``e`` (NULL where absent).

    ``int_value`` for integers (BigQuery's NDJSON writes them as strings, hence the cast; a
    ``string_value`` holding digits is accepted too), ``string_value`` for text.
    """
    if as_int:
        fields = [f for f in ("int_value", "string_value") if f in value_fields]
        parts = [f"TRY_CAST(p.value.{f} AS BIGINT)" for f in fields]
    else:
        parts = ["CAST(p.value.string_value AS VARCHAR)"] if "string_value" in value_fields else []
    if not parts:
        return "CAST(NULL AS BIGINT)" if as_int else "CAST(NULL AS VARCHAR)"
    value = parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
    literal = "'" + key.replace("'", "''") + "'"
    # list comprehension, not a lambda: its syntax is the same in every DuckDB >= 1.0
    return f"[{value} FOR p IN e.event_params IF p.key = {literal}][1]"


def _params_fingerprint(value_fields: set[str]) -> str:
    """SQL hashing all of event ``e``'s parameters, the same for an event read from Parquet
    or JSON (every value as text: BigQuery's JSON writes INT64 as strings)."""
    values = ", ".join(
        f"'{f}': "
        + (f"CAST(p.value.{f} AS VARCHAR)" if f in value_fields else "CAST(NULL AS VARCHAR)")
        for f in ("string_value", "int_value", "float_value", "double_value")
    )
    return f"hash([{{'key': CAST(p.key AS VARCHAR), {values}}} FOR p IN e.event_params])"


def _execute(con: duckdb.DuckDBPyConnection, sql: str, file: Path) -> None:
    with duckdb_errors(file, "unexpected GA4 export schema"):
        con.execute(sql)


def _query(con: duckdb.DuckDBPyConnection, sql: str, file: Path) -> pd.DataFrame:
    return duckdb_df(con, sql, file, "unexpected GA4 table schema")


def _where(file: Path, record: int, is_text: bool) -> dict[str, object]:
    """Location keywords for :class:`ClickstreamError`: a line in text files, else a row."""
    if not is_text:
        return {"file": str(file), "row": record}
    if file.name.lower().endswith(".csv"):
        return {"file": str(file), "line": record + 2}  # header line, then 1-based
    if json_layout(file) == "array":
        return {"file": str(file), "row": record}  # the record's position in the array
    return {"file": str(file), "line": _line_of_record(file, record)}


def _line_of_record(file: Path, record: int) -> int:
    """1-based line of the ``record``-th (0-based) JSON object; blank lines hold none."""
    seen = -1
    for number, text in iter_text_lines(file):
        if text.strip():
            seen += 1
            if seen == record:
                return number
    return seen + 1
