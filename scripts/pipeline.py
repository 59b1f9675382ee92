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

It says what it does as it goes: the device and the click model once, a numbered header per
stage (``[2/5] visitor model (GRU) -> runs/default/data/simulator``) ending with ``ran`` or
``reused`` and the time it took, one line per agent, the report, and at the end where the
report, ``results.json`` and the charts are and the commands that open the web app and
TensorBoard on this run. An agent whose time limit (``max_minutes``) cut its training short
stops the pipeline with status 3 unless ``allow_truncated=true``; then the report marks it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
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
    """Run the stages, saying what each does; returns what each did (``ran`` or ``reused``),
    their records, and ``seconds`` (per stage and ``total``)."""
    data_dir = Path(cfg.data_dir)
    report: dict[str, Any] = {"stages": {}, "seconds": {}}
    progress = Stages(4 + bool(cfg.held_out), report)
    _introduce(cfg)

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
    with progress.stage("prepare_data", f"data ({cfg.data.name})", data_dir):
        if fresh:
            report["stages"]["prepare_data"] = "reused"
        else:
            meta = prepare_data.run(prepare_cfg)
            report["stages"]["prepare_data"] = "ran"
        report["prepare_data"] = meta
        _say(format_summary(meta))
        # the reward is settled from the data before anything trains (no revenue: engagement)
        reward, note = choose_reward(meta, cfg.env.reward, key="env.reward", data_dir=data_dir)
        if note:
            _say(f"note: {note}")
        cfg.env.reward = reward
        report["reward"] = {"reward": reward, "notice": note}
        _say(f"reward: {reward}")

    simulators = [("train_simulator", Path(cfg.simulator_dir), int(cfg.seed))]
    if cfg.held_out:
        simulators.append(("held_out_simulator", Path(cfg.held_out_dir), int(cfg.seed) + 1))
    for stage, sim_dir, seed in simulators:
        with progress.stage(stage, _model_title(cfg, stage, seed), sim_dir):
            fresh_sim, metrics = _simulator_stage(cfg, meta, data_dir, sim_dir, seed, fresh)
            report["stages"][stage] = "reused" if fresh_sim else "ran"
            report[stage] = metrics
            _say(_metrics_table(metrics))
        if stage == "train_simulator":
            fresh = fresh_sim
            simulator_made = metrics.get("created_utc")

    agents_ran = False
    report["agents"] = {}
    report["truncated"] = {}
    names = [*cfg.agents, *cfg.references]
    with progress.stage("train_agents", _agents_title(cfg, names), Path(cfg.out_dir) / "agents"):
        for name in names:
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
                start = time.perf_counter()
                if up_to_date:
                    report["agents"][key] = "reused"
                else:
                    if cfg.show_progress:
                        _say(f"{name} · seed {seed}: training")
                    record = train.run(train_cfg)
                    report["agents"][key] = "ran"
                    agents_ran = True
                assert record is not None
                _say(_agent_line(name, seed, report["agents"][key], record, start))
                _check_truncated(cfg, name, record, Path(train_cfg.agent_dir), report)
        _check_others_truncated(cfg, report)
        report["stages"]["train_agents"] = "ran" if agents_ran else "reused"

    eval_cfg = _eval_cfg(cfg)
    results = _read_json(Path(cfg.eval_dir) / "results.json")
    with progress.stage("evaluate", _evaluate_title(cfg, names), Path(cfg.eval_dir)):
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
    report["seconds"]["total"] = time.perf_counter() - progress.start
    return report


class Stages:
    """Numbered stage headers (``[2/5] visitor model (GRU) -> <folder>``), each ended by a
    line saying whether it ran or was reused and how long it took (also kept in
    ``report["seconds"]``)."""

    def __init__(self, total: int, report: dict[str, Any]) -> None:
        self.total, self.done, self.report = total, 0, report
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, key: str, title: str, target: Path) -> Iterator[None]:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title} -> {show_path(target)}", flush=True)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.report["seconds"][key] = seconds
        status = self.report["stages"].get(key, "ran")
        how = "reused (up to date)" if status == "reused" else "ran"
        print(f"      {how} in {duration(seconds)}", flush=True)


