"""Google Analytics 360 BigQuery export (``ga_sessions_*``) loader.

Reads the export as BigQuery writes it (Parquet, or newline-delimited JSON, optionally gzipped),
one file, a folder, a glob or a list, and flattens the nested ``hits`` with DuckDB SQL
(``clickstream/sql/ga360_flatten_duckdb.sql``). The same flattening in BigQuery's dialect
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

from clickstream.errors import ClickstreamError
from clickstream.io import (
    PathSpec,
    check_json_lines,
    check_utf8,
    duckdb_df,
    first_line,
    resolve_inputs,
)
from clickstream.schema import LoadResult, validate_hits
from clickstream.sessions import finish_raw_hits

PATTERNS = ("*.parquet", "*.json", "*.jsonl", "*.ndjson", "*.json.gz", "*.jsonl.gz", "*.csv")

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
        relation = _relation(con, file)
        columns = _columns(con, relation, file)
        if "hits" in columns:
            for col in NESTED_REQUIRED:
                if col not in columns:
                    raise ClickstreamError(
                        "missing required column of a GA360 export", file=str(file), column=col
                    )
            flat = _query(con, flatten_sql(relation), file)
            _add_source_counts(con, relation, columns, info, file)
        else:
            missing = [c for c in FLAT_COLUMNS if c not in columns]
            if missing:
                raise ClickstreamError(
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
    info["hit_transaction_revenue"] = float(hits["revenue"].sum())
    return LoadResult(
        hits=hits, source="ga360", files=[str(f) for f in files], dropped=dropped, info=info
    )


def _relation(con: duckdb.DuckDBPyConnection, file: Path) -> str:
    name = file.name.lower()
    quoted = "'" + str(file).replace("'", "''") + "'"
    if name.endswith(".parquet"):
        return f"read_parquet({quoted})"
    if name.endswith(".csv"):
        check_utf8(file)
        return f"read_csv({quoted}, header=true)"
    if not name.endswith(".gz"):
        check_utf8(file)
    check_json_lines(file, "session")
    return f"read_json({quoted}, format='newline_delimited', sample_size=-1)"


def _columns(con: duckdb.DuckDBPyConnection, relation: str, file: Path) -> set[str]:
    try:
        return {row[0] for row in con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    except duckdb.Error as exc:
        raise ClickstreamError(f"cannot read: {first_line(exc)}", file=str(file)) from None


def _query(con: duckdb.DuckDBPyConnection, sql: str, file: Path) -> pd.DataFrame:
    # a nested field that no record has (e.g. no hits.page.pagePath) fails to bind
    return duckdb_df(con, sql, file, "missing required field of a GA360 export")


def _add_source_counts(
    con: duckdb.DuckDBPyConnection, relation: str, columns: set[str], info: dict, file: Path
) -> None:
    totals = (
        "coalesce(sum(CAST(s.totals.transactions AS BIGINT)), 0), "
        "coalesce(sum(CAST(s.totals.totalTransactionRevenue AS DOUBLE)), 0) / 1e6"
        if "totals" in columns
        else "0, 0.0"
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
            raise ClickstreamError(
                f"missing value (session {flat['session_id'].iloc[i]!r})",
                file=str(file),
                column=col,
            )
    revenue = pd.to_numeric(flat["revenue"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(revenue) | (revenue < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ClickstreamError(
            f"transaction revenue must be a finite number >= 0, got {flat['revenue'].iloc[i]!r} "
            f"(session {flat['session_id'].iloc[i]!r}, hit {flat['hit_number'].iloc[i]})",
            file=str(file),
            column="hits.transaction.transactionRevenue",
        )
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
