"""Generic clickstream loader: a table of page views in CSV (optionally gzipped) or Parquet.

One row per page view. The columns are named by the user (``columns`` maps the canonical
*fields* below to the file's column names; by default each field is read from the column of the
same name):

==================  ========  ====================================================================
field               needed    meaning
==================  ========  ====================================================================
page                yes       the page viewed (path or URL, normalised later); empty is an error
session_id          see below session the page view belongs to
visitor_id          see below the visitor; without it the visitor is the session
timestamp           see below time of the page view (ISO 8601 text, a Parquet timestamp, or epoch
                              numbers with ``timestamp_unit``); zone-less times are UTC
revenue             no        transaction revenue on this page view; empty means 0
time_on_page_s      no        seconds on the page; empty means unknown (then from timestamps)
page_title          no        page title; empty means unknown
content_group       no        analytics content group; empty means unknown
is_transaction      no        ``true``/``false`` (``1``/``0``, ``yes``/``no``); empty or absent
                              means ``revenue > 0``
==================  ========  ====================================================================

Sessions come from ``session_id`` if the file has it; otherwise from ``visitor_id`` and
``timestamp`` by Google Analytics' inactivity rule (:func:`clickstream.sessions.sessionize`: a
gap longer than ``session_timeout_s``, 30 minutes by default, starts a new session; session ids
are ``<visitor>#<k>``). A file must have one of the two. To sessionise a file that does have a
session id column, map it away: ``columns={"session_id": None}``.

What the hits table takes from the file:

* page views are ordered by timestamp within their session (ties keep file order); without
  timestamps they keep file order. A session id is global: rows of one session may be spread
  over the file, or over several files (e.g. daily exports), and are gathered;
* ``session_start`` is the session's first timestamp. Without any timestamps it is synthetic:
  ``1970-01-01T00:00:00Z`` plus ``i`` seconds for the ``i``-th session in order of first
  appearance (files in sorted order, then rows), so that a temporal split is a file-order split;
* ``time_on_page_s`` is the column's value where given, else the time to the next page view of
  the session (unknown on the last one, and everywhere without timestamps);
* ``visitor_id`` is the session id where the file has no visitor column; a session whose rows
  name different visitors is an error;
* ``is_transaction`` is the column's value where given and ``revenue > 0`` elsewhere; revenue on
  a row marked as not a transaction is an error.

Nothing is dropped silently: every bad record raises :class:`ClickstreamError` naming the file,
the line (CSV: 1-based physical line where the record starts, the header being line 1, so with
one line per record data row ``i`` is line ``i + 2``) or the 0-based row (Parquet), and the
file's column. Errors: a missing mapped column (the message names the field, the expected column
and lists the file's columns), an empty file, a header without rows, text that is not valid in
``encoding``, a ragged CSV row (a different number of fields than the header), an empty
``page``, ``session_id`` or ``visitor_id`` (a page view must name its page: rows without one are
not dropped, since a session of empty pages would silently vanish), a missing or unparseable
timestamp, revenue that is not a number >= 0 (negative, NaN, infinite or text), a negative or
non-numeric time on page, an ``is_transaction`` value that is not a boolean.

All files of one load must form sessions the same way (all with a session id column or none,
all with timestamps or none); optional columns may differ between files.
"""

from __future__ import annotations

import codecs
import csv as stdlib_csv  # absolute import: the standard library's module, not this one
import gzip
import io
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from clickstream.errors import ClickstreamError
from clickstream.io import PathSpec, resolve_inputs
from clickstream.schema import LoadResult, validate_hits
from clickstream.sessions import finish_raw_hits, sessionize

PATTERNS = ("*.csv", "*.csv.gz", "*.parquet")
"""Files a folder contributes."""

FIELDS = (
    "session_id",
    "visitor_id",
    "timestamp",
    "page",
    "revenue",
    "time_on_page_s",
    "page_title",
    "content_group",
    "is_transaction",
)
"""Canonical fields ``columns`` may map; each defaults to the column of the same name."""

