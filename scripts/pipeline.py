"""Run every stage on one dataset into one run folder, reusing stages that are up to date.

    python scripts/pipeline.py                                   # the embedded synthetic store
    python scripts/pipeline.py experiment=synthetic_markov       # a study experiment
    python scripts/pipeline.py experiment=msnbc out_dir=runs/x   # anywhere
    python scripts/pipeline.py force=true                        # rerun every stage

Stages: ``prepare_data`` (-> ``<out_dir>/data``), ``train_simulator`` (-> ``data/simulator``),
the held-out visitor model (-> ``data/simulator_held_out``, seed + 1), one ``train`` per agent
and seed (-> ``agents/<name>/seed_<S>``) and ``evaluate`` (-> ``eval``: ``results.json``,
``results.md``, charts). Each stage publishes its folder with a manifest
(``clickstream/runfolder.py``). A stage is skipped when its folder's manifest verifies, records
the same configuration hash and names the current manifests of the folders it was made from
(for the data: the source files unchanged); otherwise it runs, and every stage made from its
outputs runs too. See ``configs/pipeline.yaml``.

It says what it does as it goes: the device and the click model once, a numbered header per
stage (``[2/5] visitor model (GRU) -> runs/default/data/simulator``) ending with ``ran`` or
``reused`` and the time it took, one line per agent, the report, and at the end where the
report, ``results.json`` and the charts are and the commands that open the web app and
TensorBoard on this run. An agent whose time limit (``max_minutes``) cut its training short
stops the pipeline with status 3 unless ``allow_truncated=true``; then the report marks it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from agents.base import policy_folders
from agents.site import WORLDS, check_ground_truth
from clickstream import checks
from clickstream.errors import ConfigError, RunFolderError
from clickstream.prepare import choose_reward, format_summary, source_changed
from clickstream.runfolder import (
    Manifest,
    config_hash,
    read_json,
    read_manifest,
    recover,
    recover_tree,
    verify_folder,
)
from scripts import evaluate, hydra_argv, prepare_data, run_or_exit, train, train_simulator
from scripts.configs import compose_stage, set_values, share, with_agent_overrides
from scripts.parallel import Done, resolve_jobs, submit, worker_pool

PREPARE_KEYS = prepare_data.CONFIG_KEYS
"""Settings that change the prepared data (``show_progress`` and paths do not)."""

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stages, saying what each does; returns what each did (``ran`` or ``reused``),
    their records, and ``seconds`` (per stage and ``total``).

    A stage is reused when its folder's manifest verifies (every file as published), records
    the same configuration hash and was made from the manifests its inputs have now
    (``clickstream/runfolder.py``); an interrupted publication is completed or undone first.
    ``report["why"]`` says, per stage that ran, why its output could not be reused.
    """
    check_settings(cfg)  # before any stage: a bad one found after training wastes the training
    data_dir = Path(cfg.data_dir)
    report: dict[str, Any] = {"stages": {}, "seconds": {}, "why": {}}
    report["recovered"] = recover(data_dir) + recover_tree(cfg.out_dir)
    progress = Stages(4, report)
    _introduce(cfg)

    prepare_cfg = _prepare_cfg(cfg)
    data, why = _reusable(
        cfg,
        data_dir,
        "prepare_data",
        _hash(prepare_cfg, PREPARE_KEYS),
        {},
        check=lambda m: source_changed(m.record.get("source")),
    )
    with progress.stage("prepare_data", f"data ({cfg.data.name})", data_dir):
        if data is not None:
            report["stages"]["prepare_data"] = "reused"
            meta = read_json(data_dir / "meta.json", "the dataset's meta.json")
        else:
            report["why"]["prepare_data"] = why
            meta = prepare_data.run(prepare_cfg)
            report["stages"]["prepare_data"] = "ran"
            data = read_manifest(data_dir, "prepare_data")
        report["prepare_data"] = meta
        _say(format_summary(meta))
        # the reward is settled from the data before anything trains (no revenue: engagement)
        reward, note = choose_reward(meta, cfg.env.reward, key="env.reward", data_dir=data_dir)
        if note:
            _say(f"note: {note}")
        cfg.env.reward = reward
        report["reward"] = {"reward": reward, "notice": note}
        _say(f"reward: {reward}")
        if _needs_ground_truth(cfg):  # before anything trains: it refused after every agent
            check_ground_truth(data_dir)

    jobs = resolve_jobs(cfg.jobs)
    with worker_pool(jobs) as pool:
        _simulators(cfg, data.digest, report, progress, pool)
        _agents(cfg, report, progress, pool)
        _evaluation(cfg, report, progress, pool)
    report["seconds"]["total"] = time.perf_counter() - progress.start
    return report


