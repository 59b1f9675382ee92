"""The project's errors: each names what is wrong and where (file, line or row, column).

One family, split by the layer the problem is in, so that a caller catches what it handles::

    ClickstreamError (a ValueError)     anything this project raises about its input
    ├── DataError        input data: exports and their loaders, prepared datasets, histories
    │                    and sessions given to a model (a malformed CSV, an unknown page)
    ├── ConfigError      a config key or value, an override, or settings that do not fit
    │                    the data (an unknown option, ``pages.n_groups=1``, a reward the data
    │                    cannot pay)
    ├── ModelError       visitor models, the simulator and agents: tables or weights of the
    │                    wrong shape, a model used before it is fitted, a simulator misused
    └── RunFolderError   a run folder or a file in one that cannot be trusted or read (no
                         manifest, a foreign or stale file, a stage not trained yet)

Catching :class:`ClickstreamError` catches them all (the scripts do, to print the message
without a traceback).
"""

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


class DataError(ClickstreamError):
    """Bad input data: an export or table a loader cannot read as it is, a prepared dataset
    that is incomplete, or a history or session a model is asked about that it cannot use
    (an unknown page, a step the model cannot produce). The message names the file, line or
    row and column."""


class ConfigError(ClickstreamError):
    """A bad config key or value (Hydra config, override, option of a function), or a
    setting that does not fit the data it is used on. The message names the key (e.g.
    ``pages.n_groups``) and the values it takes."""


class ModelError(ClickstreamError):
    """A visitor model, the simulator or an agent used in a way it cannot be: tables or
    weights of the wrong shape or vocabulary, a model or policy used before it is fitted,
    simulator calls out of order."""


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
        raise ConfigError(f"unknown {what} option(s) {unknown}; known: {sorted(known)}")
    return cls(**options)
