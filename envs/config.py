"""The simulated website's settings as a typed config (``configs/env/``).

:class:`EnvConfig` is the schema of the ``env`` config group: Hydra checks every ``env.*``
override against it (an unknown key or a value of the wrong type is refused when the config is
composed, naming the key), and :func:`envs.site_env.build_core` takes its fields as keywords.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class EnvConfig:
    """The simulator's settings: names and types only; the values (and what each one means)
    are in ``configs/env/site.yaml``, which every env config extends."""

    # a visitor kind of envs/visitors by name; Any: YAML reads an unquoted `true` as a boolean
    dynamics: Any = MISSING
    model_path: str | None = MISSING
    reward: str = MISSING
    click_model: str = MISSING
    # per click model: {boost: {beta}, follow: {alpha, gamma}}; only the chosen one's are used
    click_params: dict[str, Any] = MISSING
    max_steps: int = MISSING
    history_len: int = MISSING
    allow_no_recommendation: bool = MISSING
    action_level: str = MISSING
    top_k: int | None = MISSING
    candidate_fill: str = MISSING
    device: str = MISSING
    slate_size: int = MISSING
    # {examination: [k values] | null, examination_decay, continue_prob}: envs/slate.py
    slate_params: dict[str, Any] = MISSING
    observe_entry_page: bool = MISSING
    observe_position: bool = MISSING


def register_configs() -> None:
    """Store the schema as ``env/schema`` (``configs/env/site.yaml`` extends it); idempotent."""
    ConfigStore.instance().store(group="env", name="schema", node=EnvConfig)


register_configs()
