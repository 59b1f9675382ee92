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
  page view (GA's definition; unknown on the session's last page), a page view without a path
  included: it is dropped only after the time on page of the one before it is computed;
* ``revenue`` is ``hits.transaction.transactionRevenue`` / 10^6 on the hit that carries it, and
  ``is_transaction`` marks those hits. Session totals (``totals.totalTransactionRevenue``) are
  *not* used: page value and rewards need to know where in the session a transaction happened,
  and only the hit-level field says so. The two can differ (on the 2017-08-01 sample day the
  hits carry 8,902.00 USD, the session totals 8,890.00, differing in two sessions); both are
  reported in ``LoadResult.info``.

**Repeated, overlapping and disordered records.** BigQuery exports occasionally hold a session
record twice, and overlapping exports (a date range exported twice) repeat records.
A record equal to one already read (same ``fullVisitorId``, ``visitId`` and ``visitStartTime``
and the same hits: every hit field the loader reads, EVENT hits included) is read once; the
copies are dropped, counted and noticed. Other records of one session are the parts of a
session that GA360 split at midnight: parts from different files stay apart (each its own
session, counted in ``info["sessions_split_across_files"]``). Parts that overlap are an error
naming the session, the hit number and the file(s), never concatenated: two records of one
session in one file holding the same hit number (their hits would interleave), or two in
different files holding the same hit (same hit number at the same time). GA numbers a
session's hits in time order, so a page view's time must not decrease with ``hitNumber`` (its
time on page would be negative): an error naming the session and both hits. A flat table has
no records: a row equal in every column to an earlier row is dropped, counted and noticed.

``LoadResult.dropped`` keys: ``sessions_without_page_views`` (records left without a page view:
no PAGE hit, or only ones without a path), ``page_views_without_path`` (``pagePath`` null,
empty or only whitespace: dropped, never read as the home page; the page views around one
then follow each other in the hits, a transition the visitor did not make directly, counted in
``info["transitions_across_dropped_page_views"]``; a transaction on one is left out, its
revenue in ``info["revenue_on_page_views_without_path"]``), ``duplicate_session_records``
(repeated records, above) and, where a flat table was read, ``duplicate_flat_rows``.
``info["source_sessions"]`` counts every record read, repeated ones included.

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
from dataclasses import dataclass, field
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
    notice,
    open_binary,
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
        of the source (sessions, EVENT hits, session-level revenue totals) for the record;
        ``dropped`` and ``notices`` say what was left out (module docstring).

    Raises:
        ClickstreamError: A file is empty, not UTF-8, holds a malformed JSON line, lacks a
            required column, or has negative revenue; two records of one session overlap;
            a page view's time decreases with ``hitNumber``. The message names the file and
            the line, column or session and hit.
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
            parts = sorted((Path(tmp) / "flat").glob("part-*.parquet"))
            # part i is input file i: messages name the input, not the temporary part
            result = _load_files(
                parts, [Path(f) for f in counts["files"]], show_progress, flattened=True
            )
        # the source's own counts, as the in-memory path gives them
        result.info.update({k: counts[k] for k in _SOURCE_COUNTS})
        # records without any PAGE hit and repeated records are known to the flattening only
        result.dropped["sessions_without_page_views"] += counts["sessions_without_page_views"]
        result.dropped["duplicate_session_records"] = counts["duplicate_session_records"]
        result.notices[:0] = counts["notices"]
        result.files = counts["files"]
        result.info["out_of_core_memory_limit"] = memory_limit
    else:
        files = resolve_inputs(path, PATTERNS)
        result = _load_files(files, files, show_progress, flattened=False)
    _notice_drops(result.dropped, result.info, result.notices)
    return result


