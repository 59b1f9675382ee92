"""Stable-Baselines3 DQN and PPO on the batched simulator, behind the common policy surface.

The agent trains on :class:`envs.vector_env.SiteSB3VecEnv` (``n_envs`` visitors stepped
together in torch) wrapped in ``VecMonitor`` (episode returns for SB3's ``rollout/`` logs) and
a reward scale. The scale matters most for DQN, whose Huber loss is linear beyond a TD error
of 1: with page values of hundreds of dollars scaled to units, the rare large rewards of the
checkout funnel fall in the linear part, the regression then aims between mean and median and
undervalues exactly the recommendations that lead to orders. Scaled so that TD errors stay
below 1 (x 0.001 on the synthetic store) the loss is a plain squared error, whose minimiser is
the mean (measured in docs/results.md). Every ``eval_every`` steps a callback
scores the greedy policy in the learned simulator and logs ``eval/mean_return`` (unscaled) and
friends to TensorBoard with ``time/fps_with_eval`` (steps per second, evaluations included),
next to SB3's own ``time/fps``, ``train/*`` and ``rollout/*``. DQN writes its ``rollout/*``
once per ``max(n_envs, 100)`` episodes (SB3's window of episodes), so at most once per step,
not once per finished visitor.
Training length is ``total_timesteps`` (a budget in steps, so that a seed replays whatever the
machine's load). A user may add a wall-clock limit (``max_minutes``, off by default); a run
that hits it stops early and says so: ``fit`` returns ``truncated: true`` with the steps
reached, which ``scripts/train.py`` records and the report shows.

``algo: maskable_ppo`` is sb3-contrib's ``MaskablePPO``: the simulator core's action mask
(:meth:`envs.core.SiteCore.action_mask`: not the current page; on a large site, only the
current page's candidate set; "show nothing" always) is applied while training, and the agent
keeps what the mask needs (the action pages and the candidate table, saved with it as tensors)
so that ``predict`` and ``action_scores`` apply the same mask from the observation alone (its
last entry is the current page): a masked agent never picks a masked action.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import DQN, PPO
from stable_baselines3 import __version__ as sb3_version
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnvWrapper, VecMonitor
from tqdm.auto import tqdm

from agents.base import Policy, check_page_ids, policy_file
from agents.networks import POLICIES, init_page_embeddings, visitor_page_embeddings
from agents.site import Site, plain
from clickstream import checks
from clickstream.errors import ConfigError, ModelError, RunFolderError
from envs import visitors
from envs.core import action_mask
from envs.vector_env import SiteSB3VecEnv
from envs.visitor_model import load_weights_only


def double_q_target(
    online_next: torch.Tensor,
    target_next: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    discount: float | torch.Tensor,
) -> torch.Tensor:
    """``r + (1 - done) * discount * Q_target(s', argmax_a Q_online(s', a))``, shape ``(B, 1)``.

    ``online_next`` and ``target_next`` are both networks' Q-values at the next states,
    ``(B, A)``; ``rewards``, ``dones`` (and a tensor ``discount``) are ``(B, 1)``.
    """
    next_action = online_next.argmax(dim=1, keepdim=True)
    return rewards + (1 - dones) * discount * target_next.gather(1, next_action)


class DoubleDQN(DQN):
    """DQN with the Double Q-learning target (van Hasselt et al., 2016): the online network
    picks the next action, the target network values it. Plain DQN's ``max`` over noisy
    estimates overvalues loops such as basket <-> checkout on a store, where every lap earns
    page value; decoupling selection from evaluation removes that upward bias."""

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            # n-step buffers carry their own discount (gamma ** steps actually taken)
            discount = batch.discounts if batch.discounts is not None else self.gamma
            # one pass of the online network over s and s' (s' only picks the next action)
            n = batch.observations.shape[0]
            q_both = self.q_net(torch.cat([batch.observations, batch.next_observations]))
            with torch.no_grad():
                target = double_q_target(
                    q_both[n:].detach(),
                    self.q_net_target(batch.next_observations),
                    batch.rewards,
                    batch.dones,
                    discount,
                )
            q = q_both[:n].gather(1, batch.actions.long())
            loss = F.smooth_l1_loss(q, target)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))


ALGORITHMS = {"dqn": DQN, "ppo": PPO, "recurrent_ppo": RecurrentPPO, "maskable_ppo": MaskablePPO}
"""SB3 algorithms by config name; ``recurrent_ppo`` is sb3-contrib's PPO with an LSTM policy,
which remembers the whole visit (its ``predict`` carries the LSTM state per visitor);
``maskable_ppo`` is sb3-contrib's PPO with the simulator core's action mask."""

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU}
"""``policy_kwargs.activation_fn`` by name (configs hold names, never import paths)."""


def linear_learning_rate(start: float, end_fraction: float) -> Callable[[float], float]:
    """SB3's learning-rate schedule falling linearly from ``start`` to ``start · end_fraction``
    over the budget (SB3 calls it with the fraction of the budget left: 1 at the first update,
    0 at the end)."""

    def rate(left: float) -> float:
        return start * (end_fraction + (1.0 - end_fraction) * left)

    return rate


def _policy_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` from a config: activation names become classes."""
    out = dict(kwargs)
    name = out.get("activation_fn")
    if isinstance(name, str):
        if name not in ACTIVATIONS:
            raise ConfigError(
                f"policy_kwargs.activation_fn must be one of {sorted(ACTIVATIONS)}, got {name!r}"
            )
        out["activation_fn"] = ACTIVATIONS[name]
    return out


