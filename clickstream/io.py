"""Input discovery and atomic output: shared by every loader and the prepare stage."""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import math
import os
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from clickstream.errors import ClickstreamError, ConfigError, DataError, RunFolderError
from clickstream.faults import SimulatedKill, boundary

PathSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
T = TypeVar("T")


def resolve_inputs(spec: PathSpec, patterns: Sequence[str] = ("*",)) -> list[Path]:
    """Expand a file, a folder, a glob, or a list of those into a sorted list of files.

    Args:
        spec: One path / glob or a sequence of them. A folder contributes the files in it
            matching any of ``patterns`` (not recursive).
        patterns: Filename globs used for folders, e.g. ``("*.parquet", "*.json")``.

    Raises:
        ClickstreamError: Nothing matches, a named file is empty, or a file would be read
            twice (named twice, through a link, or beside its compressed copy).
    """
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    if not items:
        raise ConfigError("no input path given")
    files: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted({p for pat in patterns for p in path.glob(pat) if p.is_file()})
            if not found:
                raise DataError(f"folder holds no files matching {list(patterns)}", file=text)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(text):
            found = sorted(
                Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file()
            )
            if not found:
                raise DataError("glob matches no files", file=text)
            files.extend(found)
        else:
            raise DataError("no such file or folder", file=text)
    for f in files:
        if f.stat().st_size == 0:
            raise DataError("file is empty", file=str(f))
    _refuse_repeated_files(files)
    return files


COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2", ".xz")
"""Suffixes that name a compressed copy of the file without them (``views.csv.gz``)."""


def _refuse_repeated_files(files: list[Path]) -> None:
    """Refuse a file read twice: named twice (or through a link), or beside its own compressed
    copy (``views.csv`` and ``views.csv.gz``). Either would count every page view twice."""
    seen: dict[Path, Path] = {}
    stems: dict[Path, Path] = {}
    for f in files:
        real = f.resolve()
        if real in seen:
            raise DataError(
                f"the same file is given twice (also as {seen[real]}): its page views would "
                "count twice",
                file=str(f),
            )
        seen[real] = f
        stem = real.with_name(_without_compression(real.name))
        if stem in stems:
            raise DataError(
                f"this file and {stems[stem]} are the same data, compressed and not (or "
                "compressed two ways): its page views would count twice; keep one of them",
                file=str(f),
            )
        stems[stem] = f


def _without_compression(name: str) -> str:
    for suffix in COMPRESSION_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def notice(message: str, notices: list[str] | None = None) -> None:
    """Tell the user what a loader guessed or decided for them, as it happens.

    Printed on standard error (one line, ``note: ...``) and appended to ``notices`` (a
    :class:`clickstream.schema.LoadResult`'s list, recorded in ``meta.json``). Nothing a loader
    guesses goes unsaid.
    """
    print(f"note: {message}", file=sys.stderr, flush=True)
    if notices is not None:
        notices.append(message)