def _load_files(
    files: list[Path], names: list[Path], show_progress: bool, *, flattened: bool
) -> LoadResult:
    """:func:`load` of ``files`` (``names``: what messages call them, file by file).

    ``flattened``: the files are :func:`flatten_out_of_core`'s parts, whose repeated records
    are gone already (and are not read as a user's flat table).
    """
    con = duckdb.connect()
    con.execute(_SEEN_TABLE_SQL)
    frames: list[pd.DataFrame] = []
    info: dict[str, float | int] = {
        "source_sessions": 0,
        "source_event_hits": 0,
        "totals_transactions": 0,
        "totals_transaction_revenue": 0.0,
    }
    dropped = {
        "sessions_without_page_views": 0,
        "page_views_without_path": 0,
        "duplicate_session_records": 0,
    }
    notices: list[str] = []
    repeats = _Repeats()
    for file_index, (file, name) in enumerate(
        tqdm(
            list(zip(files, names, strict=True)),
            desc="ga360",
            unit="file",
            disable=not show_progress,
        )
    ):
        relation, columns = _relation(con, file)
        if "hits" in columns:
            for col in NESTED_REQUIRED:
                if col not in columns:
                    raise DataError(
                        "missing required column of a GA360 export", file=str(name), column=col
                    )
            relation = _with_schema(con, relation, columns, file)
            with duckdb_errors(name, "missing required field of a GA360 export"):
                records = _keep_first_records(con, relation)
            flat = _query(con, flatten_sql(_KEPT), name)
            dropped["sessions_without_page_views"] += _account(con, records, name, info, repeats)
        else:
            missing = [c for c in FLAT_COLUMNS if c not in columns]
            if missing:
                raise DataError(
                    "neither a GA360 export (no 'hits' column) nor a flat GA360 table "
                    f"(missing {missing}); columns found: {sorted(columns)}",
                    file=str(name),
                    column=missing[0],
                )
            flat = _query(con, f"SELECT {', '.join(FLAT_COLUMNS)} FROM {relation}", name)
            info["source_sessions"] += int(flat["session_id"].nunique())
            if not flattened:
                dropped.setdefault("duplicate_flat_rows", 0)
        flat = _check_flat(flat, name, dropped)
        flat["file_index"] = file_index
        flat["flat_table"] = not flattened and "hits" not in columns
        frames.append(flat)
    con.close()
    flat = pd.concat(frames, ignore_index=True)
    dropped["duplicate_session_records"] = repeats.count
    repeats.notify(notices)
    flat = _drop_repeated_rows(flat, dropped)
    _check_parts(flat, names)
    flat = _separate_split_sessions(flat, info)
    no_path_revenue = flat.loc[flat["no_path"].to_numpy(bool), "revenue"]
    info["revenue_on_page_views_without_path"] = float(no_path_revenue.sum())
    hits, bridged = finish_raw_hits_dropping(
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
                "no_path": flat["no_path"].to_numpy(bool),
            }
        ),
        "no_path",
        hit_order="hit_number",
    )
    info["transitions_across_dropped_page_views"] = bridged
    validate_hits(hits, source=", ".join(str(f) for f in names))
    info["raw_page_paths"] = int(hits["page_raw"].nunique())
    info["page_column"] = "hits.page.pagePath"
    info["hit_transaction_revenue"] = float(hits["revenue"].sum())
    return LoadResult(
        hits=hits,
        source="ga360",
        files=[str(f) for f in names],
        dropped=dropped,
        info=info,
        notices=notices,
    )


def _notice_drops(dropped: dict[str, int], info: dict, notices: list[str]) -> None:
    """Say what :func:`load` left out (the repeated records are said where they are found)."""
    bridged = int(info.get("transitions_across_dropped_page_views", 0))
    revenue = float(info.get("revenue_on_page_views_without_path", 0.0))
    said = {
        "page_views_without_path": (
            "page view",
            "without a page path (hits.page.pagePath null, empty or only whitespace): dropped, "
            "not read as the home page; the page view before each keeps its time on page up "
            "to it (GA's time to the next page view)"
            + (
                f"; {_count(bridged, 'transition')} between the page views around them "
                "now read as direct though the visitor went through a page view without a path "
                "(info.transitions_across_dropped_page_views)"
                if bridged
                else ""
            )
            + (
                f"; {revenue:,.2f} of transaction revenue on them left out "
                "(info.revenue_on_page_views_without_path)"
                if revenue
                else ""
            ),
        ),
        "sessions_without_page_views": (
            "session record",
            "without a page view (no PAGE hit, or none with a page path): no session in the "
            "hits table",
        ),
        "duplicate_flat_rows": (
            "flat-table row",
            "equal in every column to an earlier row: each read once",
        ),
    }
    for key, (noun, text) in said.items():
        if dropped.get(key, 0):
            notice(f"ga360: {_count(dropped[key], noun)} {text} (dropped.{key})", notices)


