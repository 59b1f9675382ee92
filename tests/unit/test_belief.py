"""The belief-state optimum (agents/belief.py): the grid, both bounds against an exact
expectimax over every history, and the policy that plays the plans in the simulator."""

from __future__ import annotations

import dataclasses
import json
import math
from functools import cache

import numpy as np
import pytest
import torch

from agents.base import load_policy
from agents.belief import (
    BeliefGrid,
    BeliefQMDP,
    BeliefValueIteration,
    _action_rows,
    belief_lower_bound,
    belief_optimum,
    belief_upper_bound,
)
from agents.evaluate import mean_ci, simulate
from agents.tabular import SiteMDP, intent_weighted_q, policy_value, value_iteration
from clickstream.errors import RunFolderError
from clickstream.synthetic import build_store
from envs.click_model import MultinomialBoost, RelevanceFollow
from envs.site_env import build_core


def test_grid_counts_and_interpolation() -> None:
    grid = BeliefGrid.regular(3, 6)
    assert len(grid.points) == math.comb(6 + 2, 2)  # 28 beliefs on a 3-intent simplex
    np.testing.assert_allclose(grid.points.sum(1), 1.0)
    beliefs = torch.distributions.Dirichlet(torch.ones(3)).sample((500,)).double()
    beliefs = beliefs / beliefs.sum(1, keepdim=True)
    vertices, weights = grid.interpolation(beliefs)
    assert bool((weights >= 0).all())
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-12)
    # the weights rebuild the belief from its cell's vertices, each within one grid step
    rebuilt = (weights[..., None] * grid.points[vertices]).sum(1)
    np.testing.assert_allclose(rebuilt, beliefs, atol=1e-12)
    assert float((grid.points[vertices] - beliefs[:, None]).abs().max()) <= 1 / 6 + 1e-12
    # a grid point is its own cell's only vertex with weight
    v, w = grid.interpolation(grid.points)
    own = v[torch.arange(len(v)), w.argmax(1)]
    np.testing.assert_array_equal(own, torch.arange(len(grid.points)))
    np.testing.assert_allclose(w.max(1).values, 1.0)


def _two_intents(beta: float = 1.0) -> SiteMDP:
    """Four pages; page 3 pays. Intent 0 reaches it from page 1, intent 1 from page 2, and
    both enter on page 0, so the first step reveals something the entry does not."""
    t0 = [
        [0.0, 0.5, 0.2, 0.0, 0.3],
        [0.1, 0.0, 0.1, 0.4, 0.4],
        [0.2, 0.2, 0.0, 0.05, 0.55],
        [0.3, 0.1, 0.1, 0.0, 0.5],
    ]
    t1 = [
        [0.0, 0.2, 0.5, 0.0, 0.3],
        [0.2, 0.0, 0.2, 0.05, 0.55],
        [0.1, 0.1, 0.0, 0.4, 0.4],
        [0.3, 0.1, 0.1, 0.0, 0.5],
    ]
    return SiteMDP(
        transitions=torch.tensor([t0, t1], dtype=torch.float64),
        entry=torch.tensor([[0.8, 0.1, 0.1, 0.0], [0.8, 0.1, 0.1, 0.0]], dtype=torch.float64),
        prior=torch.tensor([0.6, 0.4], dtype=torch.float64),
        reward=torch.tensor([0.0, 1.0, 1.0, 10.0, 0.0], dtype=torch.float64),
        click_model=MultinomialBoost(beta=beta),
        action_pages=torch.tensor([0, 1, 2, 3, -1]),
        max_steps=4,
    )


