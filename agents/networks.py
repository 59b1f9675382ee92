"""Networks of the deep agents: page histories read through an embedding, not a one-hot.

An observation is ``K`` page ids (:mod:`envs.core`). SB3's default for such a
``MultiDiscrete`` space one-hot encodes it (``K · (P + 1)`` floats: 804 on the 200-page store)
before a wide first layer; on a CPU that encoding and that layer are most of what training
costs. Here the features extractor receives the ids themselves and looks each page up in a
learnt embedding table: the same function class (a linear layer on a one-hot *is* an
embedding lookup), without the one-hot and at a fraction of the arithmetic.

* :class:`PageHistoryExtractor`: ``(B, K)`` ids -> ``(B, K · d)`` concatenated embeddings
  (position is the place in the concatenation);
* :class:`PageSequenceExtractor`: the same embeddings read in order by a GRU, ``(B, H)``: an
  encoder of the whole visit when ``K`` covers it (policy name ``VisitPolicy``);
* :class:`PageActorCriticPolicy` (PPO), :class:`PageRecurrentPolicy` (recurrent PPO: an LSTM
  over the visit) and :class:`PageDQNPolicy` (DQN): SB3 policies whose features extractor
  gets the ids (they skip SB3's one-hot preprocessing);
* :class:`PageScorePolicy` (PPO; :class:`PageScoreDQNPolicy` for DQN): for sites with
  thousands of pages. The actor scores each
  action by the dot product of a state vector with that action's embedding, and by default
  the action embeddings *are* the page embeddings the history is read with (tied), plus one
  learnt vector for "show nothing". Its page-dependent parameters are one ``(P + 1, d)``
  table and a bias per action, instead of a hidden layer per page; the table can start from
  the visitor model's page embeddings (:func:`visitor_page_embeddings`,
  :func:`init_page_embeddings`), frozen or fine-tuned.

With the env's observation extras on (``env.observe_entry_page``, ``env.observe_position``:
columns before the pages, :mod:`envs.core`) the extractors take ``extras`` (their names, in
order; :class:`~agents.sb3.SB3Agent` passes the env's): the entry page is read through the same
page embedding table, the position in the visit through an embedding of its own, and both are
concatenated to the features.

Each PPO policy also comes in a masked form (sb3-contrib's ``MaskablePPO``:
``POLICIES["maskable_ppo"]``), whose masked actions get a logit of -1e8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from clickstream.errors import ConfigError, ModelError
from envs.core import OBSERVATION_EXTRAS


def _columns(
    observation_space: gym.spaces.Space, extras: Sequence[str], who: str
) -> tuple[int, int, int | None]:
    """``(K, P + 1, position values or None)`` of an observation space laid out as
    ``[*extras, K pages]``.

    Raises:
        ModelError: Not such a space (naming ``who`` and what was expected).
    """
    extras = tuple(extras)
    nvec = getattr(observation_space, "nvec", None)
    bad = any(e not in OBSERVATION_EXTRAS for e in extras) or len(set(extras)) != len(extras)
    pages = None if nvec is None else [int(n) for n in nvec[len(extras) :]]
    if bad or not pages or len(set(pages)) != 1:
        raise ModelError(
            f"{who} needs the simulator's MultiDiscrete observation space ([extras], then "
            f"[P + 1] * K pages; extras among {OBSERVATION_EXTRAS}), got {observation_space} with extras "
            f"{list(extras)}"
        )
    assert nvec is not None
    sizes = dict(zip(extras, (int(n) for n in nvec[: len(extras)]), strict=True))
    if sizes.get("entry_page", pages[0]) != pages[0]:
        raise ModelError(
            f"{who}: the entry page column has {sizes['entry_page']} values, the pages {pages[0]}"
        )
    return len(pages), pages[0], sizes.get("position")


class _Extras(nn.Module):
    """The observation extras as features: the entry page through the page table, the
    position through a table of its own; ``(B, n) -> (B, n · d)``."""

    def __init__(self, extras: Sequence[str], position_values: int | None, dim: int) -> None:
        super().__init__()
        self.extras = tuple(extras)
        self.position = None if position_values is None else nn.Embedding(position_values, dim)

    def forward(self, columns: torch.Tensor, pages: nn.Embedding) -> torch.Tensor:
        parts = []
        for i, name in enumerate(self.extras):
            table = pages if name == "entry_page" else self.position
            assert table is not None
            parts.append(table(columns[:, i].long().clamp(0, table.num_embeddings - 1)))
        return torch.cat(parts, dim=1)


class PageHistoryExtractor(BaseFeaturesExtractor):
    """Embeds each of the ``K`` page ids of a history and concatenates them (and the
    observation extras', when there are).

    Args:
        observation_space: ``MultiDiscrete([P + 1] * K)`` (id ``P``: no page / ``EXIT``),
            after a column per extra.
        embedding_dim: ``d``, size of a page's embedding.
        extras: The observation extras before the pages, in order (``entry_page``,
            ``position``): the env's ``SiteCore.extras``.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        embedding_dim: int = 32,
        extras: Sequence[str] = (),
    ) -> None:
        k, vocab, positions = _columns(observation_space, extras, "PageHistoryExtractor")
        dim, self.n_extras = int(embedding_dim), len(extras)
        super().__init__(observation_space, features_dim=(k + self.n_extras) * dim)
        self.embedding = nn.Embedding(vocab, dim)
        self.extras = _Extras(extras, positions, dim) if extras else None

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(B, n + K)`` ids (any dtype holding integers) -> ``(B, (n + K) · d)``."""
        pages = self.embedding(observations[:, self.n_extras :].long()).flatten(1)
        if self.extras is None:
            return pages
        return torch.cat([self.extras(observations[:, : self.n_extras], self.embedding), pages], 1)


class PageSequenceExtractor(BaseFeaturesExtractor):
    """Reads the visit so far as a sequence: each of the ``K`` page ids embedded, then a GRU
    over them in order (oldest first), whose last state is the features. With ``K`` as long as
    most visits (``env.history_len: 16``) it is an encoder of the whole visit that PPO and DQN
    can use as they are; the padding id ``P`` (before the visit began) has its own embedding,
    so the GRU also knows how far into the visit it is.

    Args:
        observation_space: ``MultiDiscrete([P + 1] * K)``, after a column per extra.
        embedding_dim: ``d``, size of a page's embedding.
        hidden_size: The GRU's state (the features' size, plus ``d`` per extra).
        extras: The observation extras before the pages (the env's ``SiteCore.extras``): the
            entry page and the position reach the features beside the GRU's state, so a visit
            longer than ``K`` keeps where it began and how long it is.
        current_page: Also pass the current page's embedding beside the GRU's state: a
            direct path for what a first-order policy reads, so the network need not learn
            to carry the last page through the GRU before it can act on it.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        embedding_dim: int = 32,
        hidden_size: int = 64,
        extras: Sequence[str] = (),
        current_page: bool = False,
    ) -> None:
        _, vocab, positions = _columns(observation_space, extras, "PageSequenceExtractor")
        dim, self.n_extras = int(embedding_dim), len(extras)
        self.current_page = bool(current_page)
        width = int(hidden_size) + (self.n_extras + int(self.current_page)) * dim
        super().__init__(observation_space, features_dim=width)
        self.embedding = nn.Embedding(vocab, dim)
        self.gru = nn.GRU(dim, int(hidden_size), batch_first=True)
        self.extras = _Extras(extras, positions, dim) if extras else None

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(B, n + K)`` ids -> ``(B, hidden_size + n · d)`` (``+ d`` with
        ``current_page``)."""
        pages = self.embedding(observations[:, self.n_extras :].long())
        _, last = self.gru(pages)
        parts = [last[-1]]
        if self.extras is not None:
            parts.insert(0, self.extras(observations[:, : self.n_extras], self.embedding))
        if self.current_page:
            parts.append(pages[:, -1])
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


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


class _WithInput(nn.Module):
    """A layer's output with the layer's input beside it."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.layer(x), x], dim=1)