def compression_of(path: Path) -> str | None:
    """``gzip`` or ``zstd`` when the file's first bytes say so, else ``None``."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head == ZSTD_MAGIC:
        return "zstd"
    return None


def open_binary(path: Path) -> Any:
    """``path`` opened for reading bytes, gzip or zstd decompressed on the fly (by content)."""
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "zstd":
        import io

        import pyarrow as pa

        # Arrow's stream cannot iterate lines: decompress into memory (a file object either way)
        try:
            with pa.input_stream(str(path), compression="zstd") as fh:
                return io.BytesIO(fh.read())
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot decompress (zstd): {exc}", file=str(path)) from None
    return open(path, "rb")


def read_bytes(path: Path) -> bytes:
    """The whole file, decompressed (gzip or zstd, recognised by content).

    Raises:
        ClickstreamError: A compressed file that cannot be decompressed (truncated, corrupt).
    """
    try:
        with open_binary(path) as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot decompress ({compression_of(path)}): {exc}", file=str(path)
        ) from None


def json_layout(path: Path) -> str:
    """How a JSON file holds its records: ``array`` (one document ``[{...}, ...]``) or
    ``lines`` (newline-delimited, one object per line), by its first non-blank character."""
    with open_binary(path) as fh:
        head = fh.read(4096)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return "array" if text[:1] == b"[" else "lines"


def check_json_array(path: Path, record: str = "record") -> set[str]:
    """Check a JSON array document (``[{...}, ...]``): valid JSON, a list of objects.

    Returns:
        The top-level keys found in any record.

    Raises:
        ClickstreamError: Malformed JSON (naming the line) or an element that is not an object.
    """
    data = read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not valid utf-8 text (byte {exc.start})",
            file=str(path),
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from None
    try:
        doc = json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
    if not isinstance(doc, list):
        raise DataError(f"expected a JSON array of {record}s", file=str(path))
    keys: set[str] = set()
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise DataError(
                f"element {i} of the JSON array is not an object (one {record})", file=str(path)
            )
        keys.update(item)
    if not doc:
        raise DataError(f"the JSON array holds no {record}s", file=str(path))
    return keys


def check_json(path: Path, record: str = "record") -> tuple[str, set[str]]:
    """Check a JSON export, NDJSON or one array document (:func:`json_layout`).

    Returns:
        The layout (``lines`` or ``array``) and the top-level keys of its records.
    """
    layout = json_layout(path)
    if layout == "array":
        return layout, check_json_array(path, record)
    return layout, check_json_lines(path, record)


def unwrap_json(column: str) -> str:
    """DuckDB SQL: a JSON value, or the JSON a string value holds when it holds an object or
    an array (warehouse exports such as Snowflake's write nested fields as JSON text)."""
    text = f"ltrim({column} ->> '$')"
    return (
        f"(CASE WHEN json_type({column}) = 'VARCHAR' AND left({text}, 1) IN ('[', '{{') "
        f"THEN ({column} ->> '$')::JSON ELSE {column} END)"
    )


def iter_text_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` (1-based) of a plain, gzipped or zstd-compressed text file
    (compression recognised by content).

    Raises:
        ClickstreamError: Bytes that are not valid in ``encoding`` (naming the line), or a
            file that cannot be read (e.g. a truncated or not-really-gzip file).
    """
    try:
        with open_binary(path) as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    yield number, raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start : exc.start + 4]
                    raise DataError(
                        f"not valid {encoding} text (byte {exc.start}: {bad!r})",
                        file=str(path),
                        line=number,
                    ) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read: {exc}", file=str(path)) from None


def check_utf8(path: Path) -> None:
    """Raise :class:`ClickstreamError` naming the first line of ``path`` that is not UTF-8."""
    for _ in iter_text_lines(path):
        pass


def check_json_lines(path: Path, record: str = "record") -> set[str]:
    """Name the first line of a (gzipped) NDJSON file that is not one JSON object.

    DuckDB's own errors give wrong line numbers, and a line holding a bare value silently
    turns a whole file into a single JSON column, so every line is checked before DuckDB
    reads it. ``record`` names what a line holds in messages (``session``, ``event``).

    Returns:
        The top-level keys found in any record (the file's schema, unioned over records).
    """
    keys: set[str] = set()
    for number, text in iter_text_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON: {exc}", file=str(path), line=number) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"a line must hold one JSON object (one {record})", file=str(path), line=number
            )
        keys.update(obj)
    return keys


@contextlib.contextmanager
def duckdb_errors(file: Path, binder_problem: str) -> Iterator[None]:
    """Turn DuckDB errors raised inside the block into :class:`ClickstreamError` naming ``file``.

    Args:
        file: The file the statements read (named in errors).
        binder_problem: What a binder error means for this source (a field the query needs
            is missing), e.g. ``"missing required field of a GA360 export"``.
    """
    import duckdb

    try:
        yield
    except duckdb.BinderException as exc:
        raise DataError(f"{binder_problem}: {first_line(exc)}", file=str(file)) from None
    except duckdb.Error as exc:
        raise DataError(f"cannot read: {first_line(exc)}", file=str(file)) from None


def duckdb_df(con: Any, sql: str, file: Path, binder_problem: str) -> pd.DataFrame:
    """Run a DuckDB query over one input file as a DataFrame (errors: :func:`duckdb_errors`)."""
    with duckdb_errors(file, binder_problem):
        return con.execute(sql).df()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (DuckDB's run on with hints)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def finite_json(obj: object) -> object:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively.

    ``json.dump`` would write them as ``NaN`` / ``Infinity``, which no JSON parser but
    Python's accepts.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy scalars
        return finite_json(obj.item())
    return obj


def json_default(obj: object) -> object:
    """``json.dump``'s ``default``: numpy and torch numbers and arrays, timestamps, paths."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return obj.tolist()
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place only on success.

    A crash leaves the old ``target`` (or none), never a half-written file. The file gets the
    usual permissions (0o666 less the umask), not ``mkstemp``'s private 0o600.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    boundary(f"write {target.name}")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        fsync_file(tmp)  # the data on disk before the name points at it
        boundary(f"rename {target.name} into place")
        os.replace(tmp, target)
    except SimulatedKill:
        raise  # a killed process leaves its temporary file behind; so does this
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data to disk (``os.fsync``)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_npz(path: str | os.PathLike[str], what: str, build: Callable[[Mapping[str, Any]], T]) -> T:
    """``build(arrays)`` over an ``.npz`` file read as data only: ``allow_pickle=False``, so an
    object array (a pickle that could run code) is refused unread.

    Args:
        path: The file.
        what: What it should be, for the message (``latent-class model``).
        build: Makes the object from the arrays by name (the file stays open meanwhile).

    Raises:
        RunFolderError: Missing, truncated, not an ``.npz``, a missing array, or arrays that
            ``build`` refuses, naming the file.
    """
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return build(arrays)
    except RunFolderError:
        raise
    except (
        ClickstreamError,
        KeyError,
        IndexError,
        ValueError,
        TypeError,
        OSError,
        EOFError,
        RecursionError,
        zipfile.BadZipFile,
    ) as err:
        raise RunFolderError(
            f"not a readable {what} file ({type(err).__name__}: {err})", file=str(path)
        ) from None
