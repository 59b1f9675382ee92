"""Train (or build) one recommendation policy in the learned simulator of a run folder.

    python scripts/train.py experiment=synthetic_markov agent=ppo seed=0
    python scripts/train.py -m experiment=synthetic_markov agent=dqn,ppo seed=0,1,2 hydra/launcher=joblib

The agent comes from ``configs/agent/<name>.yaml`` by ``_target_``; this script never branches
on its type. Writes ``<agent_dir>/`` (the policy, ``run.json`` with the resolved config, seed,
git commit, training and evaluation metrics, TensorBoard events: the periodic ``eval/*``, the
closing evaluation's ``final_eval/*``, ``time/fps``, and SB3's own scalars, and
``manifest.json``), published with one rename when it is complete
(``clickstream/runfolder.py``). Needs the run folder's prepared data and visitor model
(``scripts/pipeline.py`` makes them).

Training length is a budget in steps. An agent given a wall-clock limit (``agent.max_minutes``,
minutes > 0: the SB3 agents and belief PPO; the other agents, whose budgets are in steps
only or who build their policy without training, refuse the key) that stops it before its budget is recorded
``truncated`` in ``run.json`` with the steps it reached; the policy is saved, but the script
then exits with status 3 (a result that depends on how busy the machine was is not a result)
unless ``allow_truncated=true``.

Settings are checked before any work, and a bad one ends the script with status 2 and a
message naming it: ``seed`` (a whole number in [0, 2**32 - 1]: it names the folder
``seed_<S>``), ``eval_sessions`` (>= 0), agent keys its class does not take, and the agent's
own ranges (budgets >= 1, ``gamma`` and the ε in [0, 1], ...).

An experiment's settings for the agent (``agent_overrides``, e.g. ``mlp_study``) are merged
under the command line: ``experiment=synthetic_markov agent=ppo agent.total_timesteps=20000``
trains 20,000 steps with the experiment's other PPO settings (``scripts/configs.py``).

A policy folder already made from the same settings (``CONFIG_KEYS``) and the same inputs (the
prepared data and visitor model, by their manifests) is reused, not retrained, so that a sweep
that is run again (after a crash, with more seeds) runs only what is missing; ``force=true``
retrains.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from agents.evaluate import CLOSING_SEED, quick_eval
from agents.site import Site
from clickstream import checks
from clickstream.errors import ClickstreamError, ConfigError, RunFolderError
from clickstream.prepare import git_commit
from clickstream.runfolder import StageWriter, config_hash, manifest_digest, verify_folder
from scripts import run_or_exit
from scripts.configs import with_agent_overrides

CONFIG_KEYS = ("agent", "env", "seed")
"""Settings that change the policy (their hash is in the manifest; the pipeline reuses a policy
folder while it matches and the data and simulator it was made from are the same)."""


class TrainingTruncated(ClickstreamError):
    """An agent stopped by its wall-clock limit before its budget of steps (exit status 3)."""

    exit_status = 3


def truncation(record: dict[str, Any]) -> dict[str, Any] | None:
    """``{"steps", "budget_steps", "max_minutes"}`` when ``run.json``'s ``record`` says training
    was cut short by a time limit, else ``None`` (agents without such a limit never are)."""
    fit = record.get("fit") or {}
    if not (record.get("truncated") or fit.get("truncated")):
        return None
    return {
        "steps": fit.get("steps"),
        "budget_steps": fit.get("budget_steps"),
        "max_minutes": (record.get("agent") or {}).get("max_minutes"),
    }


def reached(cut: dict[str, Any]) -> str:
    """``8 of 512``: the steps a truncated run reached of its budget (:func:`truncation`)."""
    steps, budget = cut.get("steps"), cut.get("budget_steps")
    if isinstance(steps, int) and isinstance(budget, int):
        return f"{steps:,} of {budget:,}"
    return str(steps)


def check_truncated(record: dict[str, Any], allow: bool, where: str | Path) -> None:
    """Raise :class:`TrainingTruncated` for a truncated ``record`` unless ``allow``."""
    cut = truncation(record)
    if cut is None or allow:
        return
    raise TrainingTruncated(
        f"{record.get('policy')} (seed {record.get('seed')}) was stopped by its time limit "
        f"(max_minutes={cut['max_minutes']}) after {reached(cut)} steps, so its result depends on "
        "how busy the machine was. Remove the limit (agent.max_minutes=null, the default), or "
        "keep this truncated run with allow_truncated=true (the report then marks it truncated)",
        file=str(where),
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit the agent, save it with its record; returns the record, with ``reused`` saying
    whether an up-to-date policy folder was kept instead (:func:`finished`; not with
    ``force=true``).

    Raises:
        TrainingTruncated: After saving, when a time limit cut training short and the config
            does not say ``allow_truncated: true``.
    """
    if "agent_overrides" in cfg:  # an experiment's settings for this agent, under the user's
        cfg = with_agent_overrides(cfg)  # command-line agent.* keys (Hydra's task overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    agent_dir = Path(resolved["agent_dir"])
    # the seed names the folder (seed_<S>), which evaluation reads only as a whole number
    seed = checks.seed("seed", resolved["seed"])
    n_eval = checks.whole(
        "eval_sessions", resolved.get("eval_sessions", 4096), 0, " of sessions", note="(0: none)"
    )
    # the agent is built before any work, so that a bad setting changes nothing
    agent_cfg = dict(resolved["agent"])
    if not resolved.get("show_progress", True) and _takes(agent_cfg, "verbose"):
        agent_cfg["verbose"] = False  # quiet: no progress bar, no evaluation lines
    torch.manual_seed(seed)  # before the agent: a constructor may draw initial weights
    agent = build_agent(agent_cfg)
    if resolved.get("num_threads"):  # small networks: parallel runs beat parallel kernels
        torch.set_num_threads(int(resolved["num_threads"]))
    data = verify_folder(resolved["data_dir"], "prepare_data")
    if not resolved.get("force", False):
        done, _why = finished(resolved)
        if done is not None:
            check_truncated(done, bool(resolved.get("allow_truncated", False)), agent_dir)
            return {**done, "reused": True}
    stage = StageWriter(
        agent_dir,
        "train",
        config_hash=config_hash(resolved, CONFIG_KEYS),
        inputs=stage_inputs(resolved),
        data_fingerprint=data.data_fingerprint,
    )
    with stage as out:
        site = Site.from_config(resolved, log_dir=out.dir)
        try:
            start = time.perf_counter()
            fit = agent.fit(site)
            seconds = time.perf_counter() - start
            # on fresh sessions, not the ones that picked the kept weights (SELECTION_SEED);
            # the intent oracle plays in the ground truth only: no closing evaluation here
            scores = (
                {}
                if agent.needs_latent_state or n_eval <= 0
                else quick_eval(agent, site, n_eval, seed=CLOSING_SEED)
            )
            # its own tags: not a point of the periodic eval/* curve (other seed, kept weights)
            site.log_scalars(closing_scalars(scores), int(fit.get("steps", 0)))
            agent.save(out.dir)
        finally:
            site.close()
        record = {
            "policy": agent.name,
            # which visitor model it learnt in (the manifest's inputs say it exactly)
            "simulator_created_utc": _created(Path(resolved.get("simulator_dir") or "")),
            "agent": resolved["agent"],
            "seed": seed,
            # a user's time limit stopped training before its budget of steps (never silently)
            "truncated": bool(fit.get("truncated", False)),
            "steps": fit.get("steps"),
            "budget_steps": fit.get("budget_steps"),
            "fit": fit,
            "fit_seconds": seconds,
            "eval_learned": scores,
            "git_commit": git_commit(),
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "config": resolved,
        }
        out.write_text("run.json", json.dumps(record, indent=2, default=str))
    check_truncated(record, bool(resolved.get("allow_truncated", False)), agent_dir / "run.json")
    return {**record, "reused": False}


