"""Slates: choice models, the slate env, the exact slate optimiser and the slate agents."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from agents.logs import log_policy
from agents.slate import (
    best_slates,
    greedy_top_k,
    slate_one_step_value,
    slate_policy_value,
    slate_value_iteration,
)
from agents.tabular import SiteMDP
from clickstream.errors import ClickstreamError
from envs.click_model import MultinomialBoost, RelevanceFollow
from envs.core import SiteCore
from envs.dynamics import MarkovDynamics
from envs.site_env import SiteEnv, build_core
from envs.slate import Cascade, PositionMNL, build_slate_model, dedupe
from envs.vector_env import SiteSB3VecEnv


def _rows(s: int, p: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(s, p + 1, generator=g, dtype=torch.float64) * 1.5
    return torch.softmax(logits, dim=1)


def test_k1_slate_models_are_the_single_page_click_models() -> None:
    probs = _rows(16, 9)
    action = torch.arange(-1, 15) % 10 - 1  # -1 (nothing) and pages 0..8
    mnl = PositionMNL(1.3, (1.0,)).apply(probs, action[:, None])
    assert torch.allclose(mnl, MultinomialBoost(1.3).apply(probs, action), atol=1e-15)
    cas = Cascade(-1.0, 0.5, 0.7, 1).apply(probs, action[:, None])
    assert torch.allclose(cas, RelevanceFollow(-1.0, 0.5).apply(probs, action), atol=1e-15)


def test_mnl_formula_and_cascade_click_probabilities() -> None:
    p = torch.tensor([[0.2, 0.3, 0.1, 0.4]], dtype=torch.float64)  # 3 pages + EXIT
    slate = torch.tensor([[1, 0]])
    kappa = math.e - 1
    out = PositionMNL(1.0, (1.0, 0.5)).apply(p, slate)
    z = 1 + kappa * (0.3 + 0.5 * 0.2)
    expected = torch.tensor([[0.2 * (1 + kappa * 0.5), 0.3 * (1 + kappa), 0.1, 0.4]]) / z
    assert torch.allclose(out, expected.double(), atol=1e-15)
    cas = Cascade(0.0, 0.0, 0.5, 2)  # click prob 1/2 at every examined page
    assert torch.allclose(cas.click_probs(p, slate), torch.tensor([[0.5, 0.125]]).double())
    assert torch.allclose(cas.apply(p, slate).sum(1), torch.ones(1).double())


def test_repeats_show_nothing() -> None:
    assert dedupe(torch.tensor([[3, 3, 5, -1, 5]])).tolist() == [[3, -1, 5, -1, -1]]


def _brute(model, rows, target, items):
    k = model.slate_size
    best = torch.full((rows.shape[0],), -math.inf, dtype=torch.float64)
    choices = [*items.tolist(), -1]
    for combo in itertools.product(choices, repeat=k):
        slate = dedupe(torch.tensor([combo]).expand(rows.shape[0], -1))
        best = torch.maximum(best, model.apply(rows, slate) @ target)
    return best


@pytest.mark.parametrize(
    "model",
    [
        PositionMNL(1.0, (1.0, 0.7, 0.4)),
        PositionMNL(2.0, (0.9, 0.9, 0.2)),
        Cascade(-0.5, 0.4, 1.0, 3),
        Cascade(0.5, 0.8, 0.6, 3),
    ],
)
def test_exact_slate_optimiser_matches_enumeration(model) -> None:
    rows = _rows(12, 6, seed=1)
    g = torch.Generator().manual_seed(2)
    target = torch.cat([torch.rand(6, generator=g, dtype=torch.float64) * 10, torch.zeros(1)])
    items = torch.arange(6)
    value, slates = best_slates(model, rows, target, items)
    assert torch.allclose(value, _brute(model, rows, target, items), atol=1e-10)
    # the slate it returns is worth its value
    shown = torch.where(slates >= 0, items[slates.clamp(min=0)], -1)
    assert torch.allclose(model.apply(rows, shown) @ target, value, atol=1e-10)


# a 4-page first-order site: value iteration over all 5^2 slates gives the same optimum
TOY = np.array(
    [
        [0.0, 0.4, 0.3, 0.1, 0.2],
        [0.2, 0.0, 0.3, 0.1, 0.4],
        [0.1, 0.2, 0.0, 0.3, 0.4],
        [0.3, 0.1, 0.1, 0.0, 0.5],
    ]
)
REWARD = np.array([0.0, 1.0, 3.0, 10.0, 0.0])


def _toy_core(model, n: int = 1) -> SiteCore:
    dyn = MarkovDynamics(np.array([1.0, 0.0, 0.0, 0.0]), TOY, ("/a", "/b", "/c", "/d"))
    return SiteCore(dyn, MultinomialBoost(1.0), REWARD, n, slate_model=model, max_steps=200)


@pytest.mark.parametrize("model", [PositionMNL(1.0, (1.0, 0.6)), Cascade(0.0, 0.5, 0.8, 2)])
def test_slate_value_iteration_is_the_enumerated_optimum(model) -> None:
    mdp = SiteMDP.from_core(_toy_core(model))
    v, slates, _ = slate_value_iteration(mdp, model, tol=1e-12)
    # brute-force value iteration over every slate
    rows = mdp.transitions[0]
    all_slates = [
        dedupe(torch.tensor([c]))[0] for c in itertools.product([-1, 0, 1, 2, 3], repeat=2)
    ]
    w = torch.zeros(4, dtype=torch.float64)
    for _ in range(2000):
        t = mdp.reward + torch.cat([w, w.new_zeros(1)])
        q = torch.stack([model.apply(rows, s.expand(4, -1)) @ t for s in all_slates], dim=1)
        w = q.max(1).values
    assert torch.allclose(v, w, atol=1e-9)
    exact = slate_policy_value(mdp, model, slates, horizon=2000)["mean_return"]
    assert exact == pytest.approx(float(mdp.entry[0] @ v), abs=1e-8)
    greedy = slate_policy_value(mdp, model, greedy_top_k(mdp, model), horizon=2000)
    assert greedy["mean_return"] <= exact + 1e-9


def test_slate_value_iteration_is_the_untruncated_optimum() -> None:
    # with max_steps = 2 the env's optimum is non-stationary; a stationary table found by
    # enumerating all 21^4 tables beats slate value iteration at that horizon by 4.5 %
    model = PositionMNL(1.0, (1.0, 0.6))
    core = _toy_core(model)
    core.max_steps = 2
    mdp = SiteMDP.from_core(core)
    assert mdp.max_steps == 2
    _, slates, _ = slate_value_iteration(mdp, model, tol=1e-12)
    best = torch.tensor([[2, 3], [3, -1], [3, -1], [2, 1]])
    svi = slate_policy_value(mdp, model, slates)["mean_return"]
    found = slate_policy_value(mdp, model, best)["mean_return"]
    assert svi == pytest.approx(6.352676, abs=1e-6) and found == pytest.approx(6.654301, abs=1e-6)
    # untruncated, slate value iteration is the optimum (test above) and beats that table
    assert (
        slate_policy_value(mdp, model, slates, horizon=2000)["mean_return"]
        >= (slate_policy_value(mdp, model, best, horizon=2000)["mean_return"])
    )


def test_slate_one_step_value_mixes_the_intents_as_the_logs_do() -> None:
    from clickstream.synthetic import SyntheticConfig, build_store

    store = build_store(SyntheticConfig(n_pages=50, mode="intent"))
    core = build_core(4096, store=store, slate_size=3, history_len=1)
    mdp, model = SiteMDP.from_core(core), core.slate_model
    assert mdp.n_intents > 1
    _, pages, _ = slate_value_iteration(mdp.first_order(), model)
    value = slate_one_step_value(mdp, model, pages)
    shown = dedupe(pages)
    rows = [model.apply(mdp.transitions[z], shown) for z in range(mdp.n_intents)]
    per_z = [float(mdp.entry[z] @ (r @ mdp.reward)) for z, r in enumerate(rows)]
    assert value == pytest.approx(float(torch.tensor(per_z, dtype=torch.float64) @ mdp.prior))
    assert abs(value - per_z[0]) > 1.0  # intent 0 alone is another number
    # the target played on-policy in the simulator: its first-step mean reward
    ap = core.action_pages.cpu().tolist()
    act = {p: i for i, p in enumerate(ap)}
    mu = torch.zeros(3, core.n_pages, core.n_actions, dtype=torch.float64)
    for j in range(3):
        mu[j, torch.arange(core.n_pages), [act[int(x)] for x in pages[:, j]]] = 1.0
    logs = log_policy(core, mu, 40_000, seed=1, first_step_only=True)
    se = logs.reward.std() / np.sqrt(len(logs.reward))
    assert abs(logs.reward.mean() - value) < 4 * se


def test_slate_size_1_is_todays_env_exactly() -> None:
    a, b = build_core(64), build_core(64, slate_size=1, slate_params={"examination": None})
    assert a.slate_model is None and b.slate_model is None
    a.reset(seed=3)
    b.reset(seed=3)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        act = torch.randint(0, a.n_actions, (64,), generator=g)
        ra, rb = a.step(act), b.step(act)
        assert torch.equal(ra.landed, rb.landed) and torch.equal(ra.reward, rb.reward)
        assert torch.equal(ra.obs, rb.obs)


def test_a_one_position_slate_steps_like_a_single_recommendation() -> None:
    single = _toy_core(None, 256)
    slate = _toy_core(PositionMNL(1.0, (1.0,)), 256)
    single.reset(seed=5)
    slate.reset(seed=5)
    act = torch.arange(256) % 5
    for _ in range(30):
        assert torch.allclose(single.next_page_probs(act), slate.slate_probs(act[:, None]))
        ra, rb = single.step(act), slate.step(act[:, None])
        assert torch.equal(ra.landed, rb.landed) and torch.equal(ra.followed, rb.followed)


def test_slate_env_spaces_and_positions() -> None:
    env = SiteEnv(slate_size=3)
    assert env.action_space.nvec.tolist() == [201, 201, 201]
    env.reset(seed=0)
    counts = np.zeros(4)
    for _ in range(400):
        _, _, term, trunc, info = env.step(np.array([5, 5, 200]))  # a repeat and "nothing"
        assert info["position"] in (-1, 0)
        counts[info["position"] + 1] += 1
        if term or trunc:
            env.reset()
    vec = SiteSB3VecEnv(8, seed=0, slate_size=3)
    vec.reset()
    vec.step_async(np.tile([1, 2, 3], (8, 1)))
    obs, reward, done, _ = vec.step_wait()
    assert done.shape == (8,)
    assert obs.shape == (8, 4) and reward.shape == (8,)


def test_bad_slate_configs_are_refused() -> None:
    with pytest.raises(ClickstreamError, match="examination"):
        build_slate_model("boost", {"beta": 1.0}, 3, {"examination": [1.0, 0.5]})
    with pytest.raises(ClickstreamError, match="non-increasing"):
        build_slate_model("boost", {"beta": 1.0}, 2, {"examination": [0.5, 1.0]})
    with pytest.raises(ClickstreamError, match="action_level=page"):
        build_core(1, slate_size=3, action_level="group")


def test_a_slate_table_saves_loads_and_plays_its_exact_value(tmp_path) -> None:
    from agents.base import load_policy
    from agents.evaluate import exact_return, simulate
    from agents.slate import SlateTablePolicy

    model = PositionMNL(1.0, (1.0, 0.6))
    core = _toy_core(model, 2048)
    mdp = SiteMDP.from_core(core)
    v, pages, _ = slate_value_iteration(mdp, model)
    policy = SlateTablePolicy("toy_slates")
    policy.set_slates(pages, core, mdp.q_backup(0, v))
    back = load_policy(policy.save(tmp_path / "p"))
    assert torch.equal(back.slate_table(), policy.slate_table())
    obs = np.array([[0], [3]])
    assert back.predict(obs)[0].shape == (2, 2)
    exact = exact_return(back, core)
    assert exact == pytest.approx(slate_policy_value(mdp, model, pages)["mean_return"])
    tables = {"revenue": torch.zeros(5), "time_on_page_s": torch.zeros(5)}
    played = simulate(back, core, 40_000, seed=1, tables=tables).returns
    half = 1.96 * played.std() / np.sqrt(len(played))
    assert abs(played.mean() - exact) < 3 * half


def test_a_single_page_policy_plays_in_a_slate_env_at_the_top() -> None:
    model = PositionMNL(1.0, (1.0, 0.6))
    core = _toy_core(model, 64)
    core.reset(seed=0)
    act = torch.full((64,), 2)
    expected = core.slate_probs(torch.tensor([[2, 2]]).expand(64, -1))
    assert torch.allclose(expected, core.slate_probs(torch.tensor([[2, 4]]).expand(64, -1)))
    r = core.step(act)
    assert set(r.position.tolist()) <= {-1, 0}
