"""Compose the project's Hydra configs in tests, as the scripts' ``@hydra.main`` would."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_cfg(name: str, overrides: list[str]) -> DictConfig:
    """The config ``configs/<name>.yaml`` with command-line style ``overrides``."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=overrides)


def prepare_synthetic(out: Path, *overrides: str) -> Path:
    """A small prepared synthetic dataset in ``out`` (``prepare_data`` overrides appended)."""
    from scripts.prepare_data import run

    run(
        compose_cfg(
            "prepare_data", ["data=synthetic", f"out_dir={out}", "show_progress=false", *overrides]
        )
    )
    return out
