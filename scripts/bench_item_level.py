"""Item-level next-page benchmark: the GRU recipe for item logs against Markov and popularity.

    python scripts/bench_item_level.py                                  # items 5,000 and 10,000, MSNBC
    python scripts/bench_item_level.py --sites items_5000 --simulator gru   # another recipe, one site

For each site it runs the project's public commands (printed as it goes) and reads what they
write, so the figures are those any user gets:

1. ``scripts/prepare_data.py``: the synthetic item-level store (``data=synthetic
   data.mode=items data.n_pages=N``, 50,000 sessions: bare numeric item ids in categories, a
   latent interest category per session) or MSNBC (``data=msnbc``, from
   ``../shared/data/msnbc990928.zip``); skipped when ``<out>/<site>/meta.json`` exists.
2. ``scripts/train_simulator.py simulator=<recipe>``: trains the GRU (early stopping on the
   validation split), fits popularity and first- and second-order Markov (their smoothing tuned
   on the validation split) and scores every model, and the true model on synthetic data, on
   the test split with the standard protocol (``envs/metrics.py``: full ranking of every page
   and ``EXIT``, pessimistic ties).

It prints one table (Recall@20, MRR@20, Recall@1, log-loss per model and site; the GRU's
training time and epochs) and writes it with the commands to ``<out>/bench_item_level.md``.
Budgets are epochs and sessions, so the table does not depend on how busy the machine was;
the times do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# where configs/paths/default.yaml looks for the public data (data=msnbc reads it from there)
SHARED = Path(os.environ.get("NEXTPAGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
MSNBC = SHARED / "msnbc990928.zip"
MODELS = ("gru", "markov2", "markov1", "popularity", "true_model")
COLUMNS = ("recall@20", "mrr@20", "recall@1", "log_loss")


def prepare_command(site: str, out: Path, sessions: int) -> list[str]:
    """The ``prepare_data`` command of a site (``items_<N>`` or ``msnbc``)."""
    cmd = [sys.executable, "scripts/prepare_data.py", f"out_dir={shown(out)}"]
    if site == "msnbc":
        if not MSNBC.is_file():
            sys.exit(f"MSNBC not found at {MSNBC} (see data/README.md); leave out --sites msnbc")
        return [*cmd, "data=msnbc"]
    if not site.startswith("items_"):
        sys.exit(f"unknown site {site!r}: items_<pages> (e.g. items_5000) or msnbc")
    return [
        *cmd,
        "data=synthetic",
        "data.mode=items",
        f"data.n_pages={int(site.removeprefix('items_'))}",
        f"data.n_sessions={sessions}",
    ]


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` in the repository root, output to ``log``; seconds taken (exit on failure)."""
    shown = " ".join(c if c != sys.executable else "python" for c in cmd)
    print(f"$ {shown}", flush=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as f:
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}) after {seconds:.0f} s: see {log}")
    return seconds


def bench_site(
    site: str, out: Path, recipe: str, sessions: int, force: bool, extra: list[str]
) -> dict[str, Any]:
    """Prepare (unless there) and train/score one site; the metrics record and timings."""
    data_dir = out / site
    data_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"site": site, "commands": []}
    prep = prepare_command(site, data_dir, sessions)
    if force or not (data_dir / "meta.json").is_file():
        record["prepare_seconds"] = run(prep, out / f"{site}.prepare.log")
    record["commands"].append(prep)
    sim_dir = data_dir / f"simulator_{recipe}"
    train_cmd = [
        sys.executable,
        "scripts/train_simulator.py",
        f"data_dir={shown(data_dir)}",
        f"simulator={recipe}",
        f"out_dir={shown(sim_dir)}",
        "show_progress=false",
        *extra,
    ]
    record["train_seconds"] = run(train_cmd, out / f"{site}.{recipe}.log")
    record["commands"].append(train_cmd)
    metrics = json.loads((sim_dir / "metrics.json").read_text(encoding="utf-8"))
    record["metrics"] = metrics
    return record


def format_results(records: list[dict[str, Any]], variant: str = "with_exit") -> str:
    """The benchmark table (Markdown), one block of rows per site."""
    head = "| site | pages | test steps | model | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (4 + len(COLUMNS))]
    for r in records:
        m = r["metrics"]
        models = m["models"]
        pages = int((m.get("dataset") or {}).get("pages", 0))
        gru = m["gru"]
        for name in MODELS:
            if name not in models:
                continue
            v = models[name][variant]
            label = name
            if name == "gru":
                label = (
                    f"**GRU** ({gru['history']['best_epoch']} of {len(gru['history']['epochs'])}"
                    f" epochs, {sum(e['train_seconds'] for e in gru['history']['epochs']):,.0f} s"
                    f" training)"
                )
            cells = [r["site"], f"{pages:,}", f"{v['steps']:,}", label]
            cells += [f"{v[c]:.4f}" for c in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(records: list[dict[str, Any]], variant: str = "with_exit") -> list[str]:
    """One line per site: the GRU against second-order Markov on Recall@20 and MRR@20."""
    out = []
    for r in records:
        models = r["metrics"]["models"]
        g, m2 = models["gru"][variant], models["markov2"][variant]
        parts = []
        for key in ("recall@20", "mrr@20"):
            diff = g[key] - m2[key]
            word = "beats" if diff > 0 else ("ties" if diff == 0 else "LOSES TO")
            parts.append(f"{key} {g[key]:.4f} vs {m2[key]:.4f} ({word}, {diff:+.4f})")
        out.append(f"{r['site']}: GRU vs Markov-2: " + "; ".join(parts))
    return out


def machine_line() -> str:
    """CPU model, cores, memory, torch: what the times in the table were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kb / 2**20:.0f} GB RAM"
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (for printed commands)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", nargs="+", default=["items_5000", "items_10000", "msnbc"])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "bench_item_level")
    parser.add_argument("--simulator", default="gru_items", help="configs/simulator/<name>.yaml")
    parser.add_argument("--sessions", type=int, default=50_000, help="synthetic sessions")
    parser.add_argument("--force", action="store_true", help="prepare the data again")
    parser.add_argument("overrides", nargs="*", help="extra train_simulator overrides")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_line()
    print(f"machine: {machine}")
    start = time.perf_counter()
    records = [
        bench_site(site, args.out, args.simulator, args.sessions, args.force, args.overrides)
        for site in args.sites
    ]
    total = time.perf_counter() - start
    table = format_results(records)
    lines = verdicts(records)
    commands = [
        " ".join("python" if c == sys.executable else c for c in cmd)
        for r in records
        for cmd in r["commands"]
    ]
    text = "\n".join(
        [
            f"# Item-level benchmark ({args.simulator}, with EXIT, full ranking)",
            "",
            table,
            "",
            *lines,
            "",
            f"Machine: {machine}; total {total / 60:.1f} min.",
            "",
            "```bash",
            *commands,
            "```",
        ]
    )
    (args.out / "bench_item_level.md").write_text(text + "\n", encoding="utf-8")
    print()
    print(text)


if __name__ == "__main__":
    main()