def _say(text: str) -> None:
    """Print under the current stage header (indented, flushed: progress bars interleave)."""
    print("\n".join(f"      {line}" if line else "" for line in text.splitlines()), flush=True)


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def show_path(path: str | Path) -> str:
    """A path as a person would type it here: relative to the working directory when it is
    inside it, else absolute; quoted for the shell when it needs to be."""
    full = Path(path).resolve()
    rel = os.path.relpath(full)
    return shlex.quote(rel if not rel.startswith("..") else str(full))


def _introduce(cfg: DictConfig) -> None:
    """What the whole run uses, said once: where it writes, the device, the click model."""
    import torch

    from envs.click_model import describe_click_model
    from envs.training import resolve_device

    device = resolve_device(str(cfg.device))
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        where = f"{device} ({name}), {torch.get_num_threads()} CPU threads beside it"
    else:
        threads = torch.get_num_threads()
        where = f"cpu ({threads} torch thread{'s' * (threads != 1)})"
    print(f"NextPage main job: {cfg.experiment_name} -> {show_path(cfg.out_dir)}", flush=True)
    print(f"device: {where}")
    print(f"click model: {describe_click_model(cfg.env.click_model, cfg.env.click_params)}")
    print(f"learned world: {cfg.env.dynamics} visitor model; seed {cfg.seed}", flush=True)


def _model_title(cfg: DictConfig, stage: str, seed: int) -> str:
    kind = "GRU, latent classes" if cfg.simulator.get("latent_class") is not None else "GRU"
    if stage == "held_out_simulator":
        return f"held-out visitor model ({kind}, seed {seed})"
    return f"visitor model ({kind})"


def _metrics_table(metrics: dict[str, Any]) -> str:
    if "table" in metrics:
        return str(metrics["table"])
    from envs.metrics import format_table

    return format_table(metrics["models"], metrics["report"])


def _agents_title(cfg: DictConfig, names: list[str]) -> str:
    learning = [n for n in names if n in cfg.learning_agents]
    seeds = list(cfg.seeds)
    trained = f"; {', '.join(learning)} on seed{'s' * (len(seeds) != 1)} " + ", ".join(
        str(s) for s in seeds
    )
    return f"agents ({len(names)} policies{trained if learning else ''})"


def _agent_line(name: str, seed: int, status: str, record: dict[str, Any], start: float) -> str:
    """``ppo · seed 0: ran in 1 min 35 s, 1,000,000 steps, 48.2 in the learned world``."""
    if status == "reused":
        text = f"{name} · seed {seed}: reused"
    else:
        text = f"{name} · seed {seed}: ran in {duration(time.perf_counter() - start)}"
    fit = record.get("fit") or {}
    if isinstance(fit.get("steps"), int):
        text += f", {fit['steps']:,} steps"
    ret = (record.get("eval_learned") or {}).get("eval/mean_return")
    if ret is not None:
        text += f", mean return {ret:,.3f} in the learned world"
    return text


def _check_truncated(
    cfg: DictConfig, name: str, record: dict[str, Any], agent_dir: Path, report: dict[str, Any]
) -> None:
    """A time limit cut this agent short: stop (status 3), or with ``allow_truncated`` say so
    and go on (the report marks it)."""
    cut = train.truncation(record)
    if cut is None:
        return
    key = f"{name}/seed_{record.get('seed')}"
    report["truncated"][key] = cut
    if not cfg.allow_truncated:
        raise train.TrainingTruncated(
            f"{key} was stopped by its time limit (agent_overrides.{name}.max_minutes="
            f"{cut['max_minutes']}) after {train.reached(cut)} steps, so its result depends on how "
            "busy the machine was. Remove the limit, or go on with this truncated agent with "
            "allow_truncated=true (the report then marks it truncated)",
            file=str(agent_dir / "run.json"),
        )
    _say(f"TRUNCATED: {key} after {train.reached(cut)} steps (allow_truncated=true: kept, marked)")


