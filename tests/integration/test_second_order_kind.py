"""A visitor kind added as one module and one config (``envs/visitors/second_order.py``,
``configs/simulator/second_order.yaml``, no other file changed) runs through every layer:
``train_simulator`` trains and scores it, the env simulates it, an agent learns in it, the
evaluation plays in it, and the web app's API answers with its probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.site import Site
from clickstream.runfolder import read_manifest
from envs import visitors
from envs.baselines import SecondOrderMarkov, mean_log_loss
from envs.sequences import load_prepared
from envs.site_env import build_core
from tests.hydra_configs import compose_cfg, tiny_run
from webapp import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(
        tmp_path_factory.mktemp("second_order") / "run",
        "simulator=second_order",
        "env.dynamics=second_order",
    )


@pytest.fixture(scope="module")
def refit(run_dir: Path) -> SecondOrderMarkov:
    """The second-order model fitted again by hand with the smoothing the run chose."""
    record = json.loads((run_dir / "data" / "simulator" / "metrics.json").read_text())
    chosen = record["second_order"]
    data = load_prepared(run_dir / "data", splits=("train",))
    model = SecondOrderMarkov(k=chosen["k"], k1=chosen["k1"])
    return model.fit(data.splits["train"])


def test_the_kind_is_registered_by_its_module_alone() -> None:
    kind = visitors.get("second_order")
    assert kind.files == ("second_order.npz",) and kind.config_key == "second_order"
    assert kind.learned and not kind.seeded and not kind.tables and not kind.latent_state
    cfg = compose_cfg("train_simulator", ["simulator=second_order"])
    assert [k.name for k in visitors.trained_kinds(cfg.simulator)] == ["gru", "second_order"]


def test_train_simulator_writes_and_scores_it(run_dir: Path, refit: SecondOrderMarkov) -> None:
    sim = run_dir / "data" / "simulator"
    assert {"model.pt", "second_order.npz"} <= set(read_manifest(sim).files)
    record = json.loads((sim / "metrics.json").read_text())
    assert record["second_order"]["contexts"] == refit.n_contexts
    assert record["latent_class"] is None  # not set in this config
    data = load_prepared(run_dir / "data")
    loss = record["models"]["second_order"]["with_exit"]["log_loss"]
    assert loss == pytest.approx(mean_log_loss(refit, data.splits["test"]), rel=1e-12)
    # its saved rows are the model's, for seen and unseen contexts alike
    model = visitors.get("second_order").load(data)
    p = data.vocab.n_pages
    for previous, current in ((p, 0), (0, 1), (3, 2), (7, 7)):
        np.testing.assert_allclose(
            model.next_distribution([previous, current] if previous < p else [current]).probs,
            refit.next_distribution(np.array([previous]), np.array([current]))[0],
            rtol=1e-12,
        )


def test_the_env_simulates_it_from_the_previous_and_current_page(
    run_dir: Path, refit: SecondOrderMarkov
) -> None:
    core = build_core(64, data_dir=run_dir / "data", dynamics="second_order")
    obs = core.reset(seed=0)
    p = core.n_pages
    nothing = torch.full((64,), core.n_actions - 1)
    for _ in range(5):
        previous, current = obs[:, -2].numpy(), obs[:, -1].numpy()  # P before the entry page
        want = refit.next_distribution(previous, current)
        np.testing.assert_allclose(core.next_page_probs().double().numpy(), want, atol=1e-6)
        obs = core.step(nothing).obs
    assert int(obs.max()) <= p
    import gymnasium as gym

    env = gym.make("envs:NextPage/Site-v0", data_dir=str(run_dir / "data"), dynamics="second_order")
    first, _ = env.reset(seed=1)
    _, reward, *_ = env.step(0)
    assert first.shape == (4,) and math.isfinite(reward)


def test_an_agent_learns_in_it_and_the_evaluation_plays_in_it(run_dir: Path) -> None:
    ppo = json.loads((run_dir / "agents" / "ppo" / "seed_0" / "run.json").read_text())
    assert ppo["config"]["env"]["dynamics"] == "second_order" and ppo["steps"] >= 512
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    learned = {r["policy"]: r for r in results["records"] if r["world"] == "learned"}
    assert set(learned) == {"organic", "greedy", "value_iteration", "ppo"}
    for record in learned.values():
        assert record["n_sessions"] >= 300 and math.isfinite(record["mean_return"])
    # the held-out world of a model of counts is a GRU: another seed would not change counts
    site = Site(
        run_dir / "data",
        env={"dynamics": "second_order"},
        held_out_dir=run_dir / "data" / "simulator",
    )
    assert site.world_options("held_out")["dynamics"] == "gru"


def test_the_web_app_answers_with_its_probabilities(run_dir: Path, refit) -> None:
    client = create_app(run_dir).test_client()
    assert client.get("/api/health").get_json()["runs"][0]["visitor_model"] == "second_order"
    data = load_prepared(run_dir / "data", splits=("train",))
    pages = data.vocab.pages
    beta = json.loads((run_dir / "eval" / "results.json").read_text())["config"]["env"]
    e = math.exp(beta["click_params"]["boost"]["beta"])
    for history in ([0], [3, 1], [2, 5, 4]):
        body = client.post(
            "/api/recommend",
            json={"history": [pages[i] for i in history], "k": 3, "policy": "greedy"},
        ).get_json()
        previous = history[-2] if len(history) > 1 else len(pages)
        row = refit.next_distribution(np.array([previous]), np.array([history[-1]]))[0]
        assert body["organic"]["exit_probability"] == pytest.approx(row[-1], rel=1e-12)
        for rec in body["recommendations"]:
            pa = row[rec["page_id"]]
            assert rec["organic_probability"] == pytest.approx(pa, rel=1e-12)
            assert rec["follow_probability"] == pytest.approx(pa * e / (1 + (e - 1) * pa))


def test_its_file_is_read_as_data_only(run_dir: Path, tmp_path: Path) -> None:
    from clickstream.errors import RunFolderError
    from envs.visitors.second_order import SecondOrderTables

    good = SecondOrderTables.load(run_dir / "data" / "simulator" / "second_order.npz")
    evil = tmp_path / "evil.npz"
    np.savez(evil, keys=np.array([object()], dtype=object), context_rows=good.context_rows)
    cut = tmp_path / "cut.npz"
    cut.write_bytes((run_dir / "data" / "simulator" / "second_order.npz").read_bytes()[:200])
    bad_rows = tmp_path / "bad_rows.npz"
    good.context_rows[:, 0] += 1.0  # rows no longer sum to 1
    good.save(bad_rows)
    for path in (evil, cut, bad_rows):
        with pytest.raises(RunFolderError, match="not a readable second-order model file") as err:
            SecondOrderTables.load(path)
        assert str(path) in str(err.value)
