"""scripts/ope.py: log a policy with propensities, estimate another's value, refuse bad logs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from scripts.ope import main
from scripts.prepare_data import run

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ENV = ["--env", "action_level=group", "history_len=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ope") / "markov50"
    overrides = [
        "data=synthetic",
        "data.mode=markov",
        "data.n_pages=50",
        "data.n_sessions=5000",
        f"out_dir={out}",
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        run(compose("prepare_data", overrides=overrides))
    return out


def test_log_then_estimate_and_refuse_logs_without_propensities(data_dir, tmp_path, capsys):
    logs = tmp_path / "logs.parquet"
    args = ["log", "--data-dir", str(data_dir), "--sessions", "3000", "--out", str(logs), *ENV]
    assert main(args) == 0
    df = pd.read_parquet(logs)
    assert {"propensity", "slate", "next_page", "reward"} <= set(df.columns)
    assert df.groupby("session_id").ngroups == 3000
    assert ((df["propensity"] > 0) & (df["propensity"] <= 1)).all()
    # on-policy check: the logging policy's own greedy part ("popular") from its logs
    estimate = [
        "estimate",
        "--data-dir",
        str(data_dir),
        "--logs",
        str(logs),
        "--policy",
        "popular",
        "--n-boot",
        "50",
        *ENV,
    ]
    assert main(estimate) == 0
    out = capsys.readouterr().out
    for name in ("ips", "snips", "dm", "pdis", "pdwis", "fqe"):
        assert f" {name} " in out
    # the importance-sampling estimates carry their effective sample size; the sessions run
    # to EXIT or max_steps (50), so the default horizon warns of nothing
    assert "session horizon 50" in out and " of 3,000, max weight " in out
    assert "stop before the horizon" not in out
    # a horizon beyond what the logs cover: every session estimator would answer for another
    assert main([*estimate, "--horizon", "60"]) == 0
    assert "warning: " in (out := capsys.readouterr().out)
    assert "sessions stop before the horizon 60 without EXIT" in out
    df.drop(columns=["propensity"]).to_parquet(tmp_path / "bare.parquet")
    estimate[estimate.index(str(logs))] = str(tmp_path / "bare.parquet")
    assert main(estimate) == 2
    err = capsys.readouterr().err
    assert "bare.parquet" in err and "column 'propensity'" in err and "no propensities" in err


def test_outputs_in_new_folders_and_empty_logs_refused(data_dir, tmp_path, capsys):
    # --out in folders that do not exist yet: made up front, not a FileNotFoundError at the end
    logs = tmp_path / "new" / "logs.parquet"
    args = ["log", "--data-dir", str(data_dir), "--sessions", "200", "--out", str(logs), *ENV]
    assert main(args) == 0
    est = tmp_path / "more" / "deep" / "est.json"
    estimate = ["estimate", "--data-dir", str(data_dir), "--logs", str(logs),
                "--policy", "popular", "--n-boot", "5", "--out", str(est), *ENV]  # fmt: skip
    assert main(estimate) == 0
    rows = {r["estimator"]: r for r in json.loads(est.read_text()) if r["kind"] != "session"}
    assert rows.keys() >= {"ips", "dm"}
    assert rows["ips"]["units"] == 200 and 0 < rows["ips"]["ess"] <= 200
    assert rows["dm"]["ess"] is None and isinstance(rows["dm"]["warnings"], list)
    # a logs file with the schema and no rows: refused, not a table of NaN
    empty = tmp_path / "empty.parquet"
    pd.read_parquet(logs).head(0).to_parquet(empty)
    capsys.readouterr()
    estimate[estimate.index(str(logs))] = str(empty)
    assert main(estimate) == 2
    assert capsys.readouterr().err == (
        f"error: {empty}: the logs file holds no logged sessions: nothing to estimate from\n"
    )
