"""Independent jobs of a stage side by side, in worker processes (``jobs=N``).

The main job's work splits into independent pieces: the learned and the held-out visitor
models, one training per agent and seed, one evaluation per world. Each piece seeds itself, so
it gives the same result wherever it runs; on a machine of N cores, N of them at a time in
processes of one torch thread each are close to N times faster than one after another (small
networks gain little from a second intra-op thread). ``jobs=1`` runs them here, in order, on
one torch thread too: the thread count changes how torch splits its sums, so a model trained on
two threads differs from one trained on one in the last bits of its weights, and its simulated
visitors then diverge (measured on the main job: organic 33.060 against 33.095 in the learned
world before this was so).

Workers are started with ``spawn`` (a fresh interpreter: no torch state forked from the parent)
and each piece is a module-level function called with plain data, so nothing but
configuration crosses the process boundary. A worker whose pipeline is gone (killed, however)
stops within a second or two instead of finishing its piece unseen: a pipeline started again
would otherwise meet it still writing the same run folder.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import time
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


def _init_worker(parent: int) -> None:
    import torch

    torch.set_num_threads(1)
    threading.Thread(
        target=_exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True
    ).start()


def _exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """End this worker when its parent ``parent`` has ended (the worker was re-parented).

    A pool's workers outlive a parent killed by a signal that reaches the parent only (``kill
    <pid>``): they would finish their piece unseen, writing the run folder a new run then
    finds locked or half-written. ``os._exit`` skips cleanup on purpose: temporary folders of a
    dead process are removed by the next run's ``recover()``, a work folder kept for resume."""
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent:
            print(
                f"worker {os.getpid()}: the pipeline (pid {parent}) is gone; stopping",
                file=sys.stderr,
                flush=True,
            )
            os._exit(1)


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
        initargs=(os.getpid(),),
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


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one intra-op torch thread, as a worker does; the caller's count is
    restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def submit(pool: Executor | None, fn: Callable[..., Any], *args: Any) -> Future:
    """``fn(*args)`` in the pool, or here at once on one torch thread, as in a worker (an
    exception then raises at once too)."""
    if pool is None:
        with one_torch_thread():
            return Done(fn(*args))
    return pool.submit(fn, *args)
