"""Generic clickstream loader: a table of page views as CSV / TSV (plain, gzip or zstd),
Parquet or a spreadsheet (``.xlsx``, ``.xls``).

One row per page view. The columns are named by the user: ``columns`` maps the canonical
*fields* below to the file's column names, as a mapping, as one string
``"session=sid,page=item,time=ts"`` (field aliases allowed: ``session``, ``visitor``/``user``,
``time``/``ts``, ``item``, ``category``, ``title``, ``price``) or as the path of a small YAML
file holding the mapping:

==================  ========  ====================================================================
field               needed    meaning
==================  ========  ====================================================================
page                yes       the page viewed (path, URL or item id, normalised later); empty is
                              an error
session_id          see below session the page view belongs to
visitor_id          see below the visitor; without it the visitor is the session
timestamp           see below time of the page view (ISO 8601 text, a Parquet or spreadsheet
                              timestamp, or epoch numbers with ``timestamp_unit``); zone-less
                              times are UTC
revenue             no        transaction revenue on this page view; empty means 0
value               no        a value of the page view (a product's price, a score), any finite
                              number; empty means unknown. On a site without revenue it defines
                              page value (:mod:`clickstream.prepare`)
time_on_page_s      no        seconds on the page; empty means unknown (then from timestamps)
page_title          no        page title; empty means unknown
content_group       no        the page's category (an analytics content group, a product
                              category): page groups follow it; empty means unknown
is_transaction      no        ``true``/``false`` (``1``/``0``, ``yes``/``no``); empty or absent
                              means ``revenue > 0``
==================  ========  ====================================================================

**Nothing is read without saying so.** A field the mapping does not name is looked for under
its usual names (:data:`GUESSES`: ``page``, ``url``, ``item_id``, ``itemId``, ...; case, spaces,
``_`` and ``-`` ignored); each column found that way is reported in a notice (printed, and kept
in ``LoadResult.notices`` and ``meta.json``) naming the field, the column, why, and how to map
another (``data.columns=<field>=<column>``) or none (``<field>=null``). A mapped column that the
file lacks is an error.

Sessions come from ``session_id`` if the file has it; otherwise from ``visitor_id`` and
``timestamp`` by Google Analytics' inactivity rule (:func:`clickstream.sessions.sessionize`: a
gap longer than ``session_timeout_s``, 30 minutes by default, starts a new session; session ids
are ``<visitor>#<k>``). A file must have one of the two. To sessionise a file that does have a
session id column, map it away: ``columns={"session_id": None}``.

What the hits table takes from the file:

* page views are ordered within their session by ``order_by`` when given (a list of the file's
  columns, e.g. ``[eventdate, timeframe]``: a date plus an integer "time frame" or "order within
  session", as e-commerce research logs have them; each column is compared as numbers, else as
  ISO dates, else as text), else by timestamp; ties, and files without either, keep file order.
  A session id is global: rows of one session may be spread over the file, or over several
  files (e.g. daily exports), and are gathered;
* ``session_start`` is the session's first timestamp. Without any timestamps it is synthetic:
  ``1970-01-01T00:00:00Z`` plus ``i`` seconds for the ``i``-th session, sessions in order of
  their first ``order_by`` key where given, else of first appearance (files in sorted order,
  then rows), so that a temporal split follows the data's order;
* ``time_on_page_s`` is the column's value where given, else the time to the next page view of
  the session (unknown on the last one, and everywhere without timestamps);
* ``visitor_id`` is the session id where the file has no visitor column; a session whose rows
  name different visitors is an error;
* ``is_transaction`` is the column's value where given and ``revenue > 0`` elsewhere; revenue on
  a row marked as not a transaction is an error.

**Formats.** The format is recognised by content (Parquet, gzip, zstd, the spreadsheet
formats) and name (``.xlsx``, ``.xls``, ``.tsv``). The CSV delimiter is sniffed from the first
lines by default (``delimiter="auto"``: comma, tab, semicolon or pipe, said in a notice when it
is not a comma); name it with ``delimiter`` as ``comma``, ``tab``, ``semicolon``, ``pipe``, a
single character, or ``\\t``. A spreadsheet is read from its first sheet (``sheet`` chooses
another; a notice names the sheet when there are several); ``.xlsx`` is read with ``openpyxl`` and
``.xls`` with ``python-calamine`` (both dependencies of the project).

Nothing is dropped silently: every bad record raises :class:`ClickstreamError` naming the file,
the line (CSV: 1-based physical line where the record starts, the header being line 1, so with
one line per record data row ``i`` is line ``i + 2``), the 0-based row (Parquet; spreadsheets
also give the sheet's row number) and the file's column. Errors: a missing mapped column (the
message names the field, the expected column and lists the file's columns), an empty file, a
header without rows, a **header repeated inside the file** (files concatenated with their
headers), text that is not valid in ``encoding``, a ragged CSV row (a different number of
fields than the header), an empty ``page``, ``session_id`` or ``visitor_id`` (a page view must
name its page: rows without one are not dropped, since a session of empty pages would silently
vanish), a missing or unparseable timestamp, revenue that is not a number in ``[0, 1e12]``
(negative, NaN, infinite, absurd such as ``1e308``, or text), a value that is not a finite
number of size at most ``1e12``, a negative, absurd or non-numeric time on page, an
``is_transaction`` value that is not a boolean, an ``order_by`` column that is missing or empty.

All files of one load must form sessions the same way (all with a session id column or none,
all with timestamps or none); optional columns may differ between files.
"""

from __future__ import annotations

import codecs
import csv as stdlib_csv  # absolute import: the standard library's module, not this one
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from clickstream.errors import ClickstreamError, ConfigError, DataError
from clickstream.io import PathSpec, notice, read_bytes, resolve_inputs
from clickstream.schema import MAX_AMOUNT, MAX_TIME_ON_PAGE_S, LoadResult, validate_hits
from clickstream.sessions import finish_raw_hits, sessionize

PATTERNS = (
    "*.csv",
    "*.csv.gz",
    "*.csv.zst",
    "*.tsv",
    "*.tsv.gz",
    "*.tsv.zst",
    "*.parquet",
    "*.xlsx",
    "*.xls",
)
"""Files a folder contributes (a file named on its own is read whatever its name)."""

