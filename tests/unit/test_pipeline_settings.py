"""The pipeline refuses settings it would trip over late or ignore, before any stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickstream.errors import ConfigError
from scripts.pipeline import CONFIGS, check_settings, run
from tests.hydra_configs import compose_cfg

EXPERIMENTS = sorted(f.stem for f in (CONFIGS / "experiment").glob("*.yaml"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seeds=[]", "seeds must be a non-empty list of seeds, got []"),
        ("seeds=[0,0]", "seeds must not repeat a seed (each would count twice), got [0, 0]"),
        ("seeds=[abc]", "seeds[0] must be a whole number in [0, 4294967295], got 'abc'"),
        ("seeds=[1.5]", "seeds[0] must be a whole number in [0, 4294967295], got 1.5"),
        ("eval_seeds=[]", "eval_seeds must be a non-empty list of seeds, got []"),
        (
            "eval_seeds=[2,2]",
            "eval_seeds must not repeat a seed (each would count twice), got [2, 2]",
        ),
        (
            "agents=[organic,nope]",
            "agents names agents with no configs/agent/<name>.yaml: ['nope']",
        ),
        (
            "learning_agents=[nope]",
            "learning_agents names agents with no configs/agent/<name>.yaml: ['nope']",
        ),
        (
            "references=[nope]",
            "references names agents with no configs/agent/<name>.yaml: ['nope']",
        ),
        (
            "++agent_overrides.ppp.total_timesteps=5",
            "agent_overrides names agents with no configs/agent/<name>.yaml: ['ppp']",
        ),
    ],
)
def test_a_bad_setting_is_named_before_any_stage(tmp_path: Path, override: str, message: str):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run(compose_cfg("pipeline", [f"out_dir={out}", override]))
    assert str(err.value).startswith(message)
    assert not (out / "data").exists()  # nothing was made


def test_an_out_dir_that_is_a_file_is_named(tmp_path: Path):
    out = tmp_path / "run"
    out.write_text("not a folder")
    with pytest.raises(ConfigError) as err:
        check_settings(compose_cfg("pipeline", [f"out_dir={out}"]))
    assert str(err.value) == f"{out}: out_dir cannot be a run folder here: File exists"
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes_the_checks(tmp_path: Path, experiment: str):
    check_settings(compose_cfg("pipeline", [f"out_dir={tmp_path}", f"experiment={experiment}"]))


def test_an_agent_line_says_how_many_sessions_its_score_is_over():
    from scripts.pipeline import _agent_line

    record = {
        "fit": {"steps": 4096},
        "eval_learned": {"eval/mean_return": 111.756},
        "config": {"eval_sessions": 256},
    }
    assert _agent_line("ppo", 0, "reused", record, 0.0, 256) == (
        "ppo · seed 0: reused, 4,096 steps, mean return 111.756 over 256 sessions in the "
        "learned world"
    )
    # a reused agent keeps the score of its own closing evaluation: said, not passed off
    assert _agent_line("ppo", 0, "reused", record, 0.0, 128) == (
        "ppo · seed 0: reused, 4,096 steps, mean return 111.756 over 256 sessions in the "
        "learned world (its closing evaluation when trained; agent_eval_sessions=128 applies "
        "to agents trained anew)"
    )
