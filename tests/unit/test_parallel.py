"""The pipeline's worker pool: workers do not outlive their pipeline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.parallel import resolve_jobs, submit, worker_pool

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Running (a zombie left for a parent that does not reap it counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


def test_jobs_resolve_and_refuse_nonsense() -> None:
    assert resolve_jobs(3) == 3 and resolve_jobs("2") == 2 and resolve_jobs("auto") >= 1
    with pytest.raises(Exception, match="jobs must be a number >= 1 or auto"):
        resolve_jobs(0)


def test_a_pool_of_one_runs_here_and_a_pool_of_two_elsewhere() -> None:
    with worker_pool(1) as pool:
        assert pool is None and submit(pool, os.getpid).result() == os.getpid()
    with worker_pool(2) as pool:
        assert submit(pool, os.getpid).result() != os.getpid()


def test_a_piece_runs_on_one_torch_thread_wherever_it_runs() -> None:
    """A model trained on two intra-op threads differs in the last bits from one trained on
    one (the main job's GRU by 1e-6, enough for its simulated visitors to diverge), so a
    piece run here (jobs=1) gets the single thread a worker has, and the caller keeps its own."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with worker_pool(1) as pool:
            assert submit(pool, torch.get_num_threads).result() == 1
        assert torch.get_num_threads() == 2
        with worker_pool(2) as pool:
            assert submit(pool, torch.get_num_threads).result() == 1
        with pytest.raises(ZeroDivisionError), worker_pool(1) as pool:
            submit(pool, divmod, 1, 0)
        assert torch.get_num_threads() == 2  # restored after a piece that raised, too
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_workers_stop_when_their_pipeline_is_killed() -> None:
    """``kill <pipeline pid>`` reaches the parent only; its workers once went on training
    into the run folder unseen. Now they notice within about a second and stop."""
    parent = (
        "import os, time\n"
        "from scripts.parallel import submit, worker_pool\n"
        "with worker_pool(2) as pool:\n"
        "    pids = {submit(pool, os.getpid).result() for _ in range(8)}\n"
        "    print(*sorted(pids), flush=True)\n"
        "    busy = [submit(pool, time.sleep, 120) for _ in range(2)]\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers and all(alive(p) for p in workers)
    time.sleep(0.5)  # both busy sleeping
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in workers), "a worker outlived its pipeline"