class ScaleReward(VecEnvWrapper):
    """Multiply rewards by ``scale`` (what the agent learns from; evaluation is unscaled)."""

    def __init__(self, venv, scale: float) -> None:
        super().__init__(venv)
        self.scale = float(scale)

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, reward, done, infos = self.venv.step_wait()
        return obs, reward * self.scale, done, infos


class _Progress(BaseCallback):
    """Periodic evaluation, a user's time limit (if any), and a progress bar."""

    def __init__(self, agent: Any, site: Site, start: float) -> None:
        super().__init__()
        # the agents' constructors check these too; here for every agent that trains with it
        checks.whole("agent.total_timesteps", agent.total_timesteps, unit=" of steps")
        checks.time_limit("agent.max_minutes", agent.max_minutes)
        self.agent, self.site, self.start = agent, site, start
        self.next_eval = agent.eval_every
        self.history: list[dict[str, float]] = []
        self.best, self.best_params = -math.inf, None
        self.truncated = False
        self._eval_core = None  # built once: a core loads data and models
        self.bar = tqdm(
            total=agent.total_timesteps,
            desc=f"{agent.name} (learned world)",
            unit="step",
            unit_scale=True,
            disable=not agent.verbose,
            leave=False,
        )

    def _on_step(self) -> bool:
        steps = self.num_timesteps
        self.bar.update(steps - self.bar.n)
        if self.agent.eval_every and steps >= self.next_eval:
            self.next_eval += self.agent.eval_every
            self.evaluate()
        if steps >= self.agent.total_timesteps:
            # the budget is reached: a clock that runs out now (in the evaluation above) cut
            # nothing short, so the run is whole, not truncated
            return True
        minutes = (time.perf_counter() - self.start) / 60
        if self.agent.max_minutes is not None and minutes >= self.agent.max_minutes:
            self.truncated = True  # the user's wall-clock limit: reported, never silent
            return False
        return True

    def _on_training_end(self) -> None:
        self.bar.close()

    def evaluate(self) -> None:
        from agents.evaluate import SELECTION_SEED, quick_eval

        if self._eval_core is None:
            self._eval_core = self.site.core(min(2048, self.agent.eval_sessions), "learned")
        scores = quick_eval(
            self.agent,
            self.site,
            self.agent.eval_sessions,
            seed=SELECTION_SEED,
            truth=self.agent.log_truth,
            core=self._eval_core,
        )
        # not SB3's time/fps (training only): this one counts the evaluations too
        scores["time/fps_with_eval"] = self.num_timesteps / max(
            time.perf_counter() - self.start, 1e-9
        )
        for name, value in scores.items():
            self.logger.record(name, value)
        self.logger.dump(self.num_timesteps)
        self.history.append({"steps": self.num_timesteps, **scores})
        if self.agent.keep_best and scores["eval/mean_return"] > self.best:
            self.best = scores["eval/mean_return"]
            self.best_params = copy.deepcopy(self.model.policy.state_dict())
        if self.agent.verbose:
            exact = scores.get("truth/exact_return")
            self.bar.write(
                f"[{self.agent.name}] {self.num_timesteps:>9,} steps  "
                f"eval/mean_return {scores['eval/mean_return']:.3f}"
                + ("" if exact is None else f"  truth/exact_return {exact:.3f}")
            )


def with_schedule(hyperparams: dict[str, Any], lr_decay: float) -> dict[str, Any]:
    """SB3 arguments with the learning rate falling linearly to ``lr_decay`` of itself over
    the budget (``lr_decay`` 1: the constant rate, as given)."""
    hyper = dict(hyperparams)
    if lr_decay != 1.0:
        lr0 = float(hyper.get("learning_rate", 3e-4))
        hyper["learning_rate"] = linear_learning_rate(lr0, lr_decay)
    return hyper


