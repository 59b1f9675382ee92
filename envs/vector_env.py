"""Batched front ends over one :class:`~envs.core.SiteCore`: B visitors in one call.

* :class:`SiteVectorEnv`: a Gymnasium ``VectorEnv``, what
  ``gym.make_vec("NextPage/Site-v0", num_envs=N, vectorization_mode="vector_entry_point")``
  returns. Finished visitors are replaced in the same step (``AutoresetMode.SAME_STEP``): the
  returned observation is the new visitor's, ``infos["final_obs"]`` holds the last
  observation of the one who left (masked by ``infos["_final_obs"]``) and
  ``infos["final_info"]`` her last step's info (masked by ``infos["_final_info"]``), as
  Gymnasium's ``SyncVectorEnv`` gives them; ``action_masks()`` as the SB3 VecEnv's.
* :class:`SiteSB3VecEnv`: a Stable-Baselines3 ``VecEnv`` with SB3's conventions
  (``infos[i]["terminal_observation"]``, ``infos[i]["TimeLimit.truncated"]``), and the
  core's action mask as ``action_masks()``, the method sb3-contrib's ``MaskablePPO`` asks a
  VecEnv for (``env_method("action_masks")``): computed once for all visitors, not once per
  visitor. With the position observed (``observe_position``) the time limit is part of the
  state, so a cut at ``max_steps`` is handed to SB3 as a real end (``TimeLimit.truncated``
  False: no bootstrap from a last position no acting observation has; the value there is 0 by
  definition, as the evaluation counts it); without it, a cut is a truncation SB3 bootstraps.
  Gymnasium's ``terminated``/``truncated`` (the other two front ends) are the core's, unchanged.

Both take the keyword arguments of :func:`envs.site_env.build_core`. One core draws every
visitor from one generator, so a reset takes one seed (:func:`vector_seed`), and actions are
checked against the action space as the single env checks them (:func:`check_actions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from clickstream import checks
from clickstream.errors import ConfigError, ModelError
from envs.core import SiteCore, check_seed
from envs.site_env import action_space, build_core, observation_space


def _spaces(core: SiteCore) -> tuple[spaces.MultiDiscrete, spaces.Space]:
    return observation_space(core), action_space(core)


def vector_seed(seed: object, num_envs: int) -> int | None:
    """The one seed of the core behind ``num_envs`` visitors, from a vector env's ``seed``.

    An int (:func:`~envs.core.check_seed`) or ``None``; or a list of ``num_envs`` seeds that
    one seed stands for: ``[s, s + 1, ..., s + num_envs - 1]`` (what Gymnasium's vector envs
    derive from ``s``) is ``s``, all ``None`` is ``None``. Any other list asks for a stream per
    visitor, which one generator cannot give, so it is refused rather than cut to its first seed.

    Raises:
        ConfigError: A seed that is not an int in ``[0, 2**64)``, or such a list.
    """
    if isinstance(seed, np.ndarray) and seed.ndim == 0:  # np.array(3): one seed
        seed = seed.item()
    if isinstance(seed, (str, bytes)) or not isinstance(seed, (Sequence, np.ndarray)):
        return check_seed(seed)
    seeds = [check_seed(s, key=f"seed[{i}]") for i, s in enumerate(seed)]
    if len(seeds) == num_envs and all(s is None for s in seeds):
        return None
    first = seeds[0] if seeds else None
    if (
        len(seeds) == num_envs
        and first is not None
        and seeds == list(range(first, first + num_envs))
    ):
        return first
    raise ConfigError(
        f"seed {seeds!r}: the {num_envs} visitors of this vector env are drawn from one "
        f"generator, so it takes one seed: pass seed=s (or [s, s + 1, ..., s + {num_envs - 1}], "
        "the list Gymnasium derives from it) or None"
    )


def check_actions(actions: Any, num_envs: int, space: spaces.Space) -> torch.Tensor:
    """``actions`` of ``num_envs`` visitors as an int64 tensor, checked against ``space``, the
    action space of one visitor: an integer array of shape ``(num_envs, *space.shape)`` with
    values in ``[0, n)``. Vectorised (no loop over visitors): it runs on every step.

    Raises:
        ModelError: The wrong shape, a non-integer dtype (floats are not truncated, bools
            not read as 0 / 1) or a value out of range, naming the first env at fault.
    """
    try:
        a = np.asarray(actions)
    except ValueError:  # a ragged list: no array, so no shape to name
        raise ModelError(
            f"actions must be an array of shape {(num_envs, *space.shape)}, got a ragged "
            f"sequence {actions!r:.80}"
        ) from None
    shape = (num_envs, *space.shape)
    if a.shape != shape:
        raise ModelError(
            f"actions must have shape {shape}, one {space} action per env, got shape {a.shape}"
        )
    n = int(space.n) if isinstance(space, spaces.Discrete) else int(space.nvec.max())
    if a.dtype.kind not in "iu":
        raise ModelError(
            f"action {a[0].tolist()!r} of env 0 is not in {space}: actions must be integers "
            f"in [0, {n}), got dtype {a.dtype}"
        )
    bad = (a < 0) | (a >= n)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(num_envs, -1).any(1))[0])
        raise ModelError(
            f"action {a[i].tolist()!r} of env {i} is not in {space}: actions must lie in [0, {n})"
        )
    return torch.as_tensor(a, dtype=torch.long)


class SiteVectorEnv(VectorEnv):
    """``num_envs`` visitors simulated together by one batched core."""

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        num_envs = checks.whole("num_envs", num_envs, 1, floats=False)
        self.core = build_core(num_envs, **kwargs)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = _spaces(self.core)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self.core.reset(vector_seed(seed, self.num_envs)).cpu().numpy(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        r = self.core.step(check_actions(actions, self.num_envs, self.single_action_space))
        done = (r.terminated | r.truncated).cpu().numpy()
        infos: dict[str, Any] = {
            "followed": r.followed.cpu().numpy(),
            "_followed": np.ones(self.num_envs, dtype=bool),
        }
        if r.position is not None:
            infos["position"] = r.position.cpu().numpy()
            infos["_position"] = np.ones(self.num_envs, dtype=bool)
        if done.any():
            infos["final_obs"] = r.final_obs.cpu().numpy()
            infos["_final_obs"] = done
            # the finished visitors' own step info, batched as SyncVectorEnv batches it
            final_info = {"followed": infos["followed"], "_followed": done}
            if r.position is not None:
                final_info.update(position=infos["position"], _position=done)
            infos["final_info"] = final_info
            infos["_final_info"] = done
        return (
            r.obs.cpu().numpy(),
            r.reward.cpu().numpy().astype(np.float32),
            r.terminated.cpu().numpy(),
            r.truncated.cpu().numpy(),
            infos,
        )

    def action_masks(self) -> np.ndarray:
        """Valid actions of every visitor, ``(num_envs, A)`` bool (:meth:`SiteCore.action_mask`:
        not the current page, within the candidate set on a large site, "nothing" always)."""
        return self.core.action_mask().cpu().numpy()


class SiteSB3VecEnv(VecEnv):
    """The batched core as a Stable-Baselines3 ``VecEnv`` (``num_envs`` visitors)."""

    def __init__(self, num_envs: int = 1, seed: int | None = None, **kwargs: Any) -> None:
        num_envs = checks.whole("num_envs", num_envs, 1, floats=False)
        self.core = build_core(num_envs, **kwargs)
        obs_space, act_space = _spaces(self.core)
        self.render_mode = None  # nothing to render: a simulated visitor has no screen
        super().__init__(num_envs, obs_space, act_space)
        self._actions: torch.Tensor | None = None
        self._seed = check_seed(seed)
        self.mask_current_page = True  # action_masks(): recommending the current page is invalid
        # the position is observed: the horizon is part of the state, a cut is a real end
        self.cut_is_end = "position" in self.core.extras

    def reset(self) -> np.ndarray:
        seed, self._seed = self._seed, None
        obs = self.core.reset(seed).cpu().numpy()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._seed = check_seed(seed)
        return [self._seed] * self.num_envs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = check_actions(actions, self.num_envs, self.action_space)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise ModelError("step_async must come before step_wait")
        r = self.core.step(self._actions)
        self._actions = None
        terminated = r.terminated.cpu().numpy()
        truncated = r.truncated.cpu().numpy()
        final = r.final_obs.cpu().numpy()
        followed = r.followed.cpu().numpy()
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info: dict[str, Any] = {"followed": bool(followed[i])}
            if terminated[i] or truncated[i]:
                info["terminal_observation"] = final[i]
                cut = bool(truncated[i] and not terminated[i])
                info["TimeLimit.truncated"] = cut and not self.cut_is_end
            infos.append(info)
        return (
            r.obs.cpu().numpy(),
            r.reward.cpu().numpy().astype(np.float32),
            terminated | truncated,
            infos,
        )

    def close(self) -> None:
        pass

    def action_masks(self) -> np.ndarray:
        """Valid actions of every visitor, ``(num_envs, A)`` bool (:meth:`SiteCore.action_mask`:
        not the current page, within the candidate set on a large site, "nothing" always)."""
        return self.core.action_mask(self.mask_current_page).cpu().numpy()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        if method_name == "action_masks":  # one batched call, split into the visitors' rows
            rows = self.action_masks()
            return [rows[i] for i in self._indices(indices)]
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
