"""OPE validated against the truth: bias, RMSE and interval coverage on the synthetic stores.

    python scripts/prepare_data.py data=synthetic data.mode=markov out_dir=data/synthetic_markov
    python scripts/prepare_data.py data=synthetic data.mode=intent out_dir=data/synthetic_intent
    nice -n 19 python scripts/ope_study.py --data-dir data/synthetic_markov --out docs/ope_markov.csv
    nice -n 19 python scripts/ope_study.py --data-dir data/synthetic_intent --out docs/ope_intent.csv

The site: recommendations are the page groups (or nothing), the observation is the current page
(``history_len=1``), so every deployable policy is a table over pages whose value in the
ground truth is known exactly. The **logging policy** is ε-greedy ``popular`` (``--epsilon``:
that share of decisions is a uniformly random action), played in the store's true model. The
**target policies** are the deployable tables (value iteration and the heuristics on the
first-order model counted on the train split). For each log size and repetition the logs are
fresh simulated data (disjoint chunks of larger logs), and every estimator of
:mod:`agents.ope` gives an estimate and a 95 % percentile bootstrap interval; the truth is exact:

* **one step**: each session's first decision (a contextual bandit over entry pages); the truth
  is the expected reward of the first step under the target, ``Σ_z prior_z Σ_s entry_z(s)
  Σ_a π(a|s) R_z(s, a)``;
* **sessions**: whole sessions; the truth is the mean return per session
  (:func:`agents.tabular.policy_value`, horizon ``max_steps``, which the session estimators
  are given too);
* **slates** (``--slate-size k > 1``): one step, the truth is
  :func:`agents.slate.slate_one_step_value`, over the entry pages and intents as the logs mix
  them.

Writes one CSV row per (setting, size, target, estimator): truth, mean estimate, bias, RMSE,
relative RMSE, coverage of the 95 % interval, repetitions; and prints the summary.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agents.heuristics import Greedy, HighestValue, MostLikely, Organic, Popular, RandomPolicy
from agents.logs import Logs, log_policy
from agents.ope import (
    ONE_STEP,
    SESSION,
    SLATE,
    OPEWarning,
    bootstrap_many,
    one_step,
    repeated_pages,
    session,
    slate,
)
from agents.site import Site
from agents.slate import SlateGreedy, SlateValueIteration, slate_one_step_value
from agents.tabular import ValueIterationPolicy, policy_value
from envs import visitors


def write_summary(results: list[dict], out: Path, start: float) -> None:
    """The per-(setting, size, target, estimator) table as CSV, and the summary printed."""
    df = pd.DataFrame(results)
    df["error"] = df["estimate"] - df["truth"]
    table = (
        df.groupby(["setting", "size", "target", "estimator"], sort=False)
        .agg(
            truth=("truth", "first"),
            mean_estimate=("estimate", "mean"),
            bias=("error", "mean"),
            rmse=("error", lambda e: float(np.sqrt(np.mean(np.square(e))))),
            coverage=("covered", "mean"),
            reps=("error", "size"),
        )
        .reset_index()
    )
    table["rel_rmse"] = table["rmse"] / table["truth"].abs()
    table["rel_bias"] = table["bias"] / table["truth"].abs()
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.6g")
    summary = (
        table.groupby(["setting", "size", "estimator"], sort=False)
        .agg(
            mean_abs_rel_bias=("rel_bias", lambda x: float(np.mean(np.abs(x)))),
            mean_rel_rmse=("rel_rmse", "mean"),
            max_rel_rmse=("rel_rmse", "max"),
            coverage=("coverage", "mean"),
            reps=("reps", "min"),
        )
        .reset_index()
    )
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"written to {out}; {time.perf_counter() - start:.0f} s")


def slate_main(args: argparse.Namespace, start: float) -> None:
    """One-step slate OPE: pages as actions, slates of ``k``, a factored logging policy
    (position ``j`` shows the ``j``-th most viewed page other than the current one with
    probability ``1 - ε``, else a uniformly random action), deterministic target slates."""
    env = {"dynamics": visitors.first_order().name, "history_len": 1, "slate_size": args.slate_size}
    site = Site(data_dir=args.data_dir, env=env, seed=0)
    core1 = site.core(1, "ground_truth")
    model, k, a = core1.slate_model, core1.slate_size, core1.n_actions
    truth_mdp = site.true_mdp()
    policies = [SlateValueIteration(), SlateGreedy()]
    for p in policies:
        p.fit(site)
    targets = {p.name: p.slate_table().numpy() for p in policies}
    p_ = core1.n_pages
    # slates ranked by a per-page score: popular, most likely, highest value (top k, no repeat
    # of the current page)
    traffic = site.page_traffic()
    rows = site.markov.transitions.double().numpy()
    value = core1.reward_per_page.double().cpu().numpy()[:p_]
    for name, score in (
        ("popular_top_k", np.broadcast_to(traffic, (p_, p_))),
        ("most_likely_top_k", rows[:, :p_]),
        ("highest_value_top_k", np.broadcast_to(value, (p_, p_))),
    ):
        sc = np.array(score, dtype=np.float64)
        np.fill_diagonal(sc, -np.inf)
        targets[name] = np.argsort(-sc, axis=1, kind="stable")[:, :k]  # page = action index
    popular = targets["popular_top_k"]
    mu = np.full((k, p_, a), args.epsilon / a)
    for j in range(k):
        mu[j, np.arange(p_), popular[:, j]] += 1 - args.epsilon
    truth = {
        name: slate_one_step_value(truth_mdp, model, core1.action_pages.cpu()[torch.as_tensor(t)])
        for name, t in targets.items()
    }
    print(f"{args.data_dir}: slates of {k}, {a} actions, {model.describe()}")
    for name in targets:
        print(f"  {name:<22} one-step truth {truth[name]:8.3f}")
    sizes = [int(x) for x in args.one_step_sizes.split(",") if x]
    largest = max(sizes)
    rng = np.random.default_rng(12345)
    results: list[dict] = []
    done = dict.fromkeys(sizes, 0)
    for big in range(args.big_reps):
        core = site.core(min(args.visitors, largest), "ground_truth")
        logs = log_policy(core, mu, largest, big + 1, first_step_only=True)
        # the factored logger repeats a page now and then: said once here, not per estimate
        print(f"  log {big + 1}: {repeated_pages(logs).mean():.2%} of the slates repeat a page")
        for size in sizes:
            for chunk in range(largest // size):
                if done[size] >= (args.big_reps if size == largest else args.reps):
                    break
                part = logs.sessions(chunk * size, (chunk + 1) * size)
                terms, keys = [], []
                for name, table in targets.items():
                    for est in SLATE:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", OPEWarning)
                            terms.append(slate(part, table, est))
                        keys.append((name, est))
                for (name, est), (v, lo, hi) in zip(
                    keys, bootstrap_many(terms, rng, args.n_boot), strict=True
                ):
                    results.append(
                        {
                            "setting": f"slate_{k}",
                            "size": size,
                            "target": name,
                            "estimator": est,
                            "truth": truth[name],
                            "estimate": v,
                            "covered": bool(lo <= truth[name] <= hi),
                        }
                    )
                done[size] += 1
        print(f"  slates: log {big + 1}/{args.big_reps} done, {time.perf_counter() - start:.0f} s")
    write_summary(results, args.out, start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epsilon", type=float, default=0.5)
    parser.add_argument("--one-step-sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--session-sizes", default="1000,10000,100000")
    parser.add_argument("--reps", type=int, default=100, help="repetitions per size (most)")
    parser.add_argument("--big-reps", type=int, default=10, help="repetitions at the largest")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--visitors", type=int, default=16_384)
    parser.add_argument("--slate-size", type=int, default=1, help="k > 1: the slate study")
    parser.add_argument(
        "--fixed-models",
        action="store_true",
        help="bootstrap DM and FQE with their fitted model held fixed (faster; the first "
        "tables of docs/results.md) instead of refitting it per replicate",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.slate_size > 1:
        slate_main(args, start)
        return

    env = {"dynamics": visitors.first_order().name, "action_level": "group", "history_len": 1}
    site = Site(data_dir=args.data_dir, env=env, seed=0)
    truth_mdp = site.true_mdp()
    targets = {}
    for policy in (
        ValueIterationPolicy(),
        Greedy(),
        MostLikely(),
        Popular(),
        HighestValue(),
        Organic(),
        RandomPolicy(),
    ):
        policy.fit(site)
        targets[policy.name] = policy.table_probs().numpy()
    popular = targets["popular"]
    a = popular.shape[1]
    mu = (1 - args.epsilon) * popular + args.epsilon / a
    # exact truths
    one_truth, sess_truth = {}, {}
    rew = {
        z: (truth_mdp.action_rows(z, torch.arange(a)) @ truth_mdp.reward).numpy()
        for z in range(truth_mdp.n_intents)
    }
    for name, pi in targets.items():
        one_truth[name] = float(
            sum(
                float(truth_mdp.prior[z]) * float(truth_mdp.entry[z].numpy() @ (pi * rew[z]).sum(1))
                for z in range(truth_mdp.n_intents)
            )
        )
        sess_truth[name] = policy_value(truth_mdp, torch.as_tensor(pi))["mean_return"]
    horizon = truth_mdp.max_steps
    print(
        f"{args.data_dir}: {len(targets)} targets, {a} actions, logging ε-greedy popular ε={args.epsilon}"
    )
    for name in targets:
        print(
            f"  {name:<16} one-step truth {one_truth[name]:8.3f}   session truth {sess_truth[name]:8.3f}"
        )

    rng = np.random.default_rng(12345)
    results: list[dict] = []

    def run(setting: str, logs: Logs, size: int) -> None:
        estimators = ONE_STEP if setting == "one_step" else SESSION
        terms, keys = [], []
        for name, pi in targets.items():
            for est in estimators:
                if setting == "one_step":
                    terms.append(one_step(logs, pi, est))
                else:
                    terms.append(session(logs, pi, est, horizon))
                keys.append((name, est))
        for (name, est), (value, low, high) in zip(
            keys,
            bootstrap_many(terms, rng, args.n_boot, refit_models=not args.fixed_models),
            strict=True,
        ):
            truth = one_truth[name] if setting == "one_step" else sess_truth[name]
            results.append(
                {
                    "setting": setting,
                    "size": size,
                    "target": name,
                    "estimator": est,
                    "truth": truth,
                    "estimate": value,
                    "covered": bool(low <= truth <= high),
                }
            )

    def reps_for(size: int, largest: int) -> int:
        return args.big_reps if size == largest else args.reps

    seed = 0
    for setting, sizes in (
        ("one_step", [int(s) for s in args.one_step_sizes.split(",") if s]),
        ("session", [int(s) for s in args.session_sizes.split(",") if s]),
    ):
        if not sizes:
            continue
        largest = max(sizes)
        # one log of the largest size per repetition; smaller sizes are its disjoint chunks
        n_big = args.big_reps  # smaller sizes: up to --reps disjoint chunks of these logs
        done = dict.fromkeys(sizes, 0)
        for big in range(n_big):
            core = site.core(min(args.visitors, largest), "ground_truth")
            seed += 1
            logs = log_policy(core, mu, largest, seed, first_step_only=setting == "one_step")
            for size in sizes:
                for chunk in range(largest // size):
                    if done[size] >= reps_for(size, largest):
                        break
                    run(setting, logs.sessions(chunk * size, (chunk + 1) * size), size)
                    done[size] += 1
            print(
                f"  {setting}: log {big + 1}/{n_big} ({largest:,} sessions) done, "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )

    write_summary(results, args.out, start)


if __name__ == "__main__":
    main()