def _count(n: int, noun: str) -> str:
    """``"1 page view"``, ``"2 page views"``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


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

    A record repeating one read before (in any file or piece) is left out, as :func:`load`
    leaves it out (module docstring), and said in a notice.

    Returns:
        Counts of the flat table (``page_views``, ``sessions``, ``page_paths``,
        ``transactions``, ``revenue``) and of the source (``source_sessions``,
        ``source_event_hits``, ``totals_transactions``, ``totals_transaction_revenue``),
        of what was left out (``duplicate_session_records``; ``sessions_without_page_views``:
        records without any PAGE hit), ``files`` (the inputs), ``flat_bytes`` and
        ``notices`` (a list of lines), all computed by DuckDB out of core.

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
        con.execute(_SEEN_TABLE_SQL)
        info = dict.fromkeys((*_SOURCE_COUNTS, "sessions_without_page_views"), 0)
        repeats = _Repeats()
        if chunk_bytes is None:
            chunk_bytes = max(1 << 20, _limit_bytes(con) // 8)
        for i, file in enumerate(
            tqdm(files, desc="ga360 (out of core)", unit="file", disable=not show_progress)
        ):
            part = work / f"part-{i:05d}.parquet"
            pieces = _json_chunks(file, spill / f"chunks-{i:05d}", chunk_bytes)
            if pieces is None:  # Parquet, CSV: DuckDB streams them by row group itself
                _flatten_file(con, file, file, part, info, repeats)
                continue
            # DuckDB's JSON reader holds buffers in proportion to the file it reads, so a big
            # NDJSON file is cut, between lines (one session each), into pieces of at most
            # 1/8 of the memory limit, each flattened on its own, then joined into one part
            # (one part per input file: sessions split across files are told apart as in load)
            piece_parts = []
            for piece in pieces:
                piece_part = piece.with_suffix(".parquet")
                _flatten_file(con, piece, file, piece_part, info, repeats)
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
    notices: list[str] = []
    repeats.notify(notices)
    return {
        "page_views": int(views),
        "sessions": int(sessions),
        "page_paths": int(paths),
        "transactions": int(tx),
        "revenue": float(revenue),
        **{k: info[k] for k in _SOURCE_COUNTS},
        "sessions_without_page_views": info["sessions_without_page_views"],
        "duplicate_session_records": repeats.count,
        "files": [str(f) for f in files],
        "flat_bytes": sum(p.stat().st_size for p in out.glob("part-*.parquet")),
        "notices": notices,
    }


def _flatten_file(
    con: duckdb.DuckDBPyConnection,
    file: Path,
    source: Path,
    part: Path,
    info: dict,
    repeats: _Repeats,
) -> None:
    """Flatten one nested export ``file`` (``source``: the input it comes from, for messages)
    into the Parquet file ``part``, less the records read before, adding its source counts to
    ``info`` and its repeated records to ``repeats``.

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
            records = _keep_first_records(con, relation)
            _copy_flat(con, _KEPT, part)
        except (duckdb.ConversionException, duckdb.InvalidInputException):
            part.unlink(missing_ok=True)
        except duckdb.Error as exc:  # out of memory: one session larger than the limit
            raise DataError(
                f"cannot flatten within memory_limit: {first_line(exc)}; raise memory_limit",
                file=str(source),
            ) from None
        else:
            info["sessions_without_page_views"] += _account(con, records, source, info, repeats)
            return
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
        records = _keep_first_records(con, relation)
        _copy_flat(con, _KEPT, part)
    info["sessions_without_page_views"] += _account(con, records, source, info, repeats)


_KEPT = "ga360_kept"
"""Temporary table of the records of the file being read that were not read before."""

_SEEN_TABLE_SQL = (
    "CREATE OR REPLACE TEMP TABLE ga360_seen "
    "(visitor VARCHAR, visit VARCHAR, start BIGINT, fingerprint UBIGINT)"
)
"""The records read so far (ids, start and a hash of the hits), to know a repeated one."""


@dataclass
class _Records:
    """What :func:`_keep_first_records` found in one file."""

    read: int
    repeated: int
    example: str | None  # a repeated record's session id


@dataclass
class _Repeats:
    """Repeated records over all files: how many, the first one and the files holding them."""

    count: int = 0
    example: str | None = None
    files: list[str] = field(default_factory=list)

    def add(self, records: _Records, source: Path) -> None:
        if records.repeated:
            self.count += records.repeated
            self.example = self.example or records.example
            if str(source) not in self.files:
                self.files.append(str(source))

    def notify(self, notices: list[str]) -> None:
        if not self.count:
            return
        where = self.files[0] + (f" and {len(self.files) - 1} more" if len(self.files) > 1 else "")
        notice(
            f"ga360: {_count(self.count, 'session record')} repeated a record read before (same "
            f"fullVisitorId, visitId, visitStartTime and hits; the first: session "
            f"{self.example!r} in {where}): each read once "
            "(dropped.duplicate_session_records)",
            notices,
        )


