"""Benchmark: simulator speed, SB3 DummyVecEnv over single envs vs the batched core.

    python scripts/bench_env.py [--data-dir DIR --dynamics gru] [--top-k 50] [--device cpu] [--steps 200]

Measured in one run on the same visitor model (default: the default synthetic store's true
model): visitor-steps per second of Stable-Baselines3's ``DummyVecEnv`` over 256 single
:class:`~envs.site_env.SiteEnv` (the baseline: one Python env per visitor), and of the batched
:class:`~envs.core.SiteCore` with B = 256 and B = 4096 (random recommendations), and the ratio.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.core import SiteCore
from envs.site_env import SiteEnv, build_core


def rate_dummy(n_envs: int, steps: int, kwargs: dict) -> float:
    vec = DummyVecEnv([lambda: SiteEnv(**kwargs) for _ in range(n_envs)])
    vec.seed(0)
    vec.reset()
    rng = np.random.default_rng(0)
    n_actions = vec.action_space.n
    start = time.perf_counter()
    for _ in range(steps):
        vec.step(rng.integers(n_actions, size=n_envs))
    return n_envs * steps / (time.perf_counter() - start)


def rate_core(n: int, steps: int, kwargs: dict) -> float:
    """Visitor-steps/s of a batched core of ``n`` visitors built from ``kwargs``."""
    return step_rate(build_core(n, **kwargs), steps)


def step_rate(core: SiteCore, steps: int) -> float:
    """Visitor-steps/s of ``core`` under random recommendations (one slate per visitor in a
    slate core), ``steps`` steps after one of warm-up."""
    n = core.n_visitors
    core.reset(seed=0)
    gen = torch.Generator(device=core.device).manual_seed(1)
    shape = (n,) if core.slate_model is None else (n, core.slate_size)
    actions = [
        torch.randint(core.n_actions, shape, generator=gen, device=core.device) for _ in range(8)
    ]
    core.step(actions[0])  # warm-up
    if core.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(steps):
        core.step(actions[t % 8])
    if core.device.type == "cuda":
        torch.cuda.synchronize()
    return n * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dynamics", default="true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=None, help="candidate successors per page")
    args = parser.parse_args()
    kwargs = {"dynamics": args.dynamics, "device": args.device, "top_k": args.top_k}
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, dynamics {args.dynamics}, device {args.device}"
    )
    dummy = rate_dummy(
        256, max(args.steps // 4, 20), {k: v for k, v in kwargs.items() if k != "device"}
    )
    print(f"SB3 DummyVecEnv, 256 single envs   {dummy:>14,.0f} visitor-steps/s")
    for b in (256, 4096):
        rate = rate_core(b, args.steps, kwargs)
        print(
            f"batched core, B={b:<5}              {rate:>14,.0f} visitor-steps/s  "
            f"{rate / dummy:6.1f}x the DummyVecEnv"
        )


if __name__ == "__main__":
    main()
