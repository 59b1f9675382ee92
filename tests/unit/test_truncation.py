"""A training run cut short by a time limit is never silent: recorded, reported, status 3."""

from __future__ import annotations

import pytest

from scripts import run_or_exit
from scripts.train import TrainingTruncated, check_truncated, reached, truncation

CUT = {
    "policy": "ppo",
    "seed": 2,
    "truncated": True,
    "agent": {"max_minutes": 5},
    "fit": {"steps": 40_576, "budget_steps": 600_000, "truncated": True},
}
WHOLE = {"policy": "ppo", "seed": 2, "fit": {"steps": 600_000, "budget_steps": 600_000}}


def test_truncation_reads_the_record() -> None:
    assert truncation(CUT) == {"steps": 40_576, "budget_steps": 600_000, "max_minutes": 5}
    assert reached(truncation(CUT)) == "40,576 of 600,000"
    assert truncation(WHOLE) is None
    assert truncation({"policy": "greedy", "fit": {}}) is None  # built, never trained in steps
    # records written before run.json had the top-level field: the fit's flag counts
    assert truncation({**CUT, "truncated": None}) is not None


def test_a_truncated_run_fails_with_status_3_unless_allowed(capsys) -> None:
    check_truncated(WHOLE, allow=False, where="run.json")
    check_truncated(CUT, allow=True, where="run.json")
    with pytest.raises(TrainingTruncated, match=r"40,576 of 600,000 steps.*allow_truncated=true"):
        check_truncated(CUT, allow=False, where="run.json")

    def run(cfg):
        check_truncated(CUT, allow=cfg, where="agents/ppo/seed_2/run.json")
        return {}

    with pytest.raises(SystemExit) as exit_:
        run_or_exit(run, False)
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("error: agents/ppo/seed_2/run.json: ppo (seed 2) was stopped")
    assert run_or_exit(run, True) == {}


def test_the_pipeline_refuses_a_truncated_policy_trained_outside_it(tmp_path, capsys) -> None:
    import json

    from omegaconf import OmegaConf

    from agents.base import MANIFEST
    from scripts.pipeline import _check_others_truncated

    folder = tmp_path / "agents" / "ppo" / "seed_3"
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text("{}")
    (folder / "run.json").write_text(json.dumps(CUT))
    whole = tmp_path / "agents" / "dqn" / "seed_0"
    whole.mkdir(parents=True)
    (whole / MANIFEST).write_text("{}")
    (whole / "run.json").write_text(json.dumps(WHOLE))
    cfg = OmegaConf.create({"out_dir": str(tmp_path), "allow_truncated": False})
    report: dict = {"truncated": {}}
    with pytest.raises(TrainingTruncated, match=r"ppo/seed_3, trained outside the pipeline"):
        _check_others_truncated(cfg, report)
    report = {"truncated": {}}
    _check_others_truncated(OmegaConf.merge(cfg, {"allow_truncated": True}), report)
    assert report["truncated"] == {"ppo/seed_3": {"steps": 40_576, "budget_steps": 600_000}}
    assert "TRUNCATED: ppo/seed_3 after 40,576 of 600,000 steps" in capsys.readouterr().out