FIELDS = (
    "session_id",
    "visitor_id",
    "timestamp",
    "page",
    "revenue",
    "value",
    "time_on_page_s",
    "page_title",
    "content_group",
    "is_transaction",
)
"""Canonical fields ``columns`` may map."""

ALIASES = {
    "session": "session_id",
    "visitor": "visitor_id",
    "user": "visitor_id",
    "user_id": "visitor_id",
    "time": "timestamp",
    "ts": "timestamp",
    "item": "page",
    "item_id": "page",
    "url": "page",
    "category": "content_group",
    "title": "page_title",
    "price": "value",
    "time_on_page": "time_on_page_s",
    "transaction": "is_transaction",
}
"""Other names of the fields in a column map (``"session=sid,item=item_id"``)."""

GUESSES: dict[str, tuple[str, ...]] = {
    "session_id": ("session_id", "session", "sid", "visit_id", "session_key"),
    "visitor_id": (
        "visitor_id",
        "visitor",
        "user_id",
        "user",
        "client_id",
        "full_visitor_id",
        "user_pseudo_id",
        "customer_id",
    ),
    "timestamp": (
        "timestamp",
        "time",
        "ts",
        "datetime",
        "date_time",
        "event_time",
        "event_timestamp",
        "hit_time",
        "time_stamp",
    ),
    "page": (
        "page",
        "page_path",
        "page_url",
        "url",
        "path",
        "page_location",
        "item_id",
        "item",
        "product_id",
        "product",
        "sku",
    ),
    "revenue": ("revenue", "transaction_revenue", "purchase_revenue"),
    "value": ("value", "price", "score"),
    "time_on_page_s": ("time_on_page_s", "time_on_page", "dwell_time", "dwell_time_s"),
    "page_title": ("page_title", "title"),
    "content_group": ("content_group", "category", "category_id", "product_category"),
    "is_transaction": ("is_transaction", "is_purchase"),
}
"""Column names each unmapped field is looked for under, in order of preference (compared
without case, spaces, ``_`` or ``-``). A column found this way is reported in a notice."""

DELIMITERS = {"comma": ",", "tab": "\t", "semicolon": ";", "pipe": "|", "\\t": "\t"}
"""Named delimiters (the command line cannot pass a tab or, to Hydra, a bare ``;``)."""

SNIFFED = ",\t;|"
"""Delimiters ``delimiter="auto"`` chooses from."""

TIMESTAMP_UNITS = ("s", "ms", "us", "ns")

SYNTHETIC_START = pd.Timestamp("1970-01-01", tz="UTC")
"""Without timestamps, session ``i`` (order of first appearance) starts ``i`` seconds later."""

BOM = "\ufeff"

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_PARQUET_MAGIC = b"PAR1"
_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0"
_NS_MIN, _NS_MAX = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")


def load(
    path: PathSpec,
    *,
    columns: Mapping[str, str | None] | str | None = None,
    timestamp_unit: str | None = None,
    timestamp_format: str | None = None,
    session_timeout_s: float = 1800.0,
    delimiter: str = "auto",
    encoding: str = "utf-8",
    order_by: Sequence[str] | str | None = None,
    sheet: str | int | None = None,
) -> LoadResult:
    """Load page views from CSV / Parquet / spreadsheet files into raw hits.

    Args:
        path: A file (the format is recognised by its content and name), a folder (its files
            matching :data:`PATTERNS`), a glob, or a list of those. Files are read in sorted
            order.
        columns: Canonical field -> the file's column name, for the fields in :data:`FIELDS`
            (or their :data:`ALIASES`): a mapping, a string ``"field=column,field=column"``
            (``null`` or an empty column ignores the field), or the path of a YAML file
            holding the mapping. Fields not given are looked for under their usual names
            (:data:`GUESSES`), with a notice. A field given here must exist in every file;
            ``None`` ignores the field.
        timestamp_unit: The timestamps are numbers since the Unix epoch in this unit
            (``s``, ``ms``, ``us`` or ``ns``). Required for numeric timestamps.
        timestamp_format: ``strftime`` format of text timestamps (e.g. ``"%d/%m/%Y %H:%M"``);
            default ISO 8601 (``2017-08-01T10:00:00Z``, ``2017-08-01 10:00:00+02:00``, ...).
        session_timeout_s: Inactivity gap, in seconds, that starts a new session when sessions
            are formed from visitors and timestamps (a gap exactly this long does not).
        delimiter: CSV field separator: ``auto`` (sniffed), ``comma``, ``tab``, ``semicolon``,
            ``pipe``, ``\\t`` or one character.
        encoding: Text encoding of CSV files (a UTF-8 byte order mark is ignored).
        order_by: The file's columns that order page views within a session, most
            significant first (a list, or one string ``"date,timeframe"``).
        sheet: Spreadsheets: the sheet to read, by name or 0-based position (default the
            first).

    Returns:
        Raw hits ``(N, len(RAW_COLUMNS))``, N = page views, ordered by session start, session
        and step. ``info`` holds ``sessions``, ``page_views``, ``transactions``, ``revenue``,
        ``sessionised`` (sessions formed by the inactivity rule), ``session_timeout_s`` (when
        sessionised), ``timestamps`` (whether the files have them), ``session_start`` (how it
        was set), ``columns`` (field -> column read, per file), ``page_column`` and
        ``value_column`` (the columns read for those fields), ``delimiters`` (per CSV file)
        and ``order_by``. ``notices`` says what was guessed. ``dropped`` is empty: nothing is
        dropped.

    Raises:
        ClickstreamError: Bad options or bad input (see the module docstring); the message
            names the file, the line (CSV) or row (Parquet, spreadsheets) and the column.
    """
    given = parse_columns(columns)
    _check_options(given, timestamp_unit, timestamp_format, session_timeout_s, encoding)
    sep = _named_delimiter(delimiter)
    order = _order_columns(order_by)
    files = resolve_inputs(path, PATTERNS)
    notices: list[str] = []
    guessed: dict[tuple[str, str], list[str]] = {}
    sources = [_read(f, given, order, sep, encoding, sheet, guessed, notices) for f in files]
    for (fld, col), where in guessed.items():
        shown = where[0] if len(where) == 1 else f"{len(where)} files"
        notice(
            f"csv: field {fld!r} read from column {col!r} ({shown}): not mapped, found under "
            f"its usual name; {_remap_hint(fld)}",
            notices,
        )
    has_session = _same_structure(sources, "session_id")
    has_time = _same_structure(sources, "timestamp")
    frames = [
        _parse(src, k, timestamp_unit, timestamp_format, notices) for k, src in enumerate(sources)
    ]
    df = pd.concat(frames, ignore_index=True)
    del frames
    if has_time:
        _refuse_mixed_zones(sources)
    hit_order = "hit_time" if has_time else None
    if order:
        df["_order"] = _order_rank(sources, order, notices)
        hit_order = "_order"

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
        if order:
            _refuse_order_against_time(df, sources)
        _note_repeated_rows(df, sources, notices)

    if has_time:
        df["session_start"] = df.groupby("session_id", sort=False)["hit_time"].transform("min")
    elif order:
        # sessions in order of their first key: the temporal split follows the data's order
        first = df.groupby("session_id", sort=False)["_order"].transform("min")
        rank = pd.factorize(first.rank(method="dense").astype(np.int64), sort=True)[0]
        df["session_start"] = SYNTHETIC_START + pd.to_timedelta(rank, unit="s")
    else:
        codes, _ = pd.factorize(df["session_id"], sort=False)
        df["session_start"] = SYNTHETIC_START + pd.to_timedelta(codes, unit="s")

    hits = finish_raw_hits(df, hit_order=hit_order)
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
            else f"{SYNTHETIC_START.isoformat()} + i seconds for the i-th session in "
            + ("order of its first order_by key" if order else "file order")
        ),
        "columns": {str(src.file): dict(src.columns) for src in sources},
        "page_column": _column_names(sources, "page"),
        "delimiters": {str(s.file): s.delimiter for s in sources if s.kind == "csv"},
    }
    if any("value" in src.columns for src in sources):
        info["value_column"] = _column_names(sources, "value")
    if order:
        info["order_by"] = list(order)
    if not has_session:
        info["session_timeout_s"] = float(session_timeout_s)
    return LoadResult(
        hits=hits, source="csv", files=[str(f) for f in files], info=info, notices=notices
    )


