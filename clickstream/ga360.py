"""Google Analytics 360 BigQuery export (``ga_sessions_*``) loader.

Reads the export as it really comes: Parquet, newline-delimited JSON or one JSON document
holding an array of sessions (plain, gzip or zstd), one file, a folder of daily files, a glob or
a list, and flattens the nested ``hits`` with DuckDB SQL
(``clickstream/sql/ga360_flatten_duckdb.sql``).

**Every file is read with the GA360 schema** (:data:`SESSION_FIELDS`), not with the schema
DuckDB would infer from that file alone: a day without transactions has no
``hits.transaction.transactionRevenue`` key at all (329 of 366 days of a real year), another
lacks ``totals`` or ``contentGroup``; a field that a file lacks is null (no transaction, no
content group), a required one that no record has is an error naming the column. Nested
fields stored as JSON text (``"hits": "[{...}]"``, as Snowflake and other warehouse exports
write them), numbers stored as text (BigQuery's JSON export writes INT64 as strings) and
Parquet files whose nested columns differ from day to day are all read the same way. The same flattening in BigQuery's dialect
(``clickstream/sql/ga360_flatten_bigquery.sql``) lets a user with the full dataset (the study used
~1M sessions) run the heavy part where the data lives; its flat output (Parquet or CSV) is
recognised by its columns and loaded directly.

What the hits table takes from the export:

* page views are ``hits.type == 'PAGE'`` only (``EVENT`` hits repeat the page path);
* ``session_id`` is ``fullVisitorId-visitId``; ``session_start`` is ``visitStartTime``;
* ``hit_time`` is ``visitStartTime + hits.time`` (ms); time on page is the gap to the next
  page view (GA's definition; unknown on the session's last page);
* ``revenue`` is ``hits.transaction.transactionRevenue`` / 10^6 on the hit that carries it, and
  ``is_transaction`` marks those hits. Session totals (``totals.totalTransactionRevenue``) are
  *not* used: page value and rewards need to know where in the session a transaction happened,
  and only the hit-level field says so. The two can differ (on the 2017-08-01 sample day the
  hits carry 8,902.00 USD, the session totals 8,890.00, differing in two sessions); both are
  reported in ``LoadResult.info``.
"""

from __future__ import annotations

from importlib import resources
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
    first_line,
    resolve_inputs,
    unwrap_json,
)
from clickstream.schema import MAX_AMOUNT, LoadResult, validate_hits
from clickstream.sessions import finish_raw_hits

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

FLAT_COLUMNS = (
    "session_id",
    "visitor_id",
    "session_start_s",
    "hit_number",
    "hit_time_ms",
    "page_path",
    "page_title",
    "content_group",
    "revenue",
    "is_transaction",
)
"""Columns of the flat table (output of the shipped SQL, DuckDB or BigQuery)."""

NESTED_REQUIRED = ("fullVisitorId", "visitId", "visitStartTime", "hits")

_CONTENT_GROUPS = ", ".join(f"contentGroup{i} VARCHAR" for i in range(1, 6))
SESSION_FIELDS: dict[str, str] = {
    "fullVisitorId": "VARCHAR",
    "visitId": "VARCHAR",
    "visitStartTime": "BIGINT",
    "totals": "STRUCT(transactions BIGINT, totalTransactionRevenue VARCHAR)",
    "hits": (
        'STRUCT(hitNumber BIGINT, "time" BIGINT, "type" VARCHAR, '
        "page STRUCT(pagePath VARCHAR, pageTitle VARCHAR), "
        '"transaction" STRUCT(transactionRevenue VARCHAR), '
        f"contentGroup STRUCT({_CONTENT_GROUPS}))[]"
    ),
}
"""The part of the GA360 export schema the loader reads, as DuckDB types: every file is read
with it (absent fields are null). Revenue is read as text so that a value that is not a
number is refused, not nulled."""

_JSON_STRUCTURE: dict[str, str] = {
    "fullVisitorId": '"VARCHAR"',
    "visitId": '"VARCHAR"',
    "visitStartTime": '"BIGINT"',
    "totals": '{"transactions": "BIGINT", "totalTransactionRevenue": "VARCHAR"}',
    "hits": (
        '[{"hitNumber": "BIGINT", "time": "BIGINT", "type": "VARCHAR", '
        '"page": {"pagePath": "VARCHAR", "pageTitle": "VARCHAR"}, '
        '"transaction": {"transactionRevenue": "VARCHAR"}, "contentGroup": {'
        + ", ".join(f'"contentGroup{i}": "VARCHAR"' for i in range(1, 6))
        + "}}]"
    ),
}
""":data:`SESSION_FIELDS` as ``from_json`` structures (JSON files and JSON text columns)."""


def flatten_sql(source: str) -> str:
    """The DuckDB flattening query over ``source`` (a relation expression)."""
    text = resources.files("clickstream").joinpath("sql/ga360_flatten_duckdb.sql").read_text()
    return text.replace("{source}", source)


