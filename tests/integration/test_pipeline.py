"""The pipeline runs every stage once and reuses what is up to date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.pipeline import _same, run
from tests.hydra_configs import compose_cfg

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
        "agent_overrides.q_learning.total_steps=50000",
        "n_sessions=500",
        "n_visitors=500",
        "agent_eval_sessions=200",
        *extra,
    ]
    return run(compose_cfg("pipeline", overrides))


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
    # a policy retrained outside the pipeline (scripts/train.py) makes the report stale
    record_path = tmp_path / "agents" / "greedy" / "seed_0" / "run.json"
    record = json.loads(record_path.read_text())
    record["created_utc"] = "2100-01-01T00:00:00+00:00"
    record_path.write_text(json.dumps(record))
    retrained = pipeline(tmp_path)
    assert retrained["stages"]["train_agents"] == "reused"
    assert retrained["stages"]["evaluate"] == "ran"

    # an agent setting retrains that agent only, then re-evaluates
    changed = pipeline(tmp_path, "agent_overrides.q_learning.total_steps=40000")
    assert changed["stages"]["train_simulator"] == "reused"
    assert changed["stages"]["evaluate"] == "ran"
    assert {k for k, v in changed["agents"].items() if v == "ran"} == {
        "q_learning/seed_0",
        "q_learning/seed_1",
    }
    # a simulator setting retrains the simulator and everything after it; the data stay
    sim = pipeline(
        tmp_path, "agent_overrides.q_learning.total_steps=40000", "simulator.trainer.epochs=1"
    )
    assert sim["stages"] == {**ALL_RAN, "prepare_data": "reused"}


def test_options_at_null_compare_as_absent() -> None:
    # an option added later with a null default (e.g. data.kind_weights) leaves earlier
    # outputs up to date; any value, or a changed one, makes them stale
    recorded = {"data": {"mode": "intent", "n_pages": 200}}
    cfg = compose_cfg("pipeline", ["data.n_pages=200"])
    assert cfg.data.kind_weights is None
    assert _same(recorded, {"data": {**recorded["data"], "x": None}}, ("data",))
    assert not _same(recorded, {"data": {**recorded["data"], "x": 0}}, ("data",))
    assert not _same(recorded, {"data": {"mode": "intent", "n_pages": None}}, ("data",))
