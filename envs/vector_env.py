"""Batched front ends over one :class:`~envs.core.SiteCore`: B visitors in one call.

* :class:`SiteVectorEnv`: a Gymnasium ``VectorEnv``, what
  ``gym.make_vec("NextPage/Site-v0", num_envs=N, vectorization_mode="vector_entry_point")``
  returns. Finished visitors are replaced in the same step (``AutoresetMode.SAME_STEP``): the
  returned observation is the new visitor's, and ``infos["final_obs"]`` holds the last
  observation of the one who left (masked by ``infos["_final_obs"]``).
* :class:`SiteSB3VecEnv`: a Stable-Baselines3 ``VecEnv`` with SB3's conventions
  (``infos[i]["terminal_observation"]``, ``infos[i]["TimeLimit.truncated"]``), and the
  core's action mask as ``action_masks()``, the method sb3-contrib's ``MaskablePPO`` asks a
  VecEnv for (``env_method("action_masks")``): computed once for all visitors, not once per
  visitor.

Both take the keyword arguments of :func:`envs.site_env.build_core`.
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

from clickstream.errors import ModelError
from envs.site_env import action_space, build_core, observation_space


def _spaces(core) -> tuple[spaces.MultiDiscrete, spaces.Space]:
    return observation_space(core), action_space(core)


class SiteVectorEnv(VectorEnv):
    """``num_envs`` visitors simulated together by one batched core."""

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        self.core = build_core(num_envs, **kwargs)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = _spaces(self.core)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, Sequence):  # one core, one generator: its first seed seeds it
            seed = seed[0] if len(seed) else None
        return self.core.reset(seed).cpu().numpy(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        r = self.core.step(torch.as_tensor(np.asarray(actions), dtype=torch.long))
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
        return (
            r.obs.cpu().numpy(),
            r.reward.cpu().numpy().astype(np.float32),
            r.terminated.cpu().numpy(),
            r.truncated.cpu().numpy(),
            infos,
        )


class SiteSB3VecEnv(VecEnv):
    """The batched core as a Stable-Baselines3 ``VecEnv`` (``num_envs`` visitors)."""

    def __init__(self, num_envs: int = 1, seed: int | None = None, **kwargs: Any) -> None:
        self.core = build_core(num_envs, **kwargs)
        obs_space, act_space = _spaces(self.core)
        self.render_mode = None  # nothing to render: a simulated visitor has no screen
        super().__init__(num_envs, obs_space, act_space)
        self._actions: torch.Tensor | None = None
        self._seed = seed
        self.mask_current_page = True  # action_masks(): recommending the current page is invalid

    def reset(self) -> np.ndarray:
        seed, self._seed = self._seed, None
        obs = self.core.reset(seed).cpu().numpy()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._seed = seed
        return [seed] * self.num_envs

    def step_async(self, actions: np.ndarray) -> None:
        if self.core.slate_model is None:
            self._actions = torch.as_tensor(np.asarray(actions).reshape(-1), dtype=torch.long)
        else:  # slates: (num_envs, k)
            flat = np.asarray(actions).reshape(self.num_envs, -1)
            self._actions = torch.as_tensor(flat, dtype=torch.long)

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
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
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