def closing_scalars(scores: dict[str, Any]) -> dict[str, Any]:
    """The closing evaluation's TensorBoard tags: ``eval/mean_return`` -> ``final_eval/
    mean_return`` (the periodic ``eval/*`` points pick the kept weights on other sessions)."""
    return {f"final_eval/{name.split('/', 1)[-1]}": value for name, value in scores.items()}


def finished(cfg: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The record (``run.json``) of the policy folder ``cfg["agent_dir"]`` when it verifies and
    was made from the same settings and inputs as ``cfg`` (resolved), else ``None`` and why."""
    agent_dir = Path(cfg["agent_dir"])
    try:
        manifest = verify_folder(agent_dir, "train")
    except RunFolderError as exc:
        return None, str(exc)
    if manifest.config_hash != config_hash(cfg, CONFIG_KEYS):
        return None, "its configuration changed"
    wanted = {k: v for k, v in stage_inputs(cfg).items() if v is not None}
    if manifest.inputs != wanted:
        return None, "made from other inputs"
    try:
        record = json.loads((agent_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"run.json: {exc}"
    return record, ""


def stage_inputs(cfg: dict[str, Any]) -> dict[str, str | None]:
    """The manifests a policy is made from: the prepared data and the learned simulator
    (``None`` where there is none: first-order dynamics need no trained model)."""
    simulator = cfg.get("simulator_dir")
    return {
        "data": verify_folder(cfg["data_dir"], "prepare_data").digest,
        "simulator": manifest_digest(simulator) if simulator else None,
    }


def build_agent(agent_cfg: dict[str, Any]) -> Any:
    """The agent of a resolved ``agent`` config (:func:`check_agent_keys` first).

    Raises:
        ClickstreamError: The agent's own error about its settings (Hydra wraps what a
            constructor raises in an ``InstantiationException``; unwrapped, the script prints
            its message and exits with status 2 instead of a traceback).
    """
    check_agent_keys(agent_cfg)
    try:
        return instantiate(agent_cfg, _convert_="partial")
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ClickstreamError):
            raise exc.__cause__ from None
        raise


HYDRA_KEYS = ("_target_", "_convert_", "_recursive_", "_partial_", "_args_")
"""Keys of an agent's config that Hydra's ``instantiate`` reads itself."""


def check_agent_keys(agent_cfg: dict[str, Any]) -> None:
    """Refuse keys the agent's class (``_target_``) does not take: a misspelt
    ``+agent.total_timestep=5``, or ``max_minutes`` for an agent without a time limit, would
    otherwise end in a ``TypeError`` from deep inside Hydra.

    Raises:
        ConfigError: Naming the unknown keys and the keys the agent takes.
    """
    target = agent_cfg.get("_target_")
    try:
        params = inspect.signature(get_object(str(target))).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return  # Hydra's own error names a target it cannot import
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # takes any keyword
    takes = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(agent_cfg) - set(takes) - set(HYDRA_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown agent key(s) {[f'agent.{k}' for k in unknown]} for {target}; it takes "
            f"{sorted(takes)}"
        )


def _takes(agent_cfg: dict[str, Any], option: str) -> bool:
    """Does the agent's class (``_target_``) take ``option``? (Set there or not.)"""
    if option in agent_cfg:
        return True
    try:
        params = inspect.signature(get_object(str(agent_cfg["_target_"]))).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return False
    return option in params


def _created(simulator_dir: Path) -> str | None:
    try:
        metrics = json.loads((simulator_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics.get("created_utc")


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Train (or reuse) one policy; returns a summary (a sweep launcher records it)."""
    record = run_or_exit(run, cfg)
    ret = record["eval_learned"].get("eval/mean_return")
    extra = "" if ret is None else f", eval/mean_return {ret:.3f} in the learned simulator"
    if record["reused"]:
        print(
            f"{record['policy']} (seed {record['seed']}): reused (up to date; force=true "
            f"retrains){extra}"
        )
    else:
        print(f"{record['policy']} (seed {record['seed']}): {record['fit_seconds']:.0f} s{extra}")
    cut = truncation(record)
    if cut is not None:  # only here with allow_truncated=true
        print(
            f"TRUNCATED by its time limit (max_minutes={cut['max_minutes']}) after "
            f"{reached(cut)} steps (kept: allow_truncated=true)"
        )
    print(f"saved to {cfg.agent_dir}")
    return {
        "policy": record["policy"],
        "seed": record["seed"],
        "reused": record["reused"],
        "steps": record.get("steps"),
        "eval/mean_return": ret,
        "agent_dir": str(cfg.agent_dir),
    }


if __name__ == "__main__":
    main()
