"""The Double DQN target: by hand, and wired into SB3's training step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stable_baselines3.common.logger import configure

from agents.sb3 import DoubleDQN, SB3Agent, double_q_target
from clickstream.errors import ClickstreamError


def test_double_q_target_takes_the_online_argmax_valued_by_the_target_net() -> None:
    online = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 0.0]])
    target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])
    rewards, dones = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [1.0]])
    got = double_q_target(online, target, rewards, dones, 0.5)
    # row 0: online picks action 1, the target net values it 20 -> 1 + 0.5 * 20
    # row 1: the session ended -> the reward alone (plain DQN would have used max 30 / 9)
    assert torch.equal(got, torch.tensor([[11.0], [2.0]]))


def test_double_dqn_training_step_regresses_on_the_double_q_target() -> None:
    env = gym.make("CartPole-v1")
    model = DoubleDQN("MlpPolicy", env, learning_starts=0, batch_size=8, buffer_size=64, seed=0)
    model.set_logger(configure(None, []))
    obs, next_obs = np.full((1, 4), 0.1, np.float32), np.full((1, 4), -0.2, np.float32)
    with torch.no_grad():  # the target net prefers the action the online net does not pick
        online_pick = int(model.q_net(torch.as_tensor(next_obs)).argmax())
        model.q_net_target.q_net[-1].bias[1 - online_pick] += 5.0
    for _ in range(8):  # one transition, stored 8 times: every sample is that transition
        model.replay_buffer.add(
            obs, next_obs, np.array([1]), np.array([2.0]), np.array([0.0]), [{}]
        )
    for group in model.policy.optimizer.param_groups:
        group["lr"] = 0.0
    model.lr_schedule = lambda _: 0.0  # the step must not move the weights we compare with
    with torch.no_grad():
        o, n = torch.as_tensor(obs), torch.as_tensor(next_obs)
        q = model.q_net(o)[:, 1:2]
        expected = F.smooth_l1_loss(
            q,
            double_q_target(
                model.q_net(n),
                model.q_net_target(n),
                torch.tensor([[2.0]]),
                torch.tensor([[0.0]]),
                model.gamma,
            ),
        )
        plain = F.smooth_l1_loss(q, 2.0 + model.gamma * model.q_net_target(n).max(1, True).values)
    model.train(gradient_steps=1, batch_size=8)
    loss = model.logger.name_to_value["train/loss"]
    assert loss == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(plain) - float(expected)) > 1e-3  # the test tells the targets apart


def test_double_q_is_a_dqn_option_only() -> None:
    with pytest.raises(ClickstreamError, match="double_q is a DQN option"):
        SB3Agent("ppo", double_q=True)


def test_the_learning_rate_falls_linearly_to_its_end_fraction() -> None:
    from agents.sb3 import linear_learning_rate

    # SB3 passes the fraction of the budget left: 1 at the first update, 0 at the last
    annealed = linear_learning_rate(1e-4, 0.0)
    assert [annealed(left) for left in (1.0, 0.5, 0.0)] == pytest.approx([1e-4, 5e-5, 0.0])
    tenth = linear_learning_rate(3e-4, 0.1)
    assert [tenth(left) for left in (1.0, 0.0)] == pytest.approx([3e-4, 3e-5])
