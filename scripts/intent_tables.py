"""Study: what a page table that knows the intents' values gains, and how each world ranks it.

    python scripts/intent_tables.py [--run-dir runs/synthetic_intent] [--sessions 32768] [--seed 0]
        [--held-out-dir <simulator folder>]

On a synthetic intent store (a run folder whose ``agents/value_iteration/seed_0`` gives the
env settings), three tables over pages, each by exact policy evaluation in the ground truth
and simulated in every world of the run: value iteration on the true first-order marginal,
the intent-weighted table (:func:`agents.tabular.intent_weighted_q`), the same table built
from the learned world's own visitor types when that world is a latent-class model (what a
deployable policy can build), and, for the ground truth only, the intent oracle's bound.
``--held-out-dir`` names the held-out world's simulator folder (another seed's model, say)
instead of the run's. A learned world that ranks the first two the other way round
than the truth steers agents trained in it away from what the truth rewards
(docs/results.md, the intent experiment).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from agents.base import TablePolicy
from agents.evaluate import simulate
from agents.site import Site
from agents.tabular import SiteMDP, intent_weighted_q, policy_value, value_iteration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/synthetic_intent")
    parser.add_argument("--sessions", type=int, default=32_768)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out-dir", default=None, help="default: the run's")
    args = parser.parse_args()

    record = Path(args.run_dir) / "agents" / "value_iteration" / "seed_0" / "run.json"
    config = json.loads(record.read_text(encoding="utf-8"))["config"]
    if args.held_out_dir is not None:
        config = {**config, "held_out_dir": args.held_out_dir}
    site = Site.from_config(config)
    truth = site.true_mdp()

    def greedy(q: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(q.argmax(-1), q.shape[-1]).double()

    tables = {
        "value_iteration (true first-order marginal)": value_iteration(truth.first_order()).q,
        "intent_weighted": intent_weighted_q(truth),
    }
    learned = site.core(1, "learned", device="cpu")
    learned_mdp = None
    chains = learned.dynamics.chains()
    if chains is not None and chains.n_types > 1:
        # a learned world of visitor types (latent_class): the same table from its own types,
        # what a deployable policy can build without the truth
        learned_mdp = SiteMDP.from_core(learned)
        tables["type_weighted (the learned world's types)"] = intent_weighted_q(learned_mdp)
    oracle = torch.stack([value_iteration(truth, z).q for z in range(truth.n_intents)])
    print(
        f"intent oracle, exact in the ground truth: {policy_value(truth, greedy(oracle))['mean_return']:.3f}"
    )
    for name, q in tables.items():
        exact = policy_value(truth, greedy(q))["mean_return"]
        line = [f"{name}: exact {exact:.3f}"]
        if learned_mdp is not None:
            line.append(
                f"exact in learned {policy_value(learned_mdp, greedy(q))['mean_return']:.3f}"
            )
        for world in site.worlds():
            core = site.core(4096, world)
            sessions = simulate(
                TablePolicy(q, name), core, args.sessions, args.seed, site.side_tables(world)
            )
            r = sessions.returns
            line.append(f"{world} {r.mean():.1f} ± {1.96 * r.std() / len(r) ** 0.5:.1f}")
        print(";  ".join(line))


if __name__ == "__main__":
    main()
