"""Slate choice models: which of ``k`` shown pages (if any) a visitor follows.

A slate is ``k`` positions, each showing a page id or nothing (``-1``); a page appears at most
once (the core turns a repeated page into "nothing" at the later position). Both models below
are the slate form of a single-page click model of :mod:`envs.click_model` and reduce to it
exactly for ``k = 1`` (with examination 1 at the first position), so ``slate_size`` only adds
positions to an assumption the project already makes:

* :class:`PositionMNL` (the slate form of the multinomial boost): a position-biased
  multinomial logit with a no-click option. Position ``i`` is examined with probability
  ``ε_i`` (non-increasing), and a shown page's weight in the visitor's choice grows by
  ``κ · ε_i`` with ``κ = e^β - 1``::

      p'(j) = p(j) · (1 + κ · ε_pos(j) · [j ∈ S]) / (1 + κ · Σ_i ε_i · p(s_i))

  Equivalently the visitor clicks position ``i`` with probability
  ``κ ε_i p(s_i) / (1 + κ Σ_l ε_l p(s_l))`` (attractiveness ``κ p(s_i)``, the organic
  likelihood, times examination) and otherwise moves as without the slate (weight 1, the
  no-click option). ``k = 1``, ``ε_1 = 1`` is :class:`~envs.click_model.MultinomialBoost`.
* :class:`Cascade` (the slate form of the relevance follow): the visitor scans the positions
  from the top; at a shown page she clicks with ``a = σ(α + γ · log p(s_i))`` and otherwise
  goes on to the next position with probability ``continue_prob`` (else she stops scanning);
  a visitor who clicked nothing moves organically. ``k = 1`` is
  :class:`~envs.click_model.RelevanceFollow`. Empty positions are skipped (they cost no
  continuation).

Every function takes next-page probabilities ``probs`` ``(B, P + 1)`` (``EXIT`` last) and
slates ``(B, k)`` of page ids (``-1``: nothing), and works on all positions at once (no Python
loop over positions).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clickstream import checks
from clickstream.errors import ConfigError, ModelError

DEFAULT_EXAMINATION_DECAY = 0.8


def _check(probs: torch.Tensor, slate: torch.Tensor) -> None:
    if probs.dim() != 2 or slate.dim() != 2 or slate.shape[0] != probs.shape[0]:
        raise ModelError(
            f"slate choice model needs probs (B, P + 1) and slates (B, k), got "
            f"{tuple(probs.shape)} and {tuple(slate.shape)}"
        )
    n_pages = probs.shape[1] - 1
    if bool(((slate < -1) | (slate >= n_pages)).any()):
        raise ModelError(f"slate entries must be page ids in [0, {n_pages}) or -1 (nothing)")


def dedupe(slate: torch.Tensor, current: torch.Tensor | None = None) -> torch.Tensor:
    """``slate`` ``(B, k)`` with every repeat of a page at a later position set to -1, and,
    with ``current`` (the page each visitor is on, ``(B,)``), every position showing the
    visitor's own page too: recommending the page she is on shows nothing."""
    k = slate.shape[1]
    same = slate[:, :, None] == slate[:, None, :]  # (B, k, k): position i shows j's page
    earlier = torch.ones(k, k, dtype=torch.bool, device=slate.device).tril(-1)
    repeat = (same & earlier).any(dim=2)
    if current is not None:
        repeat = repeat | (slate == current.to(slate.device)[:, None])
    return torch.where(repeat, torch.full_like(slate, -1), slate)


