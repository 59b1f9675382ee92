"""Off-policy estimators against closed-form values, logs with propensities, the Parquet schema.

Each exactness test builds logs whose rows appear exactly as often as the logging policy makes
them (counts proportional to probabilities), so an unbiased estimator returns the true value to
rounding, not only on average.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from agents.logs import Logs, log_policy, read_logs, write_logs
from agents.ope import (
    OPEWarning,
    bootstrap,
    fit_fqe,
    one_step,
    repeated_pages,
    session,
    slate,
    subset,
    weight_diagnostics,
)
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
        landed_position=np.asarray(cols[7] if len(cols) > 7 else [-1] * len(rows), dtype=np.int64),
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


def _exact_h(pi: np.ndarray, h: int) -> float:
    v = np.zeros(3)
    for _ in range(h):
        new = np.zeros(3)
        for (s, a), (nxt, r) in MOVES.items():
            new[s] += pi[s, a] * (r + v[nxt])
        v = new
    return float(v[0])


@pytest.mark.parametrize("estimator", ["pdis", "pdwis", "fqe", "dr"])
def test_session_estimators_honour_a_horizon_shorter_than_the_logs(estimator: str) -> None:
    # the logs run 3 steps; every estimator answers for the first 2 decisions
    pi = np.array([[0.7, 0.3], [0.4, 0.6]])
    truth = _exact_h(pi, 2)
    assert truth != pytest.approx(_exact_h(pi, H))
    assert session(_session_logs(), pi, estimator, horizon=2).estimate() == pytest.approx(
        truth, abs=1e-10
    )


def test_session_estimators_warn_when_the_logs_stop_before_the_horizon() -> None:
    pi = np.array([[0.7, 0.3], [0.4, 0.6]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the horizon the logs cover: no warning
        session(_session_logs(), pi, "pdis", horizon=H)
    # sessions cut at 3 steps without EXIT cannot say what steps 4 and 5 earn (FQE guesses)
    with pytest.warns(OPEWarning, match=r"1 of 8 logged sessions stop before the horizon 5"):
        session(_session_logs(), pi, "pdis", horizon=5)


def _additive_slate_logs(mu: np.ndarray, c: np.ndarray, v: np.ndarray, empty: int | None):
    """Every factored draw of 2 positions from ``mu`` ``(2, A)`` as a row weighted by its
    probability, the env's rule applied (a repeated page shows nothing at position 1); a click
    on position ``j`` showing ``x`` has probability ``c[j, x]`` and pays ``v[x]``."""
    a = mu.shape[1]
    rows, probs = [], []
    for a0, a1 in itertools.product(range(a), repeat=2):
        if mu[0, a0] * mu[1, a1] == 0:
            continue
        s1 = a1 if a1 != a0 else empty  # a repeat shows nothing
        c1, v1 = (c[1, s1], v[s1]) if s1 is not None else (0.0, 0.0)
        for pos, pc, r in [(0, c[0, a0], v[a0]), (1, c1, v1), (-1, 1 - c[0, a0] - c1, 0.0)]:
            prop = (mu[0, a0], mu[1, a1])
            rows.append((len(rows), 0, 0, (a0, a1), prop[0] * prop[1], 1, r, pos, prop))
            probs.append(prop[0] * prop[1] * pc)
    logs = _logs(rows, n_pages=1, n_actions=a, k=2)
    logs.empty_action = empty
    return logs, np.asarray(probs)


def test_slate_estimators_are_exact_when_the_reward_is_additive() -> None:
    # factored logging whose positions draw from disjoint pages (no slate repeats a page); a
    # click on position j of item x with probability c[j][x] (at most one click) pays v[x]
    mu = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]])
    c = np.array([[0.5, 0.25, 0.1, 0.0], [0.0, 0.0, 0.25, 0.2]])
    v = np.array([4.0, 8.0, 2.0, 6.0])
    logs, probs = _additive_slate_logs(mu, c, v, empty=None)
    target = np.array([[1, 3]])
    truth = c[0, 1] * v[1] + c[1, 3] * v[3]  # additive: 2 + 1.2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no repeat: no warning
        for name in ("slate_ips", "pseudo_inverse", "position_ips"):
            est = float(probs @ slate(logs, target, name).terms[:, 0])
            assert est == pytest.approx(truth, abs=1e-12), name


def test_slate_estimators_warn_on_logged_slates_that_repeat_a_page() -> None:
    # the env's rule: a page drawn at position 1 that is already at position 0 shows nothing
    # there, so an additive reward on the shown slate is not additive in the draws
    mu = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2]])  # action 2 shows nothing
    c = np.array([[0.5, 0.25, 0.0], [0.25, 0.125, 0.0]])
    v = np.array([4.0, 8.0, 0.0])
    logs, probs = _additive_slate_logs(mu, c, v, empty=2)
    target = np.array([[1, 0]])
    truth = c[0, 1] * v[1] + c[1, 0] * v[0]  # 2 + 1
    assert float(probs @ slate(logs, target, "slate_ips").terms[:, 0]) == pytest.approx(truth)
    # E[pseudo-inverse] = 2.42, E[position IPS] = 2.5 (exact enumeration): biased, and said
    for name, biased in (("pseudo_inverse", 2.42), ("position_ips", 2.5)):
        with pytest.warns(OPEWarning, match=rf"{name}: 6 of 27 logged slates .* two positions"):
            terms = slate(logs, target, name)
        assert float(probs @ terms.terms[:, 0]) == pytest.approx(biased, abs=1e-12)
    # the "nothing" action drawn twice shows nothing twice: no repeated page
    assert repeated_pages(logs).sum() == 2 * 3  # draws (0, 0) and (1, 1), 3 outcomes each
    assert not repeated_pages(subset(logs, (logs.action == 2).all(1))).any()


def test_weight_diagnostics_and_which_estimators_have_weights() -> None:
    ess, share = weight_diagnostics(np.array([1.0, 1.0, 2.0, 0.0]))
    assert ess == pytest.approx(16 / 6) and share == pytest.approx(0.5)
    assert np.isnan(weight_diagnostics(np.zeros(3))[0])
    pi = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    logs = _bandit_logs()
    for name in ("ips", "snips", "dr"):
        w = one_step(logs, pi, name).weights
        assert np.allclose(w, pi[logs.state, logs.action[:, 0]] / logs.propensity)
    assert one_step(logs, pi, "dm").weights is None
    sess = _session_logs()
    pi2 = np.array([[1.0, 0.0], [0.0, 1.0]])
    w = session(sess, pi2, "pdis", H).weights  # the whole session's ratio: 2^len if followed
    assert len(w) == sess.n_sessions and set(np.round(w, 12)) == {0.0, 8.0}
    assert session(sess, pi2, "fqe", H).weights is None


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


def _written(tmp_path, n: int = 200):
    core = _markov_core(64)
    logs = log_policy(core, torch.ones(core.n_pages, core.n_actions), n, seed=0)
    pages = list(core.dynamics.pages)
    actions = [f"group{i}" for i in range(core.n_actions - 1)] + [None]
    return write_logs(logs, tmp_path / "logs.parquet", pages, actions), pages, actions


def test_logs_of_the_other_action_level_are_refused_with_the_env_to_pass(tmp_path) -> None:
    path, pages, group_actions = _written(tmp_path)  # logged with page-group actions
    page_actions = [*pages, None]
    with pytest.raises(DataError, match=r"made with action_level=group.*--env") as err:
        read_logs(path, pages, page_actions)
    assert err.value.column == "slate" and err.value.row == 0
    # a page in the slates of an env that recommends groups: the other way round
    df = pd.read_parquet(path)
    df.loc[5, "slate"] = [pages[0]]
    df.to_parquet(tmp_path / "pages.parquet")
    with pytest.raises(DataError, match=r"it is a page, but this env recommends page groups"):
        read_logs(tmp_path / "pages.parquet", pages, group_actions)


def test_an_unknown_slate_entry_names_its_own_row(tmp_path) -> None:
    store = build_store(SyntheticConfig(n_pages=50, mode="markov"))
    core = build_core(256, store=store, slate_size=3, history_len=1)
    logs = log_policy(core, torch.ones(core.n_pages, core.n_actions), 50, seed=1)
    pages = list(core.dynamics.pages)
    actions = [pages[int(a)] if int(a) >= 0 else None for a in core.action_pages.cpu()]
    path = write_logs(logs, tmp_path / "logs.parquet", pages, actions)
    df = pd.read_parquet(path)
    slate = list(df.loc[7, "slate"])
    slate[2] = "/nowhere"
    df.at[7, "slate"] = slate
    df.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"'/nowhere'") as err:
        read_logs(tmp_path / "bad.parquet", pages, actions)
    assert err.value.row == 7  # the row, not the entry's index in the flattened slates (23)


@pytest.mark.parametrize("change", ["one_based", "gap", "repeat"])
def test_read_logs_refuses_steps_that_do_not_run_from_0_naming_the_session(
    change: str, tmp_path
) -> None:
    path, pages, actions = _written(tmp_path)
    df = pd.read_parquet(path)
    sid = int(df["session_id"].value_counts().index[0])  # a session of several steps
    rows = df.index[df["session_id"] == sid]
    if change == "one_based":
        df.loc[rows, "step"] += 1
    elif change == "gap":
        df.loc[rows[1:], "step"] += 1
    else:
        df.loc[rows[1], "step"] = 0
    df.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=rf"session {sid} has steps .*0, 1, 2") as err:
        read_logs(tmp_path / "bad.parquet", pages, actions)
    assert err.value.column == "step" and "bad.parquet" in str(err.value)


def test_slate_logs_position_is_that_of_the_shown_page_visited(tmp_path) -> None:
    store = build_store(SyntheticConfig(n_pages=50, mode="markov"))
    core = build_core(256, store=store, slate_size=3, history_len=1)
    mu = torch.ones(core.n_pages, core.n_actions)
    logs = log_policy(core, mu, 2000, seed=1)
    pages = list(core.dynamics.pages)
    actions = [pages[int(a)] if int(a) >= 0 else None for a in core.action_pages.cpu()]
    assert logs.empty_action == actions.index(None)
    path = write_logs(logs, tmp_path / "slates.parquet", pages, actions)
    back = read_logs(path, pages, actions)
    # the env's position is the shown page landed on, the one read_logs derives; organic moves
    # to a shown page included (it is not the choice model's click)
    assert np.array_equal(back.landed_position, logs.landed_position)
    assert (logs.landed_position >= 0).mean() > 0.05
    df = pd.read_parquet(path)
    df.drop(columns=["clicked_position"]).to_parquet(tmp_path / "derived.parquet")
    derived = read_logs(tmp_path / "derived.parquet", pages, actions)
    assert np.array_equal(derived.landed_position, logs.landed_position)
    # a position that is not where next_page was shown (e.g. clicks only) is refused
    row = int(np.flatnonzero(df["clicked_position"].to_numpy() >= 0)[0])
    df.loc[row, "clicked_position"] = -1
    df.to_parquet(tmp_path / "clicks.parquet")
    with pytest.raises(DataError, match=rf"row {row}.*shown page the visitor went to"):
        read_logs(tmp_path / "clicks.parquet", pages, actions)