def check_settings(cfg: DictConfig) -> None:
    """Refuse settings the stages would trip over late, or ignore: each error names its key.

    ``seeds`` and ``eval_seeds`` must be non-empty lists of distinct seeds (an empty list
    trained and evaluated nothing, a repeated seed was counted twice); every agent named in
    ``agents``, ``references``, ``learning_agents`` and ``agent_overrides`` must have a
    ``configs/agent/<name>.yaml`` (a typo was ignored, or found after the data and the
    visitor model were built); ``out_dir`` must be a folder this process can write.

    Raises:
        ConfigError: The first setting that is not so.
    """
    for key in ("seeds", "eval_seeds"):
        value = OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key} must be a non-empty list of seeds, got {value!r}")
        seeds = [checks.seed(f"{key}[{i}]", s) for i, s in enumerate(value)]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{key} must not repeat a seed (each would count twice), got {seeds}")
    known = sorted(f.stem for f in (CONFIGS / "agent").glob("*.yaml"))
    overrides = cfg.get("agent_overrides") or {}
    for key, names in (
        ("agents", cfg.agents),
        ("references", cfg.references),
        ("learning_agents", cfg.learning_agents),
        ("agent_overrides", list(overrides) if isinstance(overrides, Mapping) else []),
    ):
        unknown = [str(n) for n in names if str(n) not in known]
        if unknown:
            raise ConfigError(
                f"{key} names agents with no configs/agent/<name>.yaml: {unknown}; known: {known}"
            )
    worlds = cfg.get("worlds")
    if worlds is not None:
        named = [str(w) for w in worlds]
        if not named or any(w not in WORLDS for w in named):
            raise ConfigError(f"worlds must be null or a non-empty list of {WORLDS}, got {named}")
    out_dir = Path(cfg.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"out_dir cannot be a run folder here: {exc.strerror or exc}", file=str(out_dir)
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError("out_dir is not writable by this process", file=str(out_dir))


TRUTH_AGENTS = ("true_optimum", "intent_oracle")
"""Agents that plan in the ground truth (``configs/agent/<name>.yaml``)."""


def _needs_ground_truth(cfg: DictConfig) -> bool:
    """Whether the run builds the ground truth: the evaluation has the world (``worlds``:
    null, all the data has), or an agent plans in it."""
    worlds = cfg.get("worlds")
    named = {str(n) for n in [*cfg.agents, *cfg.references]}
    return worlds is None or "ground_truth" in worlds or bool(named & set(TRUTH_AGENTS))


def _call(fn: Callable[[DictConfig], dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """``fn(cfg)`` with the configuration rebuilt from plain data (in a worker process)."""
    return fn(OmegaConf.create(cfg))


def _job(
    pool: Executor | None, fn: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig
) -> Future:
    """Run a stage's ``run(cfg)`` here or in a worker (quietly: bars of parallel processes
    would overwrite each other; the pipeline says what finished)."""
    if pool is None:
        return submit(None, fn, cfg)
    plain = OmegaConf.to_container(cfg, resolve=False)  # resolved in the worker, after:
    assert isinstance(plain, dict)
    plain["show_progress"] = False
    return submit(pool, _call, fn, plain)


def _simulators(
    cfg: DictConfig,
    data_digest: str,
    report: dict[str, Any],
    progress: Stages,
    pool: Executor | None,
) -> None:
    """The learned world's visitor model and the held-out one (seed + 1): one stage, the two
    trained side by side when there are workers."""
    simulators = _simulator_specs(cfg)
    title = " and ".join(_model_title(cfg, stage, seed) for stage, _, seed in simulators)
    targets = [sim_dir for _, sim_dir, _ in simulators]
    stages = tuple(stage for stage, _, _ in simulators)
    with progress.stage("train_simulator", title, *targets, status_of=stages):
        futures = {}
        for stage, sim_dir, seed in simulators:
            train_cfg, metrics = _simulator_stage(cfg, data_digest, sim_dir, seed, report, stage)
            if metrics is not None:
                report["stages"][stage] = "reused"
                futures[stage] = Done(metrics)
            else:
                report["stages"][stage] = "ran"
                futures[stage] = _job(pool, train_simulator.run, train_cfg)
        for stage, sim_dir, _ in simulators:
            report[stage] = futures[stage].result()
            if len(simulators) > 1:
                _say(f"{show_path(sim_dir)} ({report['stages'][stage]}):")
            _say(_metrics_table(report[stage]))


def _agents(
    cfg: DictConfig, report: dict[str, Any], progress: Stages, pool: Executor | None
) -> None:
    """Every agent and training seed (the long trainings first when there are workers)."""
    agents_ran = False
    report["agents"] = {}
    report["truncated"] = {}
    names = [*cfg.agents, *cfg.references]
    with progress.stage("train_agents", _agents_title(cfg, names), Path(cfg.out_dir) / "agents"):
        jobs = [(name, seed, _agent_cfg(cfg, name, seed)) for name, seed in _agent_specs(cfg)]
        if pool is not None:  # the longest first, so that the last worker is not left alone
            jobs.sort(key=lambda job: job[0] not in cfg.learning_agents)
        futures: dict[str, tuple[Future, float]] = {}
        for name, seed, train_cfg in jobs:
            agent_dir = Path(train_cfg.agent_dir)
            inputs = train.stage_inputs(_container(train_cfg))
            wanted = _hash(train_cfg, train.CONFIG_KEYS)
            policy, why = _reusable(cfg, agent_dir, "train", wanted, inputs)
            key = f"{name}/seed_{seed}"
            if policy is not None:
                report["agents"][key] = "reused"
                futures[key] = (Done(read_json(agent_dir / "run.json", "run.json")), 0.0)
                continue
            report["why"][key] = why
            report["agents"][key] = "ran"
            agents_ran = True
            if cfg.show_progress and pool is None:
                _say(f"{name} · seed {seed}: training")
            futures[key] = (_job(pool, train.run, train_cfg), time.perf_counter())
        if pool is not None and agents_ran:
            running = [k for k, v in report["agents"].items() if v == "ran"]
            at_once = min(len(running), resolve_jobs(cfg.jobs))
            _say(f"training {', '.join(running)} ({at_once} at a time)")
        for name, seed, train_cfg in jobs:  # in the config's order, as each finishes
            key = f"{name}/seed_{seed}"
            future, start = futures[key]
            record = future.result()
            line = _agent_line(
                name, seed, report["agents"][key], record, start, int(cfg.agent_eval_sessions)
            )
            _say(line)
            _check_truncated(cfg, name, record, Path(train_cfg.agent_dir), report)
        _check_others_truncated(cfg, report)
        report["stages"]["train_agents"] = "ran" if agents_ran else "reused"


def _evaluation(
    cfg: DictConfig, report: dict[str, Any], progress: Stages, pool: Executor | None
) -> None:
    names = [*cfg.agents, *cfg.references]
    eval_cfg = _eval_cfg(cfg)
    # the run's own agents and seeds only: a folder left from an earlier run (another seed, an
    # agent since dropped) would be pooled into the report; said, not silently evaluated
    others = [
        f"{name}/seed_{seed}"
        for name, seeds in policy_folders(Path(cfg.out_dir) / "agents").items()
        for seed in seeds
        if seed not in (eval_cfg.policies.get(name) or [])
    ]
    report["not_evaluated"] = others
    inputs = evaluate.stage_inputs(_container(eval_cfg))
    wanted = _hash(eval_cfg, evaluate.CONFIG_KEYS)
    results, why = _reusable(cfg, Path(cfg.eval_dir), "evaluate", wanted, inputs)
    with progress.stage("evaluate", _evaluate_title(cfg, names), Path(cfg.eval_dir)):
        if others:
            _say(
                f"not evaluated (not among this run's agents and seeds): {', '.join(others)}; "
                f"`python scripts/evaluate.py out_dir={show_path(cfg.out_dir)}` evaluates "
                "every saved policy"
            )
        if results is not None:
            report["stages"]["evaluate"] = "reused"
            report["evaluate"] = read_json(Path(cfg.eval_dir) / "results.json", "results.json")
        else:
            report["why"]["evaluate"] = why
            report["evaluate"] = evaluate.run(eval_cfg, pool=pool)
            report["stages"]["evaluate"] = "ran"


class Stages:
    """Numbered stage headers (``[2/5] visitor model (GRU) -> <folder>``), each ended by a
    line saying whether it ran or was reused and how long it took (also kept in
    ``report["seconds"]``)."""

    def __init__(self, total: int, report: dict[str, Any]) -> None:
        self.total, self.done, self.report = total, 0, report
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def stage(
        self, key: str, title: str, *targets: Path, status_of: tuple[str, ...] = ()
    ) -> Iterator[None]:
        """A stage writing to ``targets``; it ``ran`` when any of the stages ``status_of``
        (default: ``key``) ran."""
        self.done += 1
        where = ", ".join(show_path(t) for t in targets)
        print(f"\n[{self.done}/{self.total}] {title} -> {where}", flush=True)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.report["seconds"][key] = seconds
        statuses = {self.report["stages"].get(k, "ran") for k in status_of or (key,)}
        status = "ran" if "ran" in statuses else "reused"
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
    from envs.core import resolve_device

    device = resolve_device(str(cfg.device))
    jobs = resolve_jobs(cfg.jobs)
    # each piece runs on one torch thread, in a worker or here (scripts/parallel.py)
    pieces = f"one torch thread per piece, {jobs} piece{'s' * (jobs != 1)} at a time"
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)}), {pieces}"
    else:
        where = f"cpu ({pieces})"
    print(f"NextPage main job: {cfg.experiment_name} -> {show_path(cfg.out_dir)}", flush=True)
    print(f"device: {where}")
    print(f"click model: {describe_click_model(cfg.env.click_model, cfg.env.click_params)}")
    print(f"learned world: {cfg.env.dynamics} visitor model; seed {cfg.seed}", flush=True)


