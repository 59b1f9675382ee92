"""Loading a run folder for the web app: nothing trained (naming the command), policies
trained for another env (not served), several runs chosen by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clickstream.errors import ClickstreamError
from tests.hydra_configs import reseal
from tests.webapp_support import post
from webapp import create_app
from webapp.artefacts import load_run

# ---- loading a run folder --------------------------------------------------------------------


def test_nothing_trained_names_the_pipeline_command(webapp_run_dir: Path, tmp_path: Path):
    cases = {"missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    cases["empty"].mkdir()
    cases["data only"] = tmp_path / "data_only"
    shutil.copytree(webapp_run_dir / "data", cases["data only"] / "data")
    cases["no visitor model"] = tmp_path / "no_model"
    shutil.copytree(
        webapp_run_dir, cases["no visitor model"], ignore=shutil.ignore_patterns("model.pt")
    )
    expected = {
        "missing": "run folder not found",
        "empty": "data/meta.json is missing",
        "data only": "no saved policy in agents/",
        "no visitor model": "data/simulator/model.pt is missing",
    }
    for name, folder in cases.items():
        with pytest.raises(ClickstreamError) as err:
            load_run(folder)
        assert expected[name] in str(err.value)
        assert f"`python scripts/pipeline.py out_dir={folder}`" in str(err.value)
    # first-order answers need no GRU
    assert load_run(cases["no visitor model"], visitor_model="markov").dynamics == "markov"


def test_policies_trained_for_another_env_are_not_served(webapp_run_dir: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(webapp_run_dir, copy)
    record_path = copy / "agents" / "greedy" / "seed_0" / "run.json"
    record = json.loads(record_path.read_text())
    record["config"]["env"]["history_len"] = 2
    record_path.write_text(json.dumps(record))
    reseal(record_path.parent)
    run = load_run(copy)
    assert "greedy" not in run.policies
    assert run.skipped["greedy"] == (
        "trained with other env options than the run's: history_len=2 (run: 4)"
    )
    answer = (
        create_app(run)
        .test_client()
        .post("/api/recommend", json={"history": ["/home"], "policy": "greedy"})
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"].startswith("policy 'greedy' is not served: trained with")
    with pytest.raises(ClickstreamError, match=r"no saved policy named \['nope'\]"):
        load_run(copy, policies=["nope"])
    assert list(load_run(copy, policies=["ppo"]).policies) == ["ppo"]


def test_two_runs_choose_by_name(webapp_run_dir: Path, tmp_path: Path):
    other = tmp_path / "other"
    shutil.copytree(webapp_run_dir, other)
    client = create_app([webapp_run_dir, other]).test_client()
    health = client.get("/api/health").get_json()
    assert [r["name"] for r in health["runs"]] == [webapp_run_dir.name, "other"]
    body = post(client, "/api/recommend", {"history": ["/home"], "run": "other"})
    assert body["run"] == "other"
    assert 'value="other"' in client.get("/?run=other").get_data(as_text=True)
    with pytest.raises(ClickstreamError, match="two runs are named"):
        create_app([webapp_run_dir, webapp_run_dir])
