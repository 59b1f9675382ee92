"""Benchmark: the batched core with slates against single recommendations, in one run.

    python scripts/bench_slate.py [--slate-size 5] [--n 4096] [--steps 200] [--device cpu]

Visitor-steps per second of :class:`~envs.core.SiteCore` on the default synthetic store's true
model (200 pages, ``intent`` visitors), random actions: one recommendation per step, then slates
of ``k`` pages under the position-biased MNL (``click_model=boost``) and the cascade
(``click_model=follow``), and each slate rate as a share of the single-page rate measured in
the same run: the setups run one after another in each of ``--rounds`` rounds, and the ratio
reported is the median over rounds of the round's ratio (a busy machine slows the setups of a
round alike), beside the median rates.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from scripts.bench_env import rate_core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slate-size", type=int, default=5)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, device {args.device}, B = {args.n}"
    )
    setups = {
        "single page (boost)": {"click_model": "boost"},
        f"slate of {args.slate_size}, position MNL": {
            "click_model": "boost",
            "slate_size": args.slate_size,
        },
        f"slate of {args.slate_size}, cascade": {
            "click_model": "follow",
            "slate_size": args.slate_size,
        },
    }
    rates: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.rounds):
        for name, kw in setups.items():
            rates[name].append(rate_core(args.n, args.steps, {**kw, "device": args.device}))
    single = np.asarray(rates["single page (boost)"])
    for name, r in rates.items():
        ratio = np.median(np.asarray(r) / single)
        print(
            f"{name:<32} {np.median(r):>14,.0f} visitor-steps/s (median of {args.rounds})  "
            f"{ratio:6.2f} of single page (median ratio)"
        )


if __name__ == "__main__":
    main()
