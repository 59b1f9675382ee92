"""Bad numbers given to agents, evaluation and the scripts are refused, naming key and value.

Before these checks a negative budget saved an untrained policy with status 0, a seed of 1.5
trained seed 1 into a folder evaluation skips, ``n_sessions=0`` wrote NaN into results.json,
observations out of range were clamped, wrapped or failed deep inside torch, and a time limit
that ran out in the last evaluation marked a run whose budget was reached ``truncated``.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from omegaconf import OmegaConf
from stable_baselines3 import DQN, PPO

from agents import sb3 as sb3_module
from agents.base import TablePolicy
from agents.evaluate import check_protocol, simulate
from agents.sb3 import SB3Agent, _Progress, _rebuild
from agents.tabular import IntentOracle, QLearningPolicy, q_learning
from clickstream.errors import ConfigError, ModelError
from envs.click_model import MultinomialBoost
from envs.core import SiteCore
from envs.dynamics import MarkovDynamics
from scripts import run_or_exit
from tests.hydra_configs import CONFIGS, compose_cfg

TRANSITIONS = np.array([[0.0, 0.25, 0.25, 0.5], [0.5, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]])


def small_core(n: int = 16) -> SiteCore:
    """Three pages, only the third pays (tests/unit/test_tabular.py's site)."""
    dyn = MarkovDynamics(np.array([0.5, 0.5, 0.0]), TRANSITIONS, ("/a", "/b", "/c"))
    reward = np.array([0.0, 0.0, 10.0, 0.0])
    return SiteCore(dyn, MultinomialBoost(beta=math.log(2.0)), reward, n, history_len=2)


class FakeClock:
    """``time.perf_counter`` that moves one second per call (or by ``advance``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def message(exc: pytest.ExceptionInfo) -> str:
    return str(exc.value)


# ---- 1, 5: SB3 budgets and the time limit ------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            {"total_timesteps": -5},
            "agent.total_timesteps must be a whole number of steps >= 1, got -5",
        ),
        (
            {"total_timesteps": 0},
            "agent.total_timesteps must be a whole number of steps >= 1, got 0",
        ),
        (
            {"total_timesteps": 1.5},
            "agent.total_timesteps must be a whole number of steps >= 1, got 1.5",
        ),
        (
            {"max_minutes": 0},
            "agent.max_minutes must be a positive number of minutes, or null for no limit, got 0",
        ),
        (
            {"max_minutes": -1},
            "agent.max_minutes must be a positive number of minutes, or null for no limit, got -1",
        ),
        (
            {"eval_every": -1},
            "agent.eval_every must be a whole number of steps >= 0 (0: none), got -1",
        ),
        (
            {"eval_sessions": 0},
            "agent.eval_sessions must be a whole number of sessions >= 1, got 0",
        ),
        ({"n_envs": 0}, "agent.n_envs must be a whole number of visitors >= 1, got 0"),
    ],
)
def test_sb3_agent_refuses_a_bad_budget_or_limit(setting: dict[str, Any], expected: str) -> None:
    from agents.belief_ppo import BeliefPPO

    with pytest.raises(ConfigError) as exc:
        SB3Agent("ppo", **setting)
    assert message(exc) == expected
    with pytest.raises(ConfigError) as exc:  # belief PPO: the same rules, checked as early
        BeliefPPO(**setting)
    assert message(exc) == expected


def test_sb3_agent_takes_whole_floats_and_no_limit() -> None:
    agent = SB3Agent("ppo", total_timesteps=1e6, max_minutes=None, eval_every=0)
    assert (agent.total_timesteps, agent.max_minutes, agent.eval_every) == (1_000_000, None, 0)
    assert SB3Agent("dqn", max_minutes=0.5).max_minutes == 0.5


def progress(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, steps: int) -> _Progress:
    """A ``_Progress`` of a 1,024-step budget, a 1-minute limit and an evaluation every
    1,024 steps that takes 2 minutes (the clock runs out during it)."""
    monkeypatch.setattr(sb3_module.time, "perf_counter", clock)
    agent = SimpleNamespace(
        name="ppo", total_timesteps=1024, max_minutes=1.0, eval_every=1024, verbose=False
    )
    bar = _Progress(agent, site=None, start=clock())  # type: ignore[arg-type]
    bar.evaluate = lambda: clock.advance(120)  # type: ignore[method-assign]
    bar.num_timesteps = steps
    return bar


def test_a_limit_that_runs_out_in_the_last_evaluation_does_not_truncate(monkeypatch) -> None:
    clock = FakeClock()
    bar = progress(monkeypatch, clock, 1024)  # the budget reached, then the slow evaluation
    assert bar._on_step() is True
    assert bar.truncated is False
    bar = progress(monkeypatch, clock, 512)  # before the budget: the limit cuts it short
    clock.advance(120)
    assert bar._on_step() is False
    assert bar.truncated is True


def test_progress_refuses_a_non_positive_limit_of_any_agent() -> None:
    agent = SimpleNamespace(name="x", total_timesteps=10, max_minutes=0, eval_every=0, verbose=0)
    with pytest.raises(ConfigError) as exc:
        _Progress(agent, site=None, start=0.0)  # type: ignore[arg-type]
    assert message(exc) == (
        "agent.max_minutes must be a positive number of minutes, or null for no limit, got 0"
    )


# ---- 1, 4, 6: Q-learning ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"total_steps": -100}, "agent.total_steps must be a whole number of steps >= 1, got -100"),
        ({"total_steps": 0}, "agent.total_steps must be a whole number of steps >= 1, got 0"),
        ({"gamma": -1}, "agent.gamma must be a number in [0, 1], got -1"),
        ({"gamma": 1.5}, "agent.gamma must be a number in [0, 1], got 1.5"),
        ({"epsilon_start": 2}, "agent.epsilon_start must be a number in [0, 1], got 2"),
        ({"epsilon_end": -0.1}, "agent.epsilon_end must be a number in [0, 1], got -0.1"),
        (
            {"exploration_fraction": 2},
            "agent.exploration_fraction must be a number in [0, 1], got 2",
        ),
        ({"min_lr": 0}, "agent.min_lr must be a number in (0, 1], got 0"),
        ({"min_lr": 2}, "agent.min_lr must be a number in (0, 1], got 2"),
        ({"lr_power": -1}, "agent.lr_power must be a number in [0, inf), got -1"),
        ({"gamma": float("nan")}, "agent.gamma must be a number in [0, 1], got nan"),
        ({"log_every": 0}, "agent.log_every must be a whole number of steps >= 1, got 0"),
        ({"n_envs": 0}, "agent.n_envs must be a whole number of visitors >= 1, got 0"),
    ],
)
def test_q_learning_refuses_settings_out_of_range(setting: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        QLearningPolicy(**setting)
    assert message(exc) == expected
    if "n_envs" not in setting:  # the function checks its own settings too
        with pytest.raises(ConfigError) as exc:
            q_learning(small_core(), **setting)
        assert message(exc) == expected


QL_KNOWN = (
    "known: ['epsilon_end', 'epsilon_start', 'exploration_fraction', 'gamma', 'log_every', "
    "'lr_power', 'min_lr', 'total_steps']"
)


@pytest.mark.parametrize("key", ["total_timesteps", "max_minutes"])
def test_q_learning_takes_no_unknown_setting(key: str) -> None:
    """A misspelt key, or a wall-clock limit (Q-learning's budget is in steps only, and it
    trains in seconds), is named with the settings it takes."""
    with pytest.raises(ConfigError) as exc:
        QLearningPolicy(**{key: 5})
    assert message(exc) == f"unknown agent option(s) ['{key}']; {QL_KNOWN}"


# ---- 3: observations ---------------------------------------------------------------------------

TABLE = (
    "policy 't' takes observations of shape (B, K) or (K,) (K = env.history_len pages, after "
    "any extras): integer page ids in [0, 3] (3: no page) in the current page (the last "
    "column); got shape "
)


@pytest.mark.parametrize(
    ("obs", "got"),
    [
        (np.array([[0, 4]]), "(1, 2) int64 with ids from 0 to 4"),  # clamped to "no page" before
        (np.array([[0, -1]]), "(1, 2) int64 with ids from -1 to 0"),  # wrapped to row 3 before
        (np.array([[0.0, 1.0]]), "(1, 2) float64 with ids from 0.0 to 1.0"),
        (np.zeros((2, 0), dtype=np.int64), "(2, 0) int64"),
        (np.zeros((1, 1, 2), dtype=np.int64), "(1, 1, 2) int64 with ids from 0 to 0"),
    ],
)
def test_a_table_refuses_observations_it_cannot_read(obs: np.ndarray, got: str) -> None:
    policy = TablePolicy(np.arange(12.0).reshape(3, 4), "t")
    with pytest.raises(ModelError) as exc:
        policy.action_scores(obs)
    assert message(exc) == TABLE + got


def test_a_table_reads_the_current_page_of_any_layout() -> None:
    policy = TablePolicy(np.arange(12.0).reshape(3, 4), "t")
    scores = policy.action_scores(np.array([[3, 2], [9, 0], [0, 3]]))  # other columns: extras
    np.testing.assert_array_equal(scores, [[8, 9, 10, 11], [0, 1, 2, 3], [0, 0, 0, 0]])
    assert policy.predict(np.array([5, 7, 1]))[0] == 3  # one observation of three columns
    assert policy.action_scores(np.zeros((0, 2), dtype=np.int64)).shape == (0, 4)


def test_the_intent_oracle_checks_pages_and_has_no_preference_without_one() -> None:
    oracle = IntentOracle("oracle")
    oracle.q = torch.arange(24.0, dtype=torch.float64).reshape(2, 3, 4)
    scores = oracle.action_scores(np.array([[0, 2], [0, 3]]))
    np.testing.assert_array_equal(scores, [[14, 15, 16, 17], [0, 0, 0, 0]])
    with pytest.raises(ModelError, match=r"^policy 'oracle' takes .* in \[0, 3\] \(3: no page\)"):
        oracle.action_scores(np.array([[0, 4]]))


def sb3_agent(algo: str = "ppo") -> SB3Agent:
    agent = SB3Agent(algo, "net", verbose=False)
    model_cls = PPO if algo == "ppo" else DQN
    agent.model = _rebuild(
        model_cls, "MlpPolicy", spaces.MultiDiscrete([4, 4]), spaces.Discrete(3), {}
    )
    return agent


SB3 = (
    "policy 'net' takes observations of shape (B, 2) or (2,) (env.history_len=2): integer page "
    "ids in [0, 3] (3: no page) in every page column; got shape "
)


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
@pytest.mark.parametrize(
    ("obs", "got"),
    [
        (np.array([[0, 4]]), "(1, 2) int64 with ids from 0 to 4"),
        (np.array([-1, 0]), "(2,) int64 with ids from -1 to 0"),
        (np.array([[0, 1, 2]]), "(1, 3) int64 with ids from 0 to 2"),
        (np.array([[0.0, 1.0]]), "(1, 2) float64 with ids from 0.0 to 1.0"),
        (np.zeros((0, 2), dtype=np.int64), "(0, 2) int64"),
    ],
)
def test_an_sb3_agent_refuses_observations_it_cannot_read(
    algo: str, obs: np.ndarray, got: str
) -> None:
    agent = sb3_agent(algo)
    for call in (agent.predict, agent.action_scores):
        with pytest.raises(ModelError) as exc:
            call(obs)
        assert message(exc) == SB3 + got
    actions, _ = agent.predict(np.array([[3, 0], [1, 2]]))
    assert actions.shape == (2,) and agent.action_scores(np.array([1, 2])).shape == (1, 3)


# ---- 1, 2: evaluation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((-5, [0]), "n_sessions must be a whole number of sessions >= 1, got -5"),
        ((0, [0]), "n_sessions must be a whole number of sessions >= 1, got 0"),
        ((10, ["abc"]), "seeds must be a whole number in [0, 4294967295], got 'abc'"),
        ((10, [-3]), "seeds must be a whole number in [0, 4294967295], got -3"),
        (
            (10, []),
            "seeds must be a non-empty list of whole numbers in [0, 4294967295], got []",
        ),
        ((10, [0], 0), "n_visitors must be a whole number of visitors >= 1, got 0"),
        (
            (10, [0], 8, {"held_out": -1}),
            "world_sessions.held_out must be a whole number of sessions >= 1, got -1",
        ),
    ],
)
def test_the_evaluation_protocol_refuses_no_sessions_or_no_seeds(
    args: tuple, expected: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        check_protocol(*args)
    assert message(exc) == expected
    assert check_protocol(10, (0, 1)) == (10, [0, 1], 1, {})


def test_simulate_refuses_no_sessions() -> None:
    tables = {"revenue": torch.zeros(4), "time_on_page_s": torch.ones(4)}
    policy = TablePolicy(np.zeros((3, 4)), "t")
    with pytest.raises(ConfigError) as exc:
        simulate(policy, small_core(), 0, 0, tables)
    assert message(exc) == "n_sessions must be a whole number of sessions >= 1, got 0"


# ---- 1, 2, 4, 6: the scripts ---------------------------------------------------------------------


def train_cfg(tmp_path: Path, *overrides: str):
    return compose_cfg("train", [f"out_dir={tmp_path / 'run'}", "show_progress=false", *overrides])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seed=1.5"], "seed must be a whole number in [0, 4294967295], got 1.5"),
        (["seed=-3"], "seed must be a whole number in [0, 4294967295], got -3"),
        (["seed=abc"], "seed must be a whole number in [0, 4294967295], got 'abc'"),
        (
            ["seed=99999999999"],
            "seed must be a whole number in [0, 4294967295], got 99999999999",
        ),
        (
            ["eval_sessions=-5"],
            "eval_sessions must be a whole number of sessions >= 0 (0: none), got -5",
        ),
        (
            ["agent=ppo", "agent.total_timesteps=-5"],
            "agent.total_timesteps must be a whole number of steps >= 1, got -5",
        ),
        (
            ["agent=ppo", "+agent.max_minutes=0"],
            "agent.max_minutes must be a positive number of minutes, or null for no limit, got 0",
        ),
        (
            ["agent=q_learning", "agent.total_steps=-100"],
            "agent.total_steps must be a whole number of steps >= 1, got -100",
        ),
        (["agent=q_learning", "agent.gamma=-1"], "agent.gamma must be a number in [0, 1], got -1"),
        (
            ["agent=q_learning", "agent.epsilon_start=2"],
            "agent.epsilon_start must be a number in [0, 1], got 2",
        ),
        (
            ["agent=ppo", "+agent.total_timestep=5"],
            "unknown agent key(s) ['agent.total_timestep'] for agents.sb3.SB3Agent; it takes "
            "['algo', 'device', 'double_q', 'eval_every', 'eval_sessions', 'expected_reward', "
            "'freeze_embeddings', 'hyperparams', 'init_embeddings', 'keep_best', 'log_truth', "
            "'lr_decay', 'mask_current_page', 'max_minutes', 'n_envs', 'name', 'policy', "
            "'policy_kwargs', 'reward_scale', 'total_timesteps', 'verbose']",
        ),
        (
            ["agent=greedy", "+agent.max_minutes=1"],
            "unknown agent key(s) ['agent.max_minutes'] for agents.heuristics.Greedy; it takes "
            "['name']",
        ),
    ],
)
def test_train_refuses_bad_settings_before_any_work(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    from scripts.train import run

    with pytest.raises(ConfigError) as exc:
        run(train_cfg(tmp_path, *overrides))
    assert message(exc) == expected
    assert not (tmp_path / "run").exists()  # nothing written, not even a staging folder


def test_train_exits_with_status_2_and_the_message(tmp_path: Path, capsys) -> None:
    from scripts.train import run

    with pytest.raises(SystemExit) as exit_:
        run_or_exit(run, train_cfg(tmp_path, "agent=q_learning", "agent.total_steps=0"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: agent.total_steps must be a whole number of steps >= 1, got 0\n"
    )


def test_q_learning_refuses_a_time_limit_from_the_command_line(tmp_path: Path) -> None:
    from scripts.train import run

    with pytest.raises(ConfigError) as exc:
        run(train_cfg(tmp_path, "agent=q_learning", "+agent.max_minutes=1"))
    assert message(exc) == f"unknown agent option(s) ['max_minutes']; {QL_KNOWN}"
    assert not (tmp_path / "run").exists()


EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "agent").glob("*.yaml")))
def test_every_agent_config_passes_the_checks(name: str) -> None:
    """No false alarm: each configs/agent/*.yaml names only keys its class takes, with values
    in range, alone and with every experiment's settings for it (agent_overrides)."""
    from scripts.configs import with_agent_overrides
    from scripts.train import build_agent

    # experiments change agents through agent_overrides only, and only these
    for experiment in [None, *EXPERIMENTS] if name in ("ppo", "dqn", "q_learning") else [None]:
        extra = [] if experiment is None else [f"experiment={experiment}"]
        cfg = with_agent_overrides(compose_cfg("train", [f"agent={name}", *extra]))
        agent = OmegaConf.to_container(cfg.agent, resolve=True)
        assert isinstance(agent, dict)
        assert build_agent(agent).name == agent["name"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("n_sessions=-5", "n_sessions must be a whole number of sessions >= 1, got -5"),
        ("n_sessions=0", "n_sessions must be a whole number of sessions >= 1, got 0"),
        ("seeds=[abc]", "seeds must be a whole number in [0, 4294967295], got 'abc'"),
        ("seeds=[]", "seeds must be a non-empty list of whole numbers in [0, 4294967295], got []"),
    ],
)
def test_evaluate_refuses_no_sessions_or_bad_seeds(
    tmp_path: Path, override: str, expected: str
) -> None:
    from scripts.evaluate import run

    cfg = compose_cfg("evaluate", [f"out_dir={tmp_path / 'run'}", "show_progress=false", override])
    with pytest.raises(ConfigError) as exc:
        run(cfg)
    assert message(exc) == expected
    assert not (tmp_path / "run").exists()
