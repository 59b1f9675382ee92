"""Click models: how a shown recommendation changes a visitor's next-page distribution.

Both are assumptions, not facts learnt from data (analytics exports record where visitors went,
not what they were shown), so their parameters live in ``configs/env/`` and are meant to be
swept:

* :class:`MultinomialBoost` (default): ``p'(j) ∝ p(j) · exp(β · [j = a])``. The recommended
  page ``a`` becomes ``e^β`` times as attractive; pages the visitor would never reach
  (``p(a) = 0``) stay unreachable, so a recommendation cannot teleport anyone. ``β = 0`` is the
  organic distribution. The synthetic store's true response has this form.
* :class:`RelevanceFollow`: the visitor follows the recommendation with probability
  ``σ(α + γ · log p(a))`` (relevant pages are followed more often) and otherwise moves
  organically: ``p' = f · onehot(a) + (1 - f) · p``. Here an unreachable page *can* be reached
  by following; ``γ`` sets how much relevance matters.

A recommendation of ``-1`` means "show nothing" (organic). ``EXIT`` (index ``P``) cannot be
recommended. All inputs and outputs are torch tensors of next-page probabilities
``(B, P + 1)``, ``EXIT`` last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from clickstream.errors import ConfigError, ModelError, from_options

NO_RECOMMENDATION = -1


def _check(probs: torch.Tensor, action: torch.Tensor) -> None:
    if probs.dim() != 2 or action.shape != probs.shape[:1]:
        raise ModelError(
            f"click model needs probs (B, P + 1) and actions (B,), got {tuple(probs.shape)} "
            f"and {tuple(action.shape)}"
        )
    n_pages = probs.shape[1] - 1
    bad = (action < NO_RECOMMENDATION) | (action >= n_pages)
    if bool(bad.any()):
        value = int(action[bad][0])
        raise ModelError(
            f"recommendation {value} is not a page id in [0, {n_pages}) or -1 (show nothing)"
        )


def _check_numbers(model: object) -> None:
    """Every field of the click model ``model`` is a real number (Python or numpy, not a bool
    or a string), so a mistyped parameter is named here, not met as a ``TypeError`` mid-step.

    Raises:
        ConfigError: The first field that is not, naming it and its value.
    """
    for f in fields(model):  # type: ignore[arg-type]
        value = getattr(model, f.name)
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise ConfigError(
                f"click model {type(model).__name__} {f.name} must be a number, got {value!r}"
            )


@dataclass(frozen=True)
class MultinomialBoost:
    """``p'(j) ∝ p(j) · exp(β · [j = a])``.

    Attributes:
        beta: Strength of the response; 0 gives the organic distribution.
    """

    beta: float = 1.0

    def __post_init__(self) -> None:
        _check_numbers(self)
        if not math.isfinite(self.beta) or abs(self.beta) > 50:
            raise ConfigError(f"click model beta must be finite and |beta| <= 50, got {self.beta}")

    def describe(self) -> str:
        """The model in words, for logs and reports."""
        if self.beta == 0:
            return "a shown page is chosen as often as without it (multinomial boost, beta 0)"
        boost = math.exp(self.beta)
        return (
            f"a shown page's odds of being chosen are multiplied by e^{self.beta:g} = "
            f"{boost:.3g}: a page a visitor picks 10% of the time is picked "
            f"{100 * 0.1 * boost / (0.9 + 0.1 * boost):.0f}% of the time when shown "
            f"(multinomial boost, beta {self.beta:g})"
        )

    def follow_probability(self, probs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """P(next page = the recommended one), ``(B,)`` (0: none shown); it includes visitors
        who would have gone there anyway (unlike :meth:`RelevanceFollow.follow_probability`)."""
        return self.apply(probs, action).gather(1, action.clamp(min=0)[:, None])[:, 0] * (
            action >= 0
        )

    def apply(self, probs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next-page probabilities under the recommendation, ``(B, P + 1)``; rows sum to 1."""
        _check(probs, action)
        shown = action >= 0
        index = action.clamp(min=0)[:, None]
        p_a = probs.gather(1, index)[:, 0]
        boost = (math.exp(self.beta) - 1.0) * p_a * shown
        out = probs.clone()
        out.scatter_add_(1, index, boost[:, None])
        return out / (1.0 + boost)[:, None]

    def apply_set(self, probs: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """Several pages recommended at once (e.g. a page group): ``shown`` ``(B, P + 1)`` bool.

        ``p'(j) ∝ p(j) · exp(β · [j ∈ S])``; a row with no page shown stays organic.
        """
        weight = 1.0 + (math.exp(self.beta) - 1.0) * shown.to(probs.dtype)
        out = probs * weight
        return out / out.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class RelevanceFollow:
    """Follow with probability ``σ(α + γ · log p(a))``, else move organically.

    Attributes:
        alpha: Log-odds of following a recommendation of organic probability 1.
        gamma: How much the organic probability of the page raises the follow probability.
        min_prob: Floor on ``p(a)`` inside the log (pages the visitor would never choose).
    """

    alpha: float = -1.0
    gamma: float = 0.5
    min_prob: float = 1e-6

    def __post_init__(self) -> None:
        _check_numbers(self)
        if not (math.isfinite(self.alpha) and math.isfinite(self.gamma)) or not self.min_prob > 0:
            raise ConfigError(
                "click model alpha and gamma must be finite and min_prob > 0, got "
                f"{self.alpha}, {self.gamma}, {self.min_prob}"
            )

    def describe(self) -> str:
        """The model in words, for logs and reports."""

        def follow(p: float) -> str:
            return f"{100 / (1 + math.exp(-(self.alpha + self.gamma * math.log(p)))):.0f}%"

        return (
            f"a visitor follows a shown page with probability σ(α + γ·log p), p her chance of "
            f"going there anyway: {follow(1.0)} at p = 1, {follow(0.1)} at p = 0.1, "
            f"{follow(0.01)} at p = 0.01; otherwise she moves as without it "
            f"(relevance follow, alpha {self.alpha:g}, gamma {self.gamma:g})"
        )

    def follow_probability(self, probs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``σ(α + γ · log p(a))`` per visitor, shape ``(B,)`` (0 where nothing is shown)."""
        _check(probs, action)
        p_a = probs.gather(1, action.clamp(min=0)[:, None])[:, 0].clamp(min=self.min_prob)
        return torch.sigmoid(self.alpha + self.gamma * torch.log(p_a)) * (action >= 0)

    def apply(self, probs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``f · onehot(a) + (1 - f) · p``, ``(B, P + 1)``; rows sum to 1."""
        follow = self.follow_probability(probs, action)
        out = probs * (1.0 - follow)[:, None]
        out.scatter_add_(1, action.clamp(min=0)[:, None], follow[:, None])
        return out

    def apply_set(self, probs: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """Several pages recommended at once: ``shown`` ``(B, P + 1)`` bool.

        The visitor follows with ``f = σ(α + γ · log p(S))`` and then lands on a page of the
        set in proportion to its organic probability (uniformly if ``p(S) = 0``).
        """
        mask = shown.to(probs.dtype)
        p_set = (probs * mask).sum(dim=1)
        follow = torch.sigmoid(self.alpha + self.gamma * torch.log(p_set.clamp(min=self.min_prob)))
        follow = follow * (mask.sum(dim=1) > 0)
        inside = torch.where((p_set > 0)[:, None], probs * mask, mask)
        inside = inside / inside.sum(dim=1, keepdim=True).clamp(min=1e-30)
        return probs * (1.0 - follow)[:, None] + inside * follow[:, None]


ClickModel = MultinomialBoost | RelevanceFollow


CLICK_MODELS: dict[str, type[MultinomialBoost] | type[RelevanceFollow]] = {
    "boost": MultinomialBoost,
    "follow": RelevanceFollow,
}
"""The click models by the name ``env.click_model`` gives."""


def build_click_model(kind: str = "boost", **params: float) -> ClickModel:
    """A click model by name (``boost`` or ``follow``) and parameters (from ``configs/env/``)."""
    if kind not in CLICK_MODELS:
        raise ConfigError(f"click model must be one of {sorted(CLICK_MODELS)}, got {kind!r}")
    return from_options(CLICK_MODELS[kind], params, f"click model {kind!r}")


def click_model_options(model: ClickModel) -> tuple[str, dict[str, float]]:
    """The name and parameters :func:`build_click_model` rebuilds ``model`` from (what a
    saved policy records of the click model it planned with)."""
    for kind, cls in CLICK_MODELS.items():
        if type(model) is cls:
            return kind, {k: float(v) for k, v in asdict(model).items()}
    raise ModelError(f"no saved form for click model {type(model).__name__}")


def describe_click_model(kind: str = "boost", click_params: Mapping[str, Any] | None = None) -> str:
    """A click model in words, from the env config's ``click_model`` and ``click_params``
    (either the chosen model's parameters or one group per model, as in
    ``configs/env/site.yaml``)."""
    params = dict(click_params or {})
    if any(isinstance(v, Mapping) for v in params.values()):  # per-model groups
        params = dict(params.get(kind) or {})
    return build_click_model(kind, **params).describe()
