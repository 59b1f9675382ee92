"""The visitors layer: one registry of visitor-model kinds that the simulator, the agents, the
scripts and the web app share.

Every kind is one module of this package (``gru``, ``latent_class``, ``markov``,
``true_model``, ...) that defines a :class:`~envs.visitors.base.VisitorKind` and
registers it; its training settings are one config under ``configs/simulator/``. Nothing outside
this package branches on a kind's name: callers look a kind up by the name a config gives
(:func:`get`) and read its capabilities as attributes::

    kind = visitors.get(cfg.env.dynamics)            # e.g. "latent_class"
    model = kind.load(data)                          # verified, vocabulary checked
    core = SiteCore(model.dynamics(top_k), ...)      # the simulator
    model.next_distribution([3, 1, 0]).probs         # the web app

How to add a kind: ``docs/visitor_models.md``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from clickstream.errors import ConfigError, ModelError
from envs.visitors.base import (
    KINDS,
    NextPage,
    TrainContext,
    Trained,
    VisitorKind,
    Visitors,
    register,
)

__all__ = [
    "KINDS",
    "NextPage",
    "TrainContext",
    "Trained",
    "VisitorKind",
    "Visitors",
    "default_kind",
    "first_order",
    "get",
    "ground_truth",
    "kinds",
    "register",
    "trained_kinds",
]

_discovered = False


def _discover() -> None:
    """Import every module of this package once: each registers its kind."""
    global _discovered
    if _discovered:
        return
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module != "base" and not module.startswith("_"):
            importlib.import_module(f"{__name__}.{module}")
    _discovered = True


def kinds() -> dict[str, VisitorKind]:
    """Every kind, by name, in name order."""
    _discover()
    return {name: KINDS[name]() for name in sorted(KINDS)}


def get(name: Any, key: str = "env.dynamics") -> VisitorKind:
    """The kind a config names.

    Args:
        name: The kind's name; YAML's unquoted ``true`` (a boolean) names ``"true"``.
        key: The configuration key it came from, named in the error.

    Raises:
        ClickstreamError: No kind of that name, listing the kinds.
    """
    _discover()
    if isinstance(name, bool):  # YAML and Hydra read an unquoted `true` as the boolean
        name = str(name).lower()
    if not isinstance(name, str) or name not in KINDS:
        raise ConfigError(f"{key} must be one of {sorted(KINDS)}, got {name!r}")
    return KINDS[name]()


def _only(marked: Callable[[VisitorKind], bool], what: str) -> VisitorKind:
    found = [kind for kind in kinds().values() if marked(kind)]
    if len(found) != 1:
        raise ModelError(
            f"exactly one visitor kind must be marked {what}, found {[k.name for k in found]}"
        )
    return found[0]


def default_kind() -> VisitorKind:
    """The kind a run uses unless its config says otherwise (the GRU)."""
    return _only(lambda kind: kind.default, "default")


def ground_truth() -> VisitorKind:
    """The synthetic store's own visitors (synthetic datasets only)."""
    return _only(lambda kind: kind.ground_truth, "ground_truth")


def first_order() -> VisitorKind:
    """The first-order model counted on the train split (needs no training)."""
    return _only(lambda kind: kind.first_order, "first_order")


def trained_kinds(settings: Any) -> list[VisitorKind]:
    """The kinds a ``simulator`` config trains (its ``config_key`` set), in name order."""
    return [kind for kind in kinds().values() if kind.trains_with(settings)]
