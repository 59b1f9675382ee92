"""PPO that reads the visitor model's belief about the visitor's type (Stable-Baselines3).

A page-observing agent does not know who the visitor is; what it can know is what the
pages she viewed, and the recommendations it made, say about it. For a visitor model with
first-order rows per type (the latent-class model, a first-order latent-type GRU) that is
the belief over her type, tracked exactly (:class:`agents.belief.BeliefPolicy`): a
sufficient summary of the visit in that model, so the best page-observing policy of the
learned world is a function of (page, belief). Plain PPO reads a window of the last pages
and must find the summary itself; here SB3's PPO gets it as its observation,
``[one-hot page, belief, log belief]``, and learns in the learned world as
:class:`agents.sb3.SB3Agent` does (same budget in steps, periodic evaluation, kept weights).

The belief is the learned model's, computed from pages and the agent's own actions, so the
agent stays deployable: in the ground truth it tracks the visitor with the same tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnvWrapper, VecMonitor

from agents.base import current_pages, policy_file
from agents.belief import (
    BeliefPolicy,
    entry_belief,
    kind_with_tables,
    load_world,
    refuse_observation_extras,
    save_world,
)
from agents.sb3 import (
    WEIGHTS,
    ScaleReward,
    _policy_kwargs,
    learn_with_progress,
    rebuild_with_weights,
    save_weights,
    with_schedule,
)
from agents.site import plain
from clickstream import checks
from clickstream.errors import ConfigError, ModelError, RunFolderError
from envs.vector_env import SiteSB3VecEnv

if TYPE_CHECKING:
    from agents.site import Site

LEARNED = "learned"
"""``model``'s default: track the belief with the learned world's own visitor kind."""

LOG_FLOOR = 1e-6
"""Beliefs are floored here before the log; the log is divided by ``-log(LOG_FLOOR)`` so that
the feature lies in ``[-1, 0]``."""


def belief_features(pages: torch.Tensor, belief: torch.Tensor, n_pages: int) -> torch.Tensor:
    """The network's input at (page, belief): ``[one-hot page, b, log b / 13.8]``,
    ``(B, P + 2Z)`` float32. The log lets it tell a buyer's 1 % from 0.1 %, where the best
    recommendation changes."""
    b = belief.float()
    onehot = torch.nn.functional.one_hot(pages.long(), n_pages).float()
    scaled_log = torch.log(b.clamp(min=LOG_FLOOR)) / -math.log(LOG_FLOOR)
    return torch.cat([onehot, b, scaled_log], dim=1)


def feature_space(n_pages: int, n_types: int) -> spaces.Box:
    """The observation space of :func:`belief_features`."""
    low = np.concatenate([np.zeros(n_pages + n_types), -np.ones(n_types)]).astype(np.float32)
    high = np.ones(n_pages + 2 * n_types, dtype=np.float32)
    return spaces.Box(low, high, dtype=np.float32)


class BeliefObservation(VecEnvWrapper):
    """The simulator's page windows turned into :func:`belief_features`: each visitor's
    belief is moved by the tracker's rows with the page she landed on after the action taken
    (and restarts from her entry page's belief when a new visit begins)."""

    def __init__(self, venv, tracker: BeliefPolicy) -> None:
        self.tracker = tracker
        self.n_pages, self.n_types = tracker.tracking().shape
        super().__init__(venv, observation_space=feature_space(self.n_pages, self.n_types))
        self.state: Any = None
        self.actions: torch.Tensor | None = None

    def _observe(self, obs: np.ndarray, starts: np.ndarray) -> np.ndarray:
        pages = current_pages(obs).clamp(max=self.n_pages - 1)
        state = None if self.state is None else (*self.state, self.actions)
        belief = self.tracker.beliefs(pages, state, torch.as_tensor(starts, dtype=torch.bool))
        self.state = (belief, pages)
        return belief_features(pages, belief, self.n_pages).numpy()

    def reset(self) -> np.ndarray:
        self.state, self.actions = None, None
        obs = self.venv.reset()
        return self._observe(obs, np.ones(len(obs), dtype=bool))

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = torch.as_tensor(np.asarray(actions), dtype=torch.long).reshape(-1)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, reward, done, infos = self.venv.step_wait()
        ended = [i for i, info in enumerate(infos) if "terminal_observation" in info]
        if ended and self.state is not None:
            # a visit cut at the step limit is bootstrapped from its last observation: the
            # belief moved to its last page, not a new visit's
            keep = torch.as_tensor(ended)
            last = np.stack([infos[i]["terminal_observation"] for i in ended])
            pages = current_pages(last).clamp(max=self.n_pages - 1)
            belief, before = self.state
            state = (belief[keep], before[keep], self.actions[keep])
            moved = self.tracker.beliefs(pages, state, torch.zeros(len(ended), dtype=torch.bool))
            features = belief_features(pages, moved, self.n_pages).numpy()
            for row, i in enumerate(ended):
                infos[i] = {**infos[i], "terminal_observation": features[row]}
        return self._observe(obs, np.asarray(done, dtype=bool)), reward, done, infos


class BeliefPPO(BeliefPolicy):
    """SB3 PPO over (page, the learned visitor model's belief about the visitor's type).

    Args:
        model: The visitor kind whose first-order rows per type track the belief: ``learned``
            (the default), the learned world's own kind (``env.dynamics``: ``latent_class``, or
            ``latent_gru`` when its memory stage was not kept), or a kind's name.
        name: Policy name in results.
        total_timesteps: Visitor steps of training (the budget).
        max_minutes: A wall-clock limit (``None``: none); a run that hits it is marked
            ``truncated``, as :class:`agents.sb3.SB3Agent`'s.
        n_envs: Visitors simulated together.
        reward_scale: Factor on rewards while learning.
        expected_reward: Train on ``E[reward | state, action]`` from the simulator.
        eval_every: Steps between evaluations in the learned world (0: none).
        eval_sessions: Sessions per evaluation.
        keep_best: End with the weights of the best periodic evaluation.
        lr_decay: Fraction the learning rate falls to, linearly over the budget (1: constant).
        policy_kwargs: SB3 ``policy_kwargs`` of its ``MlpPolicy`` (``net_arch``, ...).
        hyperparams: Any other SB3 PPO argument (``learning_rate``, ``gamma``, ...).
        verbose: Print progress lines.
    """

    kind = "belief_ppo"
    log_truth = False  # read by the periodic evaluation (agents.sb3._Progress)

    def __init__(
        self,
        model: str = LEARNED,
        name: str = "belief_ppo",
        total_timesteps: int = 3_000_000,
        max_minutes: float | None = None,
        n_envs: int = 256,
        reward_scale: float = 0.01,
        expected_reward: bool = True,
        eval_every: int = 250_000,
        eval_sessions: int = 32_768,
        keep_best: bool = True,
        lr_decay: float = 0.0,
        policy_kwargs: dict[str, Any] | None = None,
        hyperparams: dict[str, Any] | None = None,
        verbose: bool = True,
    ) -> None:
        self.name = name
        self.model = LEARNED if model == LEARNED else kind_with_tables(model, "belief PPO")
        # checked here, as SB3Agent's: a bad budget or limit fails before any work
        self.total_timesteps = checks.whole(
            "agent.total_timesteps", total_timesteps, unit=" of steps"
        )
        self.max_minutes = checks.time_limit("agent.max_minutes", max_minutes)
        self.n_envs = checks.whole("agent.n_envs", n_envs, unit=" of visitors")
        self.reward_scale = float(reward_scale)
        self.expected_reward = bool(expected_reward)
        self.eval_every = checks.whole(
            "agent.eval_every", eval_every, 0, " of steps", note="(0: none)"
        )
        self.eval_sessions = checks.whole("agent.eval_sessions", eval_sessions, unit=" of sessions")
        self.keep_best, self.lr_decay = bool(keep_best), float(lr_decay)
        self.policy_kwargs = plain(policy_kwargs or {})
        self.hyperparams = plain(hyperparams or {})
        if "policy_kwargs" in self.hyperparams or "env" in self.hyperparams:
            raise ConfigError("belief PPO: give policy_kwargs on their own, not in hyperparams")
        self.verbose = bool(verbose)
        self.sb3: PPO | None = None

    # ---- training ----------------------------------------------------------------------

    def fit(self, site: Site) -> dict[str, Any]:
        refuse_observation_extras(site, self.name)
        torch.manual_seed(site.seed)
        if self.model == LEARNED:  # the kind is fixed now, and saved with the agent
            self.model = kind_with_tables(site.learned_kind.name, "belief PPO")
        world = site.kind_mdp(self.model)
        self.world, self.rows, self.entry = world, None, entry_belief(world)
        hyper = with_schedule(self.hyperparams, self.lr_decay)
        env = SiteSB3VecEnv(
            self.n_envs, seed=site.seed, data_dir=site.data_dir, **site.world_options("learned")
        )
        env.core.expected_reward = self.expected_reward
        if int(env.action_space.n) != world.n_actions:
            raise ConfigError(
                f"belief PPO: the env has {int(env.action_space.n)} actions, the {self.model!r} "
                f"world {world.n_actions}: track the belief in the learned world's visitor kind"
            )
        venv = ScaleReward(BeliefObservation(VecMonitor(env), self), self.reward_scale)
        self.sb3 = PPO(
            "MlpPolicy",
            venv,
            seed=site.seed,
            device="cpu",
            policy_kwargs=_policy_kwargs(self.policy_kwargs),
            verbose=0,
            **hyper,
        )
        out = learn_with_progress(self, self.sb3, site)
        self.sb3.policy.set_training_mode(False)
        return out

    # ---- acting ------------------------------------------------------------------------

    def scores(self, pages: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """The policy's action log-probabilities at each (page, belief), ``(B, A)``."""
        if self.sb3 is None:
            raise ModelError(f"policy {self.name!r} is not trained yet")
        features = belief_features(pages, belief, len(self.tracking()))
        with torch.no_grad():
            dist = self.sb3.policy.get_distribution(features.to(self.sb3.device)).distribution
            return torch.log_softmax(dist.logits, dim=-1).cpu()

    # ---- persistence -------------------------------------------------------------------

    def _save_state(self, out: Path) -> dict[str, Any]:
        if self.sb3 is None or self.world is None:
            raise ModelError(f"policy {self.name!r} is not trained yet")
        save_weights(self.sb3, out)
        return {
            "model": self.model,
            "policy_kwargs": self.policy_kwargs,
            "weights": WEIGHTS,
            **save_world(out, self.world),
        }

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> BeliefPPO:
        world = load_world(path, manifest)
        policy_kwargs = manifest.get("policy_kwargs") or {}
        if not isinstance(policy_kwargs, dict):
            raise RunFolderError("policy_kwargs must be a JSON object", file=str(path))
        policy = cls(
            str(manifest.get("model")),
            str(manifest.get("name", cls.kind)),
            policy_kwargs=policy_kwargs,
            verbose=False,
        )
        policy.sb3 = rebuild_with_weights(
            PPO,
            "MlpPolicy",
            feature_space(world.n_pages, world.n_intents),
            spaces.Discrete(world.n_actions),
            policy_kwargs,
            policy_file(path, manifest, "weights"),
        )
        policy.world, policy.rows, policy.entry = world, None, entry_belief(world)
        return policy
