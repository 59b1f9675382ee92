"""Recurrent PPO (sb3-contrib) behind the common policy surface: the LSTM state travels with
each visitor, is reset where a visit starts and is kept row by row when visitors leave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO

from agents.base import load_policy
from agents.networks import PageRecurrentPolicy
from agents.sb3 import SB3Agent, _rebuild


def _agent(**extra: object) -> SB3Agent:
    kwargs = {"net_arch": [8], "lstm_hidden_size": 8, **extra}
    agent = SB3Agent("recurrent_ppo", policy="PagePolicy", policy_kwargs=kwargs, verbose=False)
    agent.model = _rebuild(
        RecurrentPPO, PageRecurrentPolicy, spaces.MultiDiscrete([6, 6]), spaces.Discrete(6), kwargs
    )
    return agent


@pytest.mark.parametrize("beside", [False, True], ids=["lstm_only", "features_beside_lstm"])
def test_the_lstm_state_is_per_visitor_and_reset_at_a_visits_start(beside: bool) -> None:
    agent = _agent(features_beside_lstm=beside)
    assert agent.recurrent and agent.table_probs() is None
    obs = np.array([[0, 1], [5, 3], [2, 2]])
    _, first = agent.predict(obs, None, np.ones(3, dtype=bool))
    assert first[0].shape == (1, 3, 8)
    _, second = agent.predict(obs, first, np.zeros(3, dtype=bool))
    assert not np.allclose(first[0], second[0])  # the same page after a longer visit
    _, again = agent.predict(obs, second, np.ones(3, dtype=bool))
    np.testing.assert_allclose(again[0], first[0], atol=1e-6)  # a new visit forgets
    # visitors 0 and 2 stay: their rows of the state, and the same next step as with all three
    kept = agent.select_state(second, np.array([True, False, True]))
    assert kept[0].shape == (1, 2, 8)
    _, alone = agent.predict(obs[[0, 2]], kept, np.zeros(2, dtype=bool))
    _, together = agent.predict(obs, second, np.zeros(3, dtype=bool))
    np.testing.assert_allclose(alone[0], together[0][:, [0, 2]], atol=1e-6)
    assert agent.action_scores(obs).shape == (3, 6)


def _silence_lstm(agent: SB3Agent) -> None:
    """All of the actor's LSTM weights to zero: its output is then 0 whatever it reads
    (every gate 0.5, the cell input tanh(0) = 0)."""
    with torch.no_grad():
        for weight in agent.model.policy.lstm_actor.parameters():
            weight.zero_()


def test_features_beside_the_lstm_give_the_actor_the_current_page_directly() -> None:
    pages = np.array([[0, 1], [0, 3], [4, 2]])  # observed pages (history of 2, per visitor)
    starts = np.ones(3, dtype=bool)
    plain, beside = _agent(), _agent(features_beside_lstm=True)
    # the actor's first layer reads the LSTM's 8 outputs, and beside them 2 pages x 32
    assert plain.model.policy.mlp_extractor.policy_net[0].in_features == 8
    assert beside.model.policy.mlp_extractor.policy_net[0].in_features == 8 + 2 * 32
    assert beside.model.policy.mlp_extractor.value_net[0].in_features == 8 + 2 * 32
    for agent in (plain, beside):
        _silence_lstm(agent)
    # through a silent LSTM every page looks alike; beside it, the pages still tell apart
    flat = plain.action_scores(pages)
    np.testing.assert_allclose(flat, np.broadcast_to(flat[0], flat.shape), atol=1e-6)
    scores = beside.action_scores(pages)
    assert np.abs(scores[0] - scores[1]).max() > 1e-4
    np.testing.assert_allclose(np.exp(scores).sum(axis=1), 1.0, atol=1e-5)
    # the step's actions follow the same path as the web app's scores
    actions, _ = beside.predict(pages, None, starts)
    assert actions.shape == (3,)


CRITICS = {
    "own_lstm": ({}, "lstm_critic"),
    "shared_lstm": ({"shared_lstm": True, "enable_critic_lstm": False}, None),
    "no_lstm": ({"enable_critic_lstm": False}, "critic"),
}


@pytest.mark.parametrize("kind", list(CRITICS))
def test_features_beside_the_lstm_reach_every_kind_of_critic(kind: str) -> None:
    options, own_layer = CRITICS[kind]
    policy = _agent(features_beside_lstm=True, **options).model.policy
    assert policy.mlp_extractor.value_net[0].in_features == 8 + 2 * 32
    obs = torch.as_tensor(np.array([[0, 1], [0, 3], [4, 2]]))
    zeros = (torch.zeros(1, 3, 8), torch.zeros(1, 3, 8))
    values = policy.predict_values(obs, zeros, torch.ones(3))
    assert values.shape == (3, 1)
    values.sum().backward()
    if own_layer is not None:  # the value loss trains the critic's own layer before the MLP
        grads = [p.grad for p in getattr(policy, own_layer).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    if kind == "no_lstm":  # its value reads the observed pages only, whatever the visit was
        later = (torch.randn(1, 3, 8), torch.randn(1, 3, 8))
        torch.testing.assert_close(policy.predict_values(obs, later, torch.zeros(3)), values)
    held = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in held for p in policy.parameters())  # the optimizer trains them all


@pytest.mark.parametrize("kind", list(CRITICS))
def test_features_beside_the_lstm_round_trip_with_identical_scores(
    tmp_path: Path, kind: str
) -> None:
    agent = _agent(features_beside_lstm=True, **CRITICS[kind][0])
    back = load_policy(agent.save(tmp_path / "recurrent"))
    assert back.model.policy.features_beside_lstm
    pages = np.array([[0, 1], [5, 3], [2, 2]])
    np.testing.assert_array_equal(back.action_scores(pages), agent.action_scores(pages))
    saved, loaded = agent.model.policy.state_dict(), back.model.policy.state_dict()
    assert saved.keys() == loaded.keys()  # the critic's weights too
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
