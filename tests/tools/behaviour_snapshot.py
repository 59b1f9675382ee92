"""Snapshot of what a refactor must not change: the numbers the simulator, the agents, the
evaluation and the web app produce for two tiny runs under fixed seeds.

    PYTHONPATH=. python tests/tools/behaviour_snapshot.py before.json /tmp/work_before
    # ... refactor ...
    PYTHONPATH=. python tests/tools/behaviour_snapshot.py after.json /tmp/work_after
    cmp before.json after.json

It makes two tiny pipeline runs (a GRU world with latent classes, a held-out world and page
actions; a latent-class world with group actions and the intent oracle), then records: the
evaluation results and simulator metrics of both; for every visitor model (true, markov, gru,
latent_class), with and without ``top_k``, page and group actions, hashes of 40 simulated steps
of 32 visitors (pages landed on, rewards, follows, next-page probabilities, states); the
fidelity report of each; value iteration (markov and true tables), the intent oracle and the
heuristics' tables; each world's draws; and the web app's recommendations and paths for three
histories with every visitor model and cache setting. Hashes are of exact bytes: compare on one
machine (another BLAS may differ in the last bits). About 30 s on a 2-core CPU machine.

Used for the visitors-layer refactor (issue 19): identical before and after.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATENT = "simulator.latent_class={classes:2,restarts:1,iters:30}"


def digest(x: Any) -> str:
    """sha256 of an array's bytes, dtype and shape (16 hex digits)."""
    a = np.ascontiguousarray(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x))
    raw = a.tobytes() + str(a.dtype).encode() + str(a.shape).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def runs(work: Path, res: dict[str, Any]) -> tuple[Path, Path]:
    from tests.hydra_configs import tiny_run

    run_a, run_b = work / "run_a", work / "run_b"
    if not (run_a / "eval").exists():
        tiny_run(run_a, LATENT, "held_out=true", "references=[true_optimum]")
    if not (run_b / "eval").exists():
        tiny_run(
            run_b,
            LATENT,
            "env.dynamics=latent_class",
            "env.action_level=group",
            "agents=[organic,greedy,value_iteration,most_likely,popular,highest_value]",
            "learning_agents=[]",
            "references=[intent_oracle]",
        )
    for name, run in (("a", run_a), ("b", run_b)):
        results = json.loads((run / "eval" / "results.json").read_text())
        res[f"results_{name}"] = results["records"]
        metrics = json.loads((run / "data" / "simulator" / "metrics.json").read_text())
        res[f"sim_metrics_{name}"] = metrics["models"]
        latent = metrics["latent_class"] or {}
        res[f"sim_lc_{name}"] = {k: v for k, v in latent.items() if k != "fit_seconds"}
    return run_a, run_b


def cores(data_dir: Path, res: dict[str, Any]) -> None:
    from envs.site_env import build_core

    for dyn in ("true", "markov", "gru", "latent_class"):
        for top_k in (None, 5):
            for level in ("page", "group"):
                core = build_core(
                    32, data_dir=data_dir, dynamics=dyn, top_k=top_k, action_level=level
                )
                core.reset(7)
                rng = np.random.default_rng(3)

                def actions(core=core, rng=rng) -> torch.Tensor:
                    return torch.as_tensor(rng.integers(0, core.n_actions, 32))

                probs = digest(core.next_page_probs(actions()))
                landed, reward, followed = [], 0.0, 0
                for _ in range(40):
                    r = core.step(actions())
                    landed.append(r.landed.tolist())
                    reward += float(r.reward.double().sum())
                    followed += int(r.followed.sum())
                core.expected_reward = True
                r = core.step(actions())
                res[f"core_{dyn}_{top_k}_{level}"] = {
                    "landed": digest(np.array(landed)),
                    "reward": repr(reward),
                    "followed": followed,
                    "probs": probs,
                    "exp_reward": digest(r.reward),
                    "state": digest(core.state),
                    "obs": digest(r.obs),
                }
    core = build_core(16)
    core.reset(1)
    steps = [core.step(torch.zeros(16, dtype=torch.long)).landed.tolist() for _ in range(30)]
    res["default_store"] = digest(np.array(steps))


def fidelity(data_dir: Path, work: Path, res: dict[str, Any]) -> None:
    from scripts import check_simulator
    from tests.hydra_configs import compose_cfg

    skip = ("simulation_seconds", "created_utc", "config", "git_commit", "data_dir", "table")
    for dyn in ("true", "markov", "gru", "latent_class"):
        cfg = compose_cfg(
            "check_simulator",
            [
                f"data_dir={data_dir}",
                f"out_dir={work}/fid_{dyn}",
                f"dynamics={dyn}",
                "n_sessions=500",
                "n_boot=20",
                "show_progress=false",
                "n_visitors=128",
            ],
        )
        record = check_simulator.run(cfg)
        res[f"fidelity_{dyn}"] = {k: v for k, v in record.items() if k not in skip}


