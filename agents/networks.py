"""Networks of the deep agents: page histories read through an embedding, not a one-hot.

An observation is ``K`` page ids (:mod:`envs.core`). SB3's default for such a
``MultiDiscrete`` space one-hot encodes it (``K · (P + 1)`` floats: 804 on the 200-page store)
before a wide first layer; on a CPU that encoding and that layer are most of what training
costs. Here the features extractor receives the ids themselves and looks each page up in a
learnt embedding table: the same function class (a linear layer on a one-hot *is* an
embedding lookup), without the one-hot and at a fraction of the arithmetic.

* :class:`PageHistoryExtractor`: ``(B, K)`` ids -> ``(B, K · d)`` concatenated embeddings
  (position is the place in the concatenation);
* :class:`PageActorCriticPolicy` (PPO), :class:`PageRecurrentPolicy` (recurrent PPO: an LSTM
  over the visit) and :class:`PageDQNPolicy` (DQN): SB3 policies whose features extractor
  gets the ids (they skip SB3's one-hot preprocessing).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from clickstream.errors import ModelError


class PageHistoryExtractor(BaseFeaturesExtractor):
    """Embeds each of the ``K`` page ids of a history and concatenates them.

    Args:
        observation_space: ``MultiDiscrete([P + 1] * K)`` (id ``P``: no page / ``EXIT``).
        embedding_dim: ``d``, size of a page's embedding.
    """

    def __init__(self, observation_space: gym.spaces.Space, embedding_dim: int = 32) -> None:
        nvec = getattr(observation_space, "nvec", None)
        if nvec is None or len(set(int(n) for n in nvec)) != 1:
            raise ModelError(
                "PageHistoryExtractor needs the simulator's MultiDiscrete([P + 1] * K) "
                f"observation space, got {observation_space}"
            )
        k, vocab = len(nvec), int(nvec[0])
        super().__init__(observation_space, features_dim=k * int(embedding_dim))
        self.embedding = nn.Embedding(vocab, int(embedding_dim))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` page ids (any dtype holding integers) -> ``(B, K · d)``."""
        return self.embedding(observations.long()).flatten(1)


class _PageIds(BaseModel):
    """Hands a features extractor the page ids themselves instead of SB3's preprocessing
    (which one-hot encodes a ``MultiDiscrete`` observation). Listed after an SB3 policy class
    among the bases, it sits just before ``BaseModel`` in the method resolution order, so the
    policy's own ``super().extract_features(...)`` calls land here too."""

    def extract_features(  # type: ignore[override]
        self, obs: torch.Tensor, features_extractor: BaseFeaturesExtractor
    ) -> torch.Tensor:
        return features_extractor(obs)


class PageActorCriticPolicy(ActorCriticPolicy, _PageIds):
    """PPO's actor-critic over page histories (features: :class:`PageHistoryExtractor`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", PageHistoryExtractor)
        super().__init__(*args, **kwargs)


class PageRecurrentPolicy(RecurrentActorCriticPolicy, _PageIds):
    """Recurrent PPO's actor-critic (sb3-contrib ``RecurrentPPO``): each step's page history
    embedded (:class:`PageHistoryExtractor`), then an LSTM that carries the whole visit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", PageHistoryExtractor)
        super().__init__(*args, **kwargs)


class PageQNetwork(QNetwork, _PageIds):
    """DQN's Q-network over page histories."""


class PageDQNPolicy(DQNPolicy):
    """DQN's policy (online and target Q-networks) over page histories."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", PageHistoryExtractor)
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> PageQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return PageQNetwork(**net_args).to(self.device)


POLICIES: dict[str, dict[str, type]] = {
    "ppo": {"PagePolicy": PageActorCriticPolicy},
    "recurrent_ppo": {"PagePolicy": PageRecurrentPolicy},
    "dqn": {"PagePolicy": PageDQNPolicy},
}
"""Policy classes by algorithm and the name a config gives (``policy: PagePolicy``); other
names (``MlpPolicy``) are SB3's own."""