class PageRecurrentPolicy(RecurrentActorCriticPolicy, _PageIds):
    """Recurrent PPO's actor-critic (sb3-contrib ``RecurrentPPO``): each step's page history
    embedded (:class:`PageHistoryExtractor`), then an LSTM that carries the whole visit.

    Args:
        features_beside_lstm: Also pass this step's features (the embedded pages it observes:
            the current page when ``env.history_len`` is 1) beside the LSTM's output into the
            actor's and the critic's layers: a direct path for what a first-order policy
            reads, so the network need not learn to carry the current page through the LSTM
            before it can act on it (:class:`PageSequenceExtractor`'s ``current_page`` for
            the recurrent policy). With any critic: its own LSTM (the default), the actor's
            (``shared_lstm``: its output, detached, already holds the features) or none
            (``enable_critic_lstm: false``: sb3-contrib's linear layer of the features, with
            the features beside it).
        *args, **kwargs: Those of sb3-contrib's ``RecurrentActorCriticPolicy``.
    """

    def __init__(self, *args: Any, features_beside_lstm: bool = False, **kwargs: Any) -> None:
        self.features_beside_lstm = bool(features_beside_lstm)
        kwargs.setdefault("features_extractor_class", PageHistoryExtractor)
        super().__init__(*args, **kwargs)
        if self.features_beside_lstm and self.critic is not None:
            # the critic without an LSTM: as wide as the others' paths into the critic's layers
            # (the linear layer is the one the optimizer already holds)
            self.critic = _WithInput(self.critic)

    def _build_mlp_extractor(self) -> None:
        width = self.lstm_output_dim + (self.features_dim if self.features_beside_lstm else 0)
        self.mlp_extractor = MlpExtractor(
            width, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device
        )

    def _process_sequence(  # type: ignore[override]
        self,
        features: torch.Tensor,
        lstm_states: tuple[torch.Tensor, torch.Tensor],
        episode_starts: torch.Tensor,
        lstm: nn.LSTM,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The LSTM's output for each step (sb3-contrib's), with that step's features beside
        it when ``features_beside_lstm``; both are in the batch's order, so rows line up."""
        output, states = RecurrentActorCriticPolicy._process_sequence(
            features, lstm_states, episode_starts, lstm
        )
        if self.features_beside_lstm:
            output = torch.cat([output, features], dim=1)
        return output, states


