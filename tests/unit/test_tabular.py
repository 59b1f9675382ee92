"""Value iteration, exact policy evaluation and Q-learning on a hand-solved 3-page site.

Pages A, B, C; only landing on C pays (10). Organic moves: A -> B 0.25, C 0.25, EXIT 0.5;
B -> A 0.5, EXIT 0.5; C -> EXIT. The click model doubles the weight of the recommended page
(boost with beta = ln 2). By hand: from A recommending C gives C 0.4, B 0.2, EXIT 0.4, so
V(A) = 4 + 0.2 V(B); from B recommending A gives A 2/3, EXIT 1/3, so V(B) = 2/3 V(A). Hence
V(A) = 60/13, V(B) = 40/13, V(C) = 0, and with entry (1/2, 1/2, 0) a session is worth 50/13.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from agents.evaluate import simulate, summarize
from agents.tabular import (
    SiteMDP,
    TablePolicy,
    intent_weighted_q,
    policy_value,
    q_learning,
    value_iteration,
)
from envs.click_model import MultinomialBoost
from envs.core import SiteCore
from envs.dynamics import MarkovDynamics

A, B, C, NOTHING = 0, 1, 2, 3
TRANSITIONS = np.array([[0.0, 0.25, 0.25, 0.5], [0.5, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]])
ENTRY = np.array([0.5, 0.5, 0.0])
REWARD = np.array([0.0, 0.0, 10.0, 0.0])
V_STAR = np.array([60 / 13, 40 / 13, 0.0])


def core(n: int = 1, max_steps: int = 200) -> SiteCore:
    dyn = MarkovDynamics(ENTRY, TRANSITIONS, ("/a", "/b", "/c"))
    return SiteCore(
        dyn, MultinomialBoost(beta=math.log(2.0)), REWARD, n, max_steps=max_steps, history_len=2
    )


def test_value_iteration_matches_the_hand_solution() -> None:
    mdp = SiteMDP.from_core(core())
    result = value_iteration(mdp, tol=1e-12)
    np.testing.assert_allclose(result.v.numpy(), V_STAR, atol=1e-9)
    assert int(result.q[A].argmax()) == C  # push A's visitors to the paying page
    assert int(result.q[B].argmax()) == A  # and B's back to A, which leads there
    # the other choices, by hand: from A recommending B or nothing; from B nothing
    assert float(result.q[A, B]) == pytest.approx(2 + 0.4 * 40 / 13)
    assert float(result.q[A, NOTHING]) == pytest.approx(2.5 + 0.25 * 40 / 13)
    assert float(result.q[B, NOTHING]) == pytest.approx(0.5 * 60 / 13)


def test_policy_value_of_the_optimum_and_of_showing_nothing() -> None:
    mdp = SiteMDP.from_core(core())
    best = torch.zeros(3, 4, dtype=torch.float64)
    best[[A, B, C], [C, A, NOTHING]] = 1.0
    assert policy_value(mdp, best)["mean_return"] == pytest.approx(50 / 13, abs=1e-9)
    organic = torch.zeros(3, 4, dtype=torch.float64)
    organic[:, NOTHING] = 1.0
    # organic: V(A) = 2.5 + 0.25 V(B), V(B) = 0.5 V(A) -> V(A) = 20/7, V(B) = 10/7
    assert policy_value(mdp, organic)["mean_return"] == pytest.approx(15 / 7, abs=1e-9)
    # a horizon of one step: only the first move pays
    assert policy_value(mdp, organic, horizon=1)["mean_return"] == pytest.approx(0.5 * 2.5)


def test_simulated_return_agrees_with_the_exact_value() -> None:
    policy = TablePolicy(torch.tensor([[0.0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]), "best")
    tables = {
        "revenue": torch.zeros(4, dtype=torch.float64),
        "time_on_page_s": torch.ones(4, dtype=torch.float64),
    }
    sessions = simulate(policy, core(2048), 60_000, 3, tables)
    stats = summarize({3: sessions})
    assert stats["n_sessions"] == 61_440  # 30 sessions for each of the 2,048 slots
    exact = 50 / 13
    assert abs(stats["mean_return"] - exact) < stats["ci95"] * 1.5
    assert stats["ci95"] < 0.03 * exact


def test_q_learning_converges_to_value_iteration() -> None:
    result = q_learning(
        core(256), total_steps=1_500_000, seed=0, epsilon_end=0.2, exploration_fraction=0.3
    )
    q = result.q.double()
    assert int(q[A].argmax()) == C and int(q[B].argmax()) == A
    assert float(q[A].max()) == pytest.approx(60 / 13, rel=0.03)
    assert float(q[B].max()) == pytest.approx(40 / 13, rel=0.03)


def test_q_learning_replays_under_a_seed() -> None:
    one = q_learning(core(64), total_steps=20_000, seed=5).q
    two = q_learning(core(64), total_steps=20_000, seed=5).q
    assert torch.equal(one, two)


def test_first_order_mixture_of_one_intent_is_itself() -> None:
    mdp = SiteMDP.from_core(core())
    assert mdp.first_order() is mdp


def test_intent_weighted_q_by_hand() -> None:
    one = SiteMDP.from_core(core())
    np.testing.assert_allclose(intent_weighted_q(one), value_iteration(one).q, atol=1e-9)
    # a second intent, half the visitors, lands on A and always leaves: it is worth 0 and is
    # never on B. Organic views of the first intent from (1/2, 1/2): a = 1/2 + b/2,
    # b = 1/2 + a/4, so a = 6/7; on A the first intent's weight is (6/7) / (6/7 + 1) = 6/13.
    leaves = torch.zeros(3, 4, dtype=torch.float64)
    leaves[:, 3] = 1.0
    two = dataclasses.replace(
        one,
        transitions=torch.stack([one.transitions[0], leaves]),
        entry=torch.stack([one.entry[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)]),
        prior=torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    q = intent_weighted_q(two)
    assert float(q[A, C]) == pytest.approx(6 / 13 * 60 / 13, abs=1e-6)  # V*(A) = 60/13
    assert float(q[B, A]) == pytest.approx(40 / 13, abs=1e-6)  # only the first intent on B


def test_first_order_mixture_of_several_intents_is_evaluated_exactly() -> None:
    """The mixed MDP's prior is float64 like every other: ``policy_value`` on it ran into a
    float32 prior (``dot : expected both vectors to have same dtype``)."""
    one = SiteMDP.from_core(core())
    leaves = torch.zeros(3, 4, dtype=torch.float64)
    leaves[:, 3] = 1.0
    two = dataclasses.replace(
        one,
        transitions=torch.stack([one.transitions[0], leaves]),
        entry=torch.stack([one.entry[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)]),
        prior=torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    mixed = two.first_order()
    assert mixed.prior.dtype == torch.float64 and mixed.n_intents == 1
    best = torch.zeros(3, 4, dtype=torch.float64)
    best[[A, B, C], [C, A, NOTHING]] = 1.0
    direct = dataclasses.replace(
        mixed,
        transitions=mixed.transitions.clone(),
        entry=mixed.entry.clone(),
        prior=torch.tensor([1.0], dtype=torch.float64),
    )
    assert policy_value(mixed, best)["mean_return"] == policy_value(direct, best)["mean_return"]


def test_large_site_backup_in_closed_form_equals_the_dense_one(monkeypatch) -> None:
    """Past MAX_DENSE_CELLS the boost's backup is computed in closed form (O(P·A) a sweep):
    the same Q table, and value iteration the same values, as the dense action rows."""
    import agents.tabular as tabular
    from clickstream.synthetic import build_store
    from envs.site_env import build_core

    store = build_store(n_pages=50, seed=3)
    mdp = SiteMDP.from_core(build_core(1, store=store))
    v = torch.rand(mdp.n_pages, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dense = mdp.q_backup(0, v, 0.9)
    assert len(mdp._chunks()) == 1
    monkeypatch.setattr(tabular, "MAX_DENSE_CELLS", mdp.n_pages * (mdp.n_pages + 1) * 7)
    assert len(mdp._chunks()) > 1  # the closed form is used from here on
    closed = mdp.q_backup(0, v, 0.9)
    assert closed.shape == (mdp.n_pages, mdp.n_actions)
    torch.testing.assert_close(closed, dense, rtol=1e-12, atol=1e-12)
    # the no-recommendation action (the last) is the organic backup
    target = mdp.reward + 0.9 * torch.cat([v, v.new_zeros(1)])
    torch.testing.assert_close(closed[:, -1], mdp.transitions[0] @ target)
    fast = value_iteration(mdp)
    monkeypatch.setattr(tabular, "MAX_DENSE_CELLS", 80_000_000)
    slow = value_iteration(mdp)
    torch.testing.assert_close(fast.v, slow.v, rtol=1e-10, atol=1e-10)
    assert torch.equal(fast.q.argmax(1), slow.q.argmax(1))


@pytest.mark.parametrize("action_level", ["page", "group"])
def test_policy_rows_read_only_the_actions_taken_and_equal_the_dense_sum(
    action_level: str, monkeypatch
) -> None:
    """Exact evaluation builds a policy's rows from the (page, action) pairs it can take: the
    dense sum over every action's rows for a stochastic table and a deterministic one, also
    when the pairs come in several chunks."""
    import agents.tabular as tabular
    from clickstream.synthetic import build_store
    from envs.site_env import build_core

    store = build_store(n_pages=50, seed=3)
    mdp = SiteMDP.from_core(build_core(1, store=store, action_level=action_level))
    gen = torch.Generator().manual_seed(1)
    stochastic = torch.rand(mdp.n_pages, mdp.n_actions, generator=gen, dtype=torch.float64)
    stochastic /= stochastic.sum(1, keepdim=True)
    chosen = torch.randint(mdp.n_actions, (mdp.n_pages,), generator=gen)
    deterministic = torch.nn.functional.one_hot(chosen, mdp.n_actions).double()
    everything = torch.arange(mdp.n_actions)
    for probs in (stochastic, deterministic):
        dense = torch.einsum("sa,saj->sj", probs, mdp.action_rows(0, everything))
        torch.testing.assert_close(mdp.policy_rows(0, probs), dense, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            mdp.policy_rows(0, probs).sum(1), torch.ones(mdp.n_pages).double()
        )
    monkeypatch.setattr(tabular, "MAX_DENSE_CELLS", 7 * (mdp.n_pages + 1))  # 7 pairs a chunk
    dense = torch.einsum("sa,saj->sj", stochastic, mdp._action_rows(0, everything))
    torch.testing.assert_close(mdp.policy_rows(0, stochastic), dense, rtol=1e-12, atol=1e-12)
