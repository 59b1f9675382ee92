"""The simulated website's settings as a typed config (``configs/env/``).

:class:`EnvConfig` is the schema of the ``env`` config group: Hydra checks every ``env.*``
override against it (an unknown key or a value of the wrong type is refused when the config is
composed, naming the key), and :func:`envs.site_env.build_core` takes its fields as keywords.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


def _click_params() -> dict[str, Any]:
    return {"boost": {"beta": 1.0}, "follow": {"alpha": -1.0, "gamma": 0.5}}


@dataclass
class EnvConfig:
    """The simulator's settings (see ``configs/env/site.yaml`` for what each one means)."""

    # a visitor kind of envs/visitors by name; Any: YAML reads an unquoted `true` as a boolean
    dynamics: Any = "gru"
    model_path: str | None = None
    reward: str = "page_value"
    click_model: str = "boost"
    # per click model: {boost: {beta}, follow: {alpha, gamma}}; only the chosen one's are used
    click_params: dict[str, Any] = field(default_factory=_click_params)
    max_steps: int = 50
    history_len: int = 4
    allow_no_recommendation: bool = True
    action_level: str = "page"
    top_k: int | None = None
    device: str = "cpu"


def register_configs() -> None:
    """Store the schema as ``env/schema`` (``configs/env/site.yaml`` extends it); idempotent."""
    ConfigStore.instance().store(group="env", name="schema", node=EnvConfig)


register_configs()