def _expectimax(mdp: SiteMDP, policy: BeliefQMDP | None = None) -> float:
    """The exact optimum over every history-dependent policy, by searching all histories
    (pages and actions) for ``max_steps`` steps: the value the bounds must bracket. With
    ``policy``: that belief policy's exact value, its action taken at every history."""
    rows = _action_rows(mdp).numpy()  # (P, A, P + 1, Z)
    r, p = mdp.reward.numpy(), mdp.n_pages

    @cache
    def value(page: int, weights: tuple[float, ...], steps: int) -> float:
        # ``weights``: the unnormalised belief, so values come out already weighted
        w = np.asarray(weights)
        if steps == 0 or w.sum() <= 0:  # nobody is here: worth nothing, whatever is shown
            return 0.0
        best = -math.inf
        actions = range(rows.shape[1])
        if policy is not None:
            belief = torch.as_tensor(w / w.sum())[None]
            actions = [int(policy.choose(torch.tensor([page]), belief)[0])]
        for a in actions:
            total = 0.0
            for j in range(p + 1):
                nxt = w * rows[page, a, j]
                if nxt.sum() <= 0:
                    continue
                total += nxt.sum() * r[j]
                if j < p:
                    total += value(j, tuple(nxt), steps - 1)
            best = max(best, total)
        return best

    prior, entry = mdp.prior.numpy(), mdp.entry.numpy()
    return sum(value(s, tuple(prior * entry[:, s]), mdp.max_steps) for s in range(p))


def test_bounds_bracket_the_exact_optimum_and_close_with_the_grid() -> None:
    mdp = _two_intents()
    exact = _expectimax(mdp)
    gaps = []
    for m in (2, 8, 32):
        found = belief_optimum(mdp, m)
        assert found.lower <= exact + 1e-9 <= found.upper + 2e-9
        gaps.append(found.gap)
    assert gaps[0] > gaps[-1]
    assert gaps[-1] < 2e-3 * exact  # a fine grid pins the optimum down
    # between the best table over pages and the intent oracle, as a reference must be
    first_order = value_iteration(mdp.first_order()).q
    table = torch.nn.functional.one_hot(first_order.argmax(1), mdp.n_actions).double()
    weighted = intent_weighted_q(mdp)
    weighted_table = torch.nn.functional.one_hot(weighted.argmax(1), mdp.n_actions).double()
    oracle = torch.stack([value_iteration(mdp, z).q for z in range(2)])
    oracle_table = torch.nn.functional.one_hot(oracle.argmax(2), mdp.n_actions).double()
    tables = [policy_value(mdp, t)["mean_return"] for t in (table, weighted_table)]
    assert max(tables) <= exact + 1e-9
    # the oracle's table is optimal per intent for the stationary problem, so compare with
    # the finite-horizon oracle: each intent's own expectimax
    per_intent = sum(
        float(mdp.prior[z])
        * _expectimax(
            dataclasses.replace(
                mdp,
                transitions=mdp.transitions[z : z + 1],
                entry=mdp.entry[z : z + 1],
                prior=torch.ones(1, dtype=torch.float64),
            )
        )
        for z in range(2)
    )
    assert exact <= per_intent + 1e-9
    assert policy_value(mdp, oracle_table)["mean_return"] <= per_intent + 1e-9


def test_one_intent_is_value_iteration_over_the_horizon() -> None:
    mdp = _two_intents()
    one = dataclasses.replace(
        mdp,
        transitions=mdp.transitions[:1],
        entry=mdp.entry[:1],
        prior=torch.ones(1, dtype=torch.float64),
    )
    exact = _expectimax(one)
    assert belief_lower_bound(one, 3).value == pytest.approx(exact, abs=1e-9)
    assert belief_upper_bound(one, 3).value == pytest.approx(exact, abs=1e-9)


def test_negative_rewards_are_refused() -> None:
    mdp = _two_intents()
    bad = dataclasses.replace(mdp, reward=mdp.reward - 1.0)
    with pytest.raises(Exception, match="rewards >= 0"):
        belief_lower_bound(bad, 2)


@pytest.fixture(scope="module")
def intent_site():
    """A 50-page intent store, its true MDP and a planned belief policy."""
    store = build_store(n_pages=50, mode="intent", seed=5)
    core = build_core(1, store=store, action_level="group", max_steps=20)
    mdp = SiteMDP.from_core(core)
    policy = BeliefValueIteration("true", "belief_optimum", resolution=8)
    value = policy.plan(mdp)
    return store, mdp, policy, value


