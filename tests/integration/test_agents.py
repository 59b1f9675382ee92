"""Every agent trains from its config on a tiny prepared site; evaluation writes the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from agents.base import Policy, load_policy
from agents.evaluate import RECORD_FIELDS
from agents.report import REFERENCES
from clickstream.errors import ConfigError
from tests.hydra_configs import compose_cfg, prepare_synthetic

pytestmark = pytest.mark.integration

AGENTS = (
    "organic",
    "random",
    "popular",
    "most_likely",
    "highest_value",
    "greedy",
    "value_iteration",
    "q_learning",
    "dqn",
    "ppo",
    "maskable_ppo",
    "ppo_scored",
    "dqn_scored",
    "true_optimum",
    "intent_oracle",
    "recurrent_ppo",
    "recurrent_ppo_wide",
    "ppo_visit",
    "ppo_visit_narrow",
    "dqn_visit",
    "dqn_visit_myopic",
    "belief_value_iteration",
    "belief_optimum",
    "belief_distillation",
    "belief_qmdp",
    "scored_distillation",
    "belief_ppo",
)
EXPERIMENTS = ("synthetic_markov", "synthetic_intent", "ga_sample", "msnbc")
TINY = {
    "ppo": [
        "agent.total_timesteps=2048",
        "agent.n_envs=16",
        "agent.eval_every=1024",
        "agent.eval_sessions=256",
        "agent.hyperparams.n_steps=64",
        "agent.hyperparams.batch_size=256",
    ],
    "dqn": [
        "agent.total_timesteps=2048",
        "agent.n_envs=16",
        "agent.eval_every=1024",
        "agent.eval_sessions=256",
        "agent.hyperparams.learning_starts=256",
        "agent.hyperparams.buffer_size=10000",
    ],
    "q_learning": ["agent.total_steps=20000", "agent.n_envs=256"],
    # the tiny run learns a first-order world: one type, the belief machinery all the same
    "belief_value_iteration": ["agent.model=markov", "agent.resolution=2"],
    "belief_optimum": ["agent.resolution=4"],
    "belief_distillation": [
        "agent.teacher_model=markov",
        "agent.teacher_resolution=2",
        "agent.total_timesteps=4096",
        "agent.rounds=2",
        "agent.n_visitors=64",
        "agent.batch_size=256",
        "agent.hidden=[16]",
        "agent.eval_sessions=256",
    ],
}
TINY["belief_qmdp"] = ["agent.model=markov"]
TINY["belief_ppo"] = [*TINY["ppo"], "agent.policy_kwargs.net_arch=[16]"]  # tracks with markov
TINY["scored_distillation"] = TINY["belief_distillation"][:1] + TINY["belief_distillation"][2:]
TINY["maskable_ppo"] = TINY["ppo_scored"] = TINY["ppo"]
TINY["ppo_visit"] = TINY["ppo_visit_narrow"] = TINY["ppo"]
TINY["dqn_scored"] = TINY["dqn_visit"] = TINY["dqn_visit_myopic"] = TINY["dqn"]
TINY["recurrent_ppo"] = [*TINY["ppo"], "agent.policy_kwargs.lstm_hidden_size=16"]
TINY["recurrent_ppo_wide"] = TINY["recurrent_ppo"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("agent", AGENTS)
def test_every_experiment_and_agent_config_composes_and_instantiates(experiment, agent) -> None:
    cfg = compose_cfg("train", [f"experiment={experiment}", f"agent={agent}"])
    policy = instantiate(cfg.agent, _convert_="partial")
    assert isinstance(policy, Policy) and policy.name == agent
    assert cfg.experiment_name == experiment
    assert cfg.agent_dir.endswith(f"runs/{experiment}/agents/{agent}/seed_0")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_pipeline_and_evaluate_configs_compose(experiment) -> None:
    for name in ("pipeline", "evaluate"):
        cfg = compose_cfg(name, [f"experiment={experiment}"])
        assert cfg.experiment_name == experiment and cfg.data.name


def test_intent_experiment_learns_in_the_latent_class_world() -> None:
    cfg = compose_cfg("pipeline", ["experiment=synthetic_intent"])
    assert cfg.env.dynamics == "latent_class" and cfg.simulator.latent_class.classes == "auto"
    # its agents are the first study's (configs/agent_overrides/mlp_study.yaml), DQN 3M steps
    from omegaconf import OmegaConf

    from scripts.configs import with_agent_overrides
    from scripts.pipeline import _agent_cfg

    for name in ("dqn", "ppo", "q_learning"):
        agent = OmegaConf.to_container(_agent_cfg(cfg, name, 0).agent)
        alone = with_agent_overrides(
            compose_cfg("train", ["experiment=synthetic_intent", f"agent={name}"])
        )
        assert agent == OmegaConf.to_container(alone.agent)  # train.py trains the same agent
        if name != "q_learning":
            assert agent["policy"] == "MlpPolicy" and agent["hyperparams"]["gamma"] == 0.99
            assert agent["total_timesteps"] == 3_000_000
    assert _agent_cfg(cfg, "ppo", 0).agent.hyperparams.learning_rate == 0.0001
    # the other experiments keep the GRU world and fit no visitor types
    other = compose_cfg("pipeline", ["experiment=synthetic_markov"])
    assert other.env.dynamics == "gru" and other.simulator.latent_class is None


def _markov_agent(name: str) -> dict:
    """The agent config ``train.py`` composes for ``agent=name`` on the markov store."""
    from omegaconf import OmegaConf

    cfg = compose_cfg("train", ["experiment=synthetic_markov", f"agent={name}"])
    return OmegaConf.to_container(cfg.agent)  # type: ignore[return-value]


def _visit_network(net_arch: list[int], embedding_dim: int, current_page: bool) -> dict:
    """``VisitPolicy``'s policy_kwargs: the GRU's state is 64 wide, the layers tanh."""
    extractor = {"embedding_dim": embedding_dim, "hidden_size": 64, "current_page": current_page}
    return {"net_arch": net_arch, "activation_fn": "tanh", "features_extractor_kwargs": extractor}


def test_ppo_visit_narrow_is_ppo_visit_with_its_first_network_and_a_constant_step() -> None:
    # the markov and intent studies compare the two: everything but the network and the
    # learning rate's schedule must be the same
    wide, narrow = _markov_agent("ppo_visit"), _markov_agent("ppo_visit_narrow")
    assert wide.pop("name") == "ppo_visit" and narrow.pop("name") == "ppo_visit_narrow"
    assert wide.pop("lr_decay") == 0.0 and narrow.pop("lr_decay") == 1.0  # annealed to 0
    assert wide.pop("policy_kwargs") == _visit_network([256, 256], 128, current_page=True)
    assert narrow.pop("policy_kwargs") == _visit_network([128, 128], 32, current_page=False)
    assert wide == narrow


def test_belief_ppo_is_the_study_ppos_network_with_the_main_jobs_rollouts() -> None:
    # docs/results.md compares it with the intent study's PPO: what differs must be these
    from omegaconf import OmegaConf

    from scripts.configs import with_agent_overrides

    study = with_agent_overrides(
        compose_cfg("train", ["experiment=synthetic_intent", "agent=ppo"])
    ).agent
    main = compose_cfg("train", ["agent=ppo"]).agent
    belief = compose_cfg("train", ["experiment=synthetic_intent", "agent=belief_ppo"]).agent
    study, main, belief = (OmegaConf.to_container(c) for c in (study, main, belief))
    assert belief["policy_kwargs"] == study["policy_kwargs"]
    for key in ("gamma", "gae_lambda", "ent_coef", "clip_range", "n_epochs"):
        assert belief["hyperparams"][key] == study["hyperparams"][key]
    for key in ("n_steps", "batch_size", "learning_rate"):
        assert belief["hyperparams"][key] == main["hyperparams"][key]
    for key in ("n_envs", "lr_decay", "expected_reward", "reward_scale", "total_timesteps"):
        assert belief[key] == main[key]
    assert belief["model"] == "learned"  # tracked with the learned world's own kind


def test_recurrent_ppo_wide_is_recurrent_ppo_as_wide_as_ppo_visit() -> None:
    # the same LSTM, discount and entropy as recurrent_ppo; the network, the rollouts and the
    # learning rate's schedule those of ppo_visit; GAE's lambda its own
    base, wide, visit = map(_markov_agent, ("recurrent_ppo", "recurrent_ppo_wide", "ppo_visit"))
    assert wide["policy_kwargs"] == {
        **base["policy_kwargs"],
        "net_arch": [256, 256],
        "features_beside_lstm": True,
        "features_extractor_kwargs": {"embedding_dim": 128},
    }
    for key in ("n_envs", "lr_decay", "total_timesteps"):
        assert wide[key] == visit[key]
    for key in ("n_steps", "batch_size", "n_epochs", "learning_rate", "clip_range"):
        assert wide["hyperparams"][key] == visit["hyperparams"][key]
    for key in ("gamma", "ent_coef"):
        assert wide["hyperparams"][key] == base["hyperparams"][key]
    assert (wide["hyperparams"]["gae_lambda"], base["hyperparams"]["gae_lambda"]) == (0.8, 0.95)
    assert (wide["algo"], wide["policy"], wide["name"]) == (
        "recurrent_ppo",
        "PagePolicy",
        "recurrent_ppo_wide",
    )


def test_msnbc_experiment_rewards_session_depth() -> None:
    # MSNBC has no transactions and no times: page value (all 0) would be refused
    assert compose_cfg("pipeline", ["experiment=msnbc"]).env.reward == "pageviews"
    assert compose_cfg("pipeline", ["experiment=ga_sample"]).env.reward == "page_value"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    prepare_synthetic(out / "data", "data.n_sessions=2000", "data.n_pages=60")
    return out


def train(run_dir: Path, agent: str, *extra: str) -> dict:
    from scripts.train import run

    cfg = compose_cfg(
        "train",
        [
            f"agent={agent}",
            f"out_dir={run_dir}",
            "env.dynamics=markov",
            "show_progress=false",
            "held_out_dir=null",
            "eval_sessions=512",
            *TINY.get(agent, []),
            *extra,
        ],
    )
    return run(cfg)


@pytest.fixture(scope="module")
def trained(run_dir: Path) -> dict[str, dict]:
    return {name: train(run_dir, name) for name in AGENTS}


@pytest.mark.parametrize("agent", AGENTS)
def test_a_tiny_train_runs_for_each_agent(run_dir: Path, trained: dict, agent: str) -> None:
    record = trained[agent]
    folder = run_dir / "agents" / agent / "seed_0"
    saved = json.loads((folder / "run.json").read_text())
    assert saved["seed"] == 0 and saved["git_commit"] and saved["config"]["agent"]["name"] == agent
    assert list(folder.glob("events.out.tfevents.*")), "TensorBoard events are written"
    if agent != "intent_oracle":  # the oracle needs the latent intent: no learned-world eval
        assert math.isfinite(record["eval_learned"]["eval/mean_return"])
    policy = load_policy(folder)
    obs = np.array([[60, 0, 1, 2], [60, 60, 60, 5]])
    scores = policy.action_scores(obs)
    assert scores.shape == (2, 61)  # 60 pages and "nothing"
    assert policy.predict(obs)[0].shape == (2,)


def test_sb3_training_replays_under_a_seed(run_dir: Path, trained: dict) -> None:
    again = train(run_dir, "ppo", "agent_dir=" + str(run_dir / "replay"))
    assert again["eval_learned"] == trained["ppo"]["eval_learned"]
    # PPO over the belief too: its observation is tracked, not drawn
    belief = train(run_dir, "belief_ppo", "agent_dir=" + str(run_dir / "replay_belief"))
    assert belief["eval_learned"] == trained["belief_ppo"]["eval_learned"]


def test_belief_ppo_tracks_with_the_learned_worlds_kind_and_refuses_a_gru_world(
    run_dir: Path, trained: dict
) -> None:
    from scripts.train import run

    saved = json.loads((run_dir / "agents/belief_ppo/seed_0/policy.json").read_text())
    assert saved["model"] == "markov"  # "learned" resolved to env.dynamics when it trained
    cfg = compose_cfg(
        "train",
        [
            "agent=belief_ppo",
            f"out_dir={run_dir}",
            "env.dynamics=gru",
            "held_out_dir=null",
            *TINY["belief_ppo"],
            f"agent_dir={run_dir / 'belief_ppo_gru'}",
        ],
    )
    with pytest.raises(ConfigError, match="'gru' has none"):
        run(cfg)
    assert not (run_dir / "belief_ppo_gru").exists()  # nothing half-written


def test_the_closing_evaluation_scores_the_kept_weights_on_fresh_sessions(run_dir: Path) -> None:
    from agents.evaluate import CLOSING_SEED, SELECTION_SEED, quick_eval
    from agents.site import Site

    folder = run_dir / "ppo_closing"
    record = train(run_dir, "ppo", f"agent_dir={folder}")
    curve = [c["eval/mean_return"] for c in record["fit"]["curve"]]
    assert len(curve) == 2 and record["fit"]["kept_eval_return"] == max(curve)
    site = Site.from_config(record["config"])
    policy = load_policy(folder)
    fresh = quick_eval(policy, site, 512, seed=CLOSING_SEED)
    selecting = quick_eval(policy, site, 512, seed=SELECTION_SEED)
    assert CLOSING_SEED != SELECTION_SEED
    assert record["eval_learned"] == fresh  # the saved weights, replayed on the closing sessions
    assert selecting["eval/mean_return"] != fresh["eval/mean_return"]


def test_distillation_learns_from_a_saved_planner_and_refuses_other_teachers(
    run_dir: Path, trained: dict
) -> None:
    agents = run_dir / "agents"
    tiny = TINY["belief_distillation"][2:]  # the teacher is loaded, not planned
    record = train(
        run_dir,
        "belief_distillation",
        *tiny,
        f"agent.teacher_dir={agents / 'belief_value_iteration' / 'seed_0'}",
        f"agent_dir={run_dir / 'distilled_from_saved'}",
    )
    assert record["fit"]["steps"] >= 4096 and record["fit"]["teacher_seconds"] < 60
    scored = train(
        run_dir,
        "scored_distillation",
        *tiny,
        f"agent.teacher_dir={agents / 'belief_qmdp' / 'seed_0'}",
        f"agent_dir={run_dir / 'scored_from_saved_qmdp'}",
    )
    assert scored["fit"]["steps"] >= 4096
    with pytest.raises(ConfigError, match="another click model"):
        train(
            run_dir,
            "scored_distillation",
            *tiny,
            f"agent.teacher_dir={agents / 'belief_qmdp' / 'seed_0'}",
            "env.click_params.boost.beta=2.0",
            f"agent_dir={run_dir / 'scored_other_clicks'}",
        )
    with pytest.raises(ConfigError, match="belief_value_iteration"):
        train(
            run_dir,
            "belief_distillation",
            *tiny,
            f"agent.teacher_dir={agents / 'greedy' / 'seed_0'}",
            f"agent_dir={run_dir / 'distilled_from_greedy'}",
        )


def test_an_env_refuses_a_reward_that_is_zero_everywhere(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    from clickstream.errors import ClickstreamError
    from envs.site_env import build_core
    from tests.hydra_configs import reseal

    data = shutil.copytree(run_dir / "data", tmp_path / "data")
    pages = pd.read_parquet(data / "pages.parquet")
    pages.assign(page_value=0.0).to_parquet(data / "pages.parquet")
    # a changed file no longer matches the manifest: refused, naming it
    with pytest.raises(ClickstreamError, match=r"pages\.parquet: .*the manifest"):
        build_core(1, data_dir=data, dynamics="markov")
    reseal(data)  # changed on purpose
    with pytest.raises(ClickstreamError, match=r"'page_value' is 0 on every page of .*pageviews"):
        build_core(1, data_dir=data, dynamics="markov")
    assert build_core(1, data_dir=data, dynamics="markov", reward="pageviews").n_pages > 0


def test_top_k_limits_the_learned_world_not_the_ground_truth(run_dir: Path) -> None:
    from agents.site import Site

    site = Site(data_dir=run_dir / "data", env={"dynamics": "markov", "top_k": 3})
    learned = site.core(4, "learned")
    truth = site.core(4, "ground_truth")
    assert learned.candidates is not None and learned.candidates.shape[1] == 3
    assert truth.candidates is None  # the store's own links: every true successor reachable
    truth.reset(seed=0)
    rows = truth.next_page_probs()
    assert torch.allclose(rows.sum(1), torch.ones(4, dtype=rows.dtype))
    assert int((rows > 0).sum(1).max()) > 3 + 1  # more outcomes than 3 successors and EXIT


def test_sb3_training_can_log_its_exact_value_in_the_ground_truth(run_dir: Path) -> None:
    from agents.evaluate import exact_return
    from agents.site import Site
    from agents.tabular import policy_value, value_iteration

    folder = run_dir / "dqn_truth"
    record = train(
        run_dir, "dqn", "env.history_len=1", "+agent.log_truth=true", f"agent_dir={folder}"
    )
    exact = [c["truth/exact_return"] for c in record["fit"]["curve"]]
    assert len(exact) == 2  # at 1,024 and 2,048 steps
    site = Site.from_config(record["config"])
    truth = site.core(1, "ground_truth", device="cpu")
    mdp = site.true_mdp()
    best = value_iteration(mdp).q.argmax(1)
    optimum = policy_value(mdp, torch.nn.functional.one_hot(best, mdp.n_actions).double())
    optimum = optimum["mean_return"]
    assert all(0.0 < v <= optimum + 1e-9 for v in exact)
    # the kept weights are those of one of the evaluated checkpoints
    kept = exact_return(load_policy(folder), truth)
    assert min(abs(kept - v) for v in exact) < 1e-9


def test_evaluate_writes_a_record_per_policy_and_world(
    run_dir: Path, trained: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from scripts.evaluate import run

    cfg = compose_cfg(
        "evaluate",
        [
            f"out_dir={run_dir}",
            "env.dynamics=markov",
            "held_out_dir=null",
            "n_sessions=2000",
            "n_visitors=512",
            "show_progress=false",
        ],
    )
    result = run(cfg)
    records = result["records"]
    worlds = {r["world"] for r in records}
    assert worlds == {"learned", "ground_truth"}
    assert len(records) == 2 * len(AGENTS) - 1  # the oracle only in the ground truth
    for r in records:
        assert set(RECORD_FIELDS) <= set(r)
        assert r["n_sessions"] >= 3 * 2000 and r["seeds"]
        assert 0.0 <= r["bounce_rate"] <= 1.0 and r["pages_per_session"] >= 1.0
    truth = {r["policy"]: r for r in records if r["world"] == "ground_truth"}
    assert truth["organic"]["uplift_pct"] == 0.0
    exact = {n: r["exact_return"] for n, r in truth.items() if r["exact_return"] is not None}
    assert {"organic", "value_iteration", "true_optimum", "intent_oracle"} <= set(exact)
    # no page table beats the optimum of intent-aware tables
    assert exact["intent_oracle"] >= max(exact.values()) - 1e-9
    for name in ("organic", "true_optimum"):  # simulation agrees with the exact value
        r = truth[name]
        assert abs(r["mean_return"] - r["exact_return"]) < 3 * r["ci95"]
    out = run_dir / "eval"
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["records"]) == len(records) and "ground_truth" in saved["rank_agreement"]
    deployable = {r["policy"] for r in records if r["world"] == "learned"} - set(REFERENCES)
    pairs = saved["rank_resolution"]["ground_truth"]
    assert pairs["pairs"] == len(deployable) * (len(deployable) - 1) // 2
    assert pairs["resolved"] + len(pairs["unresolved"]) == pairs["pairs"]
    assert (out / "results.md").read_text().count("## World:") == 2
    # without bars, one line per policy and world as each is done, with its figure
    done = [line for line in capsys.readouterr().err.splitlines() if line.startswith("evaluated ")]
    assert len(done) == len(records)
    organic = truth["organic"]
    assert (
        f"evaluated organic in ground_truth: {organic['mean_return']:,.3f} ± "
        f"{organic['ci95']:,.3f} over {organic['n_sessions']:,} sessions"
    ) in "\n".join(done)
    assert (out / "mean_return.png").stat().st_size > 5000


def test_scored_ppo_starts_from_the_runs_gru_whatever_the_world(
    run_dir: Path, tmp_path: Path
) -> None:
    """``init_embeddings=gru``: the page vectors of the GRU trained on these data, in a world
    (here the Markov chain; in the 2,000-page study the latent-class model) that has none."""
    import shutil

    from agents.networks import visitor_page_embeddings
    from agents.sb3 import SB3Agent
    from clickstream.errors import RunFolderError
    from scripts.train_simulator import run as train_simulator

    data = shutil.copytree(run_dir / "data", tmp_path / "data")
    args = ("agent.init_embeddings=gru", "agent.freeze_embeddings=true")
    with pytest.raises(RunFolderError, match="train_simulator"):  # no GRU trained here yet
        train(tmp_path, "ppo_scored", *args)
    train_simulator(
        compose_cfg(
            "train_simulator",
            [
                f"data_dir={data}",
                "simulator.trainer.epochs=1",
                "simulator.model.hidden_size=8",
                "simulator.model.embedding_dim=8",
                "simulator.baselines.tune_on_valid=false",
                "show_progress=false",
            ],
        )
    )
    record = train(tmp_path, "ppo_scored", *args)
    assert record["fit"]["embeddings_from_visitor_model"] is True
    policy = load_policy(tmp_path / "agents" / "ppo_scored" / "seed_0").model.policy
    table = policy.features_extractor.embedding.weight
    gru = visitor_page_embeddings(data / "simulator" / "model.pt")
    assert table.shape == (61, 8) and torch.equal(table.detach(), gru)  # frozen: as the GRU's
    assert policy.action_net.pages is policy.features_extractor.embedding  # the scores' too
    with pytest.raises(ConfigError, match=r"auto or a visitor kind's name .*latent_gru"):
        SB3Agent("maskable_ppo", init_embeddings="glove")
    # a kind whose model has no page vectors is named
    with pytest.raises(ConfigError, match="'markov' visitor model has no page embeddings"):
        train(
            tmp_path,
            "ppo_scored",
            "agent.init_embeddings=markov",
            "agent_dir=" + str(tmp_path / "m"),
        )


def test_recurrent_ppo_trains_with_the_current_page_beside_its_lstm(run_dir: Path) -> None:
    # training feeds padded rollout sequences through the option's path (a step feeds one
    # row); the saved policy is rebuilt with it from policy.json
    folder = run_dir / "recurrent_beside"
    record = train(
        run_dir,
        "recurrent_ppo",
        *TINY["recurrent_ppo"],
        "agent.policy_kwargs.features_beside_lstm=true",
        f"agent_dir={folder}",
    )
    assert record["fit"]["steps"] >= 2048 and not record["fit"]["truncated"]
    assert math.isfinite(record["eval_learned"]["eval/mean_return"])
    policy = load_policy(folder)
    assert policy.model.policy.features_beside_lstm
    scores = policy.action_scores(np.array([[60, 0, 1, 2], [60, 60, 60, 5]]))
    np.testing.assert_allclose(np.exp(scores).sum(axis=1), 1.0, atol=1e-5)