# --------------------------------------------------------------------------- options


def parse_columns(columns: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    """A column map as given (mapping, ``"field=column,..."`` string or YAML file path) as a
    plain ``{field: column or None}`` with aliases resolved.

    Raises:
        ClickstreamError: Unreadable text or file, an unknown field, a field given twice.
    """
    if columns is None:
        return {}
    if isinstance(columns, os.PathLike) or (
        isinstance(columns, str) and re.search(r"\.ya?ml$", columns.strip(), re.IGNORECASE)
    ):
        path = Path(columns).expanduser()
        try:
            import yaml

            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"cannot read the column map: {exc.strerror}", file=str(path)
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"the column map is not valid YAML: {exc}", file=str(path)) from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(
                "the column map must be a YAML mapping {field: column}", file=str(path)
            )
        return parse_columns(dict(loaded))
    if isinstance(columns, str):
        pairs: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in re.split(r"[,;\s]+", columns))):
            name, sep, col = part.partition("=") if "=" in part else part.partition(":")
            if not sep or not name.strip():
                raise ConfigError(
                    f"data.columns: cannot read {part!r}: expected field=column, e.g. "
                    "data.columns=session=sid,page=item,time=ts (spaces and commas separate "
                    "the pairs: for a column named with them use a YAML file, "
                    "data.columns=columns.yaml, or data.columns='{page: \"Page URL\"}')"
                )
            value = col.strip()
            pairs[name.strip()] = None if value.lower() in ("", "null", "none", "~") else value
        columns = pairs
    if not isinstance(columns, Mapping):
        raise ConfigError(f"data.columns must map fields to columns, got {type(columns).__name__}")
    out: dict[str, Any] = {}
    for name, col in columns.items():
        key = str(name).strip()
        fld = ALIASES.get(key.lower(), key)
        if fld not in FIELDS:
            raise ConfigError(
                f"data.columns maps unknown field(s) [{key!r}]; the fields are {list(FIELDS)} "
                f"(also: {sorted(ALIASES)})"
            )
        if fld in out:
            raise ConfigError(f"data.columns names the field {fld!r} twice")
        out[fld] = col
    return out


def _check_options(
    given: dict[str, Any],
    timestamp_unit: str | None,
    timestamp_format: str | None,
    session_timeout_s: float,
    encoding: str,
) -> None:
    for name, col in given.items():
        if col is not None and (
            not isinstance(col, str | int) or isinstance(col, bool) or col == ""
        ):
            raise ConfigError(f"data.columns[{name!r}] must be a column name or null, got {col!r}")
        if isinstance(col, int):
            given[name] = str(col)  # a YAML map may hold numeric column names
    if "page" in given and given["page"] is None:
        raise ConfigError("data.columns: page cannot be null: every page view needs a page")
    if timestamp_unit is not None and timestamp_unit not in TIMESTAMP_UNITS:
        raise ConfigError(
            f"data.timestamp_unit must be one of {TIMESTAMP_UNITS}, got {timestamp_unit!r}"
        )
    if timestamp_unit is not None and timestamp_format is not None:
        raise ConfigError(
            "give data.timestamp_unit (numeric timestamps) or data.timestamp_format (text), not both"
        )
    try:
        timeout = float(session_timeout_s)
    except (TypeError, ValueError):
        timeout = math.nan
    if isinstance(session_timeout_s, bool) or not 0 < timeout < math.inf:
        raise ConfigError(
            f"data.session_timeout_s must be a finite number of seconds > 0, got {session_timeout_s!r}"
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"unknown text encoding {encoding!r} (data.encoding)") from None


