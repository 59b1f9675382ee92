"""Simulator fidelity report: organic simulated sessions against the held-out test split.

    python scripts/check_simulator.py data_dir=<prepared dir> [dynamics=gru|latent_class|markov|true|...] [n_sessions=20000] [seed=0] [out_dir=<dir>]

Simulates ``n_sessions`` sessions with no recommendation shown (``envs.fidelity``), compares
pages per session, bounce rate, conversion rate, exit rate by page group and the total
variation distances of page views, page groups and session lengths with the test split, prints
a summary that fits on a screen at any site size (the figures, and the most viewed and the worst
pages and groups: ``top`` of each) and writes ``out_dir/fidelity.json`` (every page and group),
``out_dir/fidelity.md`` and ``manifest.json`` together (one folder published with one rename:
``clickstream/runfolder.py``). See ``configs/check_simulator.yaml``.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from clickstream.prepare import choose_reward, git_commit
from clickstream.runfolder import StageWriter, config_hash, manifest_digest, read_parquet
from envs import visitors
from envs.core import resolve_device
from envs.fidelity import (
    check_report_options,
    fidelity_report,
    format_fidelity_markdown,
    format_fidelity_table,
    simulate_organic_sessions,
)
from envs.sequences import load_prepared
from envs.site_env import build_core
from scripts import run_or_exit

CONFIG_KEYS = (
    "dynamics",
    "reward",
    "n_sessions",
    "n_visitors",
    "max_steps",
    "history_len",
    "top_k",
    "n_boot",
    "seed",
)
"""Settings that change the report (recorded as a hash in its manifest)."""


def run(cfg: DictConfig) -> dict[str, Any]:
    """Simulate, compare with the test split and write the report; returns the record."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    data_dir = Path(resolved["data_dir"])
    out_dir = Path(resolved["out_dir"])
    seed = int(resolved.get("seed", 0))
    # before any loading or simulating: a bad value would otherwise fail after all of it
    n_boot, top = check_report_options(resolved.get("n_boot", 200), resolved.get("top", 5))
    named = resolved.get("dynamics")
    kind = visitors.default_kind() if named is None else visitors.get(named, key="dynamics")
    dynamics = kind.name  # the command line's `dynamics=true` parses as a boolean
    data = load_prepared(data_dir, splits=("test",))
    catalog = read_parquet(data_dir / "pages.parquet")
    # paid but unused here: a site without revenue falls back to engagement, said in one line
    reward, note = choose_reward(
        data.meta, str(resolved.get("reward", "page_value")), key="reward", data_dir=data_dir
    )
    if note:
        print(f"note: {note}", flush=True)
    core = build_core(
        int(resolved.get("n_visitors", 4096)),
        data_dir=data_dir,
        dynamics=dynamics,
        model_path=resolved.get("model_path"),
        reward=reward,
        reward_key="reward",
        max_steps=int(resolved.get("max_steps", 200)),
        history_len=int(resolved.get("history_len", 4)),
        top_k=resolved.get("top_k"),
        device=str(resolve_device(str(resolved.get("device", "cpu")))),
    )
    start = time.perf_counter()
    sim = simulate_organic_sessions(
        core,
        int(resolved.get("n_sessions", 20_000)),
        seed=seed,
        progress=bool(resolved.get("show_progress", True)),
    )
    seconds = time.perf_counter() - start
    report = fidelity_report(
        sim,
        data.splits["test"],
        data.vocab,
        catalog,
        n_boot=n_boot,
        seed=seed,
        top=top,
    )
    record: dict[str, Any] = {
        "data_dir": str(data_dir),
        "dataset": data.meta.get("summary"),
        "dynamics": dynamics,
        "max_steps": core.max_steps,
        **report,
        "simulation_seconds": seconds,
        "seed": seed,
        "git_commit": git_commit(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": resolved,
    }
    title = f"Simulator fidelity: {dynamics} dynamics vs the test split of {data_dir.name}"
    model_path = resolved.get("model_path")
    simulator = Path(model_path).parent if model_path else data_dir / "simulator"
    stage = StageWriter(
        out_dir,
        "check_simulator",
        config_hash=config_hash(resolved, CONFIG_KEYS),
        inputs={
            "data": data.manifest.digest if data.manifest else None,
            "simulator": manifest_digest(simulator) if kind.learned else None,
        },
        data_fingerprint=data.manifest.data_fingerprint if data.manifest else None,
    )
    with stage as out:
        out.write_json("fidelity.json", record)
        out.write_text(
            "fidelity.md",
            format_fidelity_markdown(report, title)
            + f"\nSeed {seed}, max_steps {core.max_steps}, git commit {record['git_commit']}.\n",
        )
    record["table"] = format_fidelity_table(report)
    return record


@hydra.main(version_base="1.3", config_path="../configs", config_name="check_simulator")
def main(cfg: DictConfig) -> None:
    record = run_or_exit(run, cfg)
    sizes = record["sizes"]
    print(
        f"{record['dynamics']} dynamics: {sizes['simulator_sessions']:,} simulated sessions "
        f"({sizes['simulator_truncated']:,} cut at max_steps={record['max_steps']}) in "
        f"{record['simulation_seconds']:.1f} s; test split: {sizes['test_sessions']:,} sessions"
    )
    print(record["table"])
    print(f"written to {cfg.out_dir}")


if __name__ == "__main__":
    main()
