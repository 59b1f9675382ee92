"""MSNBC.com anonymous web data (UCI, 1999-09-28) loader: page-category sequences.

The ``.seq`` file (alone, or inside the UCI ``.zip``, read in memory) looks like::

    % Different categories found in input file:

    frontpage news tech local opinion on-air misc weather msn-news health living business ...

    % Sequences:

    1 1
    2
    3 2 2 4 2 2 2 3 3

A header of comment lines (``%``) and blank lines around one line naming the page categories,
then one session per line: space-separated category ids ``1..K`` (``K`` = number of names, 17
in the UCI file), the ``i``-th name being category ``i``. Line endings may be ``\\r\\n``.

What the hits table takes from it:

* ``page_raw`` and ``content_group`` are the category name (e.g. ``frontpage``);
  ``page_title`` is missing;
* the data has no times, visitors or revenue: ``session_start`` is ``start`` plus ``i``
  seconds for the ``i``-th session in file order, so that file order is temporal order and a
  temporal split is a file-order split; ``hit_time`` is NaT, ``time_on_page_s`` NaN,
  ``revenue`` 0, ``is_transaction`` False, and ``visitor_id`` equals ``session_id``
  (every session an anonymous visitor);
* ``session_id`` is ``msnbc-<line>``, the 1-based line of the session in the ``.seq`` file,
  so an id points at its record;
* blank lines after the first sequence are empty sessions: dropped and counted in
  ``LoadResult.dropped["empty_sessions"]`` (blank lines in the header are layout).

``session_id``, ``visitor_id``, ``page_raw``, ``content_group`` (and the all-missing
``page_title``) are pandas Categoricals (17 pages, ~1M sessions): building and comparing 4.7M
Python strings would dominate the load. The parse is vectorised numpy over the file's bytes
(a token is a run of ASCII digits, so ``01`` reads as 1): parsing the full UCI file (989,818
sessions, 4,698,794 page views) and building its frame take well under a second.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from clickstream.errors import ConfigError, DataError
from clickstream.io import PathSpec, resolve_inputs
from clickstream.schema import LoadResult, coerce_raw_hits, validate_hits

PATTERNS = ("*.seq", "*.zip")

DEFAULT_START = "1999-09-28T00:00:00Z"
"""The day the UCI data was collected; session ``i`` starts ``i`` seconds after it."""

_NL, _CR, _SPACE, _TAB, _ZERO, _NINE = 10, 13, 32, 9, 48, 57
_MAX_DIGITS = 9  # longer tokens are out of range anyway; the cap keeps int64 from overflowing


def load(path: PathSpec, *, start: str = DEFAULT_START) -> LoadResult:
    """Load the MSNBC page-category sequences into raw page-view hits.

    Args:
        path: The ``.seq`` file, a ``.zip`` holding it (the UCI download), or a folder holding
            exactly one of those.
        start: Start time of the first session (ISO 8601; UTC if no zone is given). Session
            ``i`` (0-based, file order) starts ``i`` seconds later.

    Returns:
        Raw hits in file order, ``(N, len(RAW_COLUMNS))``, N = page views. ``info`` holds the
        category names (``categories``, in id order), page views per category
        (``category_counts``), and the numbers of sessions and page views; ``dropped`` the
        number of empty session lines.

    Raises:
        ClickstreamError: The file is empty, not a ``.seq``/``.zip`` file, a zip without a
            ``.seq`` member, lacks the header naming the categories (or it is garbled or not
            UTF-8), or a session holds a token that is not a category id ``1..K``; the message
            names the file and the line.
    """
    files = resolve_inputs(path, PATTERNS)
    if len(files) != 1:
        raise DataError(
            f"expected one .seq or .zip file, got {len(files)}: {[str(f) for f in files]}"
        )
    data, source = _read_bytes(files[0])
    origin = _parse_start(start)

    names, body_offset, body_line = _parse_header(data, source)
    ids, token_line, n_lines = _parse_body(data, body_offset, body_line, len(names), source)

    per_line = np.bincount(token_line, minlength=n_lines)
    used = per_line > 0
    lengths = per_line[used]
    n_sessions = len(lengths)
    if n_sessions == 0:
        raise DataError("no sessions after the header", file=source, line=body_line)
    # Blank lines before the first sequence are layout (the UCI file has one), not sessions.
    first_used = int(np.argmax(used))
    empty = int((~used[first_used:]).sum())

    counts = np.bincount(ids, minlength=len(names) + 1)[1:]
    n_views = len(ids)
    session_lines = body_line + np.flatnonzero(used)
    del token_line, per_line, used  # keep the peak memory down (38 MB each on the UCI file)
    hits = _build_hits(ids, lengths, session_lines, names, origin)
    del ids
    hits = coerce_raw_hits(hits)
    validate_hits(hits, source=source)

    return LoadResult(
        hits=hits,
        source="msnbc",
        files=[str(files[0])],
        dropped={"empty_sessions": empty},
        info={
            "categories": list(names),
            "category_counts": {n: int(c) for n, c in zip(names, counts, strict=True)},
            "sessions": n_sessions,
            "page_views": n_views,
            "session_start": f"{origin.isoformat()} + i seconds for the i-th session in file order",
        },
    )


def _read_bytes(file: Path) -> tuple[bytes, str]:
    """The ``.seq`` bytes of ``file`` (a ``.seq`` or a zip holding one) and a name for messages."""
    if not zipfile.is_zipfile(file):
        if file.suffix.lower() == ".zip":
            raise DataError("not a valid zip archive", file=str(file))
        return file.read_bytes(), str(file)
    with zipfile.ZipFile(file) as zf:
        # macOS zips carry AppleDouble twins (__MACOSX/._name.seq) that are not data.
        members = [
            m
            for m in zf.namelist()
            if m.lower().endswith(".seq")
            and not m.startswith("__MACOSX/")
            and not Path(m).name.startswith("._")
        ]
        if len(members) != 1:
            what = "no .seq member" if not members else f"several .seq members {members}"
            raise DataError(f"zip archive holds {what}", file=str(file))
        source = f"{file} (member {members[0]})"
        try:
            data = zf.read(members[0])
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise DataError(f"cannot read the zip member: {exc}", file=source) from None
    if not data:
        raise DataError("file is empty", file=source)
    return data, source


def _parse_start(start: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"start is not a valid timestamp: {start!r} ({exc})") from None
    if ts is pd.NaT:
        raise ConfigError(f"start is not a valid timestamp: {start!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _parse_header(data: bytes, source: str) -> tuple[list[str], int, int]:
    """Category names, byte offset and 1-based line number where the sequences begin.

    The header is every leading comment (``%``) or blank line, the first other line (the
    names), then comment or blank lines up to the first sequence.
    """
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # tolerate a UTF-8 byte order mark
    line = 1
    names: list[str] | None = None
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        raw = data[pos:end]
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(
                f"header is not valid UTF-8 text (byte {exc.start}: "
                f"{raw[exc.start : exc.start + 4]!r})",
                file=source,
                line=line,
            ) from None
        if text and not text.startswith("%"):
            if names is not None:
                return names, pos, line  # first sequence line
            names = _category_names(text, source, line)
        pos, line = end + 1, line + 1
    if names is None:
        raise DataError(
            "missing header: no line naming the page categories "
            "(e.g. 'frontpage news tech ...') before the sequences",
            file=source,
            line=line - 1,
        )
    return names, len(data), line


def _category_names(text: str, source: str, line: int) -> list[str]:
    tokens = text.split()
    numeric = [t for t in tokens if t.isdigit()]
    if len(numeric) == len(tokens):
        raise DataError(
            "missing header: expected the line naming the page categories "
            f"(e.g. 'frontpage news tech ...') before the sequences, found {text[:60]!r}",
            file=source,
            line=line,
        )
    if numeric:
        raise DataError(
            f"garbled header: category names must not be numbers, found {numeric[0]!r} "
            f"in {text[:60]!r}",
            file=source,
            line=line,
        )
    seen: set[str] = set()
    for t in tokens:
        if t in seen:
            raise DataError(
                f"garbled header: category name {t!r} appears more than once",
                file=source,
                line=line,
            )
        seen.add(t)
    return tokens


def _parse_body(
    data: bytes, offset: int, first_line: int, n_categories: int, source: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse the sequences: ids ``(M,)`` int64, 0-based body line of each id ``(M,)``, lines.

    Vectorised over the bytes: tokens are runs of digits; a token's line is the number of
    newlines before it. Any byte other than a digit, space, tab, CR or LF is an error.
    """
    buf = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if len(buf) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    is_digit = (buf >= _ZERO) & (buf <= _NINE)
    is_nl = buf == _NL
    bad = ~(is_digit | is_nl | (buf == _SPACE) | (buf == _CR) | (buf == _TAB))
    if bad.any():
        p = int(np.argmax(bad))
        line = first_line + int(np.count_nonzero(is_nl[:p]))
        raise DataError(_bad_token_message(data, offset, p), file=source, line=line)
    n_lines = int(is_nl.sum()) + (0 if buf[-1] == _NL else 1)

    # Edges of digit runs: padding with False on both sides makes starts and ends pair up.
    edges = np.diff(np.concatenate(([False], is_digit, [False])).view(np.int8))
    starts = np.flatnonzero(edges == 1)
    length = np.flatnonzero(edges == -1) - starts
    # An int32 cumsum is faster than int64 here (docs/benchmarks.md, "Small timings"), and
    # exact for a body under 2 GiB.
    count_dtype = np.int32 if len(buf) < 2**31 else np.int64
    token_line = np.cumsum(is_nl, dtype=count_dtype)[starts].astype(np.int64)
    del is_digit, is_nl, bad, edges

    ids = buf[starts].astype(np.int64) - _ZERO
    longest = int(length.max()) if len(length) else 0
    # Ids are 1..17: almost every token has one or two digits, so this loop runs twice.
    for k in range(1, min(longest, _MAX_DIGITS)):
        more = np.flatnonzero(length > k)
        ids[more] = ids[more] * 10 + (buf[starts[more] + k].astype(np.int64) - _ZERO)
    out_of_range = (ids < 1) | (ids > n_categories) | (length > _MAX_DIGITS)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        token = data[offset + starts[i] : offset + starts[i] + length[i]].decode("ascii")
        raise DataError(
            f"category id {token} out of range: the header names {n_categories} categories, "
            f"ids run 1..{n_categories}",
            file=source,
            line=first_line + int(token_line[i]),
        )
    return ids, token_line, n_lines