def _named_delimiter(delimiter: str | None) -> str | None:
    """The delimiter character, or ``None`` to sniff it."""
    if delimiter is None or (isinstance(delimiter, str) and delimiter.lower() == "auto"):
        return None
    if isinstance(delimiter, str):
        named = DELIMITERS.get(delimiter.lower(), DELIMITERS.get(delimiter, delimiter))
        if len(named) == 1 and named not in '"\r\n':
            return named
    raise ConfigError(
        f"data.delimiter must be auto, comma, tab, semicolon, pipe, '\\t' or one character other "
        f"than a quote or newline, got {delimiter!r}"
    )


def _order_columns(order_by: Sequence[str] | str | None) -> list[str]:
    if order_by is None:
        return []
    if isinstance(order_by, str):
        order_by = [c for c in re.split(r"[,\s]+", order_by) if c]
    cols = [str(c) for c in order_by]
    if any(not c for c in cols) or len(set(cols)) != len(cols):
        raise ConfigError(f"data.order_by must name distinct columns, got {list(order_by)}")
    return cols


def _remap_hint(fld: str) -> str:
    """How to map field ``fld`` to another column, or to none where the field is optional."""
    hint = f"map another with data.columns={fld}=<column>"
    return hint if fld == "page" else f"{hint}, or none with {fld}=null"


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", str(name)).lower()


# --------------------------------------------------------------------------- reading


@dataclass
class _Source:
    """One input file, read: its table (columns renamed to fields) and how to point into it."""

    file: Path
    kind: str  # csv, parquet or excel
    columns: dict[str, str]  # field -> the file's column it was read from
    table: pa.Table
    encoding: str = "utf-8"
    delimiter: str = ","
    order: pa.Table | None = None  # the order_by columns, as read
    guessed: frozenset[str] = frozenset()  # fields read from a column found by its name
    zones: str | None = None  # the timestamps: "zoned" or "zone-less" (for mixing across files)
    _lines: list[int] | None = field(default=None, repr=False)

    @property
    def is_csv(self) -> bool:
        return self.kind == "csv"

    def error(self, message: str, record: int | None = None, fld: str | None = None) -> DataError:
        """A :class:`DataError` at data record ``record`` (0-based) of field ``fld``."""
        column = self.columns.get(fld, fld) if fld else None
        if fld in self.guessed:
            message = (
                f"{message} (the column was not mapped, only found under its usual name: "
                f"{_remap_hint(fld)})"
            )
        if record is None:
            return DataError(message, file=str(self.file), column=column)
        if self.kind == "excel":
            message = f"{message} (spreadsheet row {record + 2})"
        if not self.is_csv:
            return DataError(message, file=str(self.file), row=record, column=column)
        return DataError(message, file=str(self.file), line=self.line_of(record), column=column)

    def where(self, record: int) -> str:
        """Where data record ``record`` (0-based) is, for a notice: ``file, line N``."""
        if self.is_csv:
            return f"{self.file}, line {self.line_of(record)}"
        return f"{self.file}, row {record}"

    def line_of(self, record: int) -> int:
        """1-based line where data record ``record`` starts (only computed on an error)."""
        if self._lines is None:
            text = _decode(read_bytes(self.file), self.encoding, self.file)
            lines, _ = _record_lines(text, self.delimiter)
            # A quoting quirk read differently by the two parsers: assume one line a record.
            self._lines = lines if len(lines) == self.table.num_rows + 1 else []
        return self._lines[record + 1] if self._lines else record + 2


def _read(
    file: Path,
    given: dict[str, Any],
    order: list[str],
    delimiter: str | None,
    encoding: str,
    sheet: str | int | None,
    guessed: dict[tuple[str, str], list[str]],
    notices: list[str],
) -> _Source:
    with open(file, "rb") as fh:
        magic = fh.read(4)
    name = file.name.lower()
    if magic == _PARQUET_MAGIC:
        src = _read_parquet(file, given, order, guessed)
    elif name.endswith((".xlsx", ".xls")) or magic in (_XLSX_MAGIC, _XLS_MAGIC):
        src = _read_excel(file, given, order, sheet, magic, guessed, notices)
    else:
        src = _read_csv(file, given, order, delimiter, encoding, guessed, notices)
    src.guessed = frozenset(f for f in src.columns if f not in given)
    _check_repeated_header(src)
    return src


def _read_parquet(file: Path, given: dict[str, Any], order: list[str], guessed: dict) -> _Source:
    try:
        names = pq.read_schema(file).names
        used = _resolve_columns(names, given, order, file, None, guessed)
        table = pq.read_table(file, columns=sorted(set(used.values()) | set(order)))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read as Parquet: {exc}", file=str(file)) from None
    if table.num_rows == 0:
        raise DataError("no rows (the file holds only a schema)", file=str(file))
    return _Source(file, "parquet", used, _rename(table, used), order=_order_table(table, order))


def _read_excel(
    file: Path,
    given: dict[str, Any],
    order: list[str],
    sheet: str | int | None,
    magic: bytes,
    guessed: dict,
    notices: list[str],
) -> _Source:
    # .xlsx: openpyxl; the old binary .xls: calamine (pandas' reader for it since xlrd's end)
    xls = magic == _XLS_MAGIC or file.name.lower().endswith(".xls")
    engine, package = ("calamine", "python-calamine") if xls else ("openpyxl", "openpyxl")
    try:
        __import__("python_calamine" if xls else "openpyxl")
    except ImportError:
        raise DataError(
            f"reading {file.suffix} spreadsheets needs the {package} package: pip install "
            f"{package} (or save the sheet as CSV)",
            file=str(file),
        ) from None
    try:
        with pd.ExcelFile(file, engine=engine) as book:  # closed even when refused
            frame, sheets, chosen = _read_sheet(book, file, sheet)
    except ClickstreamError:
        raise
    except Exception as exc:  # openpyxl / calamine raise their own types on corrupt files
        raise DataError(f"cannot read as a spreadsheet: {exc}", file=str(file)) from None
    if len(sheets) > 1:
        name = chosen if isinstance(chosen, str) else sheets[chosen]
        notice(
            f"csv: {file.name}: read sheet {name!r} of {len(sheets)} {sheets}; choose another "
            "with data.sheet=<name or position>",
            notices,
        )
    return _finish_excel(frame, file, given, order, magic, guessed, notices)


