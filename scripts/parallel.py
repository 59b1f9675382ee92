"""Independent jobs of a stage side by side, in worker processes (``jobs=N``).

The main job's work splits into independent pieces: the learned and the held-out visitor
models, one training per agent and seed, one evaluation per world. Each piece seeds itself, so
it gives the same result wherever it runs; on a machine of N cores, N of them at a time in
processes of one torch thread each are close to N times faster than one after another (small
networks gain little from a second intra-op thread). ``jobs=1`` runs them here, in order.

Workers are started with ``spawn`` (a fresh interpreter: no torch state forked from the parent)
and each piece is a module-level function called with plain data, so nothing but
configuration crosses the process boundary.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from clickstream.errors import ConfigError


def resolve_jobs(jobs: int | str | None) -> int:
    """``auto``: the CPU cores this process may use; else the number given (>= 1)."""
    if jobs in (None, "auto"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f"jobs must be a number >= 1 or auto, got {jobs!r}")
    return n


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def worker_pool(jobs: int) -> Iterator[Executor | None]:
    """A pool of ``jobs`` worker processes, or ``None`` for ``jobs=1`` (run in this process)."""
    if jobs <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Done(Future):
    """A finished future holding a result computed in this process."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.set_result(result)


def submit(pool: Executor | None, fn: Callable[..., Any], *args: Any) -> Future:
    """``fn(*args)`` in the pool, or here at once (an exception then raises at once too)."""
    if pool is None:
        return Done(fn(*args))
    return pool.submit(fn, *args)