TIMESTAMP_UNITS = ("s", "ms", "us", "ns")

SYNTHETIC_START = pd.Timestamp("1970-01-01", tz="UTC")
"""Without timestamps, session ``i`` (order of first appearance) starts ``i`` seconds later."""

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"
_NS_MIN, _NS_MAX = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")


def load(
    path: PathSpec,
    *,
    columns: Mapping[str, str | None] | None = None,
    timestamp_unit: str | None = None,
    timestamp_format: str | None = None,
    session_timeout_s: float = 1800.0,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> LoadResult:
    """Load page views from CSV / Parquet files into raw hits.

    Args:
        path: A file (``.csv``, ``.csv.gz`` or ``.parquet``; the format is recognised by its
            content), a folder (its ``*.csv``, ``*.csv.gz`` and ``*.parquet`` files), a glob,
            or a list of those. Files are read in sorted order.
        columns: Canonical field -> the file's column name, for the fields in :data:`FIELDS`;
            fields not given are read from the column of their own name where the file has
            one. A field given here must exist in every file; ``None`` ignores the field.
        timestamp_unit: The timestamps are numbers since the Unix epoch in this unit
            (``s``, ``ms``, ``us`` or ``ns``). Required for numeric timestamps.
        timestamp_format: ``strftime`` format of text timestamps (e.g. ``"%d/%m/%Y %H:%M"``);
            default ISO 8601 (``2017-08-01T10:00:00Z``, ``2017-08-01 10:00:00+02:00``, ...).
        session_timeout_s: Inactivity gap, in seconds, that starts a new session when sessions
            are formed from visitors and timestamps (a gap exactly this long does not).
        delimiter: CSV field separator (one character).
        encoding: Text encoding of CSV files (a UTF-8 byte order mark is ignored).

    Returns:
        Raw hits ``(N, len(RAW_COLUMNS))``, N = page views, ordered by session start, session
        and step. ``info`` holds ``sessions``, ``page_views``, ``transactions``, ``revenue``,
        ``sessionised`` (sessions formed by the inactivity rule), ``session_timeout_s`` (when
        sessionised), ``timestamps`` (whether the files have them), ``session_start`` (how it
        was set) and ``columns`` (field -> column read, per file). ``dropped`` is empty:
        nothing is dropped.

    Raises:
        ClickstreamError: Bad options or bad input (see the module docstring); the message
            names the file, the line (CSV) or row (Parquet) and the column.
    """
    mapping, explicit = _check_options(
        columns, timestamp_unit, timestamp_format, session_timeout_s, delimiter, encoding
    )
    files = resolve_inputs(path, PATTERNS)
    sources = [_read(f, mapping, explicit, delimiter, encoding) for f in files]
    has_session = _same_structure(sources, "session_id")
    has_time = _same_structure(sources, "timestamp")
    frames = [_parse(src, k, timestamp_unit, timestamp_format) for k, src in enumerate(sources)]
    df = pd.concat(frames, ignore_index=True)
    del frames

    if not has_session:
        # Visitors and timestamps are present here (_resolve_columns made sure).
        df["session_id"] = sessionize(
            df, visitor_col="visitor_id", time_col="hit_time", timeout_s=float(session_timeout_s)
        )
    visitor = df["visitor_id"]
    no_visitor = visitor.isna()
    if no_visitor.any():  # files without a visitor column: each session is its own visitor
        df["visitor_id"] = visitor.where(~no_visitor, df["session_id"])
    if has_session:
        _check_one_visitor_per_session(df, sources)

    if has_time:
        df["session_start"] = df.groupby("session_id", sort=False)["hit_time"].transform("min")
    else:
        codes, _ = pd.factorize(df["session_id"], sort=False)
        df["session_start"] = SYNTHETIC_START + pd.to_timedelta(codes, unit="s")

    hits = finish_raw_hits(df, hit_order="hit_time" if has_time else None)
    validate_hits(hits, source=", ".join(str(f) for f in files))

    info: dict[str, object] = {
        "sessions": int(hits["session_id"].nunique()),
        "page_views": len(hits),
        "transactions": int(hits["is_transaction"].sum()),
        "revenue": float(hits["revenue"].sum()),
        "sessionised": not has_session,
        "timestamps": has_time,
        "session_start": (
            "first timestamp of the session"
            if has_time
            else f"{SYNTHETIC_START.isoformat()} + i seconds for the i-th session in file order"
        ),
        "columns": {str(src.file): dict(src.columns) for src in sources},
    }
    if not has_session:
        info["session_timeout_s"] = float(session_timeout_s)
    return LoadResult(hits=hits, source="csv", files=[str(f) for f in files], info=info)


# --------------------------------------------------------------------------- options


def _check_options(
    columns: Mapping[str, str | None] | None,
    timestamp_unit: str | None,
    timestamp_format: str | None,
    session_timeout_s: float,
    delimiter: str,
    encoding: str,
) -> tuple[dict[str, str | None], set[str]]:
    """Validate the options; return the full field -> column mapping and the explicit fields."""
    given = dict(columns or {})
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ClickstreamError(
            f"columns maps unknown field(s) {unknown}; the fields are {list(FIELDS)}"
        )
    for name, col in given.items():
        if col is not None and (not isinstance(col, str) or not col):
            raise ClickstreamError(f"columns[{name!r}] must be a column name or None, got {col!r}")
    if given.get("page", "page") is None:
        raise ClickstreamError("columns['page'] cannot be None: every page view needs a page")
    if timestamp_unit is not None and timestamp_unit not in TIMESTAMP_UNITS:
        raise ClickstreamError(
            f"timestamp_unit must be one of {TIMESTAMP_UNITS}, got {timestamp_unit!r}"
        )
    if timestamp_unit is not None and timestamp_format is not None:
        raise ClickstreamError(
            "give timestamp_unit (numeric timestamps) or timestamp_format (text), not both"
        )
    try:
        timeout = float(session_timeout_s)
    except (TypeError, ValueError):
        timeout = math.nan
    if isinstance(session_timeout_s, bool) or not 0 < timeout < math.inf:
        raise ClickstreamError(
            f"session_timeout_s must be a finite number of seconds > 0, got {session_timeout_s!r}"
        )
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise ClickstreamError(
            f"delimiter must be one character other than a quote or newline, got {delimiter!r}"
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ClickstreamError(f"unknown text encoding {encoding!r}") from None
    mapping: dict[str, str | None] = {f: f for f in FIELDS}
    mapping.update(given)
    explicit = {f for f, c in given.items() if c is not None}
    return mapping, explicit


# --------------------------------------------------------------------------- reading


@dataclass
class _Source:
    """One input file, read: its table (columns renamed to fields) and how to point into it."""

    file: Path
    is_csv: bool
    columns: dict[str, str]  # field -> the file's column it was read from
    table: pa.Table
    encoding: str = "utf-8"
    delimiter: str = ","
    _lines: list[int] | None = field(default=None, repr=False)

    def error(
        self, message: str, record: int | None = None, fld: str | None = None
    ) -> ClickstreamError:
        """A :class:`ClickstreamError` at data record ``record`` (0-based) of field ``fld``."""
        column = self.columns.get(fld) if fld else None
        if record is None:
            return ClickstreamError(message, file=str(self.file), column=column)
        if not self.is_csv:
            return ClickstreamError(message, file=str(self.file), row=record, column=column)
        return ClickstreamError(
            message, file=str(self.file), line=self.line_of(record), column=column
        )

    def line_of(self, record: int) -> int:
        """1-based line where data record ``record`` starts (only computed on an error)."""
        if self._lines is None:
            text = _decode(_read_bytes(self.file), self.encoding, self.file)
            lines, _ = _record_lines(text, self.delimiter)
            # A quoting quirk read differently by the two parsers: assume one line a record.
            self._lines = lines if len(lines) == self.table.num_rows + 1 else []
        return self._lines[record + 1] if self._lines else record + 2


def _read(
    file: Path,
    mapping: dict[str, str | None],
    explicit: set[str],
    delimiter: str,
    encoding: str,
) -> _Source:
    with open(file, "rb") as fh:
        magic = fh.read(4)
    if magic == _PARQUET_MAGIC:
        return _read_parquet(file, mapping, explicit)
    return _read_csv(file, mapping, explicit, delimiter, encoding)


def _read_parquet(file: Path, mapping: dict[str, str | None], explicit: set[str]) -> _Source:
    try:
        names = pq.read_schema(file).names
        used = _resolve_columns(names, mapping, explicit, file, header_line=None)
        table = pq.read_table(file, columns=sorted(set(used.values())))
    except (pa.ArrowException, OSError) as exc:
        raise ClickstreamError(f"cannot read as Parquet: {exc}", file=str(file)) from None
    if table.num_rows == 0:
        raise ClickstreamError("no rows (the file holds only a schema)", file=str(file))
    return _Source(file, False, used, _rename(table, used))


def _read_csv(
    file: Path,
    mapping: dict[str, str | None],
    explicit: set[str],
    delimiter: str,
    encoding: str,
) -> _Source:
    text = _decode(_read_bytes(file), encoding, file)
    if not text.strip():
        raise ClickstreamError(
            "file is empty: expected a header line naming the columns", file=str(file)
        )
    header, header_line = _header(text, delimiter, file)
    used = _resolve_columns(header, mapping, explicit, file, header_line=header_line)
    needed = sorted(set(used.values()))
    try:
        table = pa_csv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={c: pa.string() for c in needed},
                include_columns=needed,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        # Arrow says what is wrong but not where: find the first bad record ourselves.
        _, problem = _record_lines(text, delimiter, n_fields=len(header))
        if problem is not None:
            line, message = problem
            raise ClickstreamError(message, file=str(file), line=line) from None
        raise ClickstreamError(f"cannot parse as CSV: {exc}", file=str(file)) from None
    if text.count('"') % 2:
        # Arrow reads a quote left open as a field running to the end of the file, swallowing
        # the rows after it; an odd number of quotes is the cheap sign to look closer.
        _, problem = _record_lines(text, delimiter, n_fields=len(header), strict=True)
        if problem is not None:
            raise ClickstreamError(problem[1], file=str(file), line=problem[0])
    if table.num_rows == 0:
        raise ClickstreamError(
            f"header only: no data rows after the header (line {header_line})",
            file=str(file),
            line=header_line,
        )
    return _Source(file, True, used, _rename(table, used), encoding, delimiter)


def _read_bytes(file: Path) -> bytes:
    data = file.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ClickstreamError(f"not a valid gzip file: {exc}", file=str(file)) from None
    return data


def _decode(data: bytes, encoding: str, file: Path) -> str:
    """``data`` as text, failing like :func:`clickstream.io.iter_text_lines` on bad bytes."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        raise ClickstreamError(
            f"not valid {encoding} text (byte {exc.start - line_start}: "
            f"{data[exc.start : exc.start + 4]!r})",
            file=str(file),
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from None
    return text.removeprefix("\ufeff")  # a byte order mark would stick to the first name


def _header(text: str, delimiter: str, file: Path) -> tuple[list[str], int]:
    """Column names and the 1-based line of the header (blank lines before it are skipped)."""
    reader = stdlib_csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    previous = 0
    try:
        for row in reader:
            if row:
                return row, previous + 1
            previous = reader.line_num
    except stdlib_csv.Error as exc:
        raise ClickstreamError(
            f"cannot parse the header: {exc}", file=str(file), line=reader.line_num
        ) from None
    raise ClickstreamError(
        "file is empty: expected a header line naming the columns", file=str(file)
    )


def _record_lines(
    text: str, delimiter: str, n_fields: int | None = None, strict: bool = False
) -> tuple[list[int], tuple[int, str] | None]:
    """Start line (1-based) of every record, header first, and the first ragged record.

    Blank lines are skipped, as the Arrow parser does. The standard library's parser is slow
    but knows its line numbers (a quoted field may span lines), so it runs only on errors.

    Args:
        text: The file's text.
        delimiter: Field separator.
        n_fields: Report the first record with another number of fields.
        strict: Report malformed quoting (a quote never closed, text after a closing quote).

    Returns:
        The start lines, and ``(line, message)`` of the first record whose field count is not
        ``n_fields`` (or that cannot be parsed), else ``None``.
    """
    reader = stdlib_csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=strict)
    starts: list[int] = []
    previous = 0
    try:
        for row in reader:
            if row:
                starts.append(previous + 1)
                if n_fields is not None and len(row) != n_fields:
                    return starts, (
                        previous + 1,
                        f"ragged row: {len(row)} field(s), the header has {n_fields}",
                    )
            previous = reader.line_num
    except stdlib_csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return starts, (previous + 1, "a quoted field is never closed (no matching '\"')")
        return starts, (previous + 1, f"cannot parse the record: {exc}")
    return starts, None


def _resolve_columns(
    names: list[str],
    mapping: dict[str, str | None],
    explicit: set[str],
    file: Path,
    header_line: int | None,
) -> dict[str, str]:
    """The fields this file provides, field -> column; raise if a needed column is missing."""
    used: dict[str, str] = {}
    for fld, col in mapping.items():
        if col is None:
            continue
        if col in names:
            used[fld] = col
        elif fld in explicit or fld == "page":
            how = (
                f"columns={{{fld!r}: {col!r}}}"
                if fld in explicit
                else f"the default; map yours with columns={{{fld!r}: '<column>'}}"
            )
            raise ClickstreamError(
                f"missing column {col!r} for field {fld!r} ({how}); the file has columns {names}",
                file=str(file),
                line=header_line,
                column=col,
            )
    if "session_id" not in used and not ("visitor_id" in used and "timestamp" in used):
        expected = {f: mapping[f] for f in ("session_id", "visitor_id", "timestamp")}
        raise ClickstreamError(
            "cannot form sessions: need a session id column, or a visitor column and a "
            f"timestamp column (expected columns, by field: {expected}; found: "
            f"{ {f: c for f, c in used.items() if f in expected} }); "
            f"the file has columns {names}",
            file=str(file),
            line=header_line,
        )
    for col in set(used.values()):
        if names.count(col) > 1:
            raise ClickstreamError(
                f"column {col!r} appears {names.count(col)} times in the header",
                file=str(file),
                line=header_line,
                column=col,
            )
    return used


def _rename(table: pa.Table, used: dict[str, str]) -> pa.Table:
    """The table with one column per field (a column mapped to two fields is used twice).

    Text of every Arrow flavour (large, view, dictionary-encoded) becomes plain ``string``, so
    that the parsers below see one text type.
    """
    return pa.table({fld: _plain_text(table.column(col)) for fld, col in used.items()})


def _plain_text(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    t = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    is_text = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    return arr.cast(pa.string()) if is_text and arr.type != pa.string() else arr


def _same_structure(sources: list[_Source], fld: str) -> bool:
    """Whether the files have ``fld``; raise if some do and some do not."""
    has = [fld in src.columns for src in sources]
    if any(has) and not all(has):
        with_it = sources[has.index(True)].file
        without = sources[has.index(False)].file
        raise ClickstreamError(
            f"this file has no {fld!r} column but {with_it} has one: all files of a load must "
            "form sessions the same way",
            file=str(without),
        )
    return bool(has[0])


# --------------------------------------------------------------------------- parsing


def _parse(
    src: _Source, part: int, timestamp_unit: str | None, timestamp_format: str | None
) -> pd.DataFrame:
    """The page views of one file as typed columns (raw hits' names), checked row by row."""
    n = src.table.num_rows
    absent = pd.Series([None] * n, dtype="str")
    out: dict[str, object] = {
        "page_raw": _text(src, "page", required="empty page value: a page view needs a page")
    }
    for fld in ("session_id", "visitor_id"):
        why = f"empty {fld.replace('_', ' ')}"
        out[fld] = _text(src, fld, required=why) if fld in src.columns else absent
    for fld in ("page_title", "content_group"):
        out[fld] = _text(src, fld, required=None) if fld in src.columns else absent
    if "timestamp" in src.columns:
        out["hit_time"] = _times(src, timestamp_unit, timestamp_format)
    else:
        out["hit_time"] = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    revenue = np.zeros(n)
    if "revenue" in src.columns:
        rule = "revenue must be a number >= 0 (empty for none)"
        revenue = np.nan_to_num(_non_negative(src, "revenue", rule), nan=0.0)  # NaN = empty
    out["revenue"] = revenue
    out["time_on_page_s"] = np.full(n, np.nan)
    if "time_on_page_s" in src.columns:
        rule = "time on page must be a number of seconds >= 0 (empty when unknown)"
        out["time_on_page_s"] = _non_negative(src, "time_on_page_s", rule)
    paid = revenue > 0
    out["is_transaction"] = paid
    if "is_transaction" in src.columns:
        flag, unknown = _booleans(src, "is_transaction")
        bad = paid & ~flag & ~unknown
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise src.error(
                f"revenue {revenue[i]!r} on a row marked as not a transaction",
                i,
                "is_transaction",
            )
        out["is_transaction"] = np.where(unknown, paid, flag)
    out["_part"] = np.full(n, part, dtype=np.int64)
    out["_record"] = np.arange(n, dtype=np.int64)
    return pd.DataFrame(out)


def _text(src: _Source, fld: str, required: str | None) -> pd.Series:
    """Field ``fld`` as strings; empty cells are missing, an error if ``required`` says why."""
    arr = src.table.column(fld)
    if not pa.types.is_string(arr.type):
        try:
            arr = arr.cast(pa.string())  # ids stored as integers, dictionary-encoded text
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise src.error(f"expected text, the column holds {arr.type}", None, fld) from None
    missing = _missing(arr)
    if required is not None and missing.any():
        raise src.error(required, int(np.flatnonzero(missing)[0]), fld)
    s = arr.to_pandas()
    if missing.any():
        s = s.where(~missing)  # blank titles are unknown, not a title
    return s.astype("str")


def _missing(arr: pa.ChunkedArray) -> np.ndarray:
    """Null or blank (only whitespace) cells of a string array, shape ``(N,)``."""
    blank = pc.or_kleene(pc.is_null(arr), pc.equal(pc.utf8_trim_whitespace(arr), ""))
    return blank.to_numpy(zero_copy_only=False).astype(bool)


def _non_negative(src: _Source, fld: str, rule: str) -> np.ndarray:
    """Field ``fld`` as float64, NaN where empty; any other value must be finite and >= 0."""
    arr = src.table.column(fld)
    if (
        pa.types.is_integer(arr.type)
        or pa.types.is_floating(arr.type)
        or pa.types.is_decimal(arr.type)
    ):
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False).astype(bool)
        values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        shown = values
    elif pa.types.is_string(arr.type):
        missing = _missing(arr)
        shown = arr.to_numpy(zero_copy_only=False)
        values = pd.to_numeric(pd.Series(shown, dtype="str").str.strip(), errors="coerce")
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raise src.error(f"expected numbers, the column holds {arr.type}", None, fld)
    with np.errstate(invalid="ignore"):
        bad = ~missing & ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise src.error(f"{rule}, got {shown[i]!r}", i, fld)
    return np.where(missing, np.nan, values)


def _booleans(src: _Source, fld: str) -> tuple[np.ndarray, np.ndarray]:
    """Field ``fld`` as (values, unknown) boolean arrays, shape ``(N,)`` each."""
    arr = src.table.column(fld)
    if pa.types.is_boolean(arr.type):
        unknown = pc.is_null(arr).to_numpy(zero_copy_only=False).astype(bool)
        return arr.fill_null(False).to_numpy(zero_copy_only=False).astype(bool), unknown
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return np.nan_to_num(values) != 0, np.isnan(values)
    if not pa.types.is_string(arr.type):
        raise src.error(f"expected true/false, the column holds {arr.type}", None, fld)
    unknown = _missing(arr)
    words = pd.Series(arr.to_numpy(zero_copy_only=False), dtype="str").str.strip().str.lower()
    yes, no = words.isin(_TRUE).to_numpy(), words.isin(_FALSE).to_numpy()
    bad = ~unknown & ~yes & ~no
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise src.error(f"expected true/false (or 1/0, yes/no), got {arr[i].as_py()!r}", i, fld)
    return yes, unknown


def _times(src: _Source, unit: str | None, fmt: str | None) -> pd.Series:
    """The timestamp field as ``datetime64[ns, UTC]``; every row must have a valid time."""
    arr = src.table.column("timestamp")
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        missing = pc.is_null(arr).to_numpy(zero_copy_only=False).astype(bool)
        _no_missing_time(src, missing)
        if pa.types.is_date(t):
            arr = arr.cast(pa.timestamp("s"))
        times = pd.Series(arr.to_pandas())
        times = times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
        shown = times.to_numpy()
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        if unit is None:
            raise src.error(
                "timestamps are numbers: pass timestamp_unit ('s', 'ms', 'us' or 'ns' since "
                "the Unix epoch)",
                0,
                "timestamp",
            )
        values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        _no_missing_time(src, np.isnan(values))
        times = pd.to_datetime(pd.Series(values), unit=unit, utc=True, errors="coerce")
        shown = values
    elif pa.types.is_string(t):
        _no_missing_time(src, _missing(arr))
        shown = arr.to_numpy(zero_copy_only=False)
        text = pd.Series(shown, dtype="str").str.strip()
        if unit is not None:
            numbers = pd.to_numeric(text, errors="coerce")
            times = pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")
        else:
            try:
                times = pd.to_datetime(text, utc=True, format=fmt or "ISO8601", errors="coerce")
            except ValueError as exc:  # a bad directive in the format, whatever the data
                raise src.error(f"bad timestamp_format {fmt!r}: {exc}", None, "timestamp") from None
    else:
        raise src.error(f"expected timestamps, the column holds {t}", None, "timestamp")
    bad = (times.isna() | (times < _NS_MIN) | (times > _NS_MAX)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise src.error(_time_message(shown[i], unit, fmt), i, "timestamp")
    return times.astype("datetime64[ns, UTC]").reset_index(drop=True)


def _no_missing_time(src: _Source, missing: np.ndarray) -> None:
    if missing.any():
        raise src.error(
            "missing timestamp: every page view needs a time (or map no timestamp column)",
            int(np.flatnonzero(missing)[0]),
            "timestamp",
        )


def _time_message(value: object, unit: str | None, fmt: str | None) -> str:
    if unit is not None:
        return (
            f"cannot read {value!r} as a timestamp: expected a number of {unit} since the Unix "
            "epoch, between the years 1677 and 2262"
        )
    expected = f"format {fmt!r}" if fmt else "ISO 8601 (e.g. '2017-08-01T10:00:00Z')"
    hint = ""
    try:
        float(str(value))
        hint = "; it looks like a number: pass timestamp_unit ('s', 'ms', 'us' or 'ns')"
    except ValueError:
        if not fmt:
            hint = "; pass timestamp_format (e.g. '%d/%m/%Y %H:%M') for other formats"
    return f"cannot parse timestamp {value!r}: expected {expected}, years 1677-2262{hint}"


def _check_one_visitor_per_session(df: pd.DataFrame, sources: list[_Source]) -> None:
    first = df.groupby("session_id", sort=False)["visitor_id"].transform("first")
    bad = (df["visitor_id"] != first).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        src = sources[int(df["_part"].iat[i])]
        raise src.error(
            f"session {df['session_id'].iat[i]!r} has visitor {df['visitor_id'].iat[i]!r} "
            f"here but {first.iat[i]!r} on its first row: a session belongs to one visitor",
            int(df["_record"].iat[i]),
            "visitor_id",
        )
