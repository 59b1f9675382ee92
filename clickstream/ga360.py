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

**Exports larger than memory.** With ``memory_limit`` (``data.loader.memory_limit=2GB``) the
nested export is flattened out of core first (:func:`flatten_out_of_core`): DuckDB, held to
that much memory and spilling to ``temp_dir``, streams each file through the flattening query
into a Parquet file of the flat table (the columns below, page views only), and only that
flat table is read into memory. A GA360 session row holds every hit with dozens of fields;
the flat table keeps 10 of them for page views only (the shared GA day: 29 MB of NDJSON, 0.4
MB of flat Parquet). The canonical hits table that the later stages use is in memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
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
    duckdb_errors,
    first_line,
    json_layout,
    open_binary,
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


def load(
    path: PathSpec,
    *,
    show_progress: bool = True,
    memory_limit: str | None = None,
    temp_dir: str | Path | None = None,
) -> LoadResult:
    """Load GA360 exports (nested or already flattened) into raw page-view hits.

    Args:
        path: A file, folder, glob, or list of them. ``.parquet`` and ``.json``/``.jsonl``/
            ``.ndjson`` (optionally ``.gz``) hold the nested export or the flat table;
            ``.csv`` holds the flat table only.
        show_progress: Show a progress bar over files.
        memory_limit: Flatten out of core first, DuckDB held to this much memory (``"2GB"``,
            ``"512MB"``; :func:`flatten_out_of_core`); ``None``: DuckDB's default (80 % of
            the machine's memory), each file flattened in memory.
        temp_dir: Where the out-of-core flattening spills and writes its flat table (a
            temporary folder inside it, removed afterwards); default: the system's.

    Returns:
        Raw hits sorted by session start, session and hit number. ``info`` holds the counts
        of the source (sessions, EVENT hits, session-level revenue totals) for the record.

    Raises:
        ClickstreamError: A file is empty, not UTF-8, holds a malformed JSON line, lacks a
            required column, or has negative revenue; the message names the file and the line
            or column.
    """
    if memory_limit is not None:
        with tempfile.TemporaryDirectory(prefix="ga360-flat-", dir=temp_dir) as tmp:
            counts = flatten_out_of_core(
                path,
                Path(tmp) / "flat",
                memory_limit=memory_limit,
                temp_dir=Path(tmp) / "spill",
                show_progress=show_progress,
            )
            result = load(Path(tmp) / "flat", show_progress=show_progress)
        # the source's own counts, as the in-memory path gives them
        result.info.update({k: counts[k] for k in _SOURCE_COUNTS})
        result.dropped["sessions_without_page_views"] = max(
            0, counts["source_sessions"] - counts["sessions"]
        )
        result.files = counts["files"]
        result.info["out_of_core_memory_limit"] = memory_limit
        return result
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


_SOURCE_COUNTS = (
    "source_sessions",
    "source_event_hits",
    "totals_transactions",
    "totals_transaction_revenue",
)


