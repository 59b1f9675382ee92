"""Errors raised for bad input: each names what is wrong and where (file, line or row, column)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ClickstreamError(ValueError):
    """Bad input data or configuration, with its location.

    Args:
        message: What is wrong, in words a user can act on.
        file: The input file (or description of the in-memory table) the problem is in.
        line: 1-based line of the first bad record in a text file (CSV, NDJSON, .seq).
        row: 0-based row of the first bad record in a table (Parquet, DataFrame).
        column: The column or field the problem is in.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.row = row
        self.column = column
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class RunFolderError(ClickstreamError):
    """A run folder (or a file in one) that cannot be trusted or read: no manifest, a file
    that does not match it, a stage made from other inputs, a file that is not what its name
    says (e.g. a pickle where weights were expected). The message names the file and the
    command that remakes it."""


def from_options(cls: type[T], options: Mapping[str, Any] | None, what: str) -> T:
    """Build the dataclass ``cls`` from a plain mapping (e.g. a resolved Hydra node).

    A key that is not a field is a typo, not something to ignore: it raises, naming the
    unknown keys and the known ones. ``what`` names the options in the message (``"pages"``).
    """
    options = dict(options or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - known)
    if unknown:
        raise ClickstreamError(f"unknown {what} option(s) {unknown}; known: {sorted(known)}")
    return cls(**options)
