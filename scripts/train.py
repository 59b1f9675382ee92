"""Train (or build) one recommendation policy in the learned simulator of a run folder.

    python scripts/train.py experiment=synthetic_markov agent=ppo seed=0
    python scripts/train.py -m experiment=synthetic_markov agent=dqn,ppo seed=0,1,2 hydra/launcher=joblib

The agent comes from ``configs/agent/<name>.yaml`` by ``_target_``; this script never branches
on its type. Writes ``<agent_dir>/`` (the policy, ``run.json`` with the resolved config, seed,
git commit, training and evaluation metrics) and TensorBoard events there (``eval/*``,
``time/fps``, and SB3's own scalars). Needs the run folder's prepared data and visitor model
(``scripts/pipeline.py`` makes them).
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from agents.evaluate import quick_eval
from agents.site import Site
from clickstream.io import atomic_file
from clickstream.prepare import git_commit
from scripts import run_or_exit


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit the agent, save it with its record; returns the record."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    agent_dir = Path(resolved["agent_dir"])
    staging = agent_dir.with_name(agent_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    seed = int(resolved["seed"])
    torch.manual_seed(seed)
    if resolved.get("num_threads"):  # small networks: parallel runs beat parallel kernels
        torch.set_num_threads(int(resolved["num_threads"]))
    site = Site.from_config(resolved, log_dir=staging)
    try:
        agent = instantiate(cfg.agent, _convert_="partial")
        start = time.perf_counter()
        fit = agent.fit(site)
        seconds = time.perf_counter() - start
        latent = getattr(agent, "needs_latent_state", False)  # the oracle: ground truth only
        n_eval = int(resolved.get("eval_sessions", 4096))
        scores = {} if latent or n_eval <= 0 else quick_eval(agent, site, n_eval)
        site.log_scalars(scores, int(fit.get("steps", 0)))
        agent.save(staging)
    finally:
        site.close()
    record = {
        "policy": agent.name,
        # which visitor model it learnt in: the pipeline retrains agents when that changes
        "simulator_created_utc": _created(Path(resolved.get("simulator_dir") or "")),
        "agent": resolved["agent"],
        "seed": seed,
        "fit": fit,
        "fit_seconds": seconds,
        "eval_learned": scores,
        "git_commit": git_commit(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": resolved,
    }
    with atomic_file(staging / "run.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(agent_dir, ignore_errors=True)
    staging.replace(agent_dir)
    return record


def _created(simulator_dir: Path) -> str | None:
    try:
        metrics = json.loads((simulator_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics.get("created_utc")


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    record = run_or_exit(run, cfg)
    ret = record["eval_learned"].get("eval/mean_return")
    extra = "" if ret is None else f", eval/mean_return {ret:.3f} in the learned simulator"
    print(f"{record['policy']} (seed {record['seed']}): {record['fit_seconds']:.0f} s{extra}")
    print(f"saved to {cfg.agent_dir}")


if __name__ == "__main__":
    main()
