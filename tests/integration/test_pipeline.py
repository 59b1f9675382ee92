"""The pipeline runs every stage once and reuses what is up to date."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from clickstream.errors import RunFolderError
from clickstream.runfolder import config_hash
from scripts.pipeline import run
from tests.hydra_configs import TINY_RUN, compose_cfg, reseal

pytestmark = pytest.mark.integration

ALL_RAN = {
    "prepare_data": "ran",
    "train_simulator": "ran",
    "held_out_simulator": "ran",
    "train_agents": "ran",
    "evaluate": "ran",
}


def pipeline(tmp_path: Path, *extra: str) -> dict:
    overrides = [
        f"out_dir={tmp_path}",
        "data.n_sessions=1200",
        "data.n_pages=60",
        "simulator.trainer.epochs=2",
        "show_progress=false",
        "agents=[organic,greedy,value_iteration,q_learning]",
        "learning_agents=[q_learning]",
        "seeds=[0,1]",
        "references=[true_optimum]",
        "++agent_overrides.q_learning.total_steps=50000",
        "n_sessions=500",
        "n_visitors=500",
        "agent_eval_sessions=200",
        "jobs=1",
        *extra,
    ]
    return run(compose_cfg("pipeline", overrides))


def test_side_by_side_workers_give_the_numbers_of_one_process(tmp_path: Path) -> None:
    """jobs=2: the two visitor models, the agents and the worlds run in worker processes;
    every piece seeds itself, so the records equal those of jobs=1, number for number."""
    alone = pipeline(tmp_path / "alone")
    side = pipeline(tmp_path / "side", "jobs=2")
    assert side["stages"] == alone["stages"] == ALL_RAN

    def numbers(report: dict) -> list[dict]:
        keep = ("policy", "world", "mean_return", "ci95", "conversion_rate", "n_sessions")
        return [{k: r[k] for k in keep} for r in report["evaluate"]["records"]]

    assert len(numbers(alone)) == 3 * 5  # 5 policies in 3 worlds
    assert numbers(side) == numbers(alone)
    for model in ("train_simulator", "held_out_simulator"):
        assert side[model]["models"] == alone[model]["models"]
    # the held-out world is another model (seed + 1), so organic plays differently in it
    organic = {r["world"]: r["mean_return"] for r in numbers(alone) if r["policy"] == "organic"}
    assert organic["held_out"] != organic["learned"]


def test_stages_run_once_then_are_reused(tmp_path: Path) -> None:
    first = pipeline(tmp_path)
    assert first["stages"] == ALL_RAN
    assert (tmp_path / "data" / "hits.parquet").is_file()
    assert (tmp_path / "data" / "simulator" / "model.pt").is_file()
    assert (tmp_path / "data" / "simulator_held_out" / "model.pt").is_file()
    assert first["prepare_data"]["summary"]["sessions"] == 1200
    assert sorted(first["agents"]) == [
        "greedy/seed_0",
        "organic/seed_0",
        "q_learning/seed_0",
        "q_learning/seed_1",
        "true_optimum/seed_0",
        "value_iteration/seed_0",
    ]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    worlds = {(r["policy"], r["world"]) for r in results["records"]}
    assert len(worlds) == 5 * 3  # five policies in the learned, held-out and true worlds
    q = next(r for r in results["records"] if r["policy"] == "q_learning")
    assert q["seeds"] == [0, 1]  # both trained seeds, pooled

    again = pipeline(tmp_path)
    assert set(again["stages"].values()) == {"reused"}
    assert again["train_simulator"]["models"] == first["train_simulator"]["models"]
    # progress bars change what is printed, not what is made
    shown = pipeline(tmp_path, "show_progress=true")
    assert set(shown["stages"].values()) == {"reused"}
    # a policy folder changed after it was published no longer verifies: retrained, alone
    record_path = tmp_path / "agents" / "greedy" / "seed_0" / "run.json"
    record = json.loads(record_path.read_text())
    record["created_utc"] = "2100-01-01T00:00:00+00:00"
    record_path.write_text(json.dumps(record))
    damaged = pipeline(tmp_path)
    assert {k for k, v in damaged["agents"].items() if v == "ran"} == {"greedy/seed_0"}
    why = damaged["why"]["greedy/seed_0"]
    assert "seed_0/run.json: " in why and "the manifest says" in why
    assert damaged["stages"]["evaluate"] == "ran"
    # a policy republished outside the pipeline (scripts/train.py) makes the report stale
    record = json.loads(record_path.read_text())
    record["created_utc"] = "2100-01-01T00:00:00+00:00"
    record_path.write_text(json.dumps(record))
    reseal(record_path.parent)
    retrained = pipeline(tmp_path)
    assert retrained["stages"]["train_agents"] == "reused"
    assert retrained["stages"]["evaluate"] == "ran"
    assert retrained["why"]["evaluate"] == "made from other inputs: agents/greedy/seed_0"

    # an agent setting retrains that agent only, then re-evaluates
    changed = pipeline(tmp_path, "++agent_overrides.q_learning.total_steps=40000")
    assert changed["stages"]["train_simulator"] == "reused"
    assert changed["stages"]["evaluate"] == "ran"
    assert {k for k, v in changed["agents"].items() if v == "ran"} == {
        "q_learning/seed_0",
        "q_learning/seed_1",
    }
    # a simulator setting retrains the simulator and everything after it; the data stay
    sim = pipeline(
        tmp_path, "++agent_overrides.q_learning.total_steps=40000", "simulator.trainer.epochs=1"
    )
    assert sim["stages"] == {**ALL_RAN, "prepare_data": "reused"}


def test_options_at_null_compare_as_absent() -> None:
    # an option added later with a null default (e.g. data.kind_weights) leaves earlier
    # outputs up to date; any value, or a changed one, makes them stale
    recorded = {"data": {"mode": "intent", "n_pages": 200}}
    cfg = compose_cfg("pipeline", ["data.n_pages=200"])
    assert cfg.data.kind_weights is None

    def same(a: dict, b: dict) -> bool:  # as the pipeline decides: the manifests' hashes
        return config_hash(a, ("data",)) == config_hash(b, ("data",))

    assert same(recorded, {"data": {**recorded["data"], "x": None}})
    assert not same(recorded, {"data": {**recorded["data"], "x": 0}})
    assert not same(recorded, {"data": {"mode": "intent", "n_pages": None}})


REPO = Path(__file__).resolve().parents[2]


def _pipeline_cli(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """``python scripts/pipeline.py out_dir=run`` on the tiny run, from ``cwd`` (outside the
    checkout, so the printed paths and commands must hold wherever it runs)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = str(REPO / "scripts" / "pipeline.py")
    return subprocess.run(
        [sys.executable, script, "out_dir=run", *TINY_RUN, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _headers(stdout: str) -> list[str]:
    return re.findall(r"^\[\d/\d\] .*$", stdout, flags=re.M)


def test_cli_says_what_it_does_and_fails_on_a_truncated_agent(tmp_path: Path) -> None:
    limit = "++agent_overrides.ppo.max_minutes=1e-6"  # SB3Agent.max_minutes: hit at once
    first = _pipeline_cli(tmp_path, limit)
    assert first.returncode == 3, first.stderr[-2000:]
    assert _headers(first.stdout) == [
        "[1/4] data (synthetic_intent) -> run/data",
        "[2/4] visitor model (GRU) -> run/data/simulator",
        "[3/4] agents (4 policies; ppo on seed 0) -> run/agents",
    ]
    assert first.stdout.count("      ran in ") == 2  # the stages that finished
    assert re.search(r"^      ppo · seed 0: ran in .*, \d+ steps", first.stdout, flags=re.M)
    error = first.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "ppo/seed_0" in error
    assert "agent_overrides.ppo.max_minutes=1e-06" in error and "allow_truncated=true" in error
    steps = int(re.search(r"after (\d+) of 512 steps", error).group(1))
    assert 0 < steps < 512
    record = json.loads((tmp_path / "run/agents/ppo/seed_0/run.json").read_text())
    assert (record["truncated"], record["steps"], record["budget_steps"]) == (True, steps, 512)
    assert not (tmp_path / "run/eval/results.json").exists()

    # the same run, allowed: the earlier stages are reused, the report says "truncated"
    second = _pipeline_cli(tmp_path, limit, "allow_truncated=true")
    out = second.stdout
    assert second.returncode == 0, second.stderr[-2000:]
    assert _headers(out) == [
        "[1/4] data (synthetic_intent) -> run/data",
        "[2/4] visitor model (GRU) -> run/data/simulator",
        "[3/4] agents (4 policies; ppo on seed 0) -> run/agents",
        "[4/4] evaluation (4 policies in 2 worlds: learned, ground truth; 1 seed) -> run/eval",
    ]
    ends = re.findall(r"^      (ran|reused \(up to date\)) in [\d.]+ s$", out, flags=re.M)
    assert ends == ["reused (up to date)"] * 3 + ["ran"]
    assert out.count("device: cpu") == 1
    assert re.search(
        r"^device: cpu \(one torch thread per piece, \d+ pieces? at a time\)$", out, re.M
    )
    assert "click model: a shown page's odds of being chosen are multiplied by e^1 = 2.72" in out
    assert "{'boost'" not in out + second.stderr  # no raw config dicts
    # quiet mode (show_progress=false): no progress bars, no epoch lines
    assert "it/s" not in second.stderr and "step/s" not in second.stderr
    assert "epoch" not in out

    results = json.loads((tmp_path / "run/eval/results.json").read_text())
    for r in results["records"]:
        assert r["truncated"] is (r["policy"] == "ppo")
        if r["policy"] == "ppo":
            assert r["training"] == [
                {"seed": 0, "steps": steps, "budget_steps": 512, "truncated": True}
            ]
    md = (tmp_path / "run/eval/results.md").read_text()
    warning = "TRUNCATED: a wall-clock limit (max_minutes) stopped the training of ppo"
    assert f"> **{warning} (seed 0: {steps} of 512 steps) before its budget" in md
    assert md.count("| ppo **(truncated)** |") == 2  # in both worlds' tables
    assert "- learned: 1 seed × 512 = 512 sessions" in md  # the units of the sessions column
    assert md in out  # the printed report is the file

    # what next: every path printed exists, the commands run as printed
    tail = out[out.index("\nDone in ") :]
    assert f"TRUNCATED: ppo/seed_0 stopped by its time limit after {steps} of 512 steps" in tail
    listed = dict(re.findall(r"^  (report|results|web app|TensorBoard) +(.+)$", tail, flags=re.M))
    assert listed["report"] == "run/eval/results.md"
    assert listed["results"] == "run/eval/results.json"
    charts = re.findall(r"^  (?:charts)? +(run/eval/\S+\.png)$", tail, flags=re.M)
    assert sorted(Path(c).stem for c in charts) == [
        "bounce_rate",
        "conversion_rate",
        "mean_return",
        "revenue_per_session",
    ]
    for path in [listed["report"], listed["results"], *charts]:
        assert (tmp_path / path).is_file(), path
    serve = shlex.split(listed["web app"])
    assert serve[:2] == ["python", str(REPO / "scripts" / "serve.py")]
    assert serve[2:] == ["run_dir=run"]
    dry = subprocess.run(
        [sys.executable, *serve[1:], "dry_run=true"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "serves" in dry.stdout and "ppo" in dry.stdout
    board = shlex.split(listed["TensorBoard"])
    assert board[:2] == ["tensorboard", "--logdir"] and len(board) == 3
    logdir = tmp_path / board[2]
    events = {p.parent.relative_to(logdir) for p in logdir.rglob("events.out.tfevents.*")}
    assert Path("data/simulator/tensorboard") in events
    assert Path("agents/ppo/seed_0") in events


def test_only_this_runs_agents_and_seeds_are_evaluated(tmp_path: Path) -> None:
    """Folders left in the run folder by an earlier run (another seed, an agent since dropped)
    are said and left out, not pooled into the report; `scripts/evaluate.py`, which reads
    every saved policy, refuses those made from another visitor model."""
    from scripts.evaluate import run as evaluate_run

    first = pipeline(tmp_path, "held_out=false")
    assert first["not_evaluated"] == []
    fewer = pipeline(tmp_path, "held_out=false", "seeds=[1]")
    assert fewer["agents"]["q_learning/seed_1"] == "reused"
    assert fewer["not_evaluated"] == ["q_learning/seed_0"]
    q = [r for r in fewer["evaluate"]["records"] if r["policy"] == "q_learning"]
    assert [[run["seed"] for run in r["training"]] for r in q] == [[1], [1]]  # 2 worlds
    organic = next(r for r in fewer["evaluate"]["records"] if r["policy"] == "organic")
    assert q[0]["n_sessions"] == organic["n_sessions"] == 1500  # 500 on each of 3 seeds

    dropped = pipeline(
        tmp_path, "held_out=false", "agents=[organic,greedy,value_iteration]", "seeds=[0]"
    )
    assert dropped["not_evaluated"] == ["q_learning/seed_0", "q_learning/seed_1"]
    assert {r["policy"] for r in dropped["evaluate"]["records"]} == {
        "organic",
        "greedy",
        "value_iteration",
        "true_optimum",
    }

    # another visitor model: the kept agents are retrained, the dropped ones are now stale
    pipeline(
        tmp_path,
        "held_out=false",
        "agents=[organic,greedy,value_iteration]",
        "simulator.trainer.epochs=1",
    )
    with pytest.raises(RunFolderError) as err:
        evaluate_run(compose_cfg("evaluate", [f"out_dir={tmp_path}", "held_out_dir=null"]))
    assert str(err.value) == (
        f"{tmp_path / 'agents'}: saved policies made from other data or another visitor model "
        "than this evaluation's (left from an earlier run): q_learning/seed_0 (other "
        "simulator), q_learning/seed_1 (other simulator); retrain them (`python "
        "scripts/pipeline.py` retrains what its settings name) or leave them out with "
        "policies=[...]"
    )
    fine = evaluate_run(
        compose_cfg(
            "evaluate",
            [
                f"out_dir={tmp_path}",
                "held_out_dir=null",
                "n_sessions=200",
                "n_visitors=200",
                "policies=[organic,greedy]",
            ],
        )
    )
    assert {r["policy"] for r in fine["records"]} == {"organic", "greedy"}
