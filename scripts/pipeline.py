"""Run every stage on one dataset into one run folder, reusing stages that are up to date.

    python scripts/pipeline.py                                   # the embedded synthetic store
    python scripts/pipeline.py experiment=synthetic_markov       # a study experiment
    python scripts/pipeline.py experiment=msnbc out_dir=runs/x   # anywhere
    python scripts/pipeline.py force=true                        # rerun every stage

Stages: ``prepare_data`` (-> ``<out_dir>/data``), ``train_simulator`` (-> ``data/simulator``),
the held-out visitor model (-> ``data/simulator_held_out``, seed + 1), one ``train`` per agent
and seed (-> ``agents/<name>/seed_<S>``) and ``evaluate`` (-> ``eval``: ``results.json``,
``results.md``, charts). A stage is skipped when its outputs exist and were made from the same
configuration and the same inputs (its record says so); otherwise it runs, and every stage that
reads its outputs runs too. See ``configs/pipeline.yaml``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from clickstream.prepare import choose_reward, format_summary
from scripts import evaluate, hydra_argv, prepare_data, run_or_exit, train, train_simulator

PREPARE_KEYS = ("data", "split", "repeats", "stats_split", "seed")
"""Settings that change the prepared data (``show_progress`` and paths do not)."""

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stages; returns what each did (``ran`` or ``reused``) and their records."""
    data_dir = Path(cfg.data_dir)
    report: dict[str, Any] = {"stages": {}}

    prepare_cfg = OmegaConf.create(
        {
            **{k: cfg[k] for k in PREPARE_KEYS},
            "paths": cfg.paths,
            "out_dir": str(data_dir),
            "show_progress": cfg.show_progress,
        }
    )
    wanted = _plain(prepare_cfg, PREPARE_KEYS)
    meta = _read_json(data_dir / "meta.json")
    fresh = (
        not cfg.force
        and meta is not None
        and _plain(meta.get("config", {}), PREPARE_KEYS) == wanted
    )
    if fresh:
        report["stages"]["prepare_data"] = "reused"
    else:
        meta = prepare_data.run(prepare_cfg)
        report["stages"]["prepare_data"] = "ran"
    report["prepare_data"] = meta
    # the reward is settled from the data before anything trains (no revenue: engagement)
    reward, note = choose_reward(meta, cfg.env.reward, key="env.reward", data_dir=data_dir)
    if note:
        print(f"note: {note}", flush=True)
    cfg.env.reward = reward
    report["reward"] = {"reward": reward, "notice": note}

    simulators = [("train_simulator", Path(cfg.simulator_dir), int(cfg.seed))]
    if cfg.held_out:
        simulators.append(("held_out_simulator", Path(cfg.held_out_dir), int(cfg.seed) + 1))
    for stage, sim_dir, seed in simulators:
        fresh_sim, metrics = _simulator_stage(cfg, meta, data_dir, sim_dir, seed, fresh)
        report["stages"][stage] = "reused" if fresh_sim else "ran"
        report[stage] = metrics
        if stage == "train_simulator":
            fresh = fresh_sim
            simulator_made = metrics.get("created_utc")

    agents_ran = False
    report["agents"] = {}
    for name in [*cfg.agents, *cfg.references]:
        seeds = list(cfg.seeds) if name in cfg.learning_agents else [int(cfg.seed)]
        for seed in seeds:
            train_cfg = _agent_cfg(cfg, name, seed)
            record = _read_json(Path(train_cfg.agent_dir) / "run.json")
            up_to_date = (
                fresh
                and not cfg.force
                and record is not None
                and record.get("simulator_created_utc") == simulator_made
                and _same(record.get("config", {}), train_cfg, ("agent", "env", "seed"))
            )
            key = f"{name}/seed_{seed}"
            if up_to_date:
                report["agents"][key] = "reused"
                continue
            record = train.run(train_cfg)
            report["agents"][key] = "ran"
            agents_ran = True
    report["stages"]["train_agents"] = "ran" if agents_ran else "reused"

    eval_cfg = _eval_cfg(cfg)
    results = _read_json(Path(cfg.eval_dir) / "results.json")
    if (
        not agents_ran
        and not cfg.force
        and results is not None
        and _same(results.get("config", {}), eval_cfg, EVAL_KEYS)
        # policies trained outside the pipeline (scripts/train.py) count too
        and results.get("policies")
        == evaluate.policy_stamps(Path(cfg.out_dir) / "agents", eval_cfg.get("policies"))
    ):
        report["stages"]["evaluate"] = "reused"
        report["evaluate"] = results
    else:
        report["evaluate"] = evaluate.run(eval_cfg)
        report["stages"]["evaluate"] = "ran"
    return report


EVAL_KEYS = ("env", "n_sessions", "world_sessions", "seeds", "n_visitors")


