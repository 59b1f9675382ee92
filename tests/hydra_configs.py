"""Compose the project's Hydra configs in tests, as the scripts' ``@hydra.main`` would."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import envs.config  # noqa: F401  (the typed env schema, as the scripts register it)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_cfg(name: str, overrides: list[str]) -> DictConfig:
    """The config ``configs/<name>.yaml`` with command-line style ``overrides``."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=overrides)


def prepare_synthetic(out: Path, *overrides: str) -> Path:
    """A small prepared synthetic dataset in ``out`` (``prepare_data`` overrides appended)."""
    from scripts.prepare_data import run

    run(
        compose_cfg(
            "prepare_data", ["data=synthetic", f"out_dir={out}", "show_progress=false", *overrides]
        )
    )
    return out


TINY_RUN = (
    # the smallest run folder that has every artefact the web app reads: the synthetic store
    # (50 pages), a small GRU trained one epoch, tables (organic, greedy, value iteration) and a
    # PPO trained one rollout (an SB3 policy), evaluated on a few hundred sessions
    "data.n_sessions=2000",
    "data.n_pages=50",
    "simulator.model.hidden_size=16",
    "simulator.model.embedding_dim=8",
    "simulator.trainer.epochs=1",
    "simulator.baselines.tune_on_valid=false",
    "agents=[organic,greedy,value_iteration,ppo]",
    "learning_agents=[ppo]",
    "++agent_overrides.ppo.total_timesteps=512",
    "++agent_overrides.ppo.n_envs=8",
    "++agent_overrides.ppo.eval_every=0",
    "++agent_overrides.ppo.eval_sessions=256",
    "++agent_overrides.ppo.verbose=false",
    "++agent_overrides.ppo.hyperparams.batch_size=256",
    "held_out=false",
    "n_sessions=300",
    "n_visitors=256",
    "agent_eval_sessions=256",
    "eval_seeds=[0]",
    "show_progress=false",
    "jobs=1",  # in this process (tests that kill a stage count its writes here)
)


def tiny_run(out: Path, *overrides: str) -> Path:
    """A complete pipeline run folder in ``out`` (``scripts/pipeline.py``), as small as it gets
    (:data:`TINY_RUN`; seconds); ``overrides`` appended."""
    from scripts.parallel import one_torch_thread
    from scripts.pipeline import run

    # one intra-op thread: on a busy 2-core machine torch's thread pool spins against the
    # other jobs, and these tensors are tiny (measured: evaluation 40 s with 2 threads, 2 s
    # with one, load average 5)
    with one_torch_thread():
        run(compose_cfg("pipeline", [f"out_dir={out}", *TINY_RUN, *overrides]))
    return out


def reseal(folder: Path) -> None:
    """Write a new manifest for a published run folder a test changed on purpose, keeping its
    stage, configuration hash and inputs (``clickstream.runfolder.seal``)."""
    from clickstream.runfolder import read_manifest, seal

    old = read_manifest(folder)
    seal(
        folder,
        old.stage,
        config_hash=old.config_hash,
        inputs=old.inputs,
        data_fingerprint=old.data_fingerprint,
    )