def _check_others_truncated(cfg: DictConfig, report: dict[str, Any]) -> None:
    """Policies trained outside the pipeline (``scripts/train.py``) are evaluated too: one a
    time limit cut short stops the run as the pipeline's own would."""
    agents_dir = Path(cfg.out_dir) / "agents"
    for name, info in evaluate.training_info(agents_dir).items():
        for run_ in info["training"]:
            key = f"{name}/seed_{run_['seed']}"
            if not run_["truncated"] or key in report["truncated"]:
                continue
            cut = {k: run_[k] for k in ("steps", "budget_steps")}
            report["truncated"][key] = cut
            if not cfg.allow_truncated:
                raise train.TrainingTruncated(
                    f"{key}, trained outside the pipeline and evaluated with the rest, was "
                    f"stopped by its time limit after {train.reached(cut)} steps. Retrain it "
                    "without the limit, remove its folder, or go on with allow_truncated=true "
                    "(the report then marks it truncated)",
                    file=str(agents_dir / name / f"seed_{run_['seed']}" / "run.json"),
                )
            _say(f"TRUNCATED: {key} after {train.reached(cut)} steps (allow_truncated=true)")


def _evaluate_title(cfg: DictConfig, names: list[str]) -> str:
    worlds = ["learned"]
    if cfg.held_out:
        worlds.append("held-out")
    if (Path(cfg.data_dir) / "true_model.npz").is_file():
        worlds.append("ground truth")
    seeds = len(cfg.eval_seeds)
    return (
        f"evaluation ({len(names)} policies in {len(worlds)} world"
        f"{'s' * (len(worlds) != 1)}: {', '.join(worlds)}; {seeds} seed{'s' * (seeds != 1)})"
    )


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
            "label": "GRU (held-out)" if sim_dir == Path(cfg.held_out_dir) else "GRU (main)",
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
            # the pipeline checks truncation itself (reused agents too), naming its own keys
            "allow_truncated": True,
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


def what_next(cfg: DictConfig, report: dict[str, Any]) -> list[str]:
    """The closing lines: time taken, any truncated agent, where the outputs are, and the
    commands that open the web app and TensorBoard on this run."""
    eval_dir = Path(cfg.eval_dir)
    out_dir = show_path(cfg.out_dir)
    lines = [f"Done in {duration(report['seconds'].get('total', 0.0))}."]
    for key, cut in report.get("truncated", {}).items():
        lines.append(
            f"TRUNCATED: {key} stopped by its time limit after {train.reached(cut)} steps "
            "(allow_truncated=true); the report marks it."
        )
    width = 13
    lines += [
        f"  {'report':<{width}} {show_path(eval_dir / 'results.md')}",
        f"  {'results':<{width}} {show_path(eval_dir / 'results.json')}",
    ]
    charts = sorted(eval_dir.glob("*.png"))
    for i, chart in enumerate(charts):
        lines.append(f"  {'charts' if i == 0 else '':<{width}} {show_path(chart)}")
    lines += [
        f"  {'web app':<{width}} python {show_path(Path(__file__).with_name('serve.py'))} "
        f"run_dir={out_dir}",
        # training curves: the visitor models' (<model>/tensorboard) and the agents' (their
        # folders), all under the run folder
        f"  {'TensorBoard':<{width}} tensorboard --logdir {out_dir}",
    ]
    return lines


@hydra.main(version_base="1.3", config_path="../configs", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    report = run_or_exit(run, cfg)
    print(f"\n{Path(cfg.eval_dir, 'results.md').read_text(encoding='utf-8')}")
    print("\n".join(what_next(cfg, report)), flush=True)


if __name__ == "__main__":
    sys.argv[1:] = hydra_argv(sys.argv[1:])
    main()