def _simulator_stage(
    cfg: DictConfig, meta: dict, data_dir: Path, sim_dir: Path, seed: int, fresh: bool
) -> tuple[bool, dict[str, Any]]:
    train_cfg = OmegaConf.create(
        {
            "simulator": cfg.simulator,
            "paths": cfg.paths,
            "data_dir": str(data_dir),
            "out_dir": str(sim_dir),
            "resume": False,
            "device": cfg.device,
            "seed": seed,
            "show_progress": cfg.show_progress,
        }
    )
    metrics = _read_json(sim_dir / "metrics.json")
    fresh = (
        fresh
        and metrics is not None
        and (sim_dir / "model.pt").is_file()
        and _plain(metrics.get("config", {}), ("simulator",)) == _plain(train_cfg, ("simulator",))
        and metrics.get("seed") == seed
        and metrics.get("dataset_created_utc") == meta.get("created_utc")
    )
    if not fresh:
        metrics = train_simulator.run(train_cfg)
    return fresh, metrics


def _agent_cfg(cfg: DictConfig, name: str, seed: int) -> DictConfig:
    """``configs/train.yaml`` for one agent and seed, from the pipeline's settings."""
    path = CONFIGS / "agent" / f"{name}.yaml"
    if not path.is_file():
        from clickstream.errors import ClickstreamError

        raise ClickstreamError(f"no agent config named {name!r}", file=str(path))
    agent = OmegaConf.load(path)
    overrides = (cfg.get("agent_overrides") or {}).get(name)
    if overrides:
        agent = OmegaConf.merge(agent, overrides)
    out = OmegaConf.create(
        {
            "paths": cfg.paths,
            "env": cfg.env,
            "agent": agent,
            "experiment_name": cfg.experiment_name,
            "out_dir": cfg.out_dir,
            "data_dir": cfg.data_dir,
            "simulator_dir": cfg.simulator_dir,
            "held_out_dir": cfg.held_out_dir if cfg.held_out else None,
            "agent_dir": f"{cfg.out_dir}/agents/{agent.name}/seed_{seed}",
            "seed": seed,
            "device": cfg.device,
            "eval_sessions": cfg.agent_eval_sessions,
            "num_threads": None,
            "show_progress": cfg.show_progress,
        }
    )
    return out


def _eval_cfg(cfg: DictConfig) -> DictConfig:
    return OmegaConf.create(
        {
            "paths": cfg.paths,
            "env": cfg.env,
            "experiment_name": cfg.experiment_name,
            "out_dir": cfg.out_dir,
            "data_dir": cfg.data_dir,
            "held_out_dir": cfg.held_out_dir if cfg.held_out else None,
            "eval_dir": cfg.eval_dir,
            "policies": None,
            "worlds": None,
            "n_sessions": cfg.n_sessions,
            "world_sessions": cfg.world_sessions,
            "seeds": cfg.eval_seeds,
            "n_visitors": cfg.n_visitors,
            "seed": cfg.seed,
            "device": cfg.device,
            "show_progress": cfg.show_progress,
        }
    )


def _same(recorded: dict, cfg: DictConfig, keys: tuple[str, ...]) -> bool:
    return _plain(recorded, keys) == _plain(cfg, keys)


COSMETIC_KEYS = frozenset({"show_progress", "verbose", "log_truth"})
"""Settings that change what a stage prints or logs, not what it makes: ignored when comparing
(``log_truth`` adds ground-truth curves to TensorBoard; the kept weights are the same).
Options set to null are ignored too: null means "the default", as if the option were not
there, so adding an option (null by default) does not make earlier outputs stale."""


def _plain(cfg: DictConfig | dict, keys: tuple[str, ...]) -> dict[str, Any]:
    """The resolved values of ``keys`` as plain data, for comparing configurations
    (:data:`COSMETIC_KEYS` and null options left out at every depth)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    return _comparable(json.loads(json.dumps({k: cfg.get(k) for k in keys}, default=str)))


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _comparable(v) for k, v in value.items() if k not in COSMETIC_KEYS and v is not None
        }
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@hydra.main(version_base="1.3", config_path="../configs", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    report = run_or_exit(run, cfg)
    stages = report["stages"]
    print(f"prepare_data ({stages['prepare_data']}): {cfg.data_dir}")
    print(format_summary(report["prepare_data"]))
    metrics = report["train_simulator"]
    print(f"\ntrain_simulator ({stages['train_simulator']}): {cfg.simulator_dir}")
    if "table" in metrics:
        print(metrics["table"])
    else:
        from envs.metrics import format_table

        print(format_table(metrics["models"], metrics["report"]))
    done = ", ".join(f"{k} ({v})" for k, v in report["agents"].items())
    print(f"\nagents: {done}")
    print(f"\nevaluate ({stages['evaluate']}): {cfg.eval_dir}/results.md\n")
    print(Path(cfg.eval_dir, "results.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.argv[1:] = hydra_argv(sys.argv[1:])
    main()
