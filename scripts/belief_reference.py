"""Study: the belief-state reference of an intent store, with the references around it.

    python scripts/belief_reference.py [--run-dir runs/synthetic_intent] [--resolutions 4 8 12]

On a synthetic intent store (a run folder whose ``agents/value_iteration/seed_0`` gives the env
settings) prints, each by exact computation in the ground truth over the env's horizon:
first-order value iteration's table, the intent-weighted table, the lower and upper bounds of
the belief-state optimum (:mod:`agents.belief`: the best any policy that sees only pages can
do) at each grid resolution, and the intent oracle; then the share of the gap from value
iteration to the oracle that the belief-state optimum closes (what memory can buy at most).
With a latent-class learned world, also what the belief-state plans of the learned types are
worth in that world. Rows of docs/results.md's intent study come from here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from agents.belief import belief_lower_bound, belief_upper_bound
from agents.site import Site
from agents.tabular import SiteMDP, intent_weighted_q, policy_value, value_iteration


def _greedy(q: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(q.argmax(-1), q.shape[-1]).double()


def references(mdp: SiteMDP, resolutions: list[int]) -> dict[str, float]:
    """The exact values of the tables, the oracle and both belief bounds per resolution."""
    out = {
        "value_iteration": policy_value(mdp, _greedy(value_iteration(mdp.first_order()).q))[
            "mean_return"
        ],
        "intent_weighted": policy_value(mdp, _greedy(intent_weighted_q(mdp)))["mean_return"],
    }
    oracle = torch.stack([value_iteration(mdp, z).q for z in range(mdp.n_intents)])
    out["intent_oracle"] = policy_value(mdp, _greedy(oracle))["mean_return"]
    for m in resolutions:
        start = time.perf_counter()
        out[f"belief_lower_m{m}"] = belief_lower_bound(mdp, m).value
        out[f"belief_upper_m{m}"] = belief_upper_bound(mdp, m).value
        out[f"seconds_m{m}"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/synthetic_intent")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[4, 8, 12])
    args = parser.parse_args()

    record = Path(args.run_dir) / "agents" / "value_iteration" / "seed_0" / "run.json"
    site = Site.from_config(json.loads(record.read_text(encoding="utf-8"))["config"])
    worlds = {"ground truth": site.true_mdp()}
    learned = site.core(1, "learned", device="cpu")
    chains = learned.dynamics.chains()
    if chains is not None and chains.n_types > 1:
        worlds["learned world (its own types)"] = SiteMDP.from_core(learned)
    for world, mdp in worlds.items():
        values = references(mdp, args.resolutions)
        print(f"## {world}: {mdp.n_pages} pages, {mdp.n_actions} actions, {mdp.n_intents} types")
        for name, value in values.items():
            print(f"{name}: {value:.3f}")
        vi, oracle = values["value_iteration"], values["intent_oracle"]
        m = args.resolutions[-1]
        lo, hi = values[f"belief_lower_m{m}"], values[f"belief_upper_m{m}"]
        print(
            f"share of the gap value iteration -> oracle closed by the belief-state optimum "
            f"(m={m}): {(lo - vi) / (oracle - vi):.3f} to {(hi - vi) / (oracle - vi):.3f}"
        )


if __name__ == "__main__":
    main()
