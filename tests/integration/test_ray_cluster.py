"""A sweep on a real two-node Ray cluster (``hydra/launcher=ray``) equals the joblib sweep.

The test starts its own cluster as separate processes, a head (``ray start --head``) and a
second node that joins it (``ray start --address=...``), each with one CPU and a private temp
folder and ports, so it collides with nothing else on the machine; both run with ``--block``
and are stopped by signalling those two processes (each then stops the Ray processes it
started), never by ``ray stop``, which would stop every Ray instance on the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hydra_configs import prepare_synthetic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
SEEDS = (0, 1, 2, 3)
# A private HOME: Ray reads ~/.ray (an auth token left there by another Ray session made the
# nodes of this test's cluster unreachable to `ray status`, and the test timed out)
ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "HOME": tempfile.mkdtemp(prefix="nextpage-ray-home-"),
}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _nodes_alive(address: str) -> int:
    out = subprocess.run(
        [RAY, "status", f"--address={address}"], capture_output=True, text=True, env=ENV
    )
    if out.returncode != 0:
        return 0
    active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return sum(1 for line in active.splitlines() if "node_" in line)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The address of a running two-node local Ray cluster (one CPU per node)."""
    # a short private folder: Ray's Unix socket paths must stay under 108 characters
    temp_dir = tempfile.mkdtemp(prefix="nextpage-ray-", dir="/tmp")
    port, client_port, head_agent, worker_agent = _free_ports(4)
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    logs = Path(temp_dir) / "start"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        head_log = open(logs / "head.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                [
                    RAY,
                    "start",
                    "--head",
                    f"--port={port}",
                    f"--ray-client-server-port={client_port}",
                    f"--dashboard-agent-listen-port={head_agent}",
                    "--include-dashboard=false",
                    f"--temp-dir={temp_dir}",
                    *common,
                ],
                stdout=head_log,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        )
        _wait(lambda: _nodes_alive(address) >= 1, procs, logs, "the head node")
        worker_log = open(logs / "worker.log", "w")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    RAY,
                    "start",
                    f"--address={address}",
                    f"--dashboard-agent-listen-port={worker_agent}",
                    *common,
                ],
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        )
        _wait(lambda: _nodes_alive(address) == 2, procs, logs, "the second node")
        yield address
    finally:
        for proc in reversed(procs):  # the worker node first, then the head
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait(ready, procs: list[subprocess.Popen], logs: Path, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            text = "\n".join(f.read_text() for f in sorted(logs.glob("*.log")))
            pytest.fail(f"ray start exited while starting {what}:\n{text[-3000:]}")
        if ready():
            return
        time.sleep(1)
    pytest.fail(f"{what} did not join the cluster within 120 s")


def _sweep(data_dir: Path, agents: Path, sweep_dir: Path, seeds: str, *launcher: str):
    """``scripts/train.py -m`` over ``seeds``: tabular Q-learning in the first-order world of
    a tiny synthetic store (no visitor model to train), one policy folder per seed."""
    cmd = [
        sys.executable,
        "scripts/train.py",
        "-m",
        f"data_dir={data_dir}",
        "simulator_dir=null",
        "env.dynamics=markov",
        "agent=q_learning",
        "agent.total_steps=20000",
        "agent.n_envs=256",
        # the seed's folder first: the crash test makes one of them unusable
        f"agent_dir={agents}/s${{seed}}/${{agent.name}}",
        "eval_sessions=256",
        "show_progress=false",
        f"seed={seeds}",
        f"hydra.sweep.dir={sweep_dir}",
        *launcher,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)


def _result(folder: Path) -> dict:
    """What a trained policy is: its tables' hashes and its evaluation (not its timings)."""
    record = json.loads((folder / "run.json").read_text())
    return {
        "scores": hashlib.sha256((folder / "scores.npy").read_bytes()).hexdigest(),
        "policy": json.loads((folder / "policy.json").read_text()),
        "steps": record["steps"],
        "eval": record["eval_learned"],
    }


def test_sweep_on_two_nodes_equals_joblib_survives_a_crash_and_resumes(
    cluster: str, tmp_path: Path
) -> None:
    data_dir = prepare_synthetic(tmp_path / "data", "data.n_sessions=1200", "data.n_pages=60")
    joblib_run = _sweep(
        data_dir,
        tmp_path / "joblib",
        tmp_path / "sweep_joblib",
        ",".join(map(str, SEEDS)),
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert joblib_run.returncode == 0, joblib_run.stderr[-3000:]

    # seed 4's folder cannot be made on the node that runs it (a file is in the way): that
    # job fails, the four others finish and keep their results
    agents = tmp_path / "ray"
    agents.mkdir()
    (agents / "s4").write_text("not a folder")
    ray = ("hydra/launcher=ray", f"hydra.launcher.address={cluster}")
    first = _sweep(data_dir, agents, tmp_path / "sweep_1", "0,1,2,3,4", *ray)
    assert first.returncode != 0
    log = first.stdout + first.stderr
    assert "1 of 5 jobs failed: #4 (" in log and "seed=4" in log
    assert "Error executing job with overrides:" in log and "'seed=4'" in log
    jobs = json.loads((tmp_path / "sweep_1" / "jobs.json").read_text())
    assert [j["status"] for j in jobs] == ["completed"] * 4 + ["failed"]
    assert "seed=4" in jobs[4]["overrides"]
    assert "s4" in jobs[4]["error"] and jobs[4]["traceback"]
    # the sweep ran on both nodes of the cluster
    assert len({j["node_id"] for j in jobs[:4]}) == 2, jobs
    assert all(not j["result"]["reused"] for j in jobs[:4])
    for seed in SEEDS:
        on_ray = _result(agents / f"s{seed}" / "q_learning")
        assert on_ray == _result(tmp_path / "joblib" / f"s{seed}" / "q_learning"), seed
    # same seeds, same numbers; other seeds, other policies
    assert len({_result(agents / f"s{s}" / "q_learning")["scores"] for s in SEEDS}) == 4

    # the cause removed, the same sweep again: the four finished jobs are reused, seed 4 runs
    (agents / "s4").unlink()
    again = _sweep(data_dir, agents, tmp_path / "sweep_2", "0,1,2,3,4", *ray)
    assert again.returncode == 0, again.stderr[-3000:]
    jobs = json.loads((tmp_path / "sweep_2" / "jobs.json").read_text())
    assert [j["status"] for j in jobs] == ["completed"] * 5
    assert [j["result"]["reused"] for j in jobs] == [True] * 4 + [False]
    for seed in SEEDS:  # reused as they were
        assert _result(agents / f"s{seed}" / "q_learning") == _result(
            tmp_path / "joblib" / f"s{seed}" / "q_learning"
        )
    assert (agents / "s4" / "q_learning" / "manifest.json").is_file()