def _read_sheet(book: pd.ExcelFile, file: Path, sheet: Any) -> tuple[pd.DataFrame, list, Any]:
    """The chosen sheet of an open workbook, its sheet names, and the choice."""
    sheets = list(book.sheet_names)
    chosen = sheets[0] if sheet is None else sheet
    if isinstance(chosen, int) and not 0 <= chosen < len(sheets):
        raise DataError(
            f"data.sheet={chosen}: the workbook has {len(sheets)} sheet(s) {sheets}",
            file=str(file),
        )
    if isinstance(chosen, str) and chosen not in sheets:
        raise DataError(
            f"data.sheet={chosen!r}: no such sheet; the workbook has {sheets}", file=str(file)
        )
    return pd.read_excel(book, sheet_name=chosen, dtype=object, header=0), sheets, chosen


def _finish_excel(
    frame: pd.DataFrame,
    file: Path,
    given: dict[str, Any],
    order: list[str],
    magic: bytes,
    guessed: dict,
    notices: list[str],
) -> _Source:
    names = [str(c) for c in frame.columns]
    frame.columns = names
    if frame.dropna(how="all").empty:
        raise DataError("header only: no data rows after the header", file=str(file))
    used = _resolve_columns(names, given, order, file, None, guessed)
    table = pa.table({c: _cells_as_text(frame[c]) for c in sorted(set(used.values()) | set(order))})
    return _Source(file, "excel", used, _rename(table, used), order=_order_table(table, order))


def _cells_as_text(cells: pd.Series) -> pa.Array:
    """Spreadsheet cells as text, as a CSV export of the sheet would write them: whole numbers
    without ``.0`` (ids), dates in ISO 8601, empty cells null."""

    def text(v: object) -> str | None:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
            return None
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            return str(int(v))
        if isinstance(v, pd.Timestamp | np.datetime64) or hasattr(v, "isoformat"):
            return pd.Timestamp(v).isoformat()  # type: ignore[arg-type]
        return str(v)

    return pa.array([text(v) for v in cells.tolist()], type=pa.string())


