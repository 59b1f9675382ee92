"""Off-policy estimators against closed-form values, logs with propensities, the Parquet schema.

Each exactness test builds logs whose rows appear exactly as often as the logging policy makes
them (counts proportional to probabilities), so an unbiased estimator returns the true value to
rounding, not only on average.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from agents.logs import Logs, log_policy, read_logs, write_logs
from agents.ope import bootstrap, fit_fqe, one_step, session, slate
from clickstream.errors import DataError
from clickstream.synthetic import SyntheticConfig, build_store
from envs.site_env import build_core


def _logs(rows: list[tuple], n_pages: int, n_actions: int, k: int = 1) -> Logs:
    """rows: (session, step, state, action(s), propensity, next_state, reward[, clicked,
    position propensities])."""
    cols = list(zip(*rows, strict=True))
    action = np.asarray(cols[3], dtype=np.int64).reshape(len(rows), k)
    pos = np.asarray(cols[8], dtype=np.float64).reshape(len(rows), k) if len(cols) > 8 else None
    return Logs(
        session=np.asarray(cols[0], dtype=np.int64),
        step=np.asarray(cols[1], dtype=np.int64),
        state=np.asarray(cols[2], dtype=np.int64),
        action=action,
        propensity=np.asarray(cols[4], dtype=np.float64),
        position_propensity=pos,
        clicked=np.asarray(cols[7] if len(cols) > 7 else [-1] * len(rows), dtype=np.int64),
        next_state=np.asarray(cols[5], dtype=np.int64),
        reward=np.asarray(cols[6], dtype=np.float64),
        n_pages=n_pages,
        n_actions=n_actions,
    )


# a bandit: 2 contexts (equally likely), 3 actions, mean rewards R; logging mu = (1/2, 1/4, 1/4)
R = np.array([[1.0, 4.0, 2.0], [3.0, 0.0, 8.0]])
MU = np.array([0.5, 0.25, 0.25])


def _bandit_logs() -> Logs:
    rows, sid = [], 0
    for s in (0, 1):
        for a, count in zip(range(3), (2, 1, 1), strict=True):
            # reward R ± 1 in equal numbers: the cell mean is R, the noise cancels exactly
            for _ in range(count):
                for noise in (-1.0, 1.0):
                    rows.append((sid, 0, s, a, MU[a], 2, R[s, a] + noise))
                    sid += 1
    return _logs(rows, n_pages=2, n_actions=3)


@pytest.mark.parametrize("estimator", ["ips", "snips", "dm", "dr"])
def test_one_step_estimators_are_exact_on_balanced_logs(estimator: str) -> None:
    pi = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    truth = 0.5 * (pi[0] @ R[0]) + 0.5 * (pi[1] @ R[1])  # 0.5 * 4 + 0.5 * 4.6
    assert truth == pytest.approx(4.3)
    assert one_step(_bandit_logs(), pi, estimator).estimate() == pytest.approx(truth, abs=1e-12)


def test_ips_is_unbiased_and_its_bootstrap_interval_has_the_normal_width() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    s = rng.integers(0, 2, n)
    a = rng.choice(3, size=n, p=MU)
    r = R[s, a] + rng.normal(0, 1, n)
    logs = _logs(
        list(zip(range(n), [0] * n, s, a, MU[a], [2] * n, r, strict=True)), n_pages=2, n_actions=3
    )
    pi = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    terms = one_step(logs, pi, "ips")
    est, low, high = bootstrap(terms, n_boot=400, seed=1)
    sd = terms.terms[:, 0].std() / np.sqrt(n)
    assert abs(est - 4.3) < 4 * sd
    assert (high - low) == pytest.approx(2 * 1.96 * sd, rel=0.15)
    assert low < est < high


# a 2-page MDP, 2 actions, deterministic moves, logs truncated at 3 steps:
#   page 0: a0 -> page 1 (reward 1), a1 -> EXIT (0); page 1: a0 -> EXIT (5), a1 -> page 0 (2)
MOVES = {(0, 0): (1, 1.0), (0, 1): (2, 0.0), (1, 0): (2, 5.0), (1, 1): (0, 2.0)}
H = 3


def _session_logs() -> Logs:
    """Every trajectory of the uniform logging policy, as often as its probability says."""
    rows, sid = [], 0
    seen: set[tuple] = set()
    for actions in itertools.product((0, 1), repeat=H):
        s, path = 0, []
        for a in actions:
            nxt, r = MOVES[(s, a)]
            path.append((s, a, nxt, r))
            if nxt == 2:
                break
            s = nxt
        key = tuple(path)
        if key in seen:
            continue
        seen.add(key)
        copies = 2 ** (H - len(path))  # probability 2^-len, in units of 2^-H
        for _ in range(copies):
            for t, (s_, a_, n_, r_) in enumerate(path):
                rows.append((sid, t, s_, a_, 0.5, n_, r_))
            sid += 1
    return _logs(rows, n_pages=2, n_actions=2)


def _exact_value(pi: np.ndarray) -> float:
    v = np.zeros(3)
    for _ in range(H):
        new = np.zeros(3)
        for (s, a), (nxt, r) in MOVES.items():
            new[s] += pi[s, a] * (r + v[nxt])
        v = new
    return float(v[0])


@pytest.mark.parametrize("estimator", ["pdis", "pdwis", "fqe", "dr"])
@pytest.mark.parametrize(
    "pi", [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.7, 0.3], [0.4, 0.6]])]
)
def test_session_estimators_are_exact_on_complete_logs(estimator: str, pi: np.ndarray) -> None:
    truth = _exact_value(pi)
    if pi[0, 0] == 1.0:
        assert truth == pytest.approx(4.0)  # 0 -> 1 -> 0 -> 1: rewards 1 + 2 + 1
    est = session(_session_logs(), pi, estimator, horizon=H).estimate()
    assert est == pytest.approx(truth, abs=1e-10)


def test_fqe_tables_are_the_finite_horizon_values() -> None:
    pi = np.array([[1.0, 0.0], [0.0, 1.0]])
    fqe = fit_fqe(_session_logs(), pi, H)
    assert fqe.v[1].tolist() == pytest.approx([1.0, 2.0])
    assert fqe.q[2][1].tolist() == pytest.approx([5.0, 3.0])  # a1: 2 then 1


def test_slate_estimators_are_exact_when_the_reward_is_additive() -> None:
    # 2 positions, 2 items each, factored uniform logging; a click on position j of item x
    # with probability c[j][x] (at most one click), paying v[x]; no click pays 0
    c = np.array([[0.5, 0.25], [0.25, 0.0]])
    v = np.array([4.0, 8.0])
    rows, sid = [], 0
    for a0, a1 in itertools.product((0, 1), repeat=2):
        outcomes = [(0, c[0, a0], v[a0]), (1, c[1, a1], v[a1])]
        none = 1 - c[0, a0] - c[1, a1]
        for pos, prob, reward in [*outcomes, (-1, none, 0.0)]:
            for _ in range(round(prob * 8)):
                rows.append((sid, 0, 0, (a0, a1), 0.25, 2, reward, pos, (0.5, 0.5)))
                sid += 1
    logs = _logs(rows, n_pages=1, n_actions=2, k=2)
    target = np.array([[1, 0]])
    truth = c[0, 1] * v[1] + c[1, 0] * v[0]  # additive: 2 + 1
    for name in ("slate_ips", "pseudo_inverse", "position_ips"):
        assert slate(logs, target, name).estimate() == pytest.approx(truth, abs=1e-12), name


def _markov_core(n: int):
    store = build_store(SyntheticConfig(n_pages=50, mode="markov"))
    return build_core(n, store=store, action_level="group")


def test_simulated_logs_have_the_logging_propensities() -> None:
    core = _markov_core(512)
    mu = torch.rand(core.n_pages, core.n_actions, generator=torch.Generator().manual_seed(0))
    mu = mu / mu.sum(1, keepdim=True)
    logs = log_policy(core, mu, 3000, seed=4)
    assert logs.n_sessions == 3000
    assert np.allclose(logs.propensity, mu.double().numpy()[logs.state, logs.action[:, 0]])
    # each session's steps run 0, 1, 2, ... and it ends on EXIT or at max_steps
    last = np.r_[np.flatnonzero(np.diff(logs.session)), len(logs.session) - 1]
    assert (logs.step[last] + 1 == np.bincount(logs.session)).all()
    assert ((logs.next_state[last] == core.n_pages) | (logs.step[last] + 1 == 50)).all()
    # the logged actions follow mu: chi-square-sized deviations only
    page = np.bincount(logs.state).argmax()
    at = logs.action[logs.state == page, 0]
    freq = np.bincount(at, minlength=core.n_actions) / len(at)
    assert np.abs(freq - mu.numpy()[page]).max() < 5 / np.sqrt(len(at))


def test_logs_round_trip_and_refuse_logs_without_propensities(tmp_path) -> None:
    core = _markov_core(64)
    logs = log_policy(core, torch.ones(core.n_pages, core.n_actions), 200, seed=0)
    pages = list(core.dynamics.pages)
    actions = [f"group{i}" for i in range(core.n_actions - 1)] + [None]
    path = write_logs(logs, tmp_path / "logs.parquet", pages, actions)
    back = read_logs(path, pages, actions)
    for name in ("session", "step", "state", "action", "propensity", "next_state", "reward"):
        assert np.array_equal(getattr(back, name), getattr(logs, name)), name
    df = pd.read_parquet(path).drop(columns=["propensity"])
    df.to_parquet(tmp_path / "no_prop.parquet")
    with pytest.raises(DataError, match="no propensities") as err:
        read_logs(tmp_path / "no_prop.parquet", pages, actions)
    assert err.value.column == "propensity" and "no_prop.parquet" in str(err.value)
    df = pd.read_parquet(path)
    df.loc[3, "propensity"] = 0.0
    df.to_parquet(tmp_path / "zero.parquet")
    with pytest.raises(DataError, match=r"row 3.*propensity"):
        read_logs(tmp_path / "zero.parquet", pages, actions)


def test_model_based_intervals_refit_the_model_per_replicate() -> None:
    from agents.ope import bootstrap_many

    core = _markov_core(1024)
    mu = torch.ones(core.n_pages, core.n_actions)
    logs = log_policy(core, mu, 4000, seed=2)
    pi = np.zeros((core.n_pages, core.n_actions))
    pi[:, 3] = 1.0
    for terms in (session(logs, pi, "fqe", 50), one_step(logs, pi, "dm")):
        assert terms.refit is not None
        ones = np.ones(len(terms.terms))
        assert terms.refit(ones) == pytest.approx(terms.estimate(), rel=1e-12)
        fixed = bootstrap_many([terms], np.random.default_rng(0), 100, refit_models=False)[0]
        refit = bootstrap_many([terms], np.random.default_rng(0), 100)[0]
        assert refit[1] < refit[0] < refit[2]
        # the model's own error widens the interval several-fold
        assert (refit[2] - refit[1]) > 2 * (fixed[2] - fixed[1])
