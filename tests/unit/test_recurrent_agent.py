"""Recurrent PPO (sb3-contrib) behind the common policy surface: the LSTM state travels with
each visitor, is reset where a visit starts and is kept row by row when visitors leave."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from sb3_contrib import RecurrentPPO

from agents.networks import PageRecurrentPolicy
from agents.sb3 import SB3Agent, _rebuild


def _agent() -> SB3Agent:
    kwargs = {"net_arch": [8], "lstm_hidden_size": 8}
    agent = SB3Agent("recurrent_ppo", policy="PagePolicy", policy_kwargs=kwargs, verbose=False)
    agent.model = _rebuild(
        RecurrentPPO, PageRecurrentPolicy, spaces.MultiDiscrete([6, 6]), spaces.Discrete(6), kwargs
    )
    return agent


def test_the_lstm_state_is_per_visitor_and_reset_at_a_visits_start() -> None:
    agent = _agent()
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
