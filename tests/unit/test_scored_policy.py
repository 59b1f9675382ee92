"""The embedding-scored policy for large action spaces: its logits, its size as pages grow,
its start from a GRU visitor model's page embeddings, and a save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

from agents.base import load_policy
from agents.networks import (
    POLICIES,
    ActionScoreHead,
    PageScorePolicy,
    init_page_embeddings,
    visitor_page_embeddings,
)
from agents.sb3 import SB3Agent, _rebuild
from clickstream.errors import ConfigError
from envs.sequences import Vocabulary
from envs.visitor_model import ModelConfig, VisitorModel

D = 16
KWARGS = {"net_arch": [64, 64], "features_extractor_kwargs": {"embedding_dim": D}}


def policy_of(name: str, n_pages: int, **extra) -> torch.nn.Module:
    """A PPO policy over 4-page histories of ``n_pages`` pages, actions: pages + "nothing"."""
    obs, act = spaces.MultiDiscrete([n_pages + 1] * 4), spaces.Discrete(n_pages + 1)
    cls = POLICIES["ppo"].get(name, name)
    kwargs = {"net_arch": [64, 64]} if name == "MlpPolicy" else {**KWARGS, **extra}
    return _rebuild(PPO, cls, obs, act, kwargs).policy


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared tensors counted once


def test_logits_are_dot_products_with_the_page_embeddings() -> None:
    policy = policy_of("PageScorePolicy", 50)
    head = policy.action_net
    assert isinstance(head, ActionScoreHead)
    assert head.pages is policy.features_extractor.embedding  # tied
    latent = torch.randn(3, 64)
    with torch.no_grad():
        head.bias.copy_(torch.arange(51.0))
        want = head.project(latent) @ torch.cat(
            [policy.features_extractor.embedding.weight[:50], head.table]
        ).T + torch.arange(51.0)
        np.testing.assert_allclose(head(latent).numpy(), want.numpy(), rtol=1e-6)


def test_page_parameters_grow_by_one_embedding_and_a_bias_per_page() -> None:
    small, large = (
        count(policy_of("PageScorePolicy", 1000)),
        count(policy_of("PageScorePolicy", 2000)),
    )
    assert large - small == 1000 * (D + 1)  # a page: its d-vector and its action bias
    # at 2,000 pages: P·d + A + the networks (which do not depend on P)
    nets = 4 * D * 64 + 64 * 64 + 64 * D + (4 * D * 64 + 64 * 64 + 64 + 1) + 2 * 64 * 2 + D
    assert large == 2001 * D + 2001 + nets
    # one output unit per page (PagePolicy) costs 64 weights more per page; the one-hot MLP
    # (SB3's MlpPolicy) 4 x 64 x 2 first-layer weights more on top
    assert count(policy_of("PagePolicy", 2000)) - count(policy_of("PagePolicy", 1000)) == 1000 * (
        D + 64 + 1
    )
    assert count(policy_of("MlpPolicy", 2000)) > 8 * large


def test_untied_action_embeddings_have_their_own_table() -> None:
    policy = policy_of("PageScorePolicy", 100, tie_embeddings=False, score_dim=8)
    assert policy.action_net.pages is None and policy.action_net.table.shape == (101, 8)
    with pytest.raises(ConfigError, match="score_dim"):
        policy_of("PageScorePolicy", 100, score_dim=8)  # tied: d is the page embeddings'


@pytest.fixture
def gru_checkpoint(tmp_path: Path) -> tuple[Path, VisitorModel]:
    p = 30
    vocab = Vocabulary(
        pages=tuple(f"/p{i}" for i in range(p)), groups=("a",), page_group=np.zeros(p, int)
    )
    torch.manual_seed(0)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=D, use_groups=False))
    return model.save(tmp_path / "model.pt"), model


def test_embeddings_start_from_a_gru_checkpoint(gru_checkpoint) -> None:
    path, model = gru_checkpoint
    vectors = visitor_page_embeddings(path)
    gru = model.net.page_embedding.weight.detach()
    assert vectors.shape == (31, D) and torch.equal(vectors, gru)
    assert torch.equal(visitor_page_embeddings(model), gru)  # or from the model itself
    policy = policy_of("PageScorePolicy", 30)
    assert init_page_embeddings(policy, vectors) == 1  # one table: the head is tied to it
    assert torch.equal(policy.features_extractor.embedding.weight.detach(), gru)
    head = policy.action_net.embeddings().detach()
    assert torch.equal(head[:30], gru[:30])  # the page actions' vectors are the GRU's
    assert not torch.equal(head[30], gru[30])  # "nothing" keeps its own
    untied = policy_of("PageScorePolicy", 30, tie_embeddings=False, score_dim=D)
    assert init_page_embeddings(untied, vectors) == 2
    assert torch.equal(untied.action_net.table.detach()[:30], gru[:30])


def test_frozen_embeddings_do_not_move(gru_checkpoint) -> None:
    path, _ = gru_checkpoint
    policy = policy_of("PageScorePolicy", 30)
    init_page_embeddings(policy, visitor_page_embeddings(path), freeze=True)
    table = policy.features_extractor.embedding.weight
    before, nothing = table.detach().clone(), policy.action_net.table.detach().clone()
    obs = torch.randint(0, 31, (64, 4))
    _, log_prob, _ = policy.evaluate_actions(obs, torch.randint(0, 31, (64,)))
    policy.optimizer.zero_grad()
    (-log_prob.mean()).backward()
    policy.optimizer.step()
    assert not table.requires_grad and torch.equal(table.detach(), before)
    assert not torch.equal(policy.action_net.table.detach(), nothing)  # "nothing" still learns


def test_embeddings_of_another_size_are_refused(gru_checkpoint) -> None:
    path, _ = gru_checkpoint
    policy = policy_of("PageScorePolicy", 30, features_extractor_kwargs={"embedding_dim": 8})
    with pytest.raises(ConfigError, match="embedding_dim=16"):
        init_page_embeddings(policy, visitor_page_embeddings(path))


def test_scored_agent_round_trips_with_identical_scores(tmp_path: Path) -> None:
    agent = SB3Agent("ppo", "ppo_scored", policy="PageScorePolicy", policy_kwargs=KWARGS)
    agent.model = _rebuild(
        PPO,
        PageScorePolicy,
        spaces.MultiDiscrete([2001] * 4),
        spaces.Discrete(2001),
        KWARGS,
    )
    back = load_policy(agent.save(tmp_path / "scored"))
    assert type(back.model.policy) is PageScorePolicy
    assert back.model.policy.action_net.pages is back.model.policy.features_extractor.embedding
    obs = np.random.default_rng(0).integers(0, 2001, size=(20, 4))
    scores = agent.action_scores(obs)
    assert scores.shape == (20, 2001)
    np.testing.assert_array_equal(back.action_scores(obs), scores)


def test_scored_dqn_round_trips_and_grows_by_an_embedding_per_page(tmp_path: Path) -> None:
    from stable_baselines3 import DQN

    from agents.networks import PageScoreDQNPolicy

    kwargs = {"net_arch": [32], "features_extractor_kwargs": {"embedding_dim": D}}

    def build(p: int) -> DQN:
        obs, act = spaces.MultiDiscrete([p + 1] * 4), spaces.Discrete(p + 1)
        return _rebuild(DQN, PageScoreDQNPolicy, obs, act, kwargs)

    small, large = count(build(1000).q_net), count(build(2000).q_net)
    assert large - small == 1000 * (D + 1)
    model = build(200)
    q = model.q_net
    assert q.q_net[-1].pages is q.features_extractor.embedding  # tied, in each network
    assert init_page_embeddings(model.policy, torch.randn(201, D)) == 2  # online and target
    agent = SB3Agent("dqn", "dqn_scored", policy="PageScorePolicy", policy_kwargs=kwargs)
    agent.model = model
    back = load_policy(agent.save(tmp_path / "dqn_scored"))
    obs = np.random.default_rng(0).integers(0, 201, size=(20, 4))
    np.testing.assert_array_equal(back.action_scores(obs), agent.action_scores(obs))
    assert back.action_scores(obs).shape == (20, 201)