def learn_with_progress(agent: Any, model: DQN | PPO | MaskablePPO, site: Site) -> dict[str, Any]:
    """Train ``model`` for ``agent.total_timesteps`` steps with the periodic evaluation (and
    the user's time limit) of :class:`_Progress`, end with the best evaluation's weights when
    ``agent.keep_best``, and return what the run record keeps of it."""
    formats = ["tensorboard", "csv"] if site.log_dir is not None else []
    model.set_logger(configure(str(site.log_dir) if formats else None, formats))
    start = time.perf_counter()
    progress = _Progress(agent, site, start)
    # off-policy SB3 dumps rollout/* every log_interval *episodes*, inside its loop over the
    # visitors: n_envs or more (and SB3's window of 100 episodes) dumps at most once per step
    extra = {}
    if isinstance(model, OffPolicyAlgorithm):
        extra["log_interval"] = max(model.n_envs, model._stats_window_size)
    model.learn(agent.total_timesteps, callback=progress, progress_bar=False, **extra)
    seconds = time.perf_counter() - start
    if not progress.history or progress.history[-1]["steps"] != model.num_timesteps:
        progress.evaluate()
    if progress.best_params is not None:
        model.policy.load_state_dict(progress.best_params)
    return {
        "steps": int(model.num_timesteps),
        "budget_steps": agent.total_timesteps,
        "truncated": progress.truncated,
        "seconds": seconds,
        "fps": model.num_timesteps / max(seconds, 1e-9),
        "curve": progress.history,
        # the score that picked the kept weights: the best of the curve, so above their value
        # (the run record's eval_learned scores them on fresh sessions)
        "kept_eval_return": progress.best if progress.best_params is not None else None,
    }