def _model_title(cfg: DictConfig, stage: str, seed: int) -> str:
    from envs import visitors

    kind = ", ".join(k.title for k in visitors.trained_kinds(cfg.simulator))
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


def _agent_line(
    name: str, seed: int, status: str, record: dict[str, Any], start: float, asked: int
) -> str:
    """``ppo · seed 0: ran in 1 min 35 s, 1,000,000 steps, mean return 48.200 over 4,096
    sessions in the learned world``; a reused agent's score says when it was measured on
    another number of sessions than ``asked`` (``agent_eval_sessions``, which does not make
    an agent retrain)."""
    if status == "reused":
        text = f"{name} · seed {seed}: reused"
    else:
        # the worker's own training time: waiting for a free worker is not the agent's
        seconds = record.get("fit_seconds", time.perf_counter() - start)
        text = f"{name} · seed {seed}: ran in {duration(float(seconds))}"
    fit = record.get("fit") or {}
    if isinstance(fit.get("steps"), int):
        text += f", {fit['steps']:,} steps"
    ret = (record.get("eval_learned") or {}).get("eval/mean_return")
    if ret is not None:
        n = (record.get("config") or {}).get("eval_sessions")
        over = f" over {n:,} sessions" if isinstance(n, int) else ""
        text += f", mean return {ret:,.3f}{over} in the learned world"
        if isinstance(n, int) and n != asked:
            text += (
                f" (its closing evaluation when trained; agent_eval_sessions={asked} applies "
                "to agents trained anew)"
            )
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
    asked = cfg.get("worlds")
    worlds = []
    if asked is None or "learned" in asked:
        worlds.append("learned")
    if cfg.held_out and (asked is None or "held_out" in asked):
        worlds.append("held-out")
    if (Path(cfg.data_dir) / "true_model.npz").is_file() and (
        asked is None or "ground_truth" in asked
    ):
        worlds.append("ground truth")
    seeds = len(cfg.eval_seeds)
    return (
        f"evaluation ({len(names)} policies in {len(worlds)} world"
        f"{'s' * (len(worlds) != 1)}: {', '.join(worlds)}; {seeds} seed{'s' * (seeds != 1)})"
    )