def _keep_first_records(con: duckdb.DuckDBPyConnection, relation: str) -> _Records:
    """Materialise as table :data:`_KEPT` the records of ``relation`` not read before.

    A record is read before when one with the same ``fullVisitorId``, ``visitId``,
    ``visitStartTime`` and hits (a hash of the whole typed ``hits`` list: every hit field the
    loader reads, EVENT hits included) came earlier in this file or is in ``ga360_seen`` (the
    files before; :func:`_account` adds this file's records once they are flattened). Records
    that differ in any of those are kept: parts of a split session, judged by
    :func:`_check_parts`.
    """
    con.execute(
        "CREATE OR REPLACE TEMP TABLE ga360_read AS SELECT *, "
        "row_number() OVER () AS ga360_record, hash(hits) AS ga360_fp "
        f"FROM {relation}"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {_KEPT} AS
        SELECT r.* EXCLUDE (ga360_copy) FROM (
            SELECT *, row_number() OVER (
                PARTITION BY fullVisitorId, visitId, visitStartTime, ga360_fp
                ORDER BY ga360_record
            ) AS ga360_copy
            FROM ga360_read
        ) AS r
        WHERE r.ga360_copy = 1 AND NOT EXISTS (
            SELECT 1 FROM ga360_seen AS s
            WHERE s.visitor IS NOT DISTINCT FROM r.fullVisitorId
              AND s.visit IS NOT DISTINCT FROM r.visitId
              AND s.start IS NOT DISTINCT FROM r.visitStartTime
              AND s.fingerprint = r.ga360_fp
        )
        ORDER BY r.ga360_record
        """
    )
    read, kept = con.execute(
        f"SELECT (SELECT count(*) FROM ga360_read), (SELECT count(*) FROM {_KEPT})"
    ).fetchall()[0]
    example = None
    if read > kept:
        example = con.execute(
            "SELECT fullVisitorId || '-' || visitId FROM ga360_read AS r "
            f"WHERE r.ga360_record NOT IN (SELECT ga360_record FROM {_KEPT}) "
            "ORDER BY r.ga360_record LIMIT 1"
        ).fetchall()[0][0]
    con.execute("DROP TABLE ga360_read")
    return _Records(read=int(read), repeated=int(read - kept), example=example)


def _account(
    con: duckdb.DuckDBPyConnection, records: _Records, source: Path, info: dict, repeats: _Repeats
) -> int:
    """Count a flattened file's records (all read ones in ``source_sessions``, the kept ones in
    the other source counts), note its repeats and remember its kept records; returns how many
    kept records have no PAGE hit."""
    without_pages = _add_source_counts(con, _KEPT, info, source)
    info["source_sessions"] += records.read
    repeats.add(records, source)
    con.execute(
        f"INSERT INTO ga360_seen SELECT fullVisitorId, visitId, visitStartTime, ga360_fp "
        f"FROM {_KEPT}"
    )
    return without_pages


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
) -> int:
    """Add the EVENT hits and session totals of ``relation``'s records to ``info``; returns how
    many of the records have no PAGE hit (the sessions counted ``sessions_without_page_views``
    whose page views are not merely without a path)."""
    totals = (
        "coalesce(sum(s.totals.transactions), 0), "
        "coalesce(sum(TRY_CAST(s.totals.totalTransactionRevenue AS DOUBLE)), 0) / 1e6"
    )
    events, no_pages, tx, revenue = _query(
        con,
        f"SELECT "
        f"coalesce(sum(len(list_filter(s.hits, lambda h: h.type = 'EVENT'))), 0), "
        f"count(*) FILTER (WHERE coalesce(len(list_filter(s.hits, lambda h: h.type = 'PAGE')), 0)"
        f" = 0), {totals} "
        f"FROM {relation} AS s",
        file,
    ).iloc[0]
    info["source_event_hits"] += int(events)
    info["totals_transactions"] += int(tx)
    info["totals_transaction_revenue"] += float(revenue)
    return int(no_pages)


def _check_flat(flat: pd.DataFrame, file: Path, dropped: dict[str, int]) -> pd.DataFrame:
    """Refuse missing ids and times and bad revenue; mark page views without a path.

    A path that is null, empty or only whitespace is no page (pandas' ``str.strip``): such
    page views are marked in the ``no_path`` column and counted, never read as ``/``; they are
    dropped once time on page is computed (:func:`_load_files`). A session left without page
    views by that is counted in ``sessions_without_page_views``.
    """
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
    no_path = _blank(flat["page_path"])
    flat["no_path"] = no_path  # left out after time on page is computed (finish_raw_hits_dropping)
    if no_path.any():
        sessions = flat["session_id"].nunique()
        dropped["page_views_without_path"] += int(no_path.sum())
        dropped["sessions_without_page_views"] += (
            sessions - flat.loc[~no_path, "session_id"].nunique()
        )
    return flat


def _blank(text: pd.Series) -> np.ndarray:
    """Where ``text`` is null, empty or only whitespace, shape ``(N,)``."""
    stripped = text.astype(object).where(text.notna(), "").astype(str).str.strip()
    return (stripped == "").to_numpy(dtype=bool)


def _drop_repeated_rows(flat: pd.DataFrame, dropped: dict[str, int]) -> pd.DataFrame:
    """Drop the rows of a user's flat table that repeat an earlier row in every column.

    A flat table has no records to compare; a row equal in every column is the same page view
    written twice (a repeated export record flattened in BigQuery, a file read twice).
    """
    repeated = flat.duplicated(subset=list(FLAT_COLUMNS), keep="first").to_numpy()
    repeated = repeated & flat["flat_table"].to_numpy(dtype=bool)
    if not repeated.any():
        return flat
    dropped["duplicate_flat_rows"] += int(repeated.sum())
    return flat.loc[~repeated].reset_index(drop=True)


def _check_parts(flat: pd.DataFrame, names: list[Path]) -> None:
    """Refuse overlapping records of one session and page views whose time goes back.

    Rows of one session in one file must have distinct hit numbers (two records of a session
    in one file that share a hit number would interleave); the same hit (session, hit number
    and time) must not be in two files (a record exported twice, with changes); and a page
    view's time must not decrease with its hit number (its predecessor's time on page would
    be negative). Each error names the session, the hit numbers and the file.
    """
    if flat.empty:
        return
    f = flat.sort_values(["file_index", "session_id", "hit_number"], kind="stable")
    index = f["file_index"].to_numpy()
    sid = f["session_id"].to_numpy(dtype=object)
    number = f["hit_number"].to_numpy(dtype=np.float64, na_value=np.nan)
    time_ms = f["hit_time_ms"].to_numpy(dtype=np.int64)
    relative = time_ms - f["session_start_s"].to_numpy(dtype=np.int64) * 1000
    path = f["page_path"].to_numpy(dtype=object)
    nested = ~f["flat_table"].to_numpy(dtype=bool)
    same = np.r_[False, (index[1:] == index[:-1]) & (sid[1:] == sid[:-1])]

    def hit(i: int) -> str:
        return f"hit {number[i]:.0f} ({path[i]!r} at {relative[i]:,} ms)"

    twice = same & (np.r_[np.nan, np.diff(number)] == 0)
    if twice.any():
        i = int(np.flatnonzero(twice)[0])
        what = "records" if nested[i] else "rows"
        raise DataError(
            f"session {sid[i]!r} (fullVisitorId-visitId) holds hit number {number[i]:.0f} "
            f"twice, in two different {what}: {hit(i - 1)} and {hit(i)} after the session "
            "start. Two records of one session in one file overlap (their hits would "
            "interleave): remove the stale record, or keep each day of a session split at "
            "midnight in its own file",
            file=str(names[index[i]]),
            column="hits.hitNumber" if nested[i] else "hit_number",
        )
    back = same & (np.r_[0, np.diff(time_ms)] < 0)
    if back.any():
        i = int(np.flatnonzero(back)[0])
        raise DataError(
            f"session {sid[i]!r} (fullVisitorId-visitId): page view {hit(i - 1)} is "
            f"followed by {hit(i)} after the session start: page-view times must not "
            "decrease with hitNumber (GA numbers a session's hits in time order; the time "
            f"on page of hit {number[i - 1]:.0f} would be negative)",
            file=str(names[index[i]]),
            column="hits.time" if nested[i] else "hit_time_ms",
        )
    shared = f.duplicated(["session_id", "hit_number", "hit_time_ms"], keep=False).to_numpy()
    if shared.any():
        rows = np.flatnonzero(shared)
        i = int(rows[0])
        other = int(next(j for j in rows[1:] if sid[j] == sid[i] and number[j] == number[i]))
        raise DataError(
            f"session {sid[i]!r} (fullVisitorId-visitId): {hit(i)} is also in "
            f"{names[index[other]]}, in a record that differs: the two files overlap (a day "
            "exported twice, with changes?); read each day once",
            file=str(names[index[i]]),
            column="hits.hitNumber" if nested[i] else "hit_number",
        )


def _separate_split_sessions(flat: pd.DataFrame, info: dict) -> pd.DataFrame:
    """Keep apart the parts of a session that appear in several daily files.

    GA360 splits a session at midnight and writes each part to its day's table under the same
    ``visitId``; merged, their hit numbers would interleave. Each part stays its own session.
    Repeated records are gone and overlapping ones refused before (:func:`_check_parts`).
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
