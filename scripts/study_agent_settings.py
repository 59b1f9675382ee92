"""One deep agent's settings, scored in the learned world and in the ground truth.

    python scripts/study_agent_settings.py --data-dir runs/default/data ppo '{"hyperparams": {"gamma": 0.3}}'
    python scripts/study_agent_settings.py --data-dir runs/default/data dqn '{"reward_scale": 0.01}' --save /tmp/dqn

The settings (a JSON object) are merged over ``configs/agent/<algo>.yaml``; the agent trains in
the run's learned world (its GRU visitor model) on seed 0, then plays ``--sessions`` sessions
in the learned world and in the synthetic store's ground truth (the figures of
``docs/results.md``, "The main job's agents"). The ground truth is for studying the method on
a store whose truth is known; the settings are chosen by the learned world's score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from agents.evaluate import simulate, summarize
from agents.sb3 import SB3Agent
from agents.site import Site
from scripts.configs import agent_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("algo", choices=["ppo", "dqn"])
    parser.add_argument("settings", nargs="?", default="{}", help="JSON merged over the config")
    parser.add_argument("--data-dir", type=Path, default=Path("runs/default/data"))
    parser.add_argument("--sessions", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, help="save the trained policy here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks: one thread, several studies side by side

    settings = agent_settings(args.algo, extra=json.loads(args.settings))
    site = Site(data_dir=args.data_dir, env={}, seed=args.seed)  # the default kind: the GRU
    agent = SB3Agent(**{**settings, "verbose": False})
    start = time.perf_counter()
    fit = agent.fit(site)
    seconds = time.perf_counter() - start
    if args.save:
        agent.save(args.save)
    scores = {}
    for world in ("learned", "ground_truth"):
        core = site.core(4096, world)
        s = summarize({0: simulate(agent, core, args.sessions, 7, site.side_tables(world))})
        scores[world] = f"{s['mean_return']:.2f} ± {s['ci95']:.2f}"
    curve = [(h["steps"], round(h["eval/mean_return"], 1)) for h in fit["curve"]]
    print(f"periodic evaluations (steps, learned-world return): {curve}")
    print(
        f"{args.algo} {args.settings}: {fit['fps']:,.0f} steps/s, {seconds:.0f} s; "
        f"learned {scores['learned']}, ground truth {scores['ground_truth']}"
    )


if __name__ == "__main__":
    main()
