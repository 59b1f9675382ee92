"""Gymnasium front end of the simulator: ``gym.make("NextPage/Site-v0")``.

With no arguments the env simulates the default synthetic store (200 pages, ``intent`` mode)
under its *true* visitor model, pays the page value of every page landed on and lets the agent
recommend any page or nothing: a complete website to try in one line. Keyword arguments point
it at a prepared dataset and a trained visitor model instead::

    gym.make("NextPage/Site-v0", data_dir="data/synthetic_intent", dynamics="gru")

See :func:`build_core` for every option and :mod:`envs.core` for the observation and action.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from gymnasium import spaces

from clickstream import checks
from clickstream.errors import ConfigError, ModelError
from clickstream.prepare import reward_support
from clickstream.runfolder import read_parquet
from clickstream.synthetic import SyntheticStore, build_store
from envs import visitors
from envs.click_model import build_click_model
from envs.core import SiteCore, check_seed, resolve_device
from envs.dynamics import check_candidate_fill, top_successors
from envs.rewards import check_learnable, reward_from_catalog, reward_from_store
from envs.sequences import load_prepared
from envs.slate import build_slate_model


def build_core(
    n_visitors: int = 1,
    *,
    data_dir: str | Path | None = None,
    dynamics: str | bool | None = None,
    model_path: str | Path | None = None,
    store: SyntheticStore | None = None,
    reward: str = "page_value",
    click_model: str = "boost",
    click_params: Mapping[str, float] | None = None,
    max_steps: int = 50,
    history_len: int = 4,
    allow_no_recommendation: bool = True,
    top_k: int | None = None,
    candidate_fill: str = "none",
    action_level: str = "page",
    device: str = "cpu",
    reward_key: str = "env.reward",
    slate_size: int = 1,
    slate_params: Mapping[str, Any] | None = None,
    observe_entry_page: bool = False,
    observe_position: bool = False,
) -> SiteCore:
    """Build the simulator core from a dataset (or the default synthetic store).

    Every option is checked, not coerced: ``max_steps=2.7`` or ``observe_position="false"``
    raise a ``ConfigError`` naming the option, as does ``device=cuda`` without CUDA.

    Args:
        n_visitors: B, visitors simulated together.
        data_dir: A prepared dataset (``scripts/prepare_data.py``); ``None``: the default
            synthetic store, built in memory.
        dynamics: The visitor model, a kind of :mod:`envs.visitors` by name: ``true`` (the
            synthetic store's own model: ground truth; the default), ``markov`` (first-order,
            counted on the train split), ``gru`` (the trained GRU visitor model),
            ``latent_class`` (visitor types that keep their type: ``envs/latent_class.py``),
            or any other registered kind.
        model_path: The learned model's file (default ``<data_dir>/simulator/`` and the
            kind's file name, e.g. ``model.pt``).
        store: A synthetic store to use instead of the default one (no ``data_dir``).
        reward: ``page_value``, ``revenue`` or ``engagement`` (``envs/rewards.py``); from the
            dataset's page catalog, or from the store's true model without a dataset.
        click_model: ``boost`` (default) or ``follow`` (``envs/click_model.py``).
        click_params: The click model's parameters, or a mapping from click model name to
            its parameters (``configs/env/site.yaml``); default for ``boost`` without a
            dataset: the store's true ``beta``.
        max_steps: Steps after which a session is truncated.
        history_len: Pages in an observation.
        allow_no_recommendation: Add the "show nothing" action (the last one).
        top_k: Large sites: each page leads only to its ``top_k`` most frequent successors
            in the training split (plus ``EXIT`` and the recommended page), so a step scores
            ``top_k + 2`` outcomes instead of ``P + 1``. Needs ``data_dir``.
        candidate_fill: With ``top_k``: ``none`` (only observed successors) or ``group`` (rows
            with fewer than ``top_k`` completed from the page group's successors, then the
            site's most frequent pages: :func:`envs.dynamics.top_successors`); the rows are
            both the masked agents' candidates and the outcomes each step scores.
        action_level: ``page`` (recommend a page) or ``group`` (recommend a page group: all
            its pages at once).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
        reward_key: The configuration key ``reward`` came from, named when the data cannot
            pay it (``reward`` in ``check_simulator.py``).
        slate_size: Pages shown at once (``k``); 1 (the default) is one recommendation per
            step, exactly as without slates. ``k > 1`` needs ``action_level=page`` and no
            ``top_k``.
        slate_params: The slate choice model's parameters (:func:`envs.slate.build_slate_model`:
            ``examination``, ``examination_decay`` for the position-biased MNL of ``boost``,
            ``continue_prob`` for the cascade of ``follow``).
        observe_entry_page: Observations start with the session's entry page
            (:mod:`envs.core`).
        observe_position: Observations carry the position in the visit (steps so far).
    """
    kind = visitors.ground_truth() if dynamics is None else visitors.get(dynamics, key="dynamics")
    if action_level not in ("page", "group"):
        raise ConfigError(f"action_level must be 'page' or 'group', got {action_level!r}")
    check_candidate_fill(candidate_fill)  # named even without top_k
    # the options used before the core is built (which checks the others): checked, since an
    # int() would turn slate_size=2.5 into 2 without a word
    slate_size = checks.whole("slate_size", slate_size, 1, floats=False)
    top_k = None if top_k is None else checks.whole("top_k", top_k, 1, floats=False)
    device = str(resolve_device(device))  # before a model is loaded onto it
    if top_k is not None and data_dir is None:
        raise ConfigError("top_k needs a prepared data_dir (successors are counted there)")
    params = dict(click_params or {})
    if any(isinstance(v, Mapping) for v in params.values()):  # per-model groups (configs/env)
        params = dict(params.get(click_model) or {})
    if data_dir is None:
        store = store if store is not None else build_store()
        dyn = kind.from_store(store).dynamics()
        rewards = reward_from_store(reward, store)
        group_ids = pd.factorize(pd.Series(store.page_groups), sort=True)[0]
        if click_model == "boost":
            params.setdefault("beta", store.beta)
    else:
        data = load_prepared(data_dir, splits=("train",))
        pages = data.vocab.pages
        catalog = read_parquet(Path(data_dir) / "pages.parquet")
        rewards = check_learnable(
            reward_from_catalog(reward, catalog, pages),
            str(data_dir),
            key=reward_key,
            alternatives=reward_support(catalog)["supported"],
        )
        group_ids = data.vocab.page_group
        dyn = kind.load(data, model_path, device=device).dynamics(top_k)
    slate_model = None
    if slate_size != 1:
        slate_model = build_slate_model(click_model, params, slate_size, slate_params)
    return SiteCore(
        dyn,
        build_click_model(click_model, **params),
        rewards.per_page,
        n_visitors,
        allow_no_recommendation=allow_no_recommendation,
        max_steps=max_steps,
        history_len=history_len,
        candidates=None
        if top_k is None
        else top_successors(data.splits["train"], top_k, candidate_fill, group_ids),
        page_groups=group_ids if action_level == "group" else None,
        device=device,
        slate_model=slate_model,
        observe_entry_page=observe_entry_page,
        observe_position=observe_position,
    )


def observation_space(core: SiteCore) -> spaces.MultiDiscrete:
    """``MultiDiscrete``: the optional entry page (``P + 1`` values) and position
    (``max_steps + 1``), then ``K`` pages (``P + 1`` each): :attr:`SiteCore.obs_nvec`."""
    return spaces.MultiDiscrete(core.obs_nvec)


def action_space(core: SiteCore) -> spaces.Space:
    """``Discrete(A)``, or ``MultiDiscrete([A] * k)`` for slates of ``k`` positions."""
    if core.slate_model is None:
        return spaces.Discrete(core.n_actions)
    return spaces.MultiDiscrete(np.full(core.slate_size, core.n_actions, dtype=np.int64))


class SiteEnv(gym.Env):
    """One simulated visitor at a time (a B=1 :class:`~envs.core.SiteCore`).

    Observation: ``MultiDiscrete([P + 1] * history_len)``, the last pages viewed (``P`` = none
    / ``EXIT``), after the entry page and the position in the visit when
    ``observe_entry_page`` / ``observe_position`` are on (:func:`observation_space`).
    Action: ``Discrete(n_actions)``, a recommendable page, or (last) nothing;
    with ``slate_size = k > 1``, ``MultiDiscrete([n_actions] * k)``, one per position, top
    first (a page repeated lower down, or "nothing", leaves its position empty); ``info``
    then also has ``position``, the position of the shown page the visitor went to, whether
    or not the slate caused the move (-1: the page landed on was not shown).
    Reward: the value of the page landed on. ``terminated`` when the visitor leaves,
    ``truncated`` at ``max_steps``. Keyword arguments: :func:`build_core`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        self.core = build_core(1, **kwargs)
        self.observation_space = observation_space(self.core)
        self.action_space = action_space(self.core)
        self.page_names = (*self.core.dynamics.pages, "EXIT")
        self._pending: np.ndarray | None = None  # the next visitor, already arrived

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        # the simulator's rule, shared with the vector envs: Gymnasium's own check lets True
        # (seed 1) and 2**64 (a torch overflow) through, and refuses numpy integers
        seed = check_seed(seed)
        super().reset(seed=seed)
        if seed is not None or self._pending is None or (options or {}).get("restart"):
            obs = self.core.reset(seed)[0].cpu().numpy()
        else:  # the core replaced the visitor who left at the end of the last step
            obs = self._pending
        self._pending = None
        return obs, {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ModelError(f"action {action!r} is not in {self.action_space}")
        if self.core.slate_model is None:
            r = self.core.step(torch.tensor([int(action)]))
        else:
            r = self.core.step(torch.as_tensor(np.asarray(action), dtype=torch.long)[None])
        terminated, truncated = bool(r.terminated[0]), bool(r.truncated[0])
        landed = int(r.landed[0])
        info = {"page": self.page_names[landed], "followed": bool(r.followed[0])}
        if r.position is not None:
            info["position"] = int(r.position[0])
        if terminated or truncated:
            self._pending = r.obs[0].cpu().numpy()
            obs = r.final_obs[0].cpu().numpy()
        else:
            obs = r.obs[0].cpu().numpy()
        return obs, float(r.reward[0]), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Valid actions of the visitor, ``(n_actions,)`` bool (:meth:`SiteCore.action_mask`:
        not the current page, within the candidate set on a large site, "nothing" always), the
        method sb3-contrib's ``MaskablePPO`` asks an env for. Single recommendations only (a
        slate has one mask per position)."""
        return self.core.action_mask()[0].cpu().numpy()

    def describe(self) -> dict[str, int]:
        """The env's sizes, for logs."""
        return {
            "pages": self.core.n_pages,
            "actions": self.core.n_actions,
            "history_len": self.core.history_len,
            "observation_extras": len(self.core.extras),
            "max_steps": self.core.max_steps,
            "slate_size": self.core.slate_size,
        }