def _simulator_stage(
    cfg: DictConfig,
    data_digest: str,
    sim_dir: Path,
    seed: int,
    report: dict[str, Any],
    stage: str,
) -> tuple[DictConfig, dict[str, Any] | None]:
    """The visitor model's training config, and its metrics when its folder can be reused."""
    train_cfg = _simulator_cfg(cfg, sim_dir, seed)
    wanted = _hash(train_cfg, train_simulator.CONFIG_KEYS)
    folder, why = _reusable(cfg, sim_dir, "train_simulator", wanted, {"data": data_digest})
    if folder is not None:
        # an interrupted run's work folder is of no use beside an up-to-date simulator
        shutil.rmtree(train_simulator.work_dir(sim_dir), ignore_errors=True)
        return train_cfg, read_json(sim_dir / "metrics.json", "the simulator's metrics.json")
    report["why"][stage] = why
    return train_cfg, None


def _reusable(
    cfg: DictConfig,
    folder: Path,
    stage: str,
    wanted_hash: str,
    inputs: dict[str, str | None],
    check: Callable[[Manifest], str | None] | None = None,
) -> tuple[Manifest | None, str]:
    """The manifest of a stage folder that can be reused, else ``None`` and why not."""
    if cfg.force:
        return None, "force=true"
    try:
        manifest = verify_folder(folder, stage)
    except RunFolderError as exc:
        return None, str(exc).split("; remake it with")[0]
    if manifest.config_hash != wanted_hash:
        return None, "its configuration changed"
    wanted = {k: v for k, v in inputs.items() if v is not None}
    if manifest.inputs != wanted:
        changed = sorted(
            k for k in set(wanted) | set(manifest.inputs) if wanted.get(k) != manifest.inputs.get(k)
        )
        return None, "made from other inputs: " + ", ".join(changed)
    problem = check(manifest) if check is not None else None
    if problem:
        return None, problem
    return manifest, ""


