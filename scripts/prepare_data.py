"""Prepare a clickstream dataset: load an export, normalise and group pages, split, write.

    python scripts/prepare_data.py data=<ga360|ga4|csv|msnbc|synthetic> data.path=<file|folder|glob> out_dir=<dir>
    python scripts/prepare_data.py data=csv data.path=views.csv data.columns="session=sid,page=item,time=ts"

Writes ``hits.parquet``, ``pages.parquet``, ``groups.parquet``, ``transitions.parquet``,
``meta.json`` and ``manifest.json`` to ``out_dir`` (published with one rename:
``clickstream/runfolder.py``) and prints a summary. See ``configs/prepare_data.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clickstream.errors import ConfigError
from clickstream.pages import PageConfig
from clickstream.prepare import format_summary, prepare
from clickstream.runfolder import check_replaceable, config_hash
from clickstream.splits import SplitConfig
from scripts import hydra_argv, run_or_exit

CONFIG_KEYS = ("data", "split", "repeats", "stats_split", "seed")
"""Settings that change the prepared data (``show_progress`` and paths do not): their hash is
in the manifest, and the pipeline reuses the data while it matches."""


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load ``cfg.data`` with its loader and write the prepared dataset to ``cfg.out_dir``.

    Returns:
        The dataset's meta record (what ``meta.json`` holds).
    """
    if OmegaConf.is_missing(cfg.data, "path"):  # "???" in the config: no default file
        raise ConfigError(
            f"data.path is required with data={cfg.data.get('name')}: the export's file, folder "
            "or glob (e.g. data.path=clicks.csv; docs/bring_your_own_data.md)"
        )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    # before loading, which may take minutes: a folder that is not an earlier prepared
    # dataset is never replaced (StageWriter checks it again when it publishes)
    check_replaceable(Path(resolved["out_dir"]), "prepare_data")
    data = resolved["data"]
    # build the loader as a partial and call it here, so that its errors are not wrapped
    load = instantiate(cfg.data.loader, _partial_=True)
    raw = load(path=data.get("path"))
    meta = prepare(
        raw,
        resolved["out_dir"],
        pages=PageConfig.from_dict(data.get("pages")),
        split=SplitConfig.from_dict(resolved.get("split")),
        repeats=resolved.get("repeats", "keep"),
        stats_split=resolved.get("stats_split", "all"),
        page_value=data.get("page_value") or "auto",
        config=resolved,
        show_progress=bool(resolved.get("show_progress", True)),
        config_hash=config_hash(resolved, CONFIG_KEYS),
    )
    return meta


@hydra.main(version_base="1.3", config_path="../configs", config_name="prepare_data")
def main(cfg: DictConfig) -> None:
    meta = run_or_exit(run, cfg)
    print(format_summary(meta))
    print(f"written to {cfg.out_dir}")


if __name__ == "__main__":
    sys.argv[1:] = hydra_argv(sys.argv[1:])
    main()
