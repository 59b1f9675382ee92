"""PPO over the visitor model's belief (agents/belief_ppo.py): the observation it learns from
is the belief the policy tracks when it acts, and the agent saves as data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

from agents.base import load_policy
from agents.belief import BeliefQMDP
from agents.belief_ppo import BeliefObservation, BeliefPPO, belief_features, feature_space
from agents.sb3 import _rebuild
from agents.tabular import SiteMDP
from clickstream.errors import ConfigError, RunFolderError
from clickstream.synthetic import build_store
from envs.site_env import build_core
from envs.vector_env import SiteSB3VecEnv

MAX_STEPS = 6


@pytest.fixture(scope="module")
def store_and_tracker():
    """A 50-page intent store and a policy tracking the belief over its true intents."""
    store = build_store(n_pages=50, mode="intent", seed=5)
    core = build_core(1, store=store, action_level="group", max_steps=MAX_STEPS)
    tracker = BeliefQMDP("true")
    tracker.plan(SiteMDP.from_core(core))
    return store, tracker


def test_features_are_the_page_and_the_belief(store_and_tracker) -> None:
    _, tracker = store_and_tracker
    n_pages, n_types = tracker.tracking().shape
    pages = torch.tensor([0, 7, n_pages - 1])
    belief = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [1e-9, 0.5, 0.5]]).double()
    x = belief_features(pages, belief, n_pages)
    assert x.shape == (3, n_pages + 2 * n_types) and x.dtype == torch.float32
    assert torch.equal(x[:, :n_pages].argmax(1), pages) and float(x[:, :n_pages].sum()) == 3
    torch.testing.assert_close(x[:, n_pages : n_pages + n_types], belief.float())
    # log b, floored at 1e-6 and scaled into [-1, 0]
    torch.testing.assert_close(x[1, n_pages + n_types :], torch.log(belief[1].float()) / 13.8155)
    assert float(x[2, n_pages + n_types]) == -1.0 and float(x[0, -1]) == -1.0
    assert feature_space(n_pages, n_types).contains(x[1].numpy())


def test_the_observed_belief_is_the_one_the_policy_tracks(store_and_tracker) -> None:
    store, tracker = store_and_tracker
    n_pages, n_types = tracker.tracking().shape
    n = 32
    env = SiteSB3VecEnv(n, seed=3, store=store, action_level="group", max_steps=MAX_STEPS)
    wrapped = BeliefObservation(env, tracker)
    rng = np.random.default_rng(0)
    obs, starts, state = wrapped.reset(), np.ones(n, dtype=bool), None
    cut = differs = 0
    for _ in range(40):
        # replay the visit with the policy's own tracking, acting as the wrapper's caller did
        actions = rng.integers(0, tracker.n_actions(), size=n)
        pages = torch.as_tensor(obs[:, :n_pages].argmax(1))
        belief = tracker.beliefs(pages, state, torch.as_tensor(starts))
        torch.testing.assert_close(
            torch.as_tensor(obs[:, n_pages : n_pages + n_types]), belief.float()
        )
        torch.testing.assert_close(belief.sum(1), torch.ones(n, dtype=belief.dtype))
        state = (belief, pages, torch.as_tensor(actions))
        wrapped.step_async(actions)
        obs, _, done, infos = wrapped.step_wait()
        for i in np.flatnonzero(done):
            if infos[i].get("TimeLimit.truncated"):
                last = infos[i]["terminal_observation"]
                assert last.shape == (n_pages + 2 * n_types,)
                # the cut visit's belief moved on (not restarted at its last page's entry belief)
                page = torch.tensor([int(last[:n_pages].argmax())])
                one = tuple(x[i : i + 1] for x in state)
                moved = tracker.beliefs(page, one, torch.zeros(1, dtype=torch.bool))
                torch.testing.assert_close(
                    torch.as_tensor(last[n_pages : n_pages + n_types]), moved[0].float()
                )
                fresh = tracker.beliefs(page, None, torch.ones(1, dtype=torch.bool))
                cut += 1
                differs += int(not torch.allclose(moved, fresh, atol=1e-4))
        starts = np.asarray(done, dtype=bool)
    assert cut > 0 and differs > 0  # cut visits were checked, and restarting would show


def _untrained(tracker: BeliefQMDP) -> BeliefPPO:
    agent = BeliefPPO("true", policy_kwargs={"net_arch": [16]}, verbose=False)
    agent.world, agent.rows, agent.entry = tracker.world, None, tracker.tracking()
    n_pages, n_types = tracker.tracking().shape
    agent.sb3 = _rebuild(
        PPO,
        "MlpPolicy",
        feature_space(n_pages, n_types),
        spaces.Discrete(tracker.n_actions()),
        {"net_arch": [16]},
    )
    return agent


def test_belief_ppo_saves_as_data_and_acts_the_same_after_loading(
    store_and_tracker, tmp_path
) -> None:
    _, tracker = store_and_tracker
    agent = _untrained(tracker)
    n_pages = len(tracker.tracking())
    obs = np.array([[n_pages, p] for p in range(n_pages)])
    starts = np.ones(len(obs), dtype=bool)
    actions, (belief, _, _) = agent.predict(obs, None, starts)
    agent.save(tmp_path / "agent")
    loaded = load_policy(tmp_path / "agent")
    assert isinstance(loaded, BeliefPPO) and loaded.model == "true"
    again, (belief_again, _, _) = loaded.predict(obs, None, starts)
    np.testing.assert_array_equal(actions, again)
    torch.testing.assert_close(belief, belief_again)
    scores = loaded.action_scores(obs)
    assert scores.shape == (n_pages, tracker.n_actions())
    np.testing.assert_allclose(np.exp(scores).sum(1), 1.0, rtol=1e-5)  # log-probabilities
    # other weights than the manifest's network are refused, naming the file
    manifest = json.loads((tmp_path / "agent" / "policy.json").read_text())
    manifest["policy_kwargs"] = {"net_arch": [32]}
    (tmp_path / "agent" / "policy.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match=r"policy\.pt"):
        load_policy(tmp_path / "agent")


def test_a_kind_without_tables_is_refused() -> None:
    with pytest.raises(ConfigError, match="first-order tables per visitor type"):
        BeliefPPO("gru")
    assert BeliefPPO().model == "learned"  # resolved to env.dynamics when it trains
