"""Entry points: each script is a thin ``@hydra.main`` around a testable ``run(cfg) -> dict``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import envs.config  # noqa: F401  (registers the typed env schema before any config is composed)
from clickstream.errors import ClickstreamError


def run_or_exit(run: Callable[[Any], dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Call a script's ``run(cfg)``; bad input ends the process with its message and status 2
    (or the error's own ``exit_status``: 3 for a training run cut short by a time limit).

    A ``ClickstreamError`` names what is wrong and where; a traceback would only hide that.
    In a job of a multirun (``-m``) the error is raised instead: the launcher then records
    that job as failed, with its overrides, and goes on with the others (``sys.exit`` would
    end the whole sweep, or, on a Ray worker, the worker).
    """
    try:
        return run(cfg)
    except ClickstreamError as exc:
        if _in_multirun():
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(int(getattr(exc, "exit_status", 2)))


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


HYDRA_QUOTED_KEYS = ("data.columns", "data.order_by", "data.delimiter", "data.path")
"""Overrides whose natural spelling Hydra's grammar cannot read: ``=`` inside a value
(``data.columns=session=sid,page=item``, a Hive-style folder ``exports/dt=2017-08-01``), a bare
``;``, a comma list without brackets, or a space (``"my exports/views, aug.csv"``)."""


def hydra_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of :data:`HYDRA_QUOTED_KEYS` quoted for Hydra.

    ``data.columns="session=sid,page=item,time=ts"`` reaches the program (the shell drops its
    quotes) as ``data.columns=session=sid,page=item,time=ts``, which Hydra refuses; quoted it
    is one string the loader reads. Values already quoted, bracketed or braced are left alone.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        plain = key.lstrip("+~")
        if (
            sep
            and plain in HYDRA_QUOTED_KEYS
            and value
            and value[0] not in "'\"[{"
            and any(c in value for c in "=,:;\t\\ ")
        ):
            arg = f"{key}='{value.replace(chr(39), chr(92) + chr(39))}'"
        out.append(arg)
    return out