@dataclass(frozen=True)
class PositionMNL:
    """Position-biased multinomial logit with a no-click option (module docstring).

    Attributes:
        beta: The boost of :class:`~envs.click_model.MultinomialBoost` (``κ = e^β - 1``).
        examination: ``ε_i`` per position, non-increasing, in ``(0, 1]``, length ``k``.
    """

    beta: float
    examination: tuple[float, ...]

    def __post_init__(self) -> None:
        eps = self.examination
        if not math.isfinite(self.beta) or abs(self.beta) > 50:
            raise ConfigError(f"slate click model beta must be finite, |beta| <= 50: {self.beta}")
        if (
            not eps
            or any(not 0 < e <= 1 for e in eps)
            or any(a < b for a, b in itertools.pairwise(eps))
        ):
            raise ConfigError(
                f"env.slate_params.examination must be non-increasing values in (0, 1], one "
                f"per position, got {list(eps)}"
            )

    @property
    def kappa(self) -> float:
        return math.exp(self.beta) - 1.0

    @property
    def slate_size(self) -> int:
        return len(self.examination)

    def describe(self) -> str:
        eps = ", ".join(f"{e:.2g}" for e in self.examination)
        return (
            f"position-biased multinomial logit over {self.slate_size} positions: a shown page's "
            f"weight grows by (e^{self.beta:g} - 1) times its position's examination "
            f"probability ({eps}); a visitor who clicks nothing moves as without the slate"
        )

    def click_probs(self, probs: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """Probability of clicking each position (no organic landings), ``(B, k)``."""
        _check(probs, slate)
        eps = torch.as_tensor(self.examination, dtype=probs.dtype, device=probs.device)
        weight = self.kappa * eps[None, :] * probs.gather(1, slate.clamp(min=0)) * (slate >= 0)
        return weight / (1.0 + weight.sum(dim=1, keepdim=True))

    def apply(self, probs: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """Next-page probabilities under the slate, ``(B, P + 1)``; rows sum to 1."""
        _check(probs, slate)
        eps = torch.as_tensor(self.examination, dtype=probs.dtype, device=probs.device)
        weight = self.kappa * eps[None, :] * probs.gather(1, slate.clamp(min=0)) * (slate >= 0)
        out = probs.clone()
        out.scatter_add_(1, slate.clamp(min=0), weight)
        return out / (1.0 + weight.sum(dim=1, keepdim=True))


@dataclass(frozen=True)
class Cascade:
    """The cascade model (module docstring).

    Attributes:
        alpha, gamma, min_prob: The click probability ``σ(α + γ · log max(p, min_prob))`` of
            :class:`~envs.click_model.RelevanceFollow`.
        continue_prob: Probability of examining the next position after not clicking.
        slate_size: ``k``.
    """

    alpha: float
    gamma: float
    continue_prob: float
    slate_size: int
    min_prob: float = 1e-6

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and math.isfinite(self.gamma)) or not self.min_prob > 0:
            raise ConfigError("cascade alpha, gamma must be finite and min_prob > 0")
        if not 0 <= self.continue_prob <= 1:
            raise ConfigError(
                f"env.slate_params.continue_prob must be in [0, 1], got {self.continue_prob}"
            )

    def describe(self) -> str:
        return (
            f"cascade over {self.slate_size} positions: the visitor scans from the top, clicks a "
            f"shown page with σ({self.alpha:g} + {self.gamma:g}·log p), else goes on with "
            f"probability {self.continue_prob:g}; no click: she moves as without the slate"
        )

    def attraction(self, probs: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """Click probability of each shown page once examined, ``(B, k)`` (0 where empty)."""
        p = probs.gather(1, slate.clamp(min=0)).clamp(min=self.min_prob)
        return torch.sigmoid(self.alpha + self.gamma * torch.log(p)) * (slate >= 0)

    def click_probs(self, probs: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """Probability of clicking each position, ``(B, k)``."""
        _check(probs, slate)
        a = self.attraction(probs, slate)
        step = torch.where(slate >= 0, self.continue_prob * (1.0 - a), torch.ones_like(a))
        reach = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), step[:, :-1]], dim=1), dim=1)
        return reach * a

    def apply(self, probs: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """Next-page probabilities under the slate, ``(B, P + 1)``; rows sum to 1."""
        click = self.click_probs(probs, slate)
        out = probs * (1.0 - click.sum(dim=1, keepdim=True))
        return out.scatter_add_(1, slate.clamp(min=0), click)


SlateModel = PositionMNL | Cascade


def build_slate_model(
    click_model: str,
    click_params: Mapping[str, Any],
    slate_size: int,
    slate_params: Mapping[str, Any] | None = None,
) -> SlateModel:
    """The slate form of the env's click model (``boost`` → :class:`PositionMNL`, ``follow``
    → :class:`Cascade`), from the env config.

    Args:
        click_model: ``env.click_model``.
        click_params: The chosen click model's parameters (``beta``; ``alpha``, ``gamma``,
            ``min_prob``).
        slate_size: ``env.slate_size`` (``k >= 1``).
        slate_params: ``env.slate_params``: ``examination`` (a list of ``k`` values, or null for
            ``examination_decay ** i``), ``examination_decay``, ``continue_prob``.
    """
    k = int(slate_size)
    if k < 1:
        raise ConfigError(f"env.slate_size must be >= 1, got {slate_size}")
    sp = dict(slate_params or {})
    unknown = set(sp) - {"examination", "examination_decay", "continue_prob"}
    if unknown:
        raise ConfigError(
            f"unknown env.slate_params keys {sorted(unknown)}: known are examination, "
            "examination_decay, continue_prob"
        )
    if click_model == "boost":
        eps: Sequence[float] | None = sp.get("examination")
        if eps is None:
            decay = sp.get("examination_decay", DEFAULT_EXAMINATION_DECAY)
            # checked here, by the key the user set: the examination list it makes would be
            # refused below under another name
            decay = checks.number(
                "env.slate_params.examination_decay",
                decay,
                lambda v: 0 < v <= 1,
                "in (0, 1] (the examination of position i is examination_decay ** i)",
                finite=False,
            )
            eps = [decay**i for i in range(k)]
        if len(eps) != k:
            raise ConfigError(
                f"env.slate_params.examination has {len(eps)} values, env.slate_size is {k}: "
                "give one per position (or null for examination_decay ** position)"
            )
        return PositionMNL(float(click_params.get("beta", 1.0)), tuple(float(e) for e in eps))
    if click_model == "follow":
        return Cascade(
            alpha=float(click_params.get("alpha", -1.0)),
            gamma=float(click_params.get("gamma", 0.5)),
            min_prob=float(click_params.get("min_prob", 1e-6)),
            continue_prob=float(sp.get("continue_prob", 0.9)),
            slate_size=k,
        )
    raise ConfigError(f"env.click_model must be boost or follow for slates, got {click_model!r}")