def _read_csv(
    file: Path,
    given: dict[str, Any],
    order: list[str],
    delimiter: str | None,
    encoding: str,
    guessed: dict,
    notices: list[str],
) -> _Source:
    text = _decode(read_bytes(file), encoding, file)
    if not text.strip():
        raise DataError("file is empty: expected a header line naming the columns", file=str(file))
    if delimiter is None:
        delimiter = _sniff(text, file)
        if delimiter != ",":
            named = {v: k for k, v in DELIMITERS.items() if k != "\\t"}[delimiter]
            notice(
                f"csv: {file.name}: delimiter {named} ({delimiter!r}), sniffed from the first "
                "lines; set data.delimiter=comma|tab|semicolon|pipe to choose",
                notices,
            )
    header, header_line = _header(text, delimiter, file)
    used = _resolve_columns(header, given, order, file, header_line, guessed)
    needed = sorted(set(used.values()) | set(order))
    data = text.encode("utf-8")
    try:
        table = pa_csv.read_csv(
            io.BytesIO(data),
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
            raise DataError(message, file=str(file), line=line) from None
        raise DataError(f"cannot parse as CSV: {exc}", file=str(file)) from None
    if text.count('"') % 2 or table.num_rows + 1 != _non_empty_lines(data):
        # Arrow reads a quote left open as a field running on over the next lines (to the end
        # of the file, or to the next stray quote), swallowing the rows in between. A record
        # spanning lines is the cheap sign to look closer: legitimate quoted line breaks pass.
        _, problem = _record_lines(text, delimiter, n_fields=len(header), strict=True)
        if problem is not None:
            raise DataError(problem[1], file=str(file), line=problem[0])
    if table.num_rows == 0:
        raise DataError(
            f"header only: no data rows after the header (line {header_line})",
            file=str(file),
            line=header_line,
        )
    return _Source(
        file,
        "csv",
        used,
        _rename(table, used),
        encoding,
        delimiter,
        order=_order_table(table, order),
    )


def _non_empty_lines(data: bytes) -> int:
    """Lines holding anything in UTF-8 text, whatever the line ends (LF, CRLF or CR)."""
    if not data:
        return 0
    if b"\r" not in data and b"\n\n" not in data and not data.startswith(b"\n"):
        return data.count(b"\n") + (not data.endswith(b"\n"))  # no blank lines: every line
    codes = np.frombuffer(data, dtype=np.uint8)
    is_end = (codes == 10) | (codes == 13)
    starts = ~is_end[1:] & is_end[:-1]  # a character right after a line end
    return int(starts.sum()) + int(not is_end[0])


def _sniff(text: str, file: Path) -> str:
    """The delimiter of a CSV text: ``.tsv`` files use tabs; else the candidate of
    :data:`SNIFFED` that splits the first lines into the same number (> 1) of fields."""
    if ".tsv" in file.name.lower():
        return "\t"
    sample = "\n".join([line for line in text[:65536].splitlines() if line.strip()][:50])
    try:
        return stdlib_csv.Sniffer().sniff(sample, delimiters=SNIFFED).delimiter
    except stdlib_csv.Error:
        pass
    first = sample.splitlines()[0] if sample else ""
    counts = {d: first.count(d) for d in SNIFFED}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _decode(data: bytes, encoding: str, file: Path) -> str:
    """``data`` as text, failing like :func:`clickstream.io.iter_text_lines` on bad bytes."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        raise DataError(
            f"not valid {encoding} text (byte {exc.start - line_start}: "
            f"{data[exc.start : exc.start + 4]!r})",
            file=str(file),
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from None
    return text.removeprefix(BOM)  # a byte order mark would stick to the first name


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
        raise DataError(
            f"cannot parse the header: {exc}", file=str(file), line=reader.line_num
        ) from None
    raise DataError("file is empty: expected a header line naming the columns", file=str(file))


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
        if "expected after" in str(exc):  # strict: text right after a closing quote
            return starts, (
                previous + 1,
                f"a quoted field is followed by text ({exc}): a quote left open here ran on "
                "to a later quote?",
            )
        return starts, (previous + 1, f"cannot parse the record: {exc}")
    return starts, None


def _resolve_columns(
    names: list[str],
    given: dict[str, Any],
    order: list[str],
    file: Path,
    header_line: int | None,
    guessed: dict[tuple[str, str], list[str]],
) -> dict[str, str]:
    """The fields this file provides, field -> column; raise if a needed column is missing.

    Mapped fields must exist; the others are looked for under :data:`GUESSES` (recorded in
    ``guessed`` for the notice).
    """
    used: dict[str, str] = {}
    by_norm: dict[str, str] = {}
    for n in names:
        by_norm.setdefault(_norm_name(n), n)
    for fld in FIELDS:
        if fld in given:
            col = given[fld]
            if col is None:
                continue
            if col not in names:
                raise ConfigError(
                    f"missing column {col!r} for field {fld!r} (data.columns={fld}={col}); "
                    f"the file has columns {names}",
                    file=str(file),
                    line=header_line,
                    column=col,
                )
            used[fld] = col
            continue
        taken = set(used.values()) | set(given.values())
        for candidate in GUESSES[fld]:
            col = by_norm.get(_norm_name(candidate))
            if col is not None and col not in taken:
                used[fld] = col
                guessed.setdefault((fld, col), []).append(file.name)
                break
    if "page" not in used:
        raise DataError(
            f"no page column: map one with data.columns=page=<column> (looked for "
            f"{list(GUESSES['page'])}); the file has columns {names}",
            file=str(file),
            line=header_line,
        )
    if "session_id" not in used and not ("visitor_id" in used and "timestamp" in used):
        found = {f: c for f, c in used.items() if f in ("session_id", "visitor_id", "timestamp")}
        raise DataError(
            "cannot form sessions: need a session id column, or a visitor column and a "
            f"timestamp column (map them with data.columns=session=<column> or "
            f"data.columns=visitor=<column>,time=<column>; found: {found}); "
            f"the file has columns {names}",
            file=str(file),
            line=header_line,
        )
    for col in order:
        if col not in names:
            raise ConfigError(
                f"data.order_by names column {col!r}, which the file lacks; the file has "
                f"columns {names}",
                file=str(file),
                line=header_line,
                column=col,
            )
    for col in set(used.values()) | set(order):
        if names.count(col) > 1:
            raise DataError(
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


def _order_table(table: pa.Table, order: list[str]) -> pa.Table | None:
    if not order:
        return None
    return pa.table({c: _plain_text(table.column(c)) for c in order})


def _plain_text(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    t = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    is_text = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    return arr.cast(pa.string()) if is_text and arr.type != pa.string() else arr


def _check_repeated_header(src: _Source) -> None:
    """Refuse records that repeat the header (files concatenated with their headers): every
    text column read holds its own column name."""
    checks = [
        # A byte order mark sticks to a repeated header when files are joined with `cat`.
        pc.equal(pc.utf8_trim_whitespace(pc.replace_substring(src.table.column(fld), BOM, "")), col)
        for fld, col in src.columns.items()
        if pa.types.is_string(src.table.column(fld).type)
    ]
    if len(checks) < min(2, len(src.columns)) or not checks:
        return
    same = checks[0]
    for c in checks[1:]:
        same = pc.and_(same, c)
    mask = same.to_numpy(zero_copy_only=False)
    mask = np.asarray(pd.Series(mask).fillna(False), dtype=bool)
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise src.error(
            f"this record repeats the header ({', '.join(src.columns.values())}): files "
            f"joined with their header lines? Delete the repeated header lines (keep the "
            f"first), {int(mask.sum())} in this file",
            i,
        )


def _column_names(sources: list[_Source], fld: str) -> str:
    names = sorted({src.columns[fld] for src in sources if fld in src.columns})
    return " / ".join(names)


def _same_structure(sources: list[_Source], fld: str) -> bool:
    """Whether the files have ``fld``; raise if some do and some do not."""
    has = [fld in src.columns for src in sources]
    if any(has) and not all(has):
        with_it = sources[has.index(True)].file
        without = sources[has.index(False)].file
        raise DataError(
            f"this file has no {fld!r} column but {with_it} has one: all files of a load must "
            "form sessions the same way",
            file=str(without),
        )
    return bool(has[0])


def _order_rank(sources: list[_Source], order: list[str], notices: list[str]) -> np.ndarray:
    """Global rank of every row by the ``order_by`` keys (then file, then row), shape ``(N,)``.

    Each key column is compared as numbers when every value is one, else as ISO timestamps
    when every value is one, else as text, with a notice; an empty key is an error, and so are
    dates in another format (``31/12/2016``), which as text would sort by day.
    """
    keys = []
    for col in order:
        parts = []
        for src in sources:
            assert src.order is not None
            arr = src.order.column(col)
            missing = (
                _missing(arr)
                if pa.types.is_string(arr.type)
                else pc.is_null(arr).to_numpy(zero_copy_only=False).astype(bool)
            )
            if missing.any():
                raise src.error(
                    f"empty data.order_by key {col!r}: every page view needs its order",
                    int(np.flatnonzero(missing)[0]),
                    col,
                ) from None
            parts.append(pd.Series(arr.to_pandas()))
        values = pd.concat(parts, ignore_index=True)
        key = _comparable(values)
        if key is None:
            key = _text_order(values, col, sources, notices)
        keys.append(key)
    n = len(keys[0])
    keys.append(np.arange(n))  # file order breaks ties: files are concatenated in order
    order_idx = np.lexsort(tuple(reversed(keys)))
    rank = np.empty(n, dtype=np.int64)
    rank[order_idx] = np.arange(n)
    return rank


def _comparable(values: pd.Series) -> np.ndarray | None:
    """Sort keys for one ``order_by`` column: numbers, else timestamps, else ``None`` (text)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(np.float64)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return pd.to_datetime(values, utc=True).to_numpy("datetime64[ns]").view(np.int64)
    text = values.astype("str").str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(np.float64)
    times = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    if times.notna().all():
        return times.to_numpy("datetime64[ns]").view(np.int64)
    return None


_OTHER_DATE = re.compile(r"^\s*\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}\b")
"""A date written day or month first (``31/12/2016``, ``12.31.2016``), or ISO-like but invalid."""


def _text_order(
    values: pd.Series, col: str, sources: list[_Source], notices: list[str]
) -> np.ndarray:
    """Sort keys of an ``order_by`` column compared as text, said in a notice; dates in a
    format other than ISO 8601 are refused (as text ``31/12/2016`` sorts after ``01/08/2017``)."""
    text = values.astype("str").str.strip()
    numeric = pd.to_numeric(text, errors="coerce").notna()
    iso = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce").notna()
    dates = text.str.match(_OTHER_DATE).to_numpy() & ~iso.to_numpy()
    if dates.any():
        src, record = _locate(sources, int(np.flatnonzero(dates)[0]))
        raise src.error(
            f"data.order_by column {col!r} holds a date that is not ISO 8601 "
            f"({text.iat[int(np.flatnonzero(dates)[0])]!r}): compared as text, dates would "
            "sort by their first digits, not in time; write them as YYYY-MM-DD (or order by "
            "a timestamp column read with data.timestamp_format)",
            record,
            col,
        )
    i = int(np.flatnonzero(~(numeric | iso).to_numpy())[0])
    src, record = _locate(sources, i)
    notice(
        f"csv: data.order_by column {col!r} is compared as text: not every value is a number "
        f"or an ISO 8601 time ({text.iat[i]!r} at {src.where(record)}), so '10' sorts before "
        "'9'",
        notices,
    )
    return pd.factorize(text, sort=True)[0]


def _locate(sources: list[_Source], i: int) -> tuple[_Source, int]:
    """The file and record of row ``i`` of the files' rows concatenated in order."""
    for src in sources:
        if i < src.table.num_rows:
            return src, i
        i -= src.table.num_rows
    raise IndexError(i)


def _refuse_order_against_time(df: pd.DataFrame, sources: list[_Source]) -> None:
    """Refuse ``order_by`` keys that put a page view before an earlier one of its session:
    time on page would come out negative."""
    by_order = df.sort_values(["session_id", "_order"], kind="stable")
    times = by_order["hit_time"].to_numpy("datetime64[ns]")
    same = by_order["session_id"].to_numpy()[1:] == by_order["session_id"].to_numpy()[:-1]
    back = np.flatnonzero(same & (times[1:] < times[:-1]))
    if len(back):
        k = int(back[0])
        before, after = by_order.iloc[k], by_order.iloc[k + 1]
        src = sources[int(after["_part"])]
        earlier = sources[int(before["_part"])].where(int(before["_record"]))
        raise src.error(
            f"data.order_by puts this page view of session {after['session_id']!r} after the "
            f"one at {earlier}, but its timestamp is earlier ({after['hit_time']} < "
            f"{before['hit_time']}): the order and the times disagree; leave data.order_by "
            "out to order by time, or fix the times",
            int(after["_record"]),
            "timestamp",
        )


# --------------------------------------------------------------------------- parsing


def _parse(
    src: _Source,
    part: int,
    timestamp_unit: str | None,
    timestamp_format: str | None,
    notices: list[str],
) -> pd.DataFrame:
    """The page views of one file as typed columns (raw hits' names), checked row by row."""
    n = src.table.num_rows
    absent = pd.Series([None] * n, dtype="str")
    out: dict[str, object] = {
        "page_raw": _text(
            src, "page", required="empty page value: a page view needs a page", key=True
        )
    }
    for fld in ("session_id", "visitor_id"):
        why = f"empty {fld.replace('_', ' ')}"
        if fld in src.columns:
            out[fld] = _text(src, fld, required=why, key=True, notices=notices)
        else:
            out[fld] = absent
    for fld in ("page_title", "content_group"):
        out[fld] = _text(src, fld, required=None) if fld in src.columns else absent
    if "timestamp" in src.columns:
        out["hit_time"] = _times(src, timestamp_unit, timestamp_format)
    else:
        out["hit_time"] = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    revenue = np.zeros(n)
    if "revenue" in src.columns:
        rule = f"revenue must be a number in [0, {MAX_AMOUNT:.0e}] (empty for none)"
        revenue = np.nan_to_num(_numbers(src, "revenue", rule, 0.0, MAX_AMOUNT), nan=0.0)
    out["revenue"] = revenue
    out["value"] = np.full(n, np.nan)
    if "value" in src.columns:
        rule = f"value must be a finite number of size at most {MAX_AMOUNT:.0e} (empty: unknown)"
        out["value"] = _numbers(src, "value", rule, -MAX_AMOUNT, MAX_AMOUNT)
    out["time_on_page_s"] = np.full(n, np.nan)
    if "time_on_page_s" in src.columns:
        rule = (
            f"time on page must be a number of seconds in [0, {MAX_TIME_ON_PAGE_S:.0e}] (empty "
            "when unknown)"
        )
        out["time_on_page_s"] = _numbers(src, "time_on_page_s", rule, 0.0, MAX_TIME_ON_PAGE_S)
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


def _text(
    src: _Source,
    fld: str,
    required: str | None,
    key: bool = False,
    notices: list[str] | None = None,
) -> pd.Series:
    """Field ``fld`` as strings; empty cells are missing, an error if ``required`` says why.

    A ``key`` (an id or a page) holding a line break or a byte order mark is refused: the trace
    of a quote left open (the field ran on over the next rows) or of files joined with ``cat``.
    Given ``notices``, the key is read without the spaces around it (``" s1"`` and ``"s1"``
    name one session: the spaces are the export's layout), saying so.
    """
    arr = src.table.column(fld)
    if not pa.types.is_string(arr.type):
        try:
            arr = arr.cast(pa.string())  # ids stored as integers, dictionary-encoded text
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise src.error(f"expected text, the column holds {arr.type}", None, fld) from None
    missing = _missing(arr)
    if required is not None and missing.any():
        raise src.error(required, int(np.flatnonzero(missing)[0]), fld)
    if key:
        broken = _where_true(pc.match_substring_regex(arr, "[\r\n\ufeff]"))
        if broken.any():
            i = int(np.flatnonzero(broken)[0])
            raise src.error(
                f"{fld.replace('_', ' ')} {arr[i].as_py()!r} holds a line break or a byte order "
                "mark: a quote left open (the field ran on over the next rows), or files joined "
                "with their byte order marks?",
                i,
                fld,
            )
    if notices is not None:
        trimmed = pc.utf8_trim_whitespace(arr)
        changed = _where_true(pc.not_equal(trimmed, arr))
        if changed.any():
            i = int(np.flatnonzero(changed)[0])
            notice(
                f"csv: {int(changed.sum())} {fld.replace('_', ' ')} value(s) had spaces around "
                f"them, read without ({arr[i].as_py()!r} as {trimmed[i].as_py()!r} at "
                f"{src.where(i)})",
                notices,
            )
            arr = trimmed
    s = arr.to_pandas()
    if missing.any():
        s = s.where(~missing)  # blank titles are unknown, not a title
    return s.astype("str")


def _where_true(mask: pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, nulls as ``False``."""
    return mask.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def _missing(arr: pa.ChunkedArray) -> np.ndarray:
    """Null or blank (only whitespace) cells of a string array, shape ``(N,)``."""
    blank = pc.or_kleene(pc.is_null(arr), pc.equal(pc.utf8_trim_whitespace(arr), ""))
    return blank.to_numpy(zero_copy_only=False).astype(bool)


def _numbers(src: _Source, fld: str, rule: str, low: float, high: float) -> np.ndarray:
    """Field ``fld`` as float64, NaN where empty; any other value must be finite and in
    ``[low, high]`` (absurd values such as 1e308 are refused: their sums overflow)."""
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
        bad = ~missing & ~(np.isfinite(values) & (values >= low) & (values <= high))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = shown[i].item() if isinstance(shown[i], np.generic) else shown[i]
        raise src.error(f"{rule}, got {value!r}", i, fld)
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
        src.zones = "zone-less" if times.dt.tz is None else "zoned"
        times = times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
        shown = times.to_numpy()
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        if unit is None:
            raise src.error(
                "timestamps are numbers: set data.timestamp_unit ('s', 'ms', 'us' or 'ns' since "
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
                raise src.error(
                    f"bad data.timestamp_format {fmt!r}: {exc}", None, "timestamp"
                ) from None
    else:
        raise src.error(f"expected timestamps, the column holds {t}", None, "timestamp")
    bad = (times.isna() | (times < _NS_MIN) | (times > _NS_MAX)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise src.error(_time_message(shown[i], unit, fmt), i, "timestamp")
    if pa.types.is_string(t) and unit is None and fmt is None:
        _zones_of_text(src, arr)
    return times.astype("datetime64[ns, UTC]").reset_index(drop=True)


_ZONE = r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
"""An ISO 8601 time of day followed by its zone (``10:00:00Z``, ``10:00+02:00``)."""


def _zones_of_text(src: _Source, arr: pa.ChunkedArray) -> None:
    """Set ``src.zones``; refuse times with a zone and without in one file (those without
    would be read as UTC, silently shifting them against the others)."""
    text = pc.utf8_trim_whitespace(arr)
    zoned = _where_true(pc.match_substring_regex(text, _ZONE))
    if zoned.all() or not zoned.any():
        src.zones = "zoned" if zoned.all() else "zone-less"
        return
    i = int(np.flatnonzero(~zoned)[0])
    j = int(np.flatnonzero(zoned)[0])
    raise src.error(
        f"timestamp {text[i].as_py()!r} has no time zone, but {text[j].as_py()!r} at "
        f"{src.where(j)} has one: a time without a zone would be read as UTC; give every "
        "time its zone (or none)",
        i,
        "timestamp",
    )


def _refuse_mixed_zones(sources: list[_Source]) -> None:
    """Refuse files whose timestamps have zones beside files whose timestamps have none."""
    kinds = {src.zones: src for src in sources if src.zones is not None}
    if len(kinds) > 1:
        raise DataError(
            f"this file's timestamps have no time zone, but those of {kinds['zoned'].file} "
            "have one: times without a zone would be read as UTC; give every time its zone "
            "(or none)",
            file=str(kinds["zone-less"].file),
            column=kinds["zone-less"].columns.get("timestamp"),
        )


_REPEAT_KEYS = (
    "session_id",
    "visitor_id",
    "hit_time",
    "page_raw",
    "revenue",
    "value",
    "time_on_page_s",
    "is_transaction",
)
"""A page view equal to another in all of these is a repeated row."""


def _note_repeated_rows(df: pd.DataFrame, sources: list[_Source], notices: list[str]) -> None:
    """Say how many page views repeat another exactly (same session, time, page, revenue):
    kept, since a page can be viewed twice in one second, but a doubled export doubles its
    revenue."""
    # Hashing three columns first is three times faster than all eight, and finds no
    # candidates in an export without repeats.
    candidates = df.duplicated(subset=["session_id", "hit_time", "page_raw"], keep=False)
    if not candidates.any():
        return
    repeated = np.zeros(len(df), dtype=bool)
    repeated[np.flatnonzero(candidates.to_numpy())] = (
        df[candidates].duplicated(subset=list(_REPEAT_KEYS), keep="first").to_numpy()
    )
    if not repeated.any():
        return
    i = int(np.flatnonzero(repeated)[0])
    src = sources[int(df["_part"].iat[i])]
    revenue = float(df["revenue"].to_numpy()[repeated].sum())
    paid = f", with revenue {revenue:.2f}" if revenue > 0 else ""
    notice(
        f"csv: {int(repeated.sum())} page view(s) repeat an earlier row exactly (same "
        f"session, time, page and revenue; the first at {src.where(int(df['_record'].iat[i]))})"
        f"{paid}: kept and counted; if the export doubled rows, remove the copies",
        notices,
    )


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
        hint = "; it looks like a number: set data.timestamp_unit ('s', 'ms', 'us' or 'ns')"
    except ValueError:
        if not fmt:
            hint = "; set data.timestamp_format (e.g. '%d/%m/%Y %H:%M') for other formats"
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