class SB3Agent(Policy):
    """A DQN or PPO agent (saved as its network's weights and a JSON record: see
    :meth:`_save_state`).

    Args:
        algo: ``dqn``, ``ppo``, ``recurrent_ppo`` (sb3-contrib: an LSTM over the visit) or
            ``maskable_ppo`` (PPO with the core's action mask).
        name: Policy name in results (default ``algo``).
        total_timesteps: Visitor steps of training.
        max_minutes: A wall-clock limit of training, minutes > 0 (``None``: none, the
            default). A result must not depend on how busy the machine was, so a run that it
            stops before ``total_timesteps`` is marked ``truncated`` (and
            ``scripts/train.py`` fails unless ``allow_truncated``).
        n_envs: Visitors simulated together.
        reward_scale: Factor on rewards while learning.
        eval_every: Steps between evaluations during training (0: none).
        eval_sessions: Sessions per evaluation during training.
        policy: SB3 policy class name.
        keep_best: End with the weights of the best periodic evaluation (in the learned
            simulator, on its own evaluation seed) rather than the last ones: value-based
            agents oscillate around the optimum.
        lr_decay: Fraction the learning rate falls to, linearly over ``total_timesteps``
            (1: constant).
        double_q: DQN only: the Double DQN target (:class:`DoubleDQN`).
        log_truth: On a synthetic site, also log the exact ground-truth value of each periodic
            evaluation's policy (``truth/exact_return``; needs ``history_len: 1``). A
            diagnostic: the kept weights are still chosen in the learned simulator.
        mask_current_page: ``maskable_ppo``: recommending the current page is invalid (the
            candidate set of a large site masks whatever this says).
        init_embeddings: Start the policy's page embeddings from the learned world's visitor
            model (a GRU's input page embeddings; ``embedding_dim`` follows them): ``True``
            (refused when the visitor model has none), ``"auto"`` (when it has them; ``fit``
            records which), the name of a visitor kind (``gru``, ``latent_gru``: that model as
            trained on the run's data, whatever kind the learned world is, so a world without
            page vectors of its own, such as the latent-class model, can still start from a
            GRU's view of which pages are alike) or ``False``.
        freeze_embeddings: With ``init_embeddings``: keep those embeddings fixed.
        policy_kwargs: SB3 ``policy_kwargs`` (e.g. ``net_arch``).
        hyperparams: Any other SB3 constructor argument (``learning_rate``, ``gamma``, ...).
        device: Torch device of the networks (CPU is faster for these small MLPs).
        verbose: Print progress lines.
    """

    kind = "sb3"

    def __init__(
        self,
        algo: str = "ppo",
        name: str | None = None,
        total_timesteps: int = 1_000_000,
        max_minutes: float | None = None,
        n_envs: int = 64,
        reward_scale: float = 0.01,
        eval_every: int = 100_000,
        eval_sessions: int = 4096,
        policy: str = "MlpPolicy",
        keep_best: bool = True,
        lr_decay: float = 1.0,
        double_q: bool = False,
        log_truth: bool = False,
        expected_reward: bool = False,
        mask_current_page: bool = True,
        init_embeddings: bool | str = False,
        freeze_embeddings: bool = False,
        policy_kwargs: dict[str, Any] | None = None,
        hyperparams: dict[str, Any] | None = None,
        device: str = "cpu",
        verbose: bool = True,
    ) -> None:
        if algo not in ALGORITHMS:
            raise ConfigError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
        self.algo, self.name = algo, name or algo
        # budgets and limits checked here: a bad one would otherwise save an untrained
        # policy with status 0 (total_timesteps <= 0) or truncate at once (max_minutes < 0)
        self.total_timesteps = checks.whole(
            "agent.total_timesteps", total_timesteps, unit=" of steps"
        )
        self.max_minutes = checks.time_limit("agent.max_minutes", max_minutes)
        self.n_envs = checks.whole("agent.n_envs", n_envs, unit=" of visitors")
        self.reward_scale = float(reward_scale)
        self.eval_every = checks.whole(
            "agent.eval_every", eval_every, 0, " of steps", note="(0: none)"
        )
        self.eval_sessions = checks.whole("agent.eval_sessions", eval_sessions, unit=" of sessions")
        self.policy = policy
        self.keep_best, self.lr_decay = bool(keep_best), float(lr_decay)
        if double_q and algo != "dqn":
            raise ConfigError(f"double_q is a DQN option, got it for algo {algo!r}")
        self.double_q, self.log_truth = bool(double_q), bool(log_truth)
        self.expected_reward = bool(expected_reward)
        if freeze_embeddings and not init_embeddings:
            raise ConfigError("freeze_embeddings needs init_embeddings: true (nothing to keep)")
        self.mask_current_page = bool(mask_current_page)
        if init_embeddings not in (True, False, "auto") and not _is_kind(init_embeddings):
            raise ConfigError(
                "init_embeddings must be true, false, auto or a visitor kind's name "
                f"({', '.join(sorted(visitors.kinds()))}), got {init_embeddings!r}"
            )
        self.init_embeddings, self.freeze_embeddings = init_embeddings, bool(freeze_embeddings)
        self.policy_kwargs = plain(policy_kwargs or {})
        self.hyperparams = plain(hyperparams or {})
        self.device, self.verbose = device, bool(verbose)
        self.model: DQN | PPO | MaskablePPO | None = None
        self.mask: ActionMaskTable | None = None

    @property
    def masked(self) -> bool:
        return self.algo == "maskable_ppo"

    def fit(self, site: Site) -> dict[str, Any]:
        torch.manual_seed(site.seed)
        hyper = with_schedule(self.hyperparams, self.lr_decay)
        env = SiteSB3VecEnv(
            self.n_envs, seed=site.seed, data_dir=site.data_dir, **site.world_options("learned")
        )
        env.core.expected_reward = self.expected_reward
        env.mask_current_page = self.mask_current_page
        if env.core.extras and self.policy in POLICIES[self.algo]:
            # our extractors read the extra columns by name (SB3's own one-hot them as they are)
            self.policy_kwargs = _with_extras(self.policy_kwargs, list(env.core.extras))
        if self.masked:
            self.mask = ActionMaskTable.from_core(env.core, self.mask_current_page)
        vectors = None
        if _is_kind(self.init_embeddings):
            vectors = _kind_page_embeddings(site.data_dir, str(self.init_embeddings))
            self.policy_kwargs = _with_embedding_dim(self.policy_kwargs, int(vectors.shape[1]))
        elif self.init_embeddings:
            vectors = visitor_page_embeddings(env.core.dynamics)
            if vectors is None and self.init_embeddings == "auto":
                if self.verbose:
                    print(
                        f"[{self.name}] init_embeddings=auto: the learned world's visitor "
                        "model has no page embeddings; they start at random"
                    )
            elif vectors is None:
                raise ConfigError(
                    f"init_embeddings: the learned world's visitor model "
                    f"({site.env.get('dynamics')!r}) has no page embeddings; use a GRU "
                    "(env.dynamics=gru) or set init_embeddings: false"
                )
            else:
                self.policy_kwargs = _with_embedding_dim(self.policy_kwargs, int(vectors.shape[1]))
        venv = ScaleReward(VecMonitor(env), self.reward_scale)
        algorithm = DoubleDQN if self.double_q else ALGORITHMS[self.algo]
        self.model = algorithm(
            POLICIES[self.algo].get(self.policy, self.policy),
            venv,
            seed=site.seed,
            device=self.device,
            policy_kwargs=_policy_kwargs(self.policy_kwargs),
            verbose=0,
            **hyper,
        )
        if vectors is not None and not init_page_embeddings(
            self.model.policy, vectors, self.freeze_embeddings
        ):
            raise ConfigError(
                f"init_embeddings: policy {self.policy!r} has no page embeddings to start from "
                "the visitor model's (use PagePolicy or PageScorePolicy)"
            )
        return {
            **learn_with_progress(self, self.model, site),
            "embeddings_from_visitor_model": vectors is not None,
        }

    def check_observations(self, core: Any) -> None:
        nvec = getattr(self._model().observation_space, "nvec", None)
        if nvec is not None and list(nvec) != list(core.obs_nvec):
            raise ConfigError(
                f"policy {self.name!r} reads observations of {len(nvec)} columns with "
                f"{[int(n) for n in nvec]} values, this world gives {len(core.obs_nvec)} with "
                f"{[int(n) for n in core.obs_nvec]} (env.history_len={core.history_len}, "
                f"extras {list(core.extras)}): evaluate with the env.history_len, "
                "env.observe_entry_page and env.observe_position it was trained with"
            )

    def _model(self) -> DQN | PPO | MaskablePPO:
        if self.model is None:
            raise ModelError(f"policy {self.name!r} is not trained yet")
        return self.model

    @property
    def recurrent(self) -> bool:  # type: ignore[override]
        """Recurrent PPO remembers the visit: its state is the LSTM's, per visitor."""
        return self.algo == "recurrent_ppo"

    def action_masks(self, obs: np.ndarray | torch.Tensor) -> np.ndarray | None:
        """Valid actions for observations ``(B, K)`` (their last entry is the current page),
        ``(B, A)`` bool; ``None`` for an agent without a mask."""
        if not self.masked:
            return None
        if self.mask is None:
            raise ModelError(f"masked policy {self.name!r} has no action mask table")
        return self.mask(np.atleast_2d(np.asarray(obs))).cpu().numpy()

    def _checked(self, obs: Any) -> np.ndarray:
        """``obs`` as the network reads it, checked in one vectorised pass
        (:func:`agents.base.check_page_ids`): SB3 would otherwise fail with a bare
        ``IndexError``/``RuntimeError`` in its embedding or one-hot (an id out of range, -1, a
        wrong column count, an empty batch) or read floats as ids."""
        nvec = getattr(self._model().observation_space, "nvec", None)
        if nvec is None:
            return np.asarray(obs)
        extractor = self.policy_kwargs.get("features_extractor_kwargs") or {}
        extras = list(extractor.get("extras") or [])
        layout = f" (env.history_len={len(nvec) - len(extras)}" + (
            f" after the extras {extras})" if extras else ")"
        )
        return check_page_ids(obs, self.name, int(nvec[-1]) - 1, np.asarray(nvec), layout)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        obs = self._checked(observation)
        if self.recurrent:
            return self._model().predict(
                obs, state=state, episode_start=episode_start, deterministic=deterministic
            )
        if self.masked:
            actions, _ = self._model().predict(
                obs, deterministic=deterministic, action_masks=self.action_masks(obs)
            )
            return (actions.reshape(-1)[0] if obs.ndim == 1 else actions), None
        return self._model().predict(obs, deterministic=deterministic)

    def select_state(self, state: Any, keep: np.ndarray) -> Any:
        """The LSTM states ``(layers, B, hidden)`` of the visitors kept."""
        if state is None:
            return None
        return tuple(np.asarray(s)[:, np.asarray(keep, dtype=bool)] for s in state)

    def table_probs(self) -> torch.Tensor | None:
        """With a one-page observation (``history_len=1``) the network is a table over pages:
        its greedy action per page, one-hot ``(P, A)``, for exact policy evaluation (not a
        recurrent policy: it remembers more than the page)."""
        model = self._model()
        if self.recurrent:
            return None
        nvec = getattr(model.observation_space, "nvec", None)
        if nvec is None or len(nvec) != 1 or not isinstance(model.action_space, spaces.Discrete):
            return None
        pages = np.arange(int(nvec[0]) - 1)[:, None]
        actions = np.asarray(self.predict(pages, deterministic=True)[0])
        probs = torch.zeros(len(pages), int(model.action_space.n), dtype=torch.float64)
        probs[torch.arange(len(pages)), torch.as_tensor(actions)] = 1.0
        return probs

    def slate_table(self) -> np.ndarray | None:
        """Slates (``MultiDiscrete`` actions) with a one-page observation: the greedy slate
        of every page, ``(P, k)`` action indices, for exact policy evaluation; else None."""
        model = self._model()
        nvec = getattr(model.observation_space, "nvec", None)
        if (
            nvec is None
            or len(nvec) != 1
            or not isinstance(model.action_space, spaces.MultiDiscrete)
        ):
            return None
        pages = np.arange(int(nvec[0]) - 1)[:, None]
        return np.asarray(model.predict(pages, deterministic=True)[0]).reshape(len(pages), -1)

    @torch.no_grad()
    def action_scores(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """DQN: Q-values; PPO: action log-probabilities; ``(B, A)``. Masked agents: masked
        actions get a log-probability near -1e8 (sb3-contrib's masked logit)."""
        model = self._model()
        obs = self._checked(obs)
        tensor, _ = model.policy.obs_to_tensor(obs)
        if isinstance(model, DQN):
            return model.q_net(tensor).cpu().numpy()
        if self.recurrent:
            # without a visit's state (the web app's one observation): the observation read
            # as the start of a visit, from the LSTM's zero state
            lstm = model.policy.lstm_actor
            zeros = torch.zeros(lstm.num_layers, len(tensor), lstm.hidden_size)
            starts = torch.ones(len(tensor))
            dist, _ = model.policy.get_distribution(tensor, (zeros, zeros), starts)
            return torch.log_softmax(dist.distribution.logits, dim=-1).cpu().numpy()
        if isinstance(model, MaskablePPO):
            masks = self.action_masks(obs)
            dist = model.policy.get_distribution(tensor, action_masks=masks).distribution
        else:
            dist = model.policy.get_distribution(tensor).distribution
        if isinstance(dist, list):  # slates (MultiDiscrete): the top position's log-probabilities
            return torch.log_softmax(dist[0].logits, dim=-1).cpu().numpy()
        return torch.log_softmax(dist.logits, dim=-1).cpu().numpy()

    # ---- persistence: weights as tensors, the rest as JSON (never SB3's pickled .zip) ------

    def _save_state(self, out: Path) -> dict[str, Any]:
        """The policy network's weights (``policy.pt``: a state dict of tensors) and what
        rebuilds the network (JSON in ``policy.json``). SB3's own ``.zip`` holds cloudpickled
        objects (spaces, schedules) that run code when loaded, so it is not written; the
        saved agent predicts and scores, it does not continue training."""
        model = self._model()
        state = {
            "algo": self.algo,
            "double_q": self.double_q,
            "policy": self.policy,
            "policy_kwargs": self.policy_kwargs,
            "observation_space": space_to_json(model.observation_space),
            "action_space": space_to_json(model.action_space),
            "weights": WEIGHTS,
            "sb3_version": sb3_version,
        }
        if self.masked:
            if self.mask is None:
                raise ModelError(f"masked policy {self.name!r} has no action mask table")
            state["mask"] = self.mask.save(out)
        try:
            json.dumps(state, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"agent {self.name!r}: policy_kwargs must be plain JSON data to be saved ({exc})"
            ) from None
        save_weights(model, out)
        return state

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> Policy:
        file = path / "policy.json"
        if "weights" not in manifest and "model" in manifest:
            raise RunFolderError(
                "an SB3 agent saved as SB3's .zip by an older version: its cloudpickled entries "
                "would run code when loaded, so it is not opened; retrain it "
                "(`python scripts/train.py` or `python scripts/pipeline.py`)",
                file=str(file),
            )
        algo, double_q = manifest["algo"], manifest.get("double_q", False)
        if algo not in ALGORITHMS or not isinstance(double_q, bool):
            raise RunFolderError(
                f"algo must be one of {sorted(ALGORITHMS)} and double_q a boolean, got "
                f"{algo!r} and {double_q!r}",
                file=str(file),
            )
        algorithm = DoubleDQN if double_q else ALGORITHMS[algo]
        policy_name = manifest.get("policy", "MlpPolicy")
        known = {**algorithm.policy_aliases, **POLICIES[algo]}  # names, never import paths
        if not isinstance(policy_name, str) or policy_name not in known:
            raise RunFolderError(
                f"policy {policy_name!r} is not one of {sorted(known)} for {algo}",
                file=str(file),
            )
        policy_kwargs = manifest.get("policy_kwargs") or {}
        if not isinstance(policy_kwargs, dict):
            raise RunFolderError("policy_kwargs must be a JSON object", file=str(file))
        obs_space = space_from_json(manifest["observation_space"], file)
        action_space = space_from_json(manifest["action_space"], file)
        weights_file = policy_file(path, manifest, "weights")
        agent = cls(
            algo,
            manifest.get("name"),
            policy=policy_name,
            double_q=double_q,
            policy_kwargs=policy_kwargs,
            verbose=False,
        )
        agent.model = rebuild_with_weights(
            algorithm, known[policy_name], obs_space, action_space, policy_kwargs, weights_file
        )
        if agent.masked:
            agent.mask = ActionMaskTable.load(path, manifest.get("mask"))
            agent.mask_current_page = agent.mask.exclude_current
            if len(agent.mask.action_pages) != int(action_space.n):
                raise RunFolderError(
                    f"the action mask has {len(agent.mask.action_pages)} actions, the policy "
                    f"{int(action_space.n)}",
                    file=str(path / MASK),
                )
        return agent


WEIGHTS = "policy.pt"
"""The SB3 policy network's state dict in a saved agent's folder."""

MASK = "mask.pt"
"""A masked agent's :class:`ActionMaskTable` tensors in its folder."""


class ActionMaskTable:
    """What a masked agent needs to rebuild the simulator core's action mask from an
    observation alone (:func:`envs.core.action_mask`): the page of each action, the candidate
    table of a large site and whether the current page is masked.

    Args:
        action_pages: Page id of each action, ``(A,)`` (-1: "show nothing").
        n_pages: P.
        candidates: The pages each page can lead to, ``(P, k)`` padded with -1, or ``None``.
        exclude_current: Recommending the current page is invalid.
    """

    def __init__(
        self,
        action_pages: torch.Tensor,
        n_pages: int,
        candidates: torch.Tensor | None = None,
        exclude_current: bool = True,
    ) -> None:
        self.action_pages = action_pages.detach().cpu().long()
        self.candidates = None if candidates is None else candidates.detach().cpu().long()
        self.n_pages, self.exclude_current = int(n_pages), bool(exclude_current)

    @classmethod
    def from_core(cls, core: Any, exclude_current: bool = True) -> ActionMaskTable:
        if core.page_groups is not None or core.slate_model is not None:
            raise ConfigError(
                "maskable_ppo masks page actions: it needs env.action_level=page and "
                "env.slate_size=1"
            )
        return cls(core.action_pages, core.n_pages, core.candidates, exclude_current)

    def __call__(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, K)`` observations -> ``(B, A)`` bool (the last entry is the current page)."""
        pages = torch.as_tensor(np.asarray(obs), dtype=torch.long)[:, -1]
        return action_mask(
            pages, self.action_pages, self.n_pages, self.candidates, self.exclude_current
        )

    def save(self, out: Path) -> dict[str, Any]:
        tensors = {"action_pages": self.action_pages}
        if self.candidates is not None:
            tensors["candidates"] = self.candidates
        torch.save(tensors, out / MASK)
        return {"file": MASK, "n_pages": self.n_pages, "exclude_current": self.exclude_current}

    @classmethod
    def load(cls, path: Path, record: Any) -> ActionMaskTable:
        """The table a masked agent saved (tensors read as data), checked.

        Raises:
            RunFolderError: No mask record, or tensors that are not a mask table.
        """
        file = path / "policy.json"
        if not isinstance(record, dict) or not isinstance(record.get("exclude_current"), bool):
            raise RunFolderError("a maskable_ppo agent needs its 'mask' record", file=str(file))
        n_pages = record.get("n_pages")
        if not isinstance(n_pages, int) or isinstance(n_pages, bool) or not 0 < n_pages < 2**31:
            raise RunFolderError(
                f"mask.n_pages must be a page count, got {n_pages!r}", file=str(file)
            )
        tensors_file = policy_file(path, record, "file")
        tensors = load_weights_only(tensors_file, "action mask table")
        pages = tensors.get("action_pages") if isinstance(tensors, dict) else None
        cand = tensors.get("candidates") if isinstance(tensors, dict) else None
        ok = (
            isinstance(pages, torch.Tensor)
            and pages.ndim == 1
            and len(pages) > 0
            and not pages.is_floating_point()
            and int(pages.min()) >= -1
            and int(pages.max()) < n_pages
        )
        if cand is not None:
            ok = ok and (
                isinstance(cand, torch.Tensor)
                and cand.ndim == 2
                and cand.shape[0] == n_pages
                and not cand.is_floating_point()
                and (cand.numel() == 0 or (int(cand.min()) >= -1 and int(cand.max()) < n_pages))
            )
        if not ok:
            raise RunFolderError(
                f"not an action mask table of {n_pages} pages (action_pages (A,) page ids or -1, "
                "candidates (P, k) page ids or -1)",
                file=str(tensors_file),
            )
        return cls(pages, n_pages, cand, record["exclude_current"])


def _with_extras(policy_kwargs: dict[str, Any], extras: list[str]) -> dict[str, Any]:
    """``policy_kwargs`` whose features extractor reads the observation ``extras`` (the env's
    ``SiteCore.extras``), recorded with the policy so that a saved agent rebuilds it.

    Raises:
        ConfigError: ``features_extractor_kwargs.extras`` says other extras than the env's.
    """
    out = dict(policy_kwargs)
    extractor = dict(out.get("features_extractor_kwargs") or {})
    if list(extractor.get("extras", extras)) != extras:
        raise ConfigError(
            f"policy_kwargs.features_extractor_kwargs.extras is {extractor['extras']}, the env "
            f"observes {extras} (env.observe_entry_page, env.observe_position): drop the setting"
        )
    extractor["extras"] = extras
    out["features_extractor_kwargs"] = extractor
    return out


def _is_kind(value: Any) -> bool:
    """Whether ``value`` names a visitor kind (``init_embeddings``'s explicit source)."""
    return isinstance(value, str) and value in visitors.kinds()


def _kind_page_embeddings(data_dir: str | Path, kind: str) -> torch.Tensor:
    """The page embeddings of the ``kind`` visitor model trained on ``data_dir`` (its
    published file under ``simulator/``, verified against these data and read as data only).

    Raises:
        RunFolderError: No such model was trained on these data (naming the command).
        ConfigError: That kind of model has no page embeddings.
    """
    from envs.sequences import load_prepared

    data = load_prepared(data_dir, splits=("train",))
    vectors = visitor_page_embeddings(visitors.get(kind, "agent.init_embeddings").load(data))
    if vectors is None:
        raise ConfigError(
            f"agent.init_embeddings: the {kind!r} visitor model has no page embeddings; name "
            "one that has (a GRU's), or use true, auto or false"
        )
    return vectors


def _with_embedding_dim(policy_kwargs: dict[str, Any], dim: int) -> dict[str, Any]:
    """``policy_kwargs`` whose page embeddings have the visitor model's size ``dim``.

    Raises:
        ConfigError: ``features_extractor_kwargs.embedding_dim`` says another size.
    """
    out = dict(policy_kwargs)
    extractor = dict(out.get("features_extractor_kwargs") or {})
    if extractor.get("embedding_dim", dim) != dim:
        raise ConfigError(
            f"init_embeddings: policy_kwargs.features_extractor_kwargs.embedding_dim is "
            f"{extractor['embedding_dim']}, the visitor model's page embeddings have {dim} "
            "dimensions: drop the setting (it follows the visitor model) or set it to that"
        )
    extractor["embedding_dim"] = dim
    out["features_extractor_kwargs"] = extractor
    return out


def _rebuild(
    algorithm: type[DQN] | type[PPO] | type[MaskablePPO],
    policy: type | str,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    policy_kwargs: dict[str, Any],
) -> DQN | PPO | MaskablePPO:
    """An untrained SB3 model for prediction, built from our own record (no environment):
    what ``BaseAlgorithm.load`` does after unpickling, with the spaces from JSON and the
    policy class from SB3's aliases or :data:`agents.networks.POLICIES` (by name). The replay
    and rollout buffers are made minimal: they are never filled."""
    small = (
        {"buffer_size": 1, "learning_starts": 0}
        if issubclass(algorithm, DQN)
        else {"n_steps": 2, "batch_size": 2}
    )
    model = algorithm(
        policy,
        env=None,
        device="cpu",
        policy_kwargs=_policy_kwargs(policy_kwargs),
        verbose=0,
        _init_setup_model=False,
        **small,
    )
    model.observation_space, model.action_space, model.n_envs = (
        observation_space,
        action_space,
        1,
    )
    model._setup_model()
    return model


def save_weights(model: DQN | PPO | MaskablePPO, out: Path) -> None:
    """The policy network's state dict as tensors on the CPU (``out/policy.pt``), what
    :func:`rebuild_with_weights` reads back."""
    weights = {k: v.detach().cpu() for k, v in model.policy.state_dict().items()}
    torch.save(weights, out / WEIGHTS)


def rebuild_with_weights(
    algorithm: type[DQN] | type[PPO] | type[MaskablePPO],
    policy: type | str,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    policy_kwargs: dict[str, Any],
    weights_file: Path,
) -> DQN | PPO | MaskablePPO:
    """:func:`_rebuild`'s model with the saved state dict in ``weights_file`` loaded (read
    with ``weights_only``: a pickled object is refused unread).

    Raises:
        RunFolderError: Not a state dict of tensors, or weights that do not fit the network.
    """
    weights = load_weights_only(weights_file, "SB3 policy weights")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise RunFolderError("not a state dict of tensors", file=str(weights_file))
    try:
        model = _rebuild(algorithm, policy, observation_space, action_space, policy_kwargs)
        model.policy.load_state_dict(weights)
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as exc:
        # ConfigError (an activation name not in ACTIVATIONS) is a ValueError too
        raise RunFolderError(
            f"the weights do not fit the network policy.json describes ({type(exc).__name__}"
            f": {str(exc)[:300]})",
            file=str(weights_file),
        ) from None
    model.policy.set_training_mode(False)
    return model


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A ``Discrete`` or ``MultiDiscrete`` space as JSON (the only ones the simulator has)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return {"type": "MultiDiscrete", "nvec": [int(v) for v in space.nvec]}
    raise ModelError(f"cannot record the space {space} (Discrete and MultiDiscrete only)")


def space_from_json(record: Any, file: Path) -> spaces.Space:
    """The inverse of :func:`space_to_json`, checked.

    Raises:
        RunFolderError: Not a recorded ``Discrete`` or ``MultiDiscrete`` space (naming ``file``).
    """

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31

    if isinstance(record, dict) and record.get("type") == "Discrete" and count(record.get("n")):
        start = record.get("start", 0)
        if isinstance(start, int) and not isinstance(start, bool) and abs(start) < 2**31:
            return spaces.Discrete(record["n"], start=start)
    if (
        isinstance(record, dict)
        and record.get("type") == "MultiDiscrete"
        and isinstance(record.get("nvec"), list)
        and 0 < len(record["nvec"]) <= 4096
        and all(count(v) for v in record["nvec"])
    ):
        return spaces.MultiDiscrete(np.asarray(record["nvec"], dtype=np.int64))
    raise RunFolderError(
        f"not a recorded Discrete or MultiDiscrete space: {record!r:.200}", file=str(file)
    )