class PageSequenceActorCriticPolicy(PageActorCriticPolicy):
    """PPO's actor-critic over the visit read by a GRU (:class:`PageSequenceExtractor`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", PageSequenceExtractor)
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


class MaskablePageActorCriticPolicy(MaskableActorCriticPolicy, _PageIds):
    """:class:`PageActorCriticPolicy` for ``MaskablePPO`` (masked logits)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", PageHistoryExtractor)
        super().__init__(*args, **kwargs)


class ActionScoreHead(nn.Module):
    """Action logits as dot products: ``logits = (W · latent) @ E.T + b``, ``(B, A)``.

    ``E`` ``(A, d)`` holds one embedding per action. Tied (``pages`` given), the page actions
    ``0..P-1`` read rows ``0..P-1`` of the history's page embedding table and the remaining
    ``A - P`` actions ("show nothing") have vectors of their own; untied, ``E`` is a table of
    its own. ``b`` ``(A,)`` is a learnt per-action bias (a popularity term).

    Args:
        latent_dim: Size of the actor's latent vector.
        n_actions: A.
        dim: d, size of an action embedding (the page embeddings' size when tied).
        pages: The page embedding table ``(P + 1, d)`` to tie to, or ``None``.
    """

    def __init__(
        self, latent_dim: int, n_actions: int, dim: int, pages: nn.Embedding | None = None
    ) -> None:
        super().__init__()
        self.n_actions, self.dim = int(n_actions), int(dim)
        self.project = nn.Linear(int(latent_dim), self.dim, bias=False)
        # a small projection: the first policy is close to uniform (SB3's 0.01 gain)
        nn.init.orthogonal_(self.project.weight, gain=0.01)
        self.bias = nn.Parameter(torch.zeros(self.n_actions))
        self.pages = pages
        if pages is None:
            self.table = nn.Parameter(torch.randn(self.n_actions, self.dim) / self.dim**0.5)
        else:
            n_pages = pages.num_embeddings - 1
            extra = self.n_actions - n_pages
            if extra not in (0, 1) or pages.embedding_dim != self.dim:
                raise ModelError(
                    f"tied action embeddings need one action per page (+ 'nothing'): {n_pages} "
                    f"pages of dimension {pages.embedding_dim}, {self.n_actions} actions of "
                    f"dimension {self.dim}"
                )
            self.n_pages = n_pages
            self.table = nn.Parameter(torch.randn(extra, self.dim) / self.dim**0.5)

    def embeddings(self) -> torch.Tensor:
        """``E``, ``(A, d)``."""
        if self.pages is None:
            return self.table
        return torch.cat([self.pages.weight[: self.n_pages], self.table])

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> logits ``(B, A)``."""
        return self.project(latent) @ self.embeddings().T + self.bias


class _ScoreHead:
    """Replaces an SB3 actor-critic's ``action_net`` (one output unit per action) by an
    :class:`ActionScoreHead`. Listed first among the bases, its ``_build`` wraps the SB3
    class's: the head is swapped in and the optimizer rebuilt over the new parameters."""

    def __init__(
        self,
        *args: Any,
        tie_embeddings: bool = True,
        score_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.tie_embeddings, self.score_dim = bool(tie_embeddings), score_dim
        kwargs.setdefault("features_extractor_class", PageHistoryExtractor)
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        policy: Any = self
        extractor = policy.pi_features_extractor
        pages = getattr(extractor, "embedding", None)
        if self.tie_embeddings and not isinstance(pages, nn.Embedding):
            raise ModelError("tie_embeddings needs the PageHistoryExtractor's page embeddings")
        n_actions = int(policy.action_space.n)
        if self.tie_embeddings:
            dim = pages.embedding_dim
            if self.score_dim is not None and int(self.score_dim) != dim:
                raise ConfigError(
                    f"policy_kwargs.score_dim ({self.score_dim}) must equal the page embeddings' "
                    f"embedding_dim ({dim}) when tie_embeddings is true"
                )
        else:
            dim = int(self.score_dim or getattr(pages, "embedding_dim", 32))
        policy.action_net = ActionScoreHead(
            policy.mlp_extractor.latent_dim_pi,
            n_actions,
            dim,
            pages if self.tie_embeddings else None,
        ).to(policy.device)
        policy.optimizer = policy.optimizer_class(
            policy.parameters(), lr=lr_schedule(1), **policy.optimizer_kwargs
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(tie_embeddings=self.tie_embeddings, score_dim=self.score_dim)
        return data


class PageScorePolicy(_ScoreHead, ActorCriticPolicy, _PageIds):
    """PPO's actor-critic for large action spaces: page-history features, an MLP, and action
    logits scored by embedding (:class:`ActionScoreHead`; tied to the page embeddings by
    default). ``policy_kwargs``: ``tie_embeddings`` (default true), ``score_dim`` (untied:
    the action embeddings' size), and SB3's own (``net_arch``, ``features_extractor_kwargs``)."""


class MaskablePageScorePolicy(_ScoreHead, MaskableActorCriticPolicy, _PageIds):
    """:class:`PageScorePolicy` for ``MaskablePPO``: the scored logits, then the mask."""


class PageScoreQNetwork(QNetwork, _PageIds):
    """DQN's Q-network for large action spaces: ``Q(s, ·)`` is an MLP's state vector scored
    against each action's embedding (:class:`ActionScoreHead`, tied to this network's page
    embeddings by default) instead of one output unit per action."""

    def __init__(
        self, *args: Any, tie_embeddings: bool = True, score_dim: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        arch = list(self.net_arch)
        if not arch:
            raise ConfigError("PageScorePolicy (DQN) needs a hidden layer: policy_kwargs.net_arch")
        pages = getattr(self.features_extractor, "embedding", None)
        if tie_embeddings and not isinstance(pages, nn.Embedding):
            raise ModelError("tie_embeddings needs the PageHistoryExtractor's page embeddings")
        if tie_embeddings and score_dim is not None and int(score_dim) != pages.embedding_dim:
            raise ConfigError(
                f"policy_kwargs.score_dim ({score_dim}) must equal the page embeddings' "
                f"embedding_dim ({pages.embedding_dim}) when tie_embeddings is true"
            )
        dim = pages.embedding_dim if tie_embeddings else int(score_dim or 32)
        layers: list[nn.Module] = []
        width = self.features_dim
        for size in arch:
            layers += [nn.Linear(width, size), self.activation_fn()]
            width = size
        head = ActionScoreHead(
            width, int(self.action_space.n), dim, pages if tie_embeddings else None
        )
        self.q_net = nn.Sequential(*layers, head)


class PageScoreDQNPolicy(DQNPolicy):
    """DQN's policy with :class:`PageScoreQNetwork` online and target networks.
    ``policy_kwargs``: ``tie_embeddings``, ``score_dim`` and SB3's own."""

    def __init__(
        self, *args: Any, tie_embeddings: bool = True, score_dim: int | None = None, **kwargs: Any
    ) -> None:
        self.tie_embeddings, self.score_dim = bool(tie_embeddings), score_dim
        kwargs.setdefault("features_extractor_class", PageHistoryExtractor)
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> PageScoreQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return PageScoreQNetwork(
            **net_args, tie_embeddings=self.tie_embeddings, score_dim=self.score_dim
        ).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(tie_embeddings=self.tie_embeddings, score_dim=self.score_dim)
        return data


def visitor_page_embeddings(source: Any) -> torch.Tensor | None:
    """The page embeddings ``(P + 1, d)`` of a GRU visitor model, or ``None`` when it has none.

    Args:
        source: A visitor model checkpoint (a path: read as data, ``weights_only``), a
            :class:`~envs.visitor_model.VisitorModel`, or the simulator's dynamics holding one
            (``GRUDynamics.model``).
    """
    from envs.visitor_model import load_weights_only

    if isinstance(source, str | Path):
        state = load_weights_only(Path(source), "visitor model checkpoint")
        weights = state.get("state_dict", {}) if isinstance(state, dict) else {}
        table = weights.get("page_embedding.weight") if isinstance(weights, dict) else None
        return table.detach().float().clone() if isinstance(table, torch.Tensor) else None
    model = getattr(source, "model", source)
    table = getattr(getattr(model, "net", None), "page_embedding", None)
    return table.weight.detach().float().cpu().clone() if isinstance(table, nn.Embedding) else None


def init_page_embeddings(policy: nn.Module, vectors: torch.Tensor, freeze: bool = False) -> int:
    """Copy the visitor model's page vectors ``(P + 1, d)`` (row ``P``: "no page") into a page
    policy's tables: every :class:`PageHistoryExtractor`'s embedding (all ``P + 1`` rows) and
    an untied :class:`ActionScoreHead`'s page rows (the first ``P``; "nothing" keeps its own
    vector). A tied head reads the extractor's table, so it starts from the vectors too.
    ``freeze``: the extractors' tables are not trained further (the "nothing" vector, the
    biases, an untied head's table and the networks still are). Returns the tables written.

    Raises:
        ConfigError: The vectors' shape does not fit the policy's pages (another site, or
            another ``embedding_dim``: set ``features_extractor_kwargs.embedding_dim`` to ``d``).
    """
    n_rows = vectors.shape[0]
    written = 0
    for module in policy.modules():
        if isinstance(module, PageHistoryExtractor):
            table, rows = module.embedding.weight, n_rows
        elif isinstance(module, ActionScoreHead) and module.pages is None:
            table, rows = module.table, n_rows - 1
        else:
            continue
        if vectors.shape[1] != table.shape[1] or table.shape[0] not in (rows, rows + 1):
            raise ConfigError(
                f"the visitor model's page embeddings are {tuple(vectors.shape)}, the policy's "
                f"table is {tuple(table.shape)}: set policy_kwargs.features_extractor_kwargs."
                f"embedding_dim={vectors.shape[1]} (and train on the same site)"
            )
        with torch.no_grad():
            table[:rows] = vectors[:rows].to(table)
        if freeze and isinstance(module, PageHistoryExtractor):
            table.requires_grad_(False)
        written += 1
    return written


class PageSequenceDQNPolicy(PageDQNPolicy):
    """DQN over the visit read by a GRU (:class:`PageSequenceExtractor`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", PageSequenceExtractor)
        super().__init__(*args, **kwargs)


POLICIES: dict[str, dict[str, type]] = {
    "ppo": {
        "PagePolicy": PageActorCriticPolicy,
        "PageScorePolicy": PageScorePolicy,
        "VisitPolicy": PageSequenceActorCriticPolicy,
    },
    "recurrent_ppo": {"PagePolicy": PageRecurrentPolicy},
    "maskable_ppo": {
        "PagePolicy": MaskablePageActorCriticPolicy,
        "PageScorePolicy": MaskablePageScorePolicy,
    },
    "dqn": {
        "PagePolicy": PageDQNPolicy,
        "PageScorePolicy": PageScoreDQNPolicy,
        "VisitPolicy": PageSequenceDQNPolicy,
    },
}
"""Policy classes by algorithm and the name a config gives (``policy: PagePolicy``); other
names (``MlpPolicy``) are SB3's own."""