def test_the_policy_reaches_its_plans_value_in_the_simulator(intent_site) -> None:
    store, mdp, policy, value = intent_site
    bounds = belief_optimum(mdp, 8)
    assert value == pytest.approx(bounds.lower, rel=1e-12)
    core = build_core(512, store=store, action_level="group", max_steps=20)
    tables = {k: torch.zeros(mdp.n_pages + 1) for k in ("revenue", "time_on_page_s")}
    sessions = simulate(policy, core, 40_000, seed=3, tables=tables)
    mean, half = mean_ci(sessions.returns)
    # re-choosing the best plan at every step does at least as well as following one plan,
    # and nothing that sees only pages beats the upper bound
    assert bounds.lower - half <= mean <= bounds.upper + half
    assert len(sessions.returns) >= 40_000


def test_the_policy_tracks_the_belief_and_saves(intent_site, tmp_path) -> None:
    _, mdp, policy, _ = intent_site
    entry = (mdp.prior[:, None] * mdp.entry).T
    first, second = (int(s) for s in entry.sum(1).argsort(descending=True)[:2])
    obs = np.array([[mdp.n_pages, first], [mdp.n_pages, second]])
    actions, state = policy.predict(obs, None, np.array([True, True]))
    belief, _, chosen = state
    np.testing.assert_allclose(belief[1], entry[second] / entry[second].sum(), atol=1e-12)
    never = int(entry.sum(1).argmin())  # nobody enters here: the prior
    assert float(entry[never].sum()) == 0.0
    _, (fresh, _, _) = policy.predict(np.array([[mdp.n_pages, never]]), None, np.array([True]))
    np.testing.assert_allclose(fresh[0], mdp.prior, atol=1e-12)
    np.testing.assert_array_equal(actions, chosen.numpy())
    # one step later: Bayes' rule on the row of the page and action it acted on
    # her likeliest next page after the action taken
    nxt = int(_action_rows(mdp)[second, int(chosen[1]), : mdp.n_pages].sum(-1).argmax())
    step = np.array([[first, nxt], [second, nxt]])
    _, (after, _, _) = policy.predict(step, state, np.array([False, False]))
    rows = _action_rows(mdp)
    moved = belief[1] * rows[second, int(chosen[1]), nxt]
    assert float(moved.sum()) > 0
    np.testing.assert_allclose(after[1], moved / moved.sum(), atol=1e-6)
    np.testing.assert_allclose(after.sum(1), 1.0, atol=1e-9)
    kept = policy.select_state(state, np.array([False, True]))
    assert [len(x) for x in kept] == [1, 1, 1]
    loaded = load_policy(policy.save(tmp_path / "belief"))
    again, _ = loaded.predict(obs, None, np.array([True, True]))
    np.testing.assert_array_equal(again, actions)
    np.testing.assert_allclose(loaded.action_scores(obs), policy.action_scores(obs), rtol=1e-6)
    assert policy.action_scores(obs).shape == (2, mdp.n_actions)


def test_the_reference_script_orders_the_references() -> None:
    from scripts.belief_reference import references

    values = references(_two_intents(), [2, 16])
    assert values["belief_lower_m16"] <= _expectimax(_two_intents()) + 1e-9
    assert values["belief_lower_m2"] <= values["belief_lower_m16"] + 1e-9
    assert values["belief_upper_m16"] <= values["belief_upper_m2"] + 1e-9
    assert max(values["value_iteration"], values["intent_weighted"]) <= values["belief_upper_m16"]


# ---- tracking without the P x A x P table, and QMDP --------------------------------------


@pytest.mark.parametrize("click", [MultinomialBoost(beta=1.5), RelevanceFollow()])
def test_landing_likelihood_is_the_action_rows_without_the_table(intent_site, click) -> None:
    _, grouped, _, _ = intent_site  # group actions: a page group shown at once
    pages = dataclasses.replace(_two_intents(), click_model=click)  # one page per action
    gen = torch.Generator().manual_seed(0)
    for mdp in (grouped, pages):
        rows = _action_rows(mdp)  # (P, A, P + 1, Z)
        s = torch.randint(mdp.n_pages, (400,), generator=gen)
        a = torch.randint(mdp.n_actions, (400,), generator=gen)
        j = torch.randint(mdp.n_pages + 1, (400,), generator=gen)
        torch.testing.assert_close(mdp.landing_likelihood(s, a, j), rows[s, a, j])