def _container(cfg: DictConfig) -> dict[str, Any]:
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def _hash(cfg: DictConfig, keys: tuple[str, ...]) -> str:
    return config_hash(_container(cfg), keys)


def stage_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """Every stage's config of a pipeline config, by stage (``agents/<name>/seed_<S>`` per
    agent and training seed), as :func:`run` builds them."""
    out = {"prepare_data": _prepare_cfg(cfg)}
    for stage, sim_dir, seed in _simulator_specs(cfg):
        out[stage] = _simulator_cfg(cfg, sim_dir, seed)
    for name, seed in _agent_specs(cfg):
        out[f"agents/{name}/seed_{seed}"] = _agent_cfg(cfg, name, seed)
    out["evaluate"] = _eval_cfg(cfg)
    return out


def _simulator_specs(cfg: DictConfig) -> list[tuple[str, Path, int]]:
    """``(stage, folder, seed)`` of the learned world's visitor model and the held-out one."""
    specs = [("train_simulator", Path(cfg.simulator_dir), int(cfg.seed))]
    if cfg.held_out:
        specs.append(("held_out_simulator", Path(cfg.held_out_dir), int(cfg.seed) + 1))
    return specs


def _agent_specs(cfg: DictConfig) -> list[tuple[str, int]]:
    """``(agent, seed)`` of every training: learning agents once per seed in ``seeds``."""
    return [
        (name, seed)
        for name in [*cfg.agents, *cfg.references]
        for seed in (list(cfg.seeds) if name in cfg.learning_agents else [int(cfg.seed)])
    ]


def _prepare_cfg(cfg: DictConfig) -> DictConfig:
    """``configs/prepare_data.yaml`` with the pipeline's shared values, into ``data_dir``."""
    return set_values(
        share(compose_stage("prepare_data"), cfg, skip=("out_dir",)),
        {"out_dir": str(cfg.data_dir)},
    )


def _simulator_cfg(cfg: DictConfig, sim_dir: Path, seed: int) -> DictConfig:
    """``configs/train_simulator.yaml`` with the pipeline's shared values, for the learned
    world's visitor model or the held-out one."""
    return set_values(
        share(compose_stage("train_simulator"), cfg),
        {
            "data_dir": str(cfg.data_dir),
            "out_dir": str(sim_dir),
            "resume": False,
            "seed": seed,
            "label": "held-out" if sim_dir == Path(cfg.held_out_dir) else "main",
        },
    )


def _agent_cfg(cfg: DictConfig, name: str, seed: int) -> DictConfig:
    """``configs/train.yaml`` composed with ``agent=<name>`` (``scripts/train.py``'s own config),
    the pipeline's shared values, and the agent's ``agent_overrides`` merged in."""
    if not (CONFIGS / "agent" / f"{name}.yaml").is_file():
        raise ConfigError(
            f"no agent config named {name!r}", file=str(CONFIGS / "agent" / f"{name}.yaml")
        )
    stage = share(compose_stage("train", [f"agent={name}"]), cfg)
    stage = with_agent_overrides(stage)
    return set_values(
        stage,
        {
            "held_out_dir": cfg.held_out_dir if cfg.held_out else None,
            "agent_dir": f"{cfg.out_dir}/agents/{stage.agent.name}/seed_{seed}",
            "seed": seed,
            "eval_sessions": cfg.agent_eval_sessions,
            "num_threads": None,
            # the pipeline checks truncation itself (reused agents too), naming its own keys
            "allow_truncated": True,
        },
    )


def _eval_cfg(cfg: DictConfig) -> DictConfig:
    """``configs/evaluate.yaml`` with the pipeline's shared values (its evaluation seeds are
    ``eval_seeds``: ``seeds`` are the agents' training seeds), evaluating the policies this
    run trains, each on the training seeds it trains it on (:func:`_agent_specs`)."""
    policies: dict[str, list[int]] = {}
    for name, seed in _agent_specs(cfg):
        policies.setdefault(name, []).append(seed)
    return set_values(
        share(compose_stage("evaluate"), cfg, skip=("seeds", "policies")),
        {
            "held_out_dir": cfg.held_out_dir if cfg.held_out else None,
            "seeds": cfg.eval_seeds,
            "policies": policies,
        },
    )


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
