"""Benchmark: the item-level page grouping against the synthetic store's true categories.

    python scripts/bench_grouping.py [--n-pages 10000] [--n-sessions 50000] [--seed 0]

Samples an item-level store (``clickstream.synthetic``, ``mode="items"``), hides its category
column and lets ``clickstream.pages.assign_pages`` group the items as it would an item log
without one (co-occurrence clusters, counted on the sessions). Printed, measured in this run:
clusters, pages left unlinked, purity (the share of linked pages whose cluster's most common
true category is their own; the same share weighted by page views) and seconds.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from clickstream.pages import PageConfig, assign_pages
from clickstream.synthetic import SyntheticConfig, build_store


def measure(n_pages: int, n_sessions: int, seed: int = 0) -> dict[str, float]:
    store = build_store(SyntheticConfig(mode="items", n_pages=n_pages, seed=seed))
    hits = store.sample_sessions(n_sessions, seed + 1).hits
    hits["content_group"] = pd.Series([None] * len(hits), dtype="str")
    truth = dict(zip(store.pages, store.page_groups, strict=True))
    start = time.perf_counter()
    out = assign_pages(hits, PageConfig())
    seconds = time.perf_counter() - start
    table = pd.DataFrame({"page": out.page, "group": out.page_group})
    table["truth"] = hits["page_raw"].map(truth)
    views = table.groupby("page").size()
    pages = table.drop_duplicates("page").set_index("page")
    pages["views"] = views
    linked = pages[pages["group"] != "unlinked"]
    majority = linked.groupby(["group", "truth"]).size().groupby(level=0).max().sum()
    weighted = linked.groupby(["group", "truth"])["views"].sum().groupby(level=0).max().sum()
    return {
        "items_viewed": len(pages),
        "categories": len(set(store.page_groups)),
        "clusters": linked["group"].nunique(),
        "unlinked": int((pages["group"] == "unlinked").sum()),
        "purity": majority / len(linked),
        "purity_by_views": weighted / linked["views"].sum(),
        "seconds": seconds,
        "grouping": out.report["grouping"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-pages", type=int, default=10_000)
    parser.add_argument("--n-sessions", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    r = measure(args.n_pages, args.n_sessions, args.seed)
    print(
        f"{args.n_pages:,} items ({r['items_viewed']:,} viewed), {args.n_sessions:,} sessions, "
        f"{r['categories']} true categories: {r['grouping']} grouping into {r['clusters']} "
        f"clusters + {r['unlinked']:,} unlinked pages in {r['seconds']:.1f} s; purity "
        f"{r['purity']:.3f} of linked pages, {r['purity_by_views']:.3f} by page views"
    )


if __name__ == "__main__":
    main()
