"""The visitor model's headline targets, end to end (slow: minutes on a 2-core CPU).

python -m pytest -m slow tests/integration/test_targets.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.prepare_data import run as prepare_run
from scripts.train_simulator import run as train_run
from tests.hydra_configs import compose_cfg

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gru_within_two_percent_of_the_truth_on_the_default_store(tmp_path: Path) -> None:
    data = tmp_path / "synthetic_intent"
    prepare_run(compose_cfg("prepare_data", [f"out_dir={data}", "show_progress=false"]))
    record = train_run(
        compose_cfg(
            "train_simulator",
            [f"data_dir={data}", f"out_dir={tmp_path / 'sim'}", "show_progress=false"],
        )
    )
    loss = {name: v["with_exit"]["log_loss"] for name, v in record["models"].items()}
    assert loss["gru"] <= 1.02 * loss["true_model"]
    assert loss["markov1"] > loss["gru"] + 0.03  # visibly worse


def test_gru_beats_gru4rec_and_markov_on_msnbc(msnbc_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "msnbc"
    prepare_run(
        compose_cfg(
            "prepare_data",
            ["data=msnbc", f"data.path={msnbc_path}", f"out_dir={data}", "show_progress=false"],
        )
    )
    record = train_run(
        compose_cfg(
            "train_simulator",
            [
                f"data_dir={data}",
                "simulator=gru_msnbc",
                f"out_dir={tmp_path / 'sim'}",
                "show_progress=false",
            ],
        )
    )
    m = {name: v["without_exit"] for name, v in record["models"].items()}
    assert m["gru"]["steps"] == 374_109
    # the official GRU4Rec on this split and machine: Recall@1 0.6716, MRR@5 0.7608
    assert m["gru"]["recall@1"] >= 0.6716 and m["gru"]["mrr@5"] >= 0.7608
    for baseline in ("markov1", "markov2"):
        assert m["gru"]["recall@1"] > m[baseline]["recall@1"]
        assert m["gru"]["mrr@5"] > m[baseline]["mrr@5"]
