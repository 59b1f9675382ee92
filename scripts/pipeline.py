"""Run every stage built so far on one dataset, reusing stage outputs that are up to date.

    python scripts/pipeline.py                                  # the embedded synthetic store
    python scripts/pipeline.py data=msnbc simulator=gru_msnbc   # any data config
    python scripts/pipeline.py force=true                       # rerun every stage

Stages: ``prepare_data`` (→ ``<data_dir>``), ``train_simulator`` (→ ``<data_dir>/simulator``).
A stage is skipped when its outputs exist and were made from the same configuration and the
same inputs (its record in ``meta.json`` / ``metrics.json`` says so); otherwise it runs, and
every stage after it runs too. See ``configs/pipeline.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from clickstream.prepare import format_summary
from scripts import prepare_data, run_or_exit, train_simulator

PREPARE_KEYS = ("data", "split", "repeats", "stats_split", "seed")
"""Settings that change the prepared data (``show_progress`` and paths do not)."""


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the stages; returns what each did (``ran`` or ``reused``) and their records."""
    data_dir = Path(cfg.data_dir)
    sim_dir = Path(cfg.simulator_dir)
    report: dict[str, Any] = {"stages": {}}

    prepare_cfg = OmegaConf.create(
        {
            **{k: cfg[k] for k in PREPARE_KEYS},
            "paths": cfg.paths,
            "out_dir": str(data_dir),
            "show_progress": cfg.show_progress,
        }
    )
    wanted = _plain(prepare_cfg, PREPARE_KEYS)
    meta = _read_json(data_dir / "meta.json")
    fresh = (
        not cfg.force
        and meta is not None
        and _plain(meta.get("config", {}), PREPARE_KEYS) == wanted
    )
    if fresh:
        report["stages"]["prepare_data"] = "reused"
    else:
        meta = prepare_data.run(prepare_cfg)
        report["stages"]["prepare_data"] = "ran"
    report["prepare_data"] = meta

    train_cfg = OmegaConf.create(
        {
            "simulator": cfg.simulator,
            "paths": cfg.paths,
            "data_dir": str(data_dir),
            "out_dir": str(sim_dir),
            "resume": False,
            "device": cfg.device,
            "seed": cfg.seed,
            "show_progress": cfg.show_progress,
        }
    )
    metrics = _read_json(sim_dir / "metrics.json")
    fresh = (
        fresh
        and metrics is not None
        and (sim_dir / "model.pt").is_file()
        and metrics.get("config", {}).get("simulator")
        == _plain(train_cfg, ("simulator",))["simulator"]
        and metrics.get("seed") == cfg.seed
        and metrics.get("dataset_created_utc") == meta.get("created_utc")
    )
    if fresh:
        report["stages"]["train_simulator"] = "reused"
    else:
        metrics = train_simulator.run(train_cfg)
        report["stages"]["train_simulator"] = "ran"
    report["train_simulator"] = metrics
    return report


def _plain(cfg: DictConfig | dict, keys: tuple[str, ...]) -> dict[str, Any]:
    """The resolved values of ``keys`` as plain data, for comparing configurations."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    return json.loads(json.dumps({k: cfg.get(k) for k in keys}, default=str))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@hydra.main(version_base="1.3", config_path="../configs", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    report = run_or_exit(run, cfg)
    stages = report["stages"]
    print(f"prepare_data ({stages['prepare_data']}): {cfg.data_dir}")
    print(format_summary(report["prepare_data"]))
    metrics = report["train_simulator"]
    print(f"\ntrain_simulator ({stages['train_simulator']}): {cfg.simulator_dir}")
    if "table" in metrics:
        print(metrics["table"])
    else:
        from envs.metrics import format_table

        print(format_table(metrics["models"], metrics["report"]))


if __name__ == "__main__":
    main()