def load(path: PathSpec, *, show_progress: bool = True) -> LoadResult:
    """Load GA360 exports (nested or already flattened) into raw page-view hits.

    Args:
        path: A file, folder, glob, or list of them. ``.parquet`` and ``.json``/``.jsonl``/
            ``.ndjson`` (optionally ``.gz``) hold the nested export or the flat table;
            ``.csv`` holds the flat table only.
        show_progress: Show a progress bar over files.

    Returns:
        Raw hits sorted by session start, session and hit number. ``info`` holds the counts
        of the source (sessions, EVENT hits, session-level revenue totals) for the record.

    Raises:
        ClickstreamError: A file is empty, not UTF-8, holds a malformed JSON line, lacks a
            required column, or has negative revenue; the message names the file and the line
            or column.
    """
    files = resolve_inputs(path, PATTERNS)
    con = duckdb.connect()
    frames: list[pd.DataFrame] = []
    info: dict[str, float | int] = {
        "source_sessions": 0,
        "source_event_hits": 0,
        "totals_transactions": 0,
        "totals_transaction_revenue": 0.0,
    }
    dropped = {"sessions_without_page_views": 0, "page_views_without_path": 0}
    for file_index, file in enumerate(
        tqdm(files, desc="ga360", unit="file", disable=not show_progress)
    ):
        relation, columns = _relation(con, file)
        if "hits" in columns:
            for col in NESTED_REQUIRED:
                if col not in columns:
                    raise DataError(
                        "missing required column of a GA360 export", file=str(file), column=col
                    )
            relation = _with_schema(con, relation, columns, file)
            flat = _query(con, flatten_sql(relation), file)
            _add_source_counts(con, relation, info, file)
        else:
            missing = [c for c in FLAT_COLUMNS if c not in columns]
            if missing:
                raise DataError(
                    "neither a GA360 export (no 'hits' column) nor a flat GA360 table "
                    f"(missing {missing}); columns found: {sorted(columns)}",
                    file=str(file),
                    column=missing[0],
                )
            flat = _query(con, f"SELECT {', '.join(FLAT_COLUMNS)} FROM {relation}", file)
            info["source_sessions"] += int(flat["session_id"].nunique())
        flat = _check_flat(flat, file, dropped)
        flat["file_index"] = file_index
        frames.append(flat)
    flat = pd.concat(frames, ignore_index=True)
    sessions_with_views = int(flat["session_id"].nunique())
    dropped["sessions_without_page_views"] = max(
        0, int(info["source_sessions"]) - sessions_with_views
    )
    flat = _separate_split_sessions(flat, info)
    hits = finish_raw_hits(
        pd.DataFrame(
            {
                "session_id": flat["session_id"],
                "visitor_id": flat["visitor_id"],
                "session_start": pd.to_datetime(flat["session_start_s"], unit="s", utc=True),
                "hit_number": flat["hit_number"],
                "hit_time": pd.to_datetime(flat["hit_time_ms"], unit="ms", utc=True),
                "page_raw": flat["page_path"],
                "page_title": flat["page_title"],
                "content_group": flat["content_group"],
                "revenue": flat["revenue"].astype(np.float64),
                "is_transaction": flat["is_transaction"].astype(bool),
            }
        ),
        hit_order="hit_number",
    )
    validate_hits(hits, source=", ".join(str(f) for f in files))
    info["raw_page_paths"] = int(hits["page_raw"].nunique())
    info["page_column"] = "hits.page.pagePath"
    info["hit_transaction_revenue"] = float(hits["revenue"].sum())
    return LoadResult(
        hits=hits, source="ga360", files=[str(f) for f in files], dropped=dropped, info=info
    )


def _relation(con: duckdb.DuckDBPyConnection, file: Path) -> tuple[str, dict[str, str]]:
    """A DuckDB relation reading ``file`` and its top-level columns (name -> DuckDB type;
    ``JSON`` for the nested fields of a JSON file, whose records are parsed once here)."""
    name = file.name.lower()
    quoted = "'" + str(file).replace("'", "''") + "'"
    if name.endswith(".parquet"):
        relation = f"read_parquet({quoted})"
        return relation, _columns(con, relation, file)
    if name.endswith(".csv"):
        check_utf8(file)
        relation = f"read_csv({quoted}, header=true)"
        return relation, _columns(con, relation, file)
    layout, keys = check_json(file, "session")
    fmt = "array" if layout == "array" else "newline_delimited"
    if "hits" in keys:
        # every field as raw JSON: _with_schema types it, whatever this file's records hold
        wanted = ", ".join(f"{k}: 'JSON'" for k in SESSION_FIELDS)
        relation = f"read_json({quoted}, format='{fmt}', columns={{{wanted}}})"
        return relation, {k: "JSON" for k in SESSION_FIELDS if k in keys}
    relation = f"read_json({quoted}, format='{fmt}', sample_size=-1)"
    return relation, _columns(con, relation, file)


def _columns(con: duckdb.DuckDBPyConnection, relation: str, file: Path) -> dict[str, str]:
    try:
        rel = con.sql(f"SELECT * FROM {relation}")
        return {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True)}
    except duckdb.Error as exc:
        raise DataError(f"cannot read: {first_line(exc)}", file=str(file)) from None


