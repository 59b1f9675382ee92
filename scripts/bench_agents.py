"""Benchmark: deep-agent training throughput, plain SB3 against the project's setup, one run.

    python scripts/bench_agents.py --data-dir runs/default/data [--dynamics gru] [--steps 200000]

Each agent trains for the same number of env steps in the same world (default: the learned GRU
world of a pipeline run) and the script prints env steps per second of training:

* **plain SB3**: ``DummyVecEnv`` over single :class:`~envs.site_env.SiteEnv` (one Python env
  per visitor: 16 for PPO, 4 for DQN), SB3's ``MlpPolicy`` on its one-hot observation, the
  agent config's hyper-parameters otherwise, with the same work per env step (PPO: the same
  rollout size, ``n_steps`` scaled up; DQN: the same env steps per gradient update,
  ``train_freq`` scaled up) (the baseline);
* **NextPage**: the agent exactly as ``configs/agent/<algo>.yaml`` configures it (the main
  job's agent): the batched :class:`~envs.vector_env.SiteSB3VecEnv`, the
  embedding policy (:mod:`agents.networks`), the configured number of visitors.

``--configs a b c`` instead measures NextPage agent configs against each other in one run (no
plain SB3): each config's rate and its ratio to the first, e.g. the embedding-scored PPO on a
large site against PPO with one output per page and SB3's one-hot ``MlpPolicy``::

    python scripts/bench_agents.py --data-dir runs/p2k/data --configs ppo_mlp ppo ppo_scored

(``ppo_mlp``: ``configs/agent/ppo.yaml`` with ``policy: MlpPolicy``; ``--top-k 50``: the large
site's candidate mode, which masked agents use as their action mask.)

Periodic evaluations are off in both (they are not training). The ratio is what the speed-up
is worth on this machine at this moment; the absolute figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import platform
import pstats
import time
from collections.abc import Callable
from pathlib import Path

import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from agents.sb3 import SB3Agent
from agents.site import Site
from envs.site_env import SiteEnv
from scripts.configs import agent_settings


def rate_plain(algo: str, site: Site, steps: int, n_envs: int, settings: dict) -> float:
    """Plain SB3: DummyVecEnv of single envs, MlpPolicy, the config's hyper-parameters."""
    options = site.world_options("learned")
    venv = VecMonitor(
        DummyVecEnv([lambda: SiteEnv(data_dir=site.data_dir, **options) for _ in range(n_envs)])
    )
    venv.seed(0)
    hyper = dict(settings.get("hyperparams") or {})
    # the same algorithmic work per env step as ours: equal rollout size (PPO) and equal
    # env steps per gradient update (DQN) with fewer, Python-level envs
    width = int(settings.get("n_envs", 64)) // n_envs
    if algo == "ppo":
        hyper["n_steps"] = int(hyper.get("n_steps", 2048)) * width
    else:
        hyper["train_freq"] = int(hyper.get("train_freq", 4)) * width
    cls = DQN if algo == "dqn" else PPO
    model = cls("MlpPolicy", venv, seed=0, device="cpu", verbose=0, **hyper)
    start = time.perf_counter()
    model.learn(steps)
    return model.num_timesteps / (time.perf_counter() - start)


def rate_nextpage(algo: str, site: Site, steps: int, settings: dict) -> float:
    settings = {**settings, "total_timesteps": steps, "eval_every": 0, "verbose": False}
    agent = SB3Agent(**settings)
    return agent.fit(site)["fps"]


def compare_configs(site: Site, names: list[str], steps: int, overrides: str) -> None:
    """Train each agent config ``steps`` env steps in the same world; print each rate and its
    ratio to the first config's (measured in this run)."""
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"thread(s), {site.env}, {steps:,} env steps each"
    )
    print(f"{'agent':<14} {'policy':<16} {'parameters':>11} {'steps/s':>9} {'ratio':>7}")
    first = None
    for name in names:
        settings = agent_settings("ppo" if name == "ppo_mlp" else name, overrides)
        if name == "ppo_mlp":  # SB3's one-hot MLP on the batched env
            settings["policy"] = "MlpPolicy"
        settings = {**settings, "name": name, "total_timesteps": steps, "eval_every": 0}
        agent = SB3Agent(**{**settings, "verbose": False})
        rate = agent.fit(site)["fps"]
        size = sum(p.numel() for p in agent._model().policy.parameters())
        first = first or rate
        print(
            f"{name:<14} {settings['policy']:<16} {size:>11,} {rate:>9,.0f} {rate / first:>6.2f}x",
            flush=True,
        )


def profiled(label: str, measure: Callable[[], float], top: int) -> float:
    """``measure()`` under cProfile, printing where the time went (``top`` functions by own
    time, with their share of the run)."""
    profiler = cProfile.Profile()
    rate = profiler.runcall(measure)
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    print(f"  {label}: where the time goes (own time, share of {total:.1f} s profiled)")
    for (file, line, func), (_, calls, own, _, _) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        print(f"    {100 * own / total:5.1f} %  {calls:>9,} calls  {func} ({where})")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a prepared run's data folder")
    parser.add_argument("--dynamics", default="gru")
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per measurement")
    parser.add_argument("--algos", nargs="+", default=["ppo", "dqn"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--overrides", help="NextPage with configs/agent_overrides/<name>.yaml (e.g. mlp_study)"
    )
    parser.add_argument("--skip-plain", action="store_true", help="NextPage only")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="profile each run: top N functions"
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        metavar="NAME",
        help="NextPage agent configs to compare (ratio to the first; ppo_mlp: ppo with MlpPolicy)",
    )
    parser.add_argument("--top-k", type=int, help="env.top_k: candidate mode of a large site")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {"dynamics": args.dynamics, "top_k": args.top_k}
    site = Site(data_dir=Path(args.data_dir), env=env, seed=0)
    if args.configs:
        compare_configs(site, args.configs, args.steps, args.overrides or "none")
        return
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"thread(s), world: {args.dynamics}, {args.steps:,} env steps each"
    )
    print(f"{'agent':<6} {'plain SB3 (DummyVecEnv)':>24} {'NextPage':>12} {'ratio':>8}")
    for algo in args.algos:
        settings = agent_settings(algo, args.overrides or "none")
        # the baseline with SB3's usual width for a DummyVecEnv of Python envs
        n_plain = 16 if algo == "ppo" else 4
        ours_run = functools.partial(rate_nextpage, algo, site, args.steps, settings)
        plain_run = functools.partial(rate_plain, algo, site, args.steps, n_plain, settings)

        if args.profile:  # a short unprofiled run first: imports and data loading are not training
            rate_nextpage(algo, site, 16 * int(settings.get("n_envs", 256)), settings)
            ours = profiled(f"{algo} NextPage", ours_run, args.profile)
            plain = (
                None if args.skip_plain else profiled(f"{algo} plain SB3", plain_run, args.profile)
            )
        else:
            ours, plain = ours_run(), None if args.skip_plain else plain_run()
        if plain is None:
            print(f"{algo:<6} {'-':>22} {ours:>10,.0f} /s", flush=True)
        else:
            print(
                f"{algo:<6} {plain:>20,.0f} /s {ours:>10,.0f} /s {ours / plain:>7.1f}x", flush=True
            )


if __name__ == "__main__":
    main()
