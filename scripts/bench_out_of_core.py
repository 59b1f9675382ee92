"""Benchmark: a GA360 export larger than memory, flattened out of core, counts as in memory.

    python scripts/bench_out_of_core.py [--copies 16] [--memory-limit 96MB] [--threads 1]

Generates a BigQuery JSON export (newline-delimited, one file, as ``bq extract`` writes it) of
``--copies`` copies of the shared GA day (``../shared/data/ga_sample_20170801.parquet``), each
copy another set of visitors (``fullVisitorId`` suffixed) on another day (``visitStartTime``
shifted), so that the export is ``--copies`` times the day. Then, each in a fresh child
process so that its peak resident memory is its own:

* ``out of core``: :func:`clickstream.ga360.flatten_out_of_core` over the whole export, DuckDB
  held to ``--memory-limit`` and spilling to disk;
* ``in memory, one day``: :func:`clickstream.ga360.load` (the in-memory path) over the day.

Printed: the export's size and its ratio to the memory limit, each run's seconds and peak RSS,
and every count of the out-of-core run beside ``copies`` times the one-day counts; the script
exits 1 if any differs.
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
DAY = ROOT.parent / "shared" / "data" / "ga_sample_20170801.parquet"

SUMMED = (
    "page_views",
    "sessions",
    "transactions",
    "revenue",
    "source_sessions",
    "source_event_hits",
    "totals_transactions",
    "totals_transaction_revenue",
)
"""Counts that add up over copies (the page paths are the same in every copy)."""


def make_export(day: Path, copies: int, out: Path) -> int:
    """Write ``copies`` copies of the GA360 ``day`` as one NDJSON export; returns its bytes."""
    import duckdb

    con = duckdb.connect()
    src = str(day).replace("'", "''")
    con.execute(
        # copy 0 is the day as it is; copy k other visitors k days later
        "COPY (SELECT * REPLACE (CASE WHEN k = 0 THEN fullVisitorId "
        "ELSE fullVisitorId || '-' || k END AS fullVisitorId, "
        "visitStartTime + k * 86400 AS visitStartTime) "
        f"FROM read_parquet('{src}'), range({int(copies)}) AS t(k)) "
        f"TO '{str(out).replace(chr(39), chr(39) * 2)}' (FORMAT json)"
    )
    con.close()
    return out.stat().st_size


def _peak_rss_mb() -> float:
    """This process's peak resident memory (MB): ``VmHWM`` of ``/proc/self/status``, which
    starts anew at ``exec`` (``getrusage``'s ``ru_maxrss`` keeps the peak of the process that
    forked it, here the parent that wrote the export)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: kilobytes


def child_out_of_core(export: Path, out: Path, memory_limit: str, threads: int) -> dict:
    from clickstream import ga360

    start = time.perf_counter()
    counts = ga360.flatten_out_of_core(
        export, out, memory_limit=memory_limit, threads=threads, show_progress=False
    )
    return {**counts, "seconds": time.perf_counter() - start, "peak_rss_mb": _peak_rss_mb()}


def child_in_memory(day: Path) -> dict:
    from clickstream import ga360

    start = time.perf_counter()
    result = ga360.load(day, show_progress=False)
    hits = result.hits
    return {
        "page_views": len(hits),
        "sessions": int(hits["session_id"].nunique()),
        "page_paths": int(hits["page_raw"].nunique()),
        "transactions": int(hits["is_transaction"].sum()),
        "revenue": float(hits["revenue"].sum()),
        **{k: result.info[k] for k in SUMMED[4:]},
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(out_of_core: dict, one_day: dict, copies: int) -> list[tuple[str, float, float]]:
    """``(count, out of core, copies x one day)`` for every count that differs."""
    wrong = []
    for key in (*SUMMED, "page_paths"):
        want = one_day[key] * (copies if key in SUMMED else 1)
        got = out_of_core[key]
        if abs(got - want) > 1e-6 * max(1.0, abs(want)):
            wrong.append((key, got, want))
    return wrong


def run(copies: int, memory_limit: str, threads: int, work: Path, day: Path = DAY) -> dict:
    """Generate the export in ``work``, run both children; returns what they measured."""
    export = work / "ga_sessions_export.json"
    size = _child("export", str(day), str(copies), str(export))["bytes"]
    ooc = _child("out_of_core", str(export), str(work / "flat"), memory_limit, str(threads))
    mem = _child("in_memory", str(day))
    return {
        "copies": copies,
        "memory_limit": memory_limit,
        "threads": threads,
        "export_bytes": size,
        "out_of_core": ooc,
        "in_memory_one_day": mem,
        "differences": compare(ooc, mem, copies),
    }


def _bytes(text: str) -> float:
    units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper()
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * factor
    return float(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--memory-limit", default="96MB")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "export":
            result = {"bytes": make_export(Path(rest[0]), int(rest[1]), Path(rest[2]))}
        elif kind == "out_of_core":
            result = child_out_of_core(Path(rest[0]), Path(rest[1]), rest[2], int(rest[3]))
        else:
            result = child_in_memory(Path(rest[0]))
        print(json.dumps(result))
        return
    if not DAY.is_file():
        raise SystemExit(f"needs the shared GA day: {DAY}")
    with tempfile.TemporaryDirectory(prefix="bench-ooc-") as tmp:
        res = run(args.copies, args.memory_limit, args.threads, Path(tmp))
    ooc, mem = res["out_of_core"], res["in_memory_one_day"]
    ratio = res["export_bytes"] / _bytes(args.memory_limit)
    print(
        f"export: {args.copies} copies of the GA day, {res['export_bytes'] / 1e6:,.0f} MB of "
        f"NDJSON = {ratio:.1f}x the memory limit ({args.memory_limit}, {args.threads} thread(s))"
    )
    print("| run | input | seconds | peak RSS (MB) |")
    print("|---|---|---:|---:|")
    print(
        f"| out of core (flatten_out_of_core) | whole export | {ooc['seconds']:.1f} | "
        f"{ooc['peak_rss_mb']:.0f} |"
    )
    print(f"| in memory (ga360.load) | one day | {mem['seconds']:.1f} | {mem['peak_rss_mb']:.0f} |")
    print("| count | out of core | copies x one day |")
    print("|---|---:|---:|")
    for key in (*SUMMED, "page_paths"):
        want = mem[key] * (args.copies if key in SUMMED else 1)
        print(f"| {key} | {ooc[key]:,.2f} | {want:,.2f} |")
    print(f"flat table written: {ooc['flat_bytes'] / 1e6:.1f} MB of Parquet")
    if res["differences"]:
        print(f"DIFFERENT: {res['differences']}")
        raise SystemExit(1)
    print("every count equal")


if __name__ == "__main__":
    main()
