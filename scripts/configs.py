"""Stage configs composed by Hydra from ``configs/``, as each script's ``@hydra.main`` would.

The pipeline builds every stage's config with :func:`compose_stage` (the stage script's own
primary config, its groups and defaults) and then hands it the values it shares with the
pipeline (:func:`share`), so no stage's keys are copied out by hand.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from clickstream.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_stage(name: str, overrides: Iterable[str] = ()) -> DictConfig:
    """``configs/<name>.yaml`` composed with command-line style ``overrides``.

    Inside a running Hydra app (``@hydra.main``) its config search path is used; elsewhere
    (tests, a notebook) ``configs/`` is initialised for the call.
    """
    return copy.deepcopy(_composed(name, tuple(overrides)))


@functools.lru_cache(maxsize=256)
def _composed(name: str, overrides: tuple[str, ...]) -> DictConfig:
    # composing costs ~0.15 s and a pipeline composes every agent's stage the same way
    if GlobalHydra.instance().is_initialized():
        return compose(name, overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def share(stage: DictConfig, source: DictConfig, skip: Iterable[str] = ()) -> DictConfig:
    """``stage`` with ``source``'s value for every top-level key both have (``skip`` left
    alone: keys whose meaning differs between the two configs): a plain value resolved in
    ``source``, a group (``data``, ``simulator``, ``env``, ...) as written, so that its
    interpolations resolve in ``stage``."""
    skip = set(skip)
    with open_dict(stage):
        for key in list(stage.keys()):
            if key in skip or key not in source or key == "hydra":
                continue
            node = source._get_node(str(key))
            if isinstance(node, DictConfig | ListConfig):
                # a group's own interpolations (``simulator.trainer.seed: ${seed}``) resolve
                # in the stage: the held-out model's seed is the stage's seed, not the run's
                stage[key] = OmegaConf.to_container(node, resolve=False)
            else:  # a value (``data_dir: ${out_dir}/data``) means what it means in the run
                stage[key] = OmegaConf.select(source, str(key))
    return stage


def set_values(stage: DictConfig, values: Mapping[str, Any]) -> DictConfig:
    """``stage`` with ``values`` set (new keys allowed): what a stage owns in a run folder."""
    with open_dict(stage):
        for key, value in values.items():
            stage[key] = value
    return stage


def with_agent_overrides(cfg: DictConfig, cli: Iterable[str] | None = None) -> DictConfig:
    """A ``configs/train.yaml`` config whose ``agent`` has ``agent_overrides[agent.name]``
    merged in (an experiment's settings for that agent), and no ``agent_overrides`` left:
    ``train.py experiment=X agent=ppo`` trains the PPO that ``pipeline.py experiment=X`` does.

    The command line wins: ``cli`` (the run's command-line overrides; ``None``: Hydra's task
    overrides when a Hydra app is running, else none) names the ``agent.*`` keys the user set,
    and they are applied again on top of the experiment's settings, so that
    ``experiment=synthetic_markov agent=ppo agent.total_timesteps=20000`` trains 20,000 steps
    while the experiment's other settings for PPO still apply."""
    overrides = cfg.get("agent_overrides") or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"agent_overrides must map agent names to settings, got {overrides!r}")
    mine = overrides.get(cfg.agent.name)
    out = cfg.copy()
    with open_dict(out):
        if mine:  # may add keys the agent's file leaves to the class's defaults
            agent = cfg.agent.copy()
            OmegaConf.set_struct(agent, False)
            agent = OmegaConf.merge(agent, mine)
            OmegaConf.set_struct(agent, False)
            for key, value, delete in command_line_agent_keys(cli, cfg.agent):
                if delete:
                    parent, _, leaf = key.rpartition(".")
                    node = OmegaConf.select(agent, parent) if parent else agent
                    if isinstance(node, DictConfig) and leaf in node:
                        node.pop(leaf)
                else:  # a dict value merges into the experiment's, as Hydra merges it
                    OmegaConf.update(agent, key, value, merge=True, force_add=True)
            out.agent = agent
        out.pop("agent_overrides", None)
    return out


def command_line_agent_keys(
    cli: Iterable[str] | None, agent: DictConfig
) -> list[tuple[str, Any, bool]]:
    """``(key, value, deleted)`` for each ``agent.*`` key of the command-line overrides ``cli``
    (``None``: the running Hydra app's task overrides, or none outside one), keys relative to
    ``agent``; a sweep's value is read from ``agent``, where Hydra has already put this job's."""
    if cli is None:
        from hydra.core.hydra_config import HydraConfig

        cli = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for override in OverridesParser.create().parse_overrides(list(cli)):
        key = override.key_or_group
        if not key.startswith("agent.") or override.package is not None:
            continue
        key = key[len("agent.") :]
        if override.is_delete():
            out.append((key, None, True))
        elif override.is_sweep_override():
            value = OmegaConf.select(agent, key)
            plain = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
            out.append((key, plain, False))
        else:
            out.append((key, override.value(), False))
    return out


def agent_settings(
    name: str, agent_overrides: str = "none", extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An agent's keyword arguments as ``scripts/train.py`` builds them: ``configs/agent/<name>``
    with ``configs/agent_overrides/<agent_overrides>``'s settings for it, and ``extra``, merged
    in; ``_target_`` left out (for benchmarks and studies that construct the agent)."""
    cfg = with_agent_overrides(
        compose_stage("train", [f"agent={name}", f"agent_overrides={agent_overrides}"])
    )
    agent = cfg.agent
    if extra:
        OmegaConf.set_struct(agent, False)
        agent = OmegaConf.merge(agent, dict(extra))
    out = OmegaConf.to_container(agent, resolve=True)
    assert isinstance(out, dict)
    out.pop("_target_", None)
    return out
