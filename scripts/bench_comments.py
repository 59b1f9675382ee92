"""Benchmark: the timings that code comments point to (docs/benchmarks.md, "Small timings").

    python scripts/bench_comments.py [--pages 2000 4000]

Printed, measured in this run: the MSNBC loader's line count over the ``.seq`` body (a
cumulative sum of newlines, int32 against int64: ``clickstream/msnbc.py``); the page catalog
over MSNBC's 4.7M page views (``clickstream/catalog.py``); and the exact true page value of
synthetic stores (``envs/rewards.py``: why ``auto`` switches to sampling above
``EXACT_PAGE_VALUE_MAX_PAGES``). Each time is the best of a few runs.
"""

from __future__ import annotations

import argparse
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NEXTPAGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
MSNBC = SHARED / "msnbc990928.zip"


def best(call: Callable[[], object], repeats: int = 3) -> float:
    """Fewest seconds ``call`` took over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[2000, 4000])
    args = parser.parse_args()

    from clickstream import msnbc
    from clickstream.catalog import page_stats, transition_counts
    from clickstream.synthetic import SyntheticConfig, build_store
    from envs.rewards import true_page_value

    with zipfile.ZipFile(MSNBC) as z:
        member = next(n for n in z.namelist() if n.endswith(".seq"))
        is_nl = np.frombuffer(z.read(member), dtype=np.uint8) == ord("\n")
    t32 = best(lambda: np.cumsum(is_nl, dtype=np.int32), 5)
    t64 = best(lambda: np.cumsum(is_nl, dtype=np.int64), 5)
    print(
        f"MSNBC .seq body, {len(is_nl):,} bytes: newline cumsum int32 {1e3 * t32:.1f} ms, "
        f"int64 {1e3 * t64:.1f} ms ({t64 / t32:.1f}x)"
    )

    hits = msnbc.load(MSNBC).hits
    hits = hits.assign(page=hits["page_raw"], page_group=hits["page_raw"])
    print(
        f"MSNBC catalog, {len(hits):,} page views: page_stats {best(lambda: page_stats(hits), 2):.2f}"
        f" s, transition_counts {best(lambda: transition_counts(hits), 2):.2f} s"
    )

    for p in args.pages:
        store = build_store(SyntheticConfig(n_pages=p))
        seconds = best(lambda store=store: true_page_value(store, "exact"), 1)
        print(f"exact true page value, {p:,}-page intent store: {seconds:.1f} s")


if __name__ == "__main__":
    main()
