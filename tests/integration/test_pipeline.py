"""The pipeline runs every stage once and reuses what is up to date."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from scripts.pipeline import run

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def pipeline(tmp_path: Path, *extra: str) -> dict:
    overrides = [
        f"paths.data_dir={tmp_path}",
        "data.n_sessions=1500",
        "data.n_pages=60",
        "simulator.trainer.epochs=2",
        "show_progress=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return run(compose("pipeline", overrides=overrides))


def test_stages_run_once_then_are_reused(tmp_path: Path) -> None:
    first = pipeline(tmp_path)
    assert first["stages"] == {"prepare_data": "ran", "train_simulator": "ran"}
    out = tmp_path / "synthetic_intent"
    assert (out / "hits.parquet").is_file() and (out / "simulator" / "model.pt").is_file()
    assert first["prepare_data"]["summary"]["sessions"] == 1500

    again = pipeline(tmp_path)
    assert again["stages"] == {"prepare_data": "reused", "train_simulator": "reused"}
    assert again["train_simulator"]["models"] == first["train_simulator"]["models"]

    # a simulator setting retrains; the data stay
    changed = pipeline(tmp_path, "simulator.trainer.epochs=1")
    assert changed["stages"] == {"prepare_data": "reused", "train_simulator": "ran"}
    # a data setting redoes both
    more = pipeline(tmp_path, "simulator.trainer.epochs=1", "data.n_sessions=1600")
    assert more["stages"] == {"prepare_data": "ran", "train_simulator": "ran"}
    forced = pipeline(tmp_path, "simulator.trainer.epochs=1", "data.n_sessions=1600", "force=true")
    assert forced["stages"] == {"prepare_data": "ran", "train_simulator": "ran"}