def _bad_token_message(data: bytes, offset: int, p: int) -> str:
    """Describe the token holding the unexpected byte at body position ``p``."""
    at = offset + p
    lo = data.rfind(b"\n", 0, at) + 1
    hi = data.find(b"\n", at)
    raw_line = data[lo : len(data) if hi < 0 else hi]
    try:
        raw_line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"not valid UTF-8 text (byte {exc.start}: {raw_line[exc.start : exc.start + 4]!r}); "
            "expected category ids separated by spaces"
        )
    # The token is the run of non-separator bytes around the bad one.
    i = at - lo
    seps = b" \t\r"
    start = i
    while start > 0 and raw_line[start - 1] not in seps:
        start -= 1
    end = i + 1
    while end < len(raw_line) and raw_line[end] not in seps:
        end += 1
    token = raw_line[start:end].decode("utf-8")
    position = len(raw_line[:start].split()) + 1
    return (
        f"not a category id: token {position} is {token!r}; "
        "expected integer category ids separated by spaces"
    )


def _build_hits(
    ids: np.ndarray,
    lengths: np.ndarray,
    session_lines: np.ndarray,
    names: list[str],
    origin: pd.Timestamp,
) -> pd.DataFrame:
    """The raw hits frame from parsed ids ``(M,)`` and per-session lengths ``(S,)``."""
    n, n_sessions = len(ids), len(lengths)
    # In-place arithmetic below: every full-length temporary is 38 MB on the UCI file.
    session_of_hit = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
    step = np.arange(n, dtype=np.int64)
    step -= np.repeat(np.cumsum(lengths) - lengths, lengths)

    # Arrow builds the ~1M id strings in C (numpy's astype(str) takes 20x longer).
    sid_text = pc.binary_join_element_wise("msnbc-", pa.array(session_lines).cast(pa.string()), "")
    sid_dtype = pd.CategoricalDtype(pd.Index(pd.array(sid_text, dtype="str")))
    code_dtype = np.int32 if n_sessions < 2**31 else np.int64
    session_id = pd.Categorical.from_codes(session_of_hit.astype(code_dtype), dtype=sid_dtype)
    # The smallest code type that holds every category: int8 wraps above 127 names.
    page_codes = (ids - 1).astype(np.min_scalar_type(-max(len(names), 1)))
    page = pd.Categorical.from_codes(page_codes, categories=pd.Index(names, dtype="str"))
    start_ns = session_of_hit  # reuse the buffer: the codes above are a copy
    start_ns *= 1_000_000_000
    start_ns += origin.as_unit("ns").value
    utc = pd.DatetimeTZDtype("ns", "UTC")
    # copy=False: no consolidation copy of the columns into 2-D blocks.
    return pd.DataFrame(
        {
            "session_id": session_id,
            "visitor_id": session_id,
            "session_start": pd.array(start_ns.view("datetime64[ns]"), dtype=utc),
            "step": step,
            "page_raw": page,
            # No titles: an all-missing categorical costs 1 byte a row, not 4.7M Nones.
            "page_title": pd.Categorical.from_codes(
                np.full(n, -1, dtype=np.int8), categories=pd.Index([], dtype="str")
            ),
            "content_group": page,
            "hit_time": pd.array(np.full(n, np.datetime64("NaT", "ns")), dtype=utc),
            "time_on_page_s": np.full(n, np.nan),
            "revenue": np.zeros(n),
            "is_transaction": np.zeros(n, dtype=bool),
        },
        copy=False,
    )
