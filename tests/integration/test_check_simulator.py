"""check_simulator end to end on a small synthetic store: the true model matches its own data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clickstream.errors import ClickstreamError
from scripts.check_simulator import run as check_run
from tests.hydra_configs import compose_cfg, prepare_synthetic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a large test split (1,200 sessions): the report compares against it
    return prepare_synthetic(
        tmp_path_factory.mktemp("data") / "syn",
        "data.n_sessions=3000",
        "data.n_pages=80",
        "split.train=0.5",
        "split.valid=0.1",
        "split.test=0.4",
    )


def check(data_dir: Path, out_dir: Path, dynamics: str, *extra: str) -> dict:
    return check_run(
        compose_cfg(
            "check_simulator",
            [
                f"data_dir={data_dir}",
                f"out_dir={out_dir}",
                f"dynamics={dynamics}",  # `true` arrives as a boolean: run() must cope
                "n_sessions=5000",
                "n_visitors=1024",
                "n_boot=50",
                "show_progress=false",
                *extra,
            ],
        )
    )


def test_true_dynamics_match_the_test_split(synthetic_dir: Path, tmp_path: Path) -> None:
    record = check(synthetic_dir, tmp_path / "fid", "true")
    assert record["dynamics"] == "true"
    assert {p.name for p in (tmp_path / "fid").iterdir()} == {
        "fidelity.json",
        "fidelity.md",
        "manifest.json",
    }
    saved = json.loads((tmp_path / "fid" / "fidelity.json").read_text())
    assert saved["figures"] == record["figures"]
    assert saved["seed"] == 0 and "git_commit" in saved and saved["config"]["n_sessions"] == 5000
    assert saved["sizes"]["test_sessions"] == 1200
    assert saved["sizes"]["simulator_sessions"] == 5000
    assert saved["converting_pages"] == ["/ordercompleted.html"]

    # with 1,200 test sessions the truth lands within sampling noise of its own data
    f = {k: v["difference"] for k, v in record["figures"].items()}
    assert abs(f["pages_per_session"]) < 0.3
    assert abs(f["bounce_rate"]) < 0.04
    assert abs(f["conversion_rate"]) < 0.015
    d = {k: v["value"] for k, v in record["distances"].items()}
    floor = {k: v["noise_floor"] for k, v in record["distances"].items()}
    assert d["tv_pages"] < 0.08 and d["tv_pages"] < floor["tv_pages"] + 0.03
    assert d["tv_groups"] < 0.04
    assert d["tv_session_length"] < 0.08
    for group, r in record["exit_rate_by_group"].items():
        if r["test_views"] >= 300:
            assert abs(r["difference"]) < 0.08, group
    assert "bounce_rate" in record["table"]
    assert "| pages_per_session |" in (tmp_path / "fid" / "fidelity.md").read_text()

    again = check(synthetic_dir, tmp_path / "again", "true")
    for key in ("figures", "exit_rate_by_group", "distances", "sizes"):
        assert again[key] == record[key]


def test_markov_dynamics_run_and_miss_the_bounces(synthetic_dir: Path, tmp_path: Path) -> None:
    record = check(synthetic_dir, tmp_path / "fid", "markov")
    assert record["dynamics"] == "markov" and (tmp_path / "fid" / "fidelity.json").is_file()
    # a first-order chain cannot tell a browser's landing page from a researcher's, so it
    # bounces far less than the intent-driven visitors (clickstream/synthetic/)
    bounce = record["figures"]["bounce_rate"]
    assert bounce["difference"] < -0.08 and bounce["difference_ci95"][1] < 0
    assert record["distances"]["tv_session_length"]["value"] > 0.12


def test_missing_gru_model_is_a_clear_error(synthetic_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ClickstreamError):
        check(synthetic_dir, tmp_path / "fid", "gru")
    assert not (tmp_path / "fid").exists()
