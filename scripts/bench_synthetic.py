"""Benchmark: how fast the synthetic store generates sessions.

    python scripts/bench_synthetic.py [--n-pages 200] [--mode intent] [--sizes 50000 1000000]

Prints, measured in one run on this machine: building the store; sampling sessions as page
indices (``simulate``) and as the full raw hits table (``sample_sessions``: times, revenue, ids,
a pandas DataFrame) for each size; the Bayes-optimal log-loss over the sampled sessions; and a
baseline, a plain per-session Python loop drawing each next page with ``Generator.choice`` from
the dense true rows, timed on a few thousand sessions and reported per session, so the ratio of
the vectorised sampler to the naive one is measured, not assumed.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from clickstream.synthetic import SyntheticConfig, SyntheticStore, build_store


def naive_sessions(store: SyntheticStore, n_sessions: int, seed: int) -> int:
    """Sample sessions one page view at a time in Python; returns the page views drawn."""
    rng = np.random.default_rng(seed)
    dense = store.transitions
    z_count, p = store.n_intents, store.n_pages
    views = 0
    for _ in range(n_sessions):
        z = rng.choice(z_count, p=store.prior)
        page = rng.choice(p, p=store.entry[z])
        views += 1
        for _ in range(1, store.config.max_steps):
            page = rng.choice(p + 1, p=dense[z, page])
            if page == p:
                break
            views += 1
    return views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-pages", type=int, default=200)
    parser.add_argument("--mode", default="intent", choices=["intent", "markov"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_000_000])
    parser.add_argument("--baseline-sessions", type=int, default=3_000)
    args = parser.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    t0 = time.perf_counter()
    store = build_store(SyntheticConfig(n_pages=args.n_pages, mode=args.mode))
    build_s = time.perf_counter() - t0
    print(
        f"store: {args.mode}, {store.n_pages} pages, {len(store.probs):,} links; built in {build_s:.3f} s"
    )
    print()
    header = (
        f"{'sessions':>10} {'page views':>11} {'simulate s':>11} {'hits table s':>13} "
        f"{'sessions/s':>11} {'views/s':>11} {'Bayes loss s':>13} {'log-loss':>9}"
    )
    print(header)
    print("-" * len(header))
    vec_per_session = None
    for n in args.sizes:
        t0 = time.perf_counter()
        sim = store.simulate(n, seed=1)
        sim_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw = store.sample_sessions(n, seed=1)
        hits_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loss = store.predictive_log_loss(sim)
        loss_s = time.perf_counter() - t0
        views = len(raw.hits)
        print(
            f"{n:>10,} {views:>11,} {sim_s:>11.3f} {hits_s:>13.3f} {n / hits_s:>11,.0f} "
            f"{views / hits_s:>11,.0f} {loss_s:>13.3f} {loss:>9.4f}"
        )
        vec_per_session = sim_s / n
    print()
    t0 = time.perf_counter()
    naive_views = naive_sessions(store, args.baseline_sessions, seed=1)
    naive_s = time.perf_counter() - t0
    per = naive_s / args.baseline_sessions
    print(
        f"baseline (Python loop, Generator.choice per page view): {args.baseline_sessions:,} "
        f"sessions, {naive_views:,} page views in {naive_s:.2f} s = "
        f"{args.baseline_sessions / naive_s:,.0f} sessions/s"
    )
    for n in args.sizes:
        print(f"  baseline extrapolated to {n:,} sessions: {per * n:,.1f} s")
    if vec_per_session:
        print(
            f"vectorised simulate vs baseline, per session (largest size): "
            f"{per / vec_per_session:,.0f}x faster"
        )


if __name__ == "__main__":
    main()