def test_qmdp_sits_between_the_best_table_and_the_belief_state_optimum() -> None:
    """Exact values over every history of the two-intent site (a strong boost: 2.0)."""
    mdp = _two_intents(beta=2.0)
    qmdp = BeliefQMDP("true")
    qmdp.plan(mdp)
    value = _expectimax(mdp, qmdp)
    tables = [value_iteration(mdp.first_order()).q, intent_weighted_q(mdp)]
    best_table = max(
        policy_value(mdp, torch.nn.functional.one_hot(q.argmax(1), mdp.n_actions).double())[
            "mean_return"
        ]
        for q in tables
    )
    assert value == pytest.approx(8.8619, abs=1e-4)  # computed once; the tables: 8.7657
    assert best_table + 0.09 < value < _expectimax(mdp) - 1.6  # the optimum: 10.4805


def test_qmdp_with_one_type_is_value_iteration() -> None:
    one = _two_intents().first_order()
    policy = BeliefQMDP("markov")
    policy.plan(one)
    q = value_iteration(one).q
    obs = np.array([[one.n_pages, s] for s in range(one.n_pages)])
    actions, (belief, _, _) = policy.predict(obs, None, np.ones(len(obs), dtype=bool))
    np.testing.assert_allclose(belief, 1.0)
    np.testing.assert_array_equal(actions, q.argmax(1).numpy())
    np.testing.assert_allclose(policy.action_scores(obs), q.numpy(), rtol=1e-6)


def test_qmdp_tracks_the_belief_as_the_table_does_and_saves(intent_site, tmp_path) -> None:
    store, mdp, planner, _ = intent_site
    qmdp = BeliefQMDP("true")
    qmdp.plan(mdp)
    assert qmdp.rows is None  # no P x A x P table: the world's organic rows
    # the same visits, tracked by both forms of the rows: the same beliefs
    core = build_core(256, store=store, action_level="group", max_steps=20)
    obs, state_q, state_p = core.reset(11), None, None
    starts = np.ones(256, dtype=bool)
    for _ in range(6):
        # the planner's state with the action QMDP took, so both track the same visits
        given = None if state_q is None else (*state_p[:2], state_q[2])
        _, state_p = planner.predict(obs.numpy(), given, starts)
        actions, state_q = qmdp.predict(obs.numpy(), state_q, starts)
        torch.testing.assert_close(state_q[0], state_p[0], rtol=0, atol=1e-6)
        step = core.step(torch.as_tensor(actions))
        obs, starts = step.obs, (step.terminated | step.truncated).numpy()
    # saved as data, replayed the same; a table that does not fit is refused by name
    folder = qmdp.save(tmp_path / "qmdp")
    loaded = load_policy(folder)
    obs = np.array([[mdp.n_pages, 3, 7], [mdp.n_pages, mdp.n_pages, 4]])
    np.testing.assert_array_equal(loaded.predict(obs)[0], qmdp.predict(obs)[0])
    np.testing.assert_allclose(loaded.action_scores(obs), qmdp.action_scores(obs), rtol=1e-6)
    shown = np.load(folder / "world_shown.npy")  # group actions: the pages each one shows
    np.save(folder / "world_shown.npy", shown[:, :-1])
    with pytest.raises(RunFolderError, match="world_shown must have shape"):
        load_policy(folder)
    np.save(folder / "world_shown.npy", shown)
    manifest = json.loads((folder / "policy.json").read_text())
    manifest["world_click_model"] = {"kind": "os.system", "params": {}}  # a name, not code
    (folder / "policy.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="click model must be one of"):
        load_policy(folder)
    manifest["world_click_model"] = {"kind": "boost", "params": {"beta": 1.0}}
    (folder / "policy.json").write_text(json.dumps(manifest))
    np.save(folder / "q.npy", np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(RunFolderError, match="q must have shape"):
        load_policy(folder)


def test_planners_refuse_a_visitor_kind_without_tables() -> None:
    from clickstream.errors import ConfigError

    for planner in (BeliefQMDP, BeliefValueIteration):
        with pytest.raises(ConfigError, match="'gru' has none"):
            planner("gru")
        assert planner("latent_gru").model == "latent_gru"  # tables without its memory stage
