"""Fault injection at write boundaries: how the crash-recovery tests kill a stage mid-write.

Every place where a stage makes a durable change to a run folder (a file about to be written
into its temporary folder, the manifest, each rename of the publication) calls
:func:`boundary`. Normally that does nothing. Under :func:`fault_injection` (in-process) or
with ``NEXTPAGE_FAULT_AT=N`` in the environment (a subprocess), the ``N``-th boundary kills the
run: in-process by raising :class:`SimulatedKill`, which the run-folder code lets through
without any cleanup (as a real kill would leave things), in a subprocess by ``SIGKILL``.
``NEXTPAGE_FAULT_LOG=<file>`` appends each boundary's label to a file (to count them).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator


class SimulatedKill(BaseException):
    """Raised at the chosen write boundary under :func:`fault_injection`.

    A ``BaseException``, so that ``except Exception`` blocks let it through; the run-folder
    code does no cleanup on it (a killed process cleans nothing up).
    """


class FaultInjector:
    """Counts write boundaries and kills the run at the ``at``-th one.

    Args:
        at: 1-based boundary to die at (``None``: only count).
        mode: ``raise`` (:class:`SimulatedKill`) or ``sigkill`` (the process kills itself).
        log: A file each boundary's label is appended to (``None``: none).
    """

    def __init__(self, at: int | None = None, mode: str = "raise", log: str | None = None):
        if mode not in ("raise", "sigkill"):
            raise ValueError(f"mode must be 'raise' or 'sigkill', got {mode!r}")
        self.at, self.mode, self.log = at, mode, log
        self.count = 0
        self.labels: list[str] = []

    def hit(self, label: str) -> None:
        self.count += 1
        self.labels.append(label)
        if self.log is not None:
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(label + "\n")
        if self.at is not None and self.count == self.at:
            if self.mode == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise SimulatedKill(f"killed at write boundary {self.count}: {label}")


_injector: FaultInjector | None = None
_from_env_checked = False


def _active() -> FaultInjector | None:
    global _injector, _from_env_checked
    if _injector is None and not _from_env_checked:
        _from_env_checked = True
        at, log = os.environ.get("NEXTPAGE_FAULT_AT"), os.environ.get("NEXTPAGE_FAULT_LOG")
        if at or log:
            _injector = FaultInjector(int(at) if at else None, "sigkill", log)
    return _injector


def boundary(label: str) -> None:
    """A write boundary: a point where a kill must leave a run folder recoverable."""
    injector = _active()
    if injector is not None:
        injector.hit(label)


@contextlib.contextmanager
def fault_injection(at: int | None = None) -> Iterator[FaultInjector]:
    """Within the block, raise :class:`SimulatedKill` at the ``at``-th write boundary
    (``None``: only count them, in ``injector.count`` and ``injector.labels``)."""
    global _injector
    previous = _injector
    _injector = FaultInjector(at, "raise")
    try:
        yield _injector
    finally:
        _injector = previous
