"""Every experiment composes with every script that takes one, and the pipeline builds each
stage's config from the stage script's own composed config. (The commands README.md and the
docs show: tests/unit/test_documented_commands.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from scripts.configs import compose_stage
from scripts.pipeline import stage_configs

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
@pytest.mark.parametrize("name", ["pipeline", "train", "evaluate"])
def test_every_experiment_composes_with_every_script_that_takes_one(
    name: str, experiment: str | None
) -> None:
    overrides = [] if experiment is None else [f"experiment={experiment}"]
    cfg = compose_stage(name, overrides)
    OmegaConf.to_container(cfg, resolve=True)
    if name == "pipeline":
        stages = stage_configs(cfg)
        expected = {"prepare_data", "train_simulator", "evaluate"}
        assert expected <= set(stages)
        n_learning = len(cfg.learning_agents) * len(cfg.seeds)
        n_other = len([a for a in [*cfg.agents, *cfg.references] if a not in cfg.learning_agents])
        assert sum(k.startswith("agents/") for k in stages) == n_learning + n_other


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
@pytest.mark.parametrize("agent", ["ppo", "dqn", "q_learning"])
def test_train_py_trains_the_agent_the_pipeline_does(experiment: str | None, agent: str) -> None:
    """An experiment's agent_overrides apply to scripts/train.py as to the pipeline."""
    from scripts.configs import with_agent_overrides

    extra = [] if experiment is None else [f"experiment={experiment}"]
    alone = with_agent_overrides(compose_stage("train", [*extra, f"agent={agent}"]))
    piped = stage_configs(compose_stage("pipeline", extra))[f"agents/{agent}/seed_0"]
    assert OmegaConf.to_container(alone.agent, resolve=True) == OmegaConf.to_container(
        piped.agent, resolve=True
    )


def test_the_held_out_visitor_model_is_trained_on_the_next_seed() -> None:
    """A group's interpolations resolve in its stage: ``simulator.trainer.seed: ${seed}`` is
    the held-out stage's seed (a regression once gave the held-out world the learned model)."""
    for seed in (0, 5):
        stages = stage_configs(compose_stage("pipeline", [f"seed={seed}"]))
        main, held = stages["train_simulator"], stages["held_out_simulator"]
        assert (main.seed, held.seed) == (seed, seed + 1)
        assert (main.simulator.trainer.seed, held.simulator.trainer.seed) == (seed, seed + 1)
        assert held.out_dir != main.out_dir


def test_the_main_job_trains_every_agent_at_its_configs_budget() -> None:
    """No hidden short budgets: the default pipeline's PPO and DQN are configs/agent/*.yaml;
    experiment=quick is the opt-in short run."""
    stages = stage_configs(compose_stage("pipeline", []))
    for agent in ("ppo", "dqn"):
        own = OmegaConf.load(ROOT / "configs" / "agent" / f"{agent}.yaml")
        assert stages[f"agents/{agent}/seed_0"].agent.total_timesteps == own.total_timesteps
        assert stages[f"agents/{agent}/seed_0"].agent.get("max_minutes") is None
    quick = stage_configs(compose_stage("pipeline", ["experiment=quick"]))
    for agent in ("ppo", "dqn"):
        full = stages[f"agents/{agent}/seed_0"].agent.total_timesteps
        assert quick[f"agents/{agent}/seed_0"].agent.total_timesteps < full / 5


def test_no_wall_clock_limit_in_the_configs() -> None:
    """Budgets are steps: no config sets a time limit that could change a result."""
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            match = re.search(r"(max_minutes|max_seconds|time_limit)\s*:\s*(\S+)", code)
            if match:
                assert match.group(2) == "null", f"{path.name}:{i}: {line.strip()}"


@pytest.mark.parametrize(
    ("override", "named"),
    [("env.history_len=abc", "env.history_len"), ("env.rewrad=page_value", "env.rewrad")],
)
def test_the_typed_env_config_refuses_a_wrong_key_or_type(override: str, named: str) -> None:
    with pytest.raises(ConfigCompositionException, match=re.escape(named)):
        compose_stage("pipeline", [override])


def test_the_small_export_recipe_is_the_gru_with_a_weaker_prior_and_calibrated_exits() -> None:
    """``simulator=gru_small`` changes the first-order prior's pseudo-count and turns the exit
    calibration on (its defaults), and nothing else."""
    small = OmegaConf.to_container(compose_stage("train_simulator", ("simulator=gru_small",)))
    plain = OmegaConf.to_container(compose_stage("train_simulator", ()))
    assert small["simulator"]["model"]["prior_smoothing"] == 200.0
    assert plain["simulator"]["model"]["prior_smoothing"] == 10.0
    assert small["simulator"]["exit_calibration"] == {}
    assert plain["simulator"]["exit_calibration"] is None
    small["simulator"]["model"]["prior_smoothing"] = 10.0
    small["simulator"]["exit_calibration"] = None
    assert small == plain


def test_the_ga_sample_study_simulates_with_the_small_export_recipe() -> None:
    """The GA day is a small export: its study's worlds are ``gru_small``'s (weaker prior,
    calibrated exits and conversion), the other experiments keep theirs."""
    ga = OmegaConf.to_container(compose_stage("pipeline", ("experiment=ga_sample",)))
    small = OmegaConf.to_container(compose_stage("train_simulator", ("simulator=gru_small",)))
    assert ga["simulator"] == small["simulator"]
    intent = OmegaConf.to_container(compose_stage("pipeline", ("experiment=synthetic_intent",)))
    assert intent["simulator"]["exit_calibration"] is None


def test_the_latent_type_gru_study_is_the_intent_study_in_another_world() -> None:
    """``synthetic_intent_latent_gru`` trains and evaluates as ``synthetic_intent`` does (the
    same store, splits, agents, budgets and evaluation), so their figures compare; only the
    learned world (and where the run is written) differs."""
    intent = OmegaConf.to_container(
        compose_stage("pipeline", ("experiment=synthetic_intent",)), resolve=True
    )
    latent = OmegaConf.to_container(
        compose_stage("pipeline", ("experiment=synthetic_intent_latent_gru",)), resolve=True
    )
    assert latent["env"]["dynamics"] == "latent_gru"
    assert latent["simulator"]["latent_gru"] == {"types": 3, "trunk": "counted", "restarts": 3}
    assert latent["simulator"]["latent_class"] is None
    assert intent["env"]["dynamics"] == "latent_class"
    for cfg in (intent, latent):
        for key in ("experiment_name", "out_dir", "data_dir", "simulator_dir", "held_out_dir",
                    "eval_dir"):  # fmt: skip
            del cfg[key]
        del cfg["env"]["dynamics"]
        for key in ("latent_gru", "latent_class"):
            del cfg["simulator"][key]
    assert latent == intent