def tables(data_dir: Path, res: dict[str, Any]) -> None:
    from agents import heuristics
    from agents.evaluate import exact_return
    from agents.site import Site
    from agents.tabular import (
        IntentOracle,
        SiteMDP,
        ValueIterationPolicy,
        intent_weighted_q,
        policy_value,
    )

    held_out = data_dir / "simulator_held_out"
    for level in ("page", "group"):
        env = {"dynamics": "latent_class", "action_level": level}
        if "held_out_dir" in inspect.signature(Site).parameters:
            site = Site(data_dir=data_dir, env=env, held_out_dir=held_out)
        else:  # before the visitors layer
            site = Site(data_dir=data_dir, env=env, held_out_model=held_out / "model.pt")
        res[f"worlds_{level}"] = site.worlds()
        for model in ("markov", "true"):
            policy = ValueIterationPolicy("vi", model)
            res[f"vi_{model}_{level}"] = {"fit": policy.fit(site), "scores": digest(policy.scores)}
            for w in site.worlds():
                value = exact_return(policy, site.core(1, w, device="cpu"))
                res[f"vi_{model}_{level}_exact_{w}"] = repr(value)
        oracle = IntentOracle()
        oracle.fit(site)
        res[f"oracle_{level}"] = digest(oracle.q)
        res[f"iwq_{level}"] = digest(intent_weighted_q(site.true_mdp()))
        learned = SiteMDP.from_core(site.core(1, "learned", device="cpu"))
        value = policy_value(learned, oracle.table_probs()[0])["mean_return"]
        res[f"learned_mdp_{level}"] = [
            digest(learned.transitions),
            digest(learned.prior),
            digest(learned.entry),
            repr(value),
        ]
        obs = np.arange(site.data.vocab.n_pages + 1)[:, None].repeat(4, 1)
        for cls in (
            heuristics.Popular,
            heuristics.MostLikely,
            heuristics.HighestValue,
            heuristics.Greedy,
            heuristics.RandomPolicy,
            heuristics.Organic,
        ):
            policy = cls()
            policy.fit(site)
            res[f"heur_{cls.__name__}_{level}"] = digest(policy.action_scores(obs))
        for w in site.worlds():
            core = site.core(64, w)
            core.reset(5)
            steps = [
                core.step(torch.zeros(64, dtype=torch.long)).landed.tolist() for _ in range(20)
            ]
            res[f"world_{level}_{w}"] = digest(np.array(steps))


def webapp(run_a: Path, run_b: Path, res: dict[str, Any]) -> None:
    from webapp.artefacts import load_run
    from webapp.recommend import Recommender

    for name, run, models in (
        ("a", run_a, ("auto", "gru", "latent_class", "markov")),
        ("b", run_b, ("auto", "gru", "markov")),
    ):
        for vm in models:
            art = load_run(run, visitor_model=vm)
            for cache in (True, False):
                rec = Recommender(art, cache=cache)
                out: dict[str, Any] = {"dyn": art.dynamics}
                for hist in ((0,), (3, 1, 0), (5, 2, 7, 1, 9)):
                    out[f"org{hist}"] = digest(rec.organic(hist))
                    for pol in sorted(art.policies):
                        o = rec.recommend(pol, hist, 5)
                        out[f"{pol}{hist}"] = [
                            repr(o.organic_expected_value),
                            repr(o.exit_probability),
                            o.prefers_nothing,
                            [
                                (
                                    x.action,
                                    repr(x.organic_probability),
                                    repr(x.follow_probability),
                                    repr(x.expected_value),
                                )
                                for x in o.recommendations
                            ],
                        ]
                        out[f"path_{pol}{hist}"] = [
                            (
                                s.page_id,
                                s.action,
                                s.next_page_id,
                                repr(s.probability),
                                repr(s.follow_probability),
                                repr(s.expected_value),
                            )
                            for s in rec.path(pol, hist, 4)
                        ]
                res[f"webapp_{name}_{vm}_{cache}"] = out


def main() -> None:
    out, work = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    res: dict[str, Any] = {}
    run_a, run_b = runs(work, res)
    cores(run_a / "data", res)
    fidelity(run_a / "data", work, res)
    tables(run_a / "data", res)
    webapp(run_a, run_b, res)
    out.write_text(json.dumps(res, indent=1, sort_keys=True, default=str))
    print("wrote", out)


if __name__ == "__main__":
    main()
