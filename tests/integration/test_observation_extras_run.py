"""A whole run with the observation extras on (``env.observe_entry_page=true
env.observe_position=true``): the pipeline trains PPO on them, records them with the policy,
evaluates it, and the web app builds the same observation from a visitor's history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.base import load_published_policy
from clickstream.errors import ConfigError
from envs.sequences import load_prepared
from envs.site_env import build_core
from tests.hydra_configs import tiny_run
from webapp import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(
        tmp_path_factory.mktemp("extras") / "run",
        "env.observe_entry_page=true",
        "env.observe_position=true",
    )


def test_ppo_trains_and_is_evaluated_on_the_extras(run_dir: Path) -> None:
    folder = run_dir / "agents" / "ppo" / "seed_0"
    record = json.loads((folder / "policy.json").read_text())
    extractor = record["policy_kwargs"]["features_extractor_kwargs"]
    assert extractor["extras"] == ["entry_page", "position"]
    max_steps = json.loads((folder / "run.json").read_text())["config"]["env"]["max_steps"]
    n = 51  # the tiny store's 50 pages and "no page"
    assert record["observation_space"]["nvec"] == [n, max_steps + 1, *[n] * 4]
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    rows = [r for r in results["records"] if r["policy"] == "ppo"]
    assert rows and all(r["n_sessions"] > 0 for r in rows)
    # played in a world without the extras, it refuses instead of misreading its input
    policy = load_published_policy(folder)
    core = build_core(4, data_dir=run_dir / "data", dynamics="markov")
    with pytest.raises(ConfigError, match=r"env\.observe_position"):
        policy.check_observations(core)


def test_the_web_app_serves_it_with_the_simulators_observation(run_dir: Path) -> None:
    client = create_app(run_dir).test_client()
    pages = load_prepared(run_dir / "data", splits=("train",)).vocab.pages
    history = [3, 1, 4, 1, 5, 9]
    body = client.post(
        "/api/recommend",
        json={"history": [pages[i] for i in history], "k": 3, "policy": "ppo"},
    ).get_json()
    # the entry page, the position (6 pages viewed: 5 steps), then the last 4 pages
    assert body["observation"] == [3, 5, 4, 1, 5, 9]
    assert len(body["recommendations"]) == 3