def _with_schema(
    con: duckdb.DuckDBPyConnection, relation: str, columns: dict[str, str], file: Path
) -> str:
    """``relation`` read with the GA360 schema: the :data:`SESSION_FIELDS` columns, typed.

    JSON (a JSON file's fields, or JSON text in a Parquet or CSV column) is parsed with
    ``from_json`` and the GA360 structure; a native Parquet struct is cast to it by field
    name (fields it lacks become null), or, where this DuckDB cannot cast, converted through
    JSON.
    """

    def typed(native: str) -> str:
        exprs = []
        for col, dtype in SESSION_FIELDS.items():
            ident, have = f'"{col}"', columns.get(col)
            if have is None:
                expr = f"CAST(NULL AS {dtype})"
            elif have == "JSON":
                expr = f"from_json({unwrap_json(ident)}, '{_JSON_STRUCTURE[col]}')"
            elif have.upper() == "VARCHAR" and col in ("totals", "hits"):
                expr = f"from_json({ident}::JSON, '{_JSON_STRUCTURE[col]}')"
            elif native == "cast":
                expr = f"CAST({ident} AS {dtype})"
            else:
                expr = f"from_json(to_json({ident}), '{_JSON_STRUCTURE[col]}')"
            exprs.append(f"{expr} AS {ident}")
        return f"(SELECT {', '.join(exprs)} FROM {relation})"

    try:
        con.sql(f"DESCRIBE SELECT * FROM {typed('cast')}")
        return typed("cast")
    except duckdb.Error:  # a DuckDB that cannot cast structs by name: through JSON
        return typed("json")


def _query(con: duckdb.DuckDBPyConnection, sql: str, file: Path) -> pd.DataFrame:
    # a nested field that no record has (e.g. no hits.page.pagePath) fails to bind
    return duckdb_df(con, sql, file, "missing required field of a GA360 export")


def _add_source_counts(
    con: duckdb.DuckDBPyConnection, relation: str, info: dict, file: Path
) -> None:
    totals = (
        "coalesce(sum(s.totals.transactions), 0), "
        "coalesce(sum(TRY_CAST(s.totals.totalTransactionRevenue AS DOUBLE)), 0) / 1e6"
    )
    sessions, events, tx, revenue = _query(
        con,
        f"SELECT count(*), "
        f"coalesce(sum(len(list_filter(s.hits, lambda h: h.type = 'EVENT'))), 0), {totals} "
        f"FROM {relation} AS s",
        file,
    ).iloc[0]
    info["source_sessions"] += int(sessions)
    info["source_event_hits"] += int(events)
    info["totals_transactions"] += int(tx)
    info["totals_transaction_revenue"] += float(revenue)


def _check_flat(flat: pd.DataFrame, file: Path, dropped: dict[str, int]) -> pd.DataFrame:
    for col in ("session_id", "visitor_id", "session_start_s", "hit_time_ms"):
        bad = flat[col].isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"missing value (session {flat['session_id'].iloc[i]!r})",
                file=str(file),
                column=col,
            )
    revenue = pd.to_numeric(flat["revenue"], errors="coerce").to_numpy(np.float64)
    is_tx = flat["is_transaction"].fillna(False).to_numpy(bool)
    revenue = np.where(np.isnan(revenue) & ~is_tx, 0.0, revenue)  # no transaction: 0
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(revenue) | (revenue < 0) | (revenue > MAX_AMOUNT)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        got = flat["revenue"].iloc[i]
        shown = "a value that is not a number" if pd.isna(got) else repr(float(got))
        raise DataError(
            f"transaction revenue (in units: micros / 10^6) must be a number in "
            f"[0, {MAX_AMOUNT:.0e}], got {shown} (session {flat['session_id'].iloc[i]!r}, hit "
            f"{flat['hit_number'].iloc[i]})",
            file=str(file),
            column="hits.transaction.transactionRevenue",
        )
    flat["revenue"] = revenue
    no_path = flat["page_path"].isna().to_numpy()
    if no_path.any():
        dropped["page_views_without_path"] += int(no_path.sum())
        flat = flat.loc[~no_path].reset_index(drop=True)
    return flat


def _separate_split_sessions(flat: pd.DataFrame, info: dict) -> pd.DataFrame:
    """Keep apart the parts of a session that appear in several daily files.

    GA360 splits a session at midnight and writes each part to its day's table under the same
    ``visitId``; merged, their hit numbers would interleave. Each part stays its own session.
    """
    files_per_session = flat.groupby("session_id", sort=False)["file_index"].nunique()
    split_ids = files_per_session.index[files_per_session.to_numpy() > 1]
    info["sessions_split_across_files"] = len(split_ids)
    if len(split_ids):
        mask = flat["session_id"].isin(split_ids)
        flat.loc[mask, "session_id"] = (
            flat.loc[mask, "session_id"] + "@" + flat.loc[mask, "file_index"].astype(str)
        )
    return flat
