"""Benchmark: ingest time and peak memory of ``prepare_data`` against a plain-Python baseline.

    python scripts/bench_ingest.py [--dataset msnbc|ga360|csv] [--repeat 1] [--rows 1000000]

Each measurement runs in a fresh child process, so its peak resident memory is its own. The
baseline is the least work any loader must do: read the input and split every record into its
fields (MSNBC: every line of the .seq into ints, in plain Python; GA360: the page paths of every
PAGE hit through DuckDB into a Python list; CSV: ``pandas.read_csv`` of the file, no checks).
Printed: seconds and peak RSS per stage, and the ratio of the full pipeline to the baseline,
both measured in this run on this machine.

``csv`` is a generated clickstream file (``--rows`` page views of about 4 per session over 2,000
pages, ISO timestamps; the same bytes for the same ``--rows``), written once to the temporary
folder: the CSV loader's checks (quotes, keys, time zones, order, repeated rows) are what its
ratio measures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FILES = {
    "msnbc": SHARED / "msnbc990928.zip",
    "ga360": SHARED / "ga_sample_20170801.parquet",
    "csv": Path(tempfile.gettempdir()) / "nextpage_bench_clicks.csv",
}


SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"][:45]
PAGES = [f"/{a}/{b}{c}" for a in SYLLABLES[:5] for b in SYLLABLES[:20] for c in SYLLABLES[:20]]
"""2,000 page paths of letters only (numbers would be read as ids and merged, as they should)."""


def write_clicks_csv(path: Path, rows: int) -> None:
    """A clickstream CSV of ``rows`` page views (sessions of 1 to 7 views, 2,000 pages), the
    same bytes for the same ``rows`` (seed 0)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 8, size=rows // 2)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), rows)) + 1]
    lengths[-1] -= int(lengths.sum()) - rows
    session = np.repeat(np.arange(len(lengths)), lengths)
    step = np.arange(rows) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    start = pd.Timestamp("2026-11-01T00:00:00Z") + pd.to_timedelta(session * 37, unit="s")
    frame = pd.DataFrame(
        {
            "session_id": np.char.add("s", session.astype(str)),
            "page": np.asarray(PAGES)[rng.integers(0, len(PAGES), size=rows)],
            "timestamp": (start + pd.to_timedelta(step * 30, unit="s")).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
    )
    frame.to_csv(path, index=False)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def child_baseline(dataset: str) -> dict[str, float]:
    start = time.perf_counter()
    if dataset == "msnbc":
        import zipfile

        with zipfile.ZipFile(FILES[dataset]) as zf:
            text = zf.read("msnbc990928.seq").decode("utf-8")
        lines = text.splitlines()
        first = lines.index("% Sequences:") + 1  # the header names the categories
        body = [ln for ln in lines[first:] if ln.strip()]
        sessions = [[int(tok) for tok in ln.split()] for ln in body]
        records = sum(len(s) for s in sessions)
    elif dataset == "csv":
        import pandas as pd

        records = len(pd.read_csv(FILES[dataset]))
    else:
        import duckdb

        rows = duckdb.sql(
            f"SELECT h.page.pagePath FROM read_parquet('{FILES[dataset]}') AS s, "
            "UNNEST(s.hits) AS t(h) WHERE h.type = 'PAGE'"
        ).fetchall()
        records = len([r[0] for r in rows])
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": _peak_rss_mb(),
        "records": records,
    }


def child_pipeline(dataset: str) -> dict[str, float]:
    from importlib import import_module

    from clickstream.pages import PageConfig
    from clickstream.prepare import prepare

    timings: dict[str, float] = {}
    start = time.perf_counter()
    loader = import_module(f"clickstream.{dataset}").load
    raw = loader(FILES[dataset])
    timings["load_seconds"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        meta = prepare(raw, Path(tmp) / "out", pages=PageConfig(normalise=dataset != "msnbc"))
        timings["prepare_seconds"] = time.perf_counter() - t
    timings["seconds"] = time.perf_counter() - start
    timings["peak_rss_mb"] = _peak_rss_mb()
    timings["records"] = meta["summary"]["page_views"]
    timings["sessions"] = meta["summary"]["sessions"]
    return timings


def run_child(kind: str, dataset: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--dataset", dataset],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(FILES), default="msnbc")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rows", type=int, default=1_000_000, help="csv: page views generated")
    parser.add_argument("--child", choices=["baseline", "pipeline"])
    args = parser.parse_args()
    if args.child:
        fn = child_baseline if args.child == "baseline" else child_pipeline
        print(json.dumps(fn(args.dataset)))
        return
    if args.dataset == "csv":  # generated afresh: another --rows is another file
        write_clicks_csv(FILES["csv"], args.rows)
    if not FILES[args.dataset].is_file():
        sys.exit(f"{FILES[args.dataset]} not found")
    for i in range(args.repeat):
        base = run_child("baseline", args.dataset)
        pipe = run_child("pipeline", args.dataset)
        print(
            f"run {i + 1}: {args.dataset}, {pipe['sessions']:,} sessions, {pipe['records']:,} page views"
        )
        print(
            f"  baseline (plain parse)         {base['seconds']:7.2f} s  peak {base['peak_rss_mb']:7.0f} MB"
        )
        print(
            f"  prepare_data (load + prepare)  {pipe['seconds']:7.2f} s  peak {pipe['peak_rss_mb']:7.0f} MB"
            f"   (load {pipe['load_seconds']:.2f} s, prepare {pipe['prepare_seconds']:.2f} s)"
        )
        print(f"  ratio pipeline / baseline      {pipe['seconds'] / base['seconds']:7.2f}x")


if __name__ == "__main__":
    main()