def flatten_out_of_core(
    path: PathSpec,
    out_dir: str | Path,
    *,
    memory_limit: str = "1GB",
    temp_dir: str | Path | None = None,
    threads: int | None = None,
    chunk_bytes: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Flatten GA360 exports larger than memory into the flat table, on disk.

    DuckDB runs the flattening query (``clickstream/sql/ga360_flatten_duckdb.sql``, the files
    read with the GA360 schema as :func:`load` reads them) with ``memory_limit`` and spills
    to ``temp_dir``; each input file streams into ``out_dir/part-<i>.parquet`` (columns
    :data:`FLAT_COLUMNS`, page views only), which :func:`load` reads directly. The folder is
    published with one rename when every part is written.

    Args:
        path: As for :func:`load` (nested exports; a flat table needs no flattening).
        out_dir: A folder that does not exist yet.
        memory_limit: DuckDB's ``memory_limit`` (``"256MB"``, ``"2GB"``).
        temp_dir: DuckDB's ``temp_directory`` (spill files); default ``<out_dir>.spill``,
            removed afterwards.
        threads: DuckDB threads (``None``: its default, the cores).
        chunk_bytes: Largest piece an NDJSON file is cut into (whole lines; ``None``: an
            eighth of ``memory_limit``, at least 1 MB).
        show_progress: A progress bar over files.

    Returns:
        Counts of the flat table (``page_views``, ``sessions``, ``page_paths``,
        ``transactions``, ``revenue``) and of the source (``source_sessions``,
        ``source_event_hits``, ``totals_transactions``, ``totals_transaction_revenue``),
        ``files`` (the inputs) and ``flat_bytes``, all computed by DuckDB out of core.

    Raises:
        ClickstreamError: ``out_dir`` exists, or an input is not a nested GA360 export (a
            missing required column, a file DuckDB cannot read), naming the file.
    """
    out = Path(out_dir)
    if out.exists():
        raise DataError(
            "the output folder exists already: remove it or choose another", file=str(out)
        )
    files = resolve_inputs(path, PATTERNS)
    spill = Path(temp_dir) if temp_dir is not None else out.with_name(out.name + ".spill")
    work = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    work.mkdir(parents=True)
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{_sql_text(memory_limit)}'")
        con.execute(f"SET temp_directory = '{_sql_text(str(spill))}'")
        con.execute("SET preserve_insertion_order = false")  # streams without buffering
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        info = dict.fromkeys(_SOURCE_COUNTS, 0)
        if chunk_bytes is None:
            chunk_bytes = max(1 << 20, _limit_bytes(con) // 8)
        for i, file in enumerate(
            tqdm(files, desc="ga360 (out of core)", unit="file", disable=not show_progress)
        ):
            part = work / f"part-{i:05d}.parquet"
            pieces = _json_chunks(file, spill / f"chunks-{i:05d}", chunk_bytes)
            if pieces is None:  # Parquet, CSV: DuckDB streams them by row group itself
                _flatten_file(con, file, file, part, info)
                continue
            # DuckDB's JSON reader holds buffers in proportion to the file it reads, so a big
            # NDJSON file is cut, between lines (one session each), into pieces of at most
            # 1/8 of the memory limit, each flattened on its own, then joined into one part
            # (one part per input file: sessions split across files are told apart as in load)
            piece_parts = []
            for piece in pieces:
                piece_part = piece.with_suffix(".parquet")
                _flatten_file(con, piece, file, piece_part, info)
                piece.unlink()
                piece_parts.append(piece_part)
            listed = ", ".join(f"'{_sql_text(str(q))}'" for q in piece_parts)
            con.execute(
                f"COPY (SELECT * FROM read_parquet([{listed}])) TO '{_sql_text(str(part))}' "
                "(FORMAT parquet, ROW_GROUP_SIZE 16384)"
            )
            shutil.rmtree(spill / f"chunks-{i:05d}", ignore_errors=True)
        parts = f"read_parquet('{_sql_text(str(work))}/part-*.parquet')"
        views, sessions, paths, tx, revenue = con.execute(
            "SELECT count(*), count(DISTINCT session_id), count(DISTINCT page_path), "
            "coalesce(sum(is_transaction::INT), 0), coalesce(sum(revenue), 0) "
            f"FROM {parts}"
        ).fetchall()[0]
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        con.close()
        if temp_dir is None:
            shutil.rmtree(spill, ignore_errors=True)
    os.rename(work, out)
    return {
        "page_views": int(views),
        "sessions": int(sessions),
        "page_paths": int(paths),
        "transactions": int(tx),
        "revenue": float(revenue),
        **{k: info[k] for k in _SOURCE_COUNTS},
        "files": [str(f) for f in files],
        "flat_bytes": sum(p.stat().st_size for p in out.glob("part-*.parquet")),
    }


def _flatten_file(
    con: duckdb.DuckDBPyConnection, file: Path, source: Path, part: Path, info: dict
) -> None:
    """Flatten one nested export ``file`` (``source``: the input it comes from, for messages)
    into the Parquet file ``part``, adding its source counts to ``info``.

    A piece of NDJSON is read by DuckDB's JSON reader straight into the GA360 schema
    (:data:`SESSION_FIELDS`; numbers written as text are cast), which streams in little
    memory; one that does not fit that schema as it is (nested fields as JSON text, say) is
    read as :func:`load` reads any file, through ``from_json``, which needs more memory.
    """
    if file.suffix == ".json" and file.name.startswith("piece-"):
        typed = ", ".join(f"{k}: '{v}'" for k, v in SESSION_FIELDS.items())
        relation = (
            f"read_json('{_sql_text(str(file))}', format='newline_delimited', columns={{{typed}}})"
        )
        try:
            _copy_flat(con, relation, part)
            _add_source_counts(con, relation, info, source)
            return
        except (duckdb.ConversionException, duckdb.InvalidInputException):
            part.unlink(missing_ok=True)
        except duckdb.Error as exc:  # out of memory: one session larger than the limit
            raise DataError(
                f"cannot flatten within memory_limit: {first_line(exc)}; raise memory_limit",
                file=str(source),
            ) from None
    relation, columns = _relation(con, file)
    if "hits" not in columns:
        raise DataError(
            "not a nested GA360 export (no 'hits' column): a flat table needs no flattening, "
            "load it directly",
            file=str(source),
            column="hits",
        )
    for col in NESTED_REQUIRED:
        if col not in columns:
            raise DataError(
                "missing required column of a GA360 export", file=str(source), column=col
            )
    relation = _with_schema(con, relation, columns, source)
    with duckdb_errors(source, "missing required field of a GA360 export"):
        _copy_flat(con, relation, part)
    _add_source_counts(con, relation, info, source)


def _copy_flat(con: duckdb.DuckDBPyConnection, relation: str, part: Path) -> None:
    # small row groups: the Parquet writer holds one in memory before it writes it
    con.execute(
        f"COPY ({flatten_sql(relation)}) TO '{_sql_text(str(part))}' "
        "(FORMAT parquet, ROW_GROUP_SIZE 16384)"
    )


def _json_chunks(file: Path, folder: Path, chunk_bytes: int) -> Iterator[Path] | None:
    """The NDJSON ``file`` as pieces of at most ``chunk_bytes`` (whole lines) written one at a
    time into ``folder``, or ``None`` for a file that is not JSON lines (Parquet, CSV).

    Raises:
        ClickstreamError: A JSON array document (it cannot be cut without parsing it whole).
    """
    name = file.name.lower()
    if name.endswith((".parquet", ".csv")):
        return None
    if json_layout(file) == "array":
        raise DataError(
            "a JSON array document cannot be read out of core (it is one value): export "
            "newline-delimited JSON (BigQuery's default) or Parquet, or load it without "
            "memory_limit",
            file=str(file),
        )
    check_json(file, "session")  # every line one object, named where not (as load does)

    def pieces() -> Iterator[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        n, size, out = 0, 0, None
        with open_binary(file) as fh:
            for line in fh:
                if out is None or (size and size + len(line) > chunk_bytes):
                    if out is not None:
                        out.close()
                        yield folder / f"piece-{n - 1:06d}.json"
                    out = open(folder / f"piece-{n:06d}.json", "wb")  # noqa: SIM115
                    n, size = n + 1, 0
                out.write(line)
                size += len(line)
        if out is not None:
            out.close()
            yield folder / f"piece-{n - 1:06d}.json"

    return pieces()


def _limit_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """DuckDB's memory limit in bytes."""
    value = con.execute(
        "SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'"
    ).fetchall()[0][0]
    number, unit = str(value).split()
    factor = {
        "KiB": 2**10,
        "MiB": 2**20,
        "GiB": 2**30,
        "TiB": 2**40,
        "KB": 1e3,
        "MB": 1e6,
        "GB": 1e9,
        "TB": 1e12,
    }
    return int(float(number) * factor.get(unit, 1))


def _sql_text(value: str) -> str:
    return str(value).replace("'", "''")


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
