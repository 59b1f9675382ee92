"""Entry points: each script is a thin ``@hydra.main`` around a testable ``run(cfg) -> dict``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from clickstream.errors import ClickstreamError


def run_or_exit(run: Callable[[Any], dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Call a script's ``run(cfg)``; bad input ends the process with its message and status 2.

    A ``ClickstreamError`` names what is wrong and where; a traceback would only hide that.
    """
    try:
        return run(cfg)
    except ClickstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
