"""The site as a tabular MDP: exact value iteration, exact policy evaluation, Q-learning.

A first-order view of the simulator (:mod:`envs.core`): the **state** is the visitor's current
page (``P`` states; ``EXIT`` is terminal), an **action** is one of the core's recommendations
(a page, a page group, or nothing), the **transition** is the click model applied to the page's
organic next-page row (recommending the page itself shows nothing, as in the simulator: its
row is the organic one; a page group holding the page still shows its other pages), and the
**reward** is that of the page landed on. With ``Z > 1`` latent
intents (the synthetic store's ``intent`` mode) there is one such MDP per intent; a visitor
keeps its intent for the whole session.

* :func:`value_iteration` solves one MDP to a stated tolerance: on the true first-order model
  it is the true optimum; per intent it is the intent oracle's bound.
* :func:`policy_value` evaluates any policy that is a table over pages exactly, per intent,
  over the env's finite horizon (``max_steps``), so it matches the simulator's mean return.
* :func:`q_learning` learns the same table from simulated steps (batched, in the core).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.base import Policy, TablePolicy, current_pages, load_array, policy_file
from clickstream import checks
from clickstream.errors import ConfigError, ModelError, RunFolderError, from_options
from envs import visitors
from envs.click_model import ClickModel, MultinomialBoost
from envs.core import SiteCore, own_page_shows_nothing

if TYPE_CHECKING:
    from agents.site import Site

MAX_DENSE_CELLS = 80_000_000
"""Largest ``P × A × (P + 1)`` action-transition tensor held at once (float64: 640 MB);
bigger sites are processed in chunks of actions."""


@dataclass
class SiteMDP:
    """The tables of a site's first-order MDP(s).

    Attributes:
        transitions: Organic next-page rows, ``(Z, P, P + 1)`` (``EXIT`` last), float64.
        entry: Entry distribution per intent, ``(Z, P)``.
        prior: Intent prior, ``(Z,)`` (``[1.0]`` for a first-order site).
        reward: Reward of landing on each state, ``(P + 1,)`` (``EXIT``: 0).
        click_model: How a recommendation changes a row.
        action_pages: What each action recommends, ``(A,)``: a page id, or with group
            actions a group id; ``-1`` shows nothing.
        shown: With group actions, the pages each action shows, ``(A, P + 1)`` bool
            (:meth:`envs.core.SiteCore.shown_mask`); ``None`` when actions are pages.
        max_steps: The env's horizon (steps before truncation).
    """

    transitions: torch.Tensor
    entry: torch.Tensor
    prior: torch.Tensor
    reward: torch.Tensor
    click_model: ClickModel
    action_pages: torch.Tensor
    shown: torch.Tensor | None = None
    max_steps: int = 50

    def __post_init__(self) -> None:
        z, p, width = self.transitions.shape
        if width != p + 1 or self.entry.shape != (z, p) or self.prior.shape != (z,):
            raise ModelError(
                f"SiteMDP needs transitions (Z, P, P+1), entry (Z, P), prior (Z,); got "
                f"{tuple(self.transitions.shape)}, {tuple(self.entry.shape)}, "
                f"{tuple(self.prior.shape)}"
            )
        if self.reward.shape != (p + 1,):
            raise ModelError(f"reward must have shape ({p + 1},)")

    @property
    def n_pages(self) -> int:
        return self.transitions.shape[1]

    @property
    def n_intents(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return len(self.action_pages)

    @classmethod
    def from_core(
        cls,
        core: SiteCore,
        transitions: np.ndarray | torch.Tensor | None = None,
        entry: np.ndarray | torch.Tensor | None = None,
    ) -> SiteMDP:
        """The MDP of a core whose dynamics are tables (Markov or the synthetic truth).

        Args:
            core: The simulator; its click model, rewards, actions and horizon are used.
            transitions: Replace the core's organic rows by these, ``(P, P + 1)`` or
                ``(Z, P, P + 1)`` (e.g. a first-order model fitted on the train split while
                the core runs a GRU).
            entry: With ``transitions``: their entry distribution, ``(P,)`` or ``(Z, P)``.
        """
        chains = core.dynamics.chains()
        if transitions is None:
            if chains is None:
                raise ModelError(
                    f"{type(core.dynamics).__name__} has no first-order transition tables (a "
                    "model with memory, such as a GRU or a latent-type GRU that kept its memory "
                    "stage, or a site too large for dense tables); plan in a kind with tables "
                    "or pass transitions= (e.g. a first-order model fitted on the train split)"
                )
            transitions, entry = chains.transitions, chains.entry
        t = torch.as_tensor(transitions, dtype=torch.float64).cpu()
        e = torch.as_tensor(entry, dtype=torch.float64).cpu()
        if t.ndim == 2:
            t, e = t[None], e[None]
        prior = None if chains is None else chains.prior
        if prior is None or len(prior) != t.shape[0]:
            prior = torch.ones(t.shape[0]) / t.shape[0]
        shown = None
        if core.page_groups is not None:
            shown = core.shown_mask(torch.arange(core.n_actions)).cpu()
        return cls(
            transitions=t,
            entry=e,
            prior=torch.as_tensor(prior, dtype=torch.float64).cpu(),
            reward=core.reward_per_page.to(torch.float64).cpu(),
            click_model=core.click_model,
            action_pages=core.action_pages.cpu(),
            shown=shown,
            max_steps=core.max_steps,
        )

    def first_order(self) -> SiteMDP:
        """The single first-order MDP a visitor-agnostic model sees: the intents mixed by how
        often each visits each page (exact when ``Z = 1``)."""
        if self.n_intents == 1:
            return self
        visits = torch.stack(
            [
                _visits(self.transitions[z], self.entry[z], self.max_steps)
                for z in range(self.n_intents)
            ]
        )  # (Z, P)
        weight = self.prior[:, None] * visits
        rows = (weight[:, :, None] * self.transitions).sum(0)
        rows = rows / rows.sum(1, keepdim=True).clamp(min=1e-300)
        return SiteMDP(
            rows[None],
            (self.prior[:, None] * self.entry).sum(0)[None],
            torch.ones(1, dtype=torch.float64),  # as from_core's: policy_value's dot product
            self.reward,
            self.click_model,
            self.action_pages,
            self.shown,
            self.max_steps,
        )

    def recommended(self, pages: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """What page actions ``actions`` recommend on ``pages`` (both ``(n,)``): the action's
        page, or -1 (nothing) where that is the page itself, as in
        :meth:`envs.core.SiteCore.step`. (Group actions use ``shown`` as it is: a group holding
        the page shows its other pages.)"""
        return own_page_shows_nothing(self.action_pages[actions], pages)

    def action_rows(self, z: int, actions: torch.Tensor) -> torch.Tensor:
        """Next-state distributions of every page under each of ``actions``: ``(P, len, P + 1)``."""
        if len(self._chunks()) == 1:  # small enough to keep: value iteration reuses it
            cache = self.__dict__.setdefault("_rows", {})
            if z not in cache:
                cache[z] = self._action_rows(z, torch.arange(self.n_actions))
            return cache[z][:, actions]
        return self._action_rows(z, actions)

    def _action_rows(self, z: int, actions: torch.Tensor) -> torch.Tensor:
        p, n = self.n_pages, len(actions)
        organic = self.transitions[z][:, None, :].expand(p, n, p + 1).reshape(p * n, p + 1)
        if self.shown is None:
            pages = torch.arange(p).repeat_interleave(n)
            out = self.click_model.apply(organic, self.recommended(pages, actions.repeat(p)))
        else:
            out = self.click_model.apply_set(organic, self.shown[actions].repeat(p, 1))
        return out.reshape(p, n, p + 1)

    def landing_likelihood(
        self, pages: torch.Tensor, actions: torch.Tensor, landed: torch.Tensor
    ) -> torch.Tensor:
        """``p_z(landed | page, action)`` for every intent, ``(B, Z)``: what a belief about
        the visitor's intent is moved by after one step, computed from the organic rows of
        the pages seen only (``O(B · Z · P)``: no ``P × A × P`` table, so it tracks beliefs
        on sites of thousands of pages)."""
        pages, actions, landed = (torch.as_tensor(x).long().cpu() for x in (pages, actions, landed))
        out = torch.empty(len(pages), self.n_intents, dtype=torch.float64)
        for z in range(self.n_intents):
            organic = self.transitions[z][pages]
            if self.shown is None:
                moved = self.click_model.apply(organic, self.recommended(pages, actions))
            else:
                moved = self.click_model.apply_set(organic, self.shown[actions])
            out[:, z] = moved.gather(1, landed[:, None])[:, 0]
        return out

    def policy_rows(self, z: int, probs: torch.Tensor) -> torch.Tensor:
        """Next-state distributions of every page under a policy table, ``(P, P + 1)``:
        ``Σ_a π(a | s) p_a(· | s)``, over the (page, action) pairs the policy can take only (a
        deterministic table: ``P`` rows, not the ``P × A`` of every action)."""
        p = self.n_pages
        pages, actions = torch.nonzero(probs > 0, as_tuple=True)
        rows = torch.zeros(p, p + 1, dtype=torch.float64)
        for chunk in torch.arange(len(pages)).split(max(1, MAX_DENSE_CELLS // (p + 1))):
            s, a = pages[chunk], actions[chunk]
            organic = self.transitions[z][s]
            if self.shown is None:
                out = self.click_model.apply(organic, self.recommended(s, a))
            else:
                out = self.click_model.apply_set(organic, self.shown[a])
            rows.index_add_(0, s, out * probs[s, a][:, None])
        return rows

    def q_backup(self, z: int, v: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
        """``Q(s, a) = Σ_j p_a(j | s) · (r_j + γ · V(j))`` with ``V(EXIT) = 0``: ``(P, A)``."""
        target = self.reward + gamma * torch.cat([v, v.new_zeros(1)])
        chunks = self._chunks()
        if (
            len(chunks) > 1
            and self.shown is None
            and isinstance(self.click_model, MultinomialBoost)
        ):
            return self._boost_backup(z, target)  # large sites: O(P·A), not O(P²·A), a sweep
        return torch.cat([self.action_rows(z, chunk) @ target for chunk in chunks], dim=1)

    def _boost_backup(self, z: int, target: torch.Tensor) -> torch.Tensor:
        """:meth:`q_backup` in closed form for one recommended page under the multinomial
        boost: ``p'(j) = (p(j) + k·p(a)·[j = a]) / (1 + k·p(a))`` with ``k = e^β - 1``, so
        ``Q(s, a) = (Σ_j p(j)·t_j + k·p(a)·t_a) / (1 + k·p(a))``: ``(P, A)``."""
        rows = self.transitions[z]  # (P, P + 1)
        pages = self.action_pages.clamp(min=0)
        # (P, A): "nothing" and the page itself show nothing
        shows = own_page_shows_nothing(self.action_pages, torch.arange(self.n_pages)[:, None]) >= 0
        p_a = rows[:, pages] * shows.to(rows.dtype)  # (P, A); 0: none shown
        k = math.exp(self.click_model.beta) - 1.0
        return ((rows @ target)[:, None] + k * p_a * target[pages][None, :]) / (1.0 + k * p_a)

    def _chunks(self) -> list[torch.Tensor]:
        p, a = self.n_pages, self.n_actions
        size = max(1, min(a, MAX_DENSE_CELLS // (p * (p + 1))))
        return list(torch.arange(a).split(size))


def _visits(rows: torch.Tensor, entry: torch.Tensor, horizon: int) -> torch.Tensor:
    """Expected views of each page per session of a chain, ``(P,)``."""
    p = rows.shape[0]
    inner = rows[:, :p]
    occupancy, total = entry.clone(), entry.clone()
    for _ in range(horizon - 1):
        occupancy = occupancy @ inner
        total += occupancy
    return total


@dataclass
class ValueIterationResult:
    """Attributes: ``q`` ``(P, A)``, ``v`` ``(P,)``, sweeps run and the last max change."""

    q: torch.Tensor
    v: torch.Tensor
    iterations: int
    residual: float


def value_iteration(
    mdp: SiteMDP, z: int = 0, *, gamma: float = 1.0, tol: float = 1e-9, max_iter: int = 10_000
) -> ValueIterationResult:
    """Optimal values of intent ``z``'s MDP (undiscounted by default: sessions end surely).

    Stops when ``max |V_{n+1} - V_n| < tol``. Every visitor leaves with positive probability
    from every page, so the Bellman operator contracts even with ``gamma = 1``; the stationary
    optimum ignores the truncation at ``max_steps`` (sessions that long are rare).

    Raises:
        ClickstreamError: No convergence within ``max_iter`` sweeps.
    """
    v = torch.zeros(mdp.n_pages, dtype=torch.float64)
    for it in range(1, max_iter + 1):
        q = mdp.q_backup(z, v, gamma)
        new = q.max(dim=1).values
        residual = float((new - v).abs().max())
        v = new
        if residual < tol:
            return ValueIterationResult(q, v, it, residual)
    raise ModelError(
        f"value iteration did not converge in {max_iter} sweeps (last change {residual:.3g})"
    )


def intent_weighted_q(mdp: SiteMDP, *, tol: float = 1e-9) -> torch.Tensor:
    """A table over pages that knows the intents' values but not the visitor's intent:
    ``Q(s, a) = sum_z p(z | s) Q*_z(s, a)``, ``p(z | s)`` proportional to ``prior_z`` times the
    organic views of ``s`` under intent z, ``(P, A)``.

    A reference for studies of history (it needs the true intents, like the intent oracle):
    it shows what a policy that sees only the current page can gain over value iteration on
    the first-order model, which re-mixes the intents at every step. With one intent it is
    value iteration's ``Q``.
    """
    views = torch.stack(
        [_visits(mdp.transitions[z], mdp.entry[z], mdp.max_steps) for z in range(mdp.n_intents)]
    )  # (Z, P)
    weight = mdp.prior[:, None] * views
    weight = weight / weight.sum(0, keepdim=True).clamp(min=1e-300)
    q = torch.stack([value_iteration(mdp, z, tol=tol).q for z in range(mdp.n_intents)])
    return torch.einsum("zp,zpa->pa", weight, q)


def policy_value(mdp: SiteMDP, probs: torch.Tensor, horizon: int | None = None) -> dict:
    """Exact mean return per session of a policy that is a table over pages.

    Args:
        mdp: The world (its intents, entry, click model and rewards).
        probs: Action probabilities per page, ``(P, A)``, or per intent ``(Z, P, A)`` (the
            intent oracle).
        horizon: Steps per session (default the env's ``max_steps``: truncation included).

    Returns:
        ``mean_return`` over sessions and ``per_intent`` returns (list, length Z).
    """
    horizon = mdp.max_steps if horizon is None else int(horizon)
    probs = torch.as_tensor(probs, dtype=torch.float64)
    per_intent = []
    for z in range(mdp.n_intents):
        pi = probs[z] if probs.ndim == 3 else probs
        rows = mdp.policy_rows(z, pi)
        expected = rows @ mdp.reward  # (P,) reward of the next step
        inner = rows[:, : mdp.n_pages]
        v = torch.zeros(mdp.n_pages, dtype=torch.float64)
        for _ in range(horizon):
            v = expected + inner @ v
        per_intent.append(float(mdp.entry[z] @ v))
    mean = float(torch.tensor(per_intent, dtype=torch.float64) @ mdp.prior)
    return {"mean_return": mean, "per_intent": per_intent}


@dataclass
class QLearningResult:
    """Attributes: ``q`` ``(P, A)``, transitions used, and the learning curve
    (``(steps, mean reward per step)`` pairs)."""

    q: torch.Tensor
    steps: int
    curve: list[tuple[int, float]]


@dataclass(frozen=True)
class QLearningSettings:
    """:func:`q_learning`'s settings, checked when made (messages name ``agent.<key>``): a
    budget below 1 would save an untrained table, a ``gamma`` or ε outside [0, 1] or a learning
    rate that grows with the visits a table that means nothing.

    Raises:
        ConfigError: A setting out of its range, naming it.
    """

    total_steps: int = 2_000_000
    gamma: float = 1.0
    lr_power: float = 0.6
    min_lr: float = 0.002
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    exploration_fraction: float = 0.5
    log_every: int = 100_000

    def __post_init__(self) -> None:
        checked = {
            "total_steps": checks.whole("agent.total_steps", self.total_steps, unit=" of steps"),
            "gamma": checks.unit_interval("agent.gamma", self.gamma),
            # α = max(min_lr, n ** -lr_power) must not grow with the visit count n, nor exceed 1
            "lr_power": checks.number(
                "agent.lr_power",
                self.lr_power,
                lambda v: 0 <= v < math.inf,
                "in [0, inf)",
                finite=False,
            ),
            "min_lr": checks.number(
                "agent.min_lr", self.min_lr, lambda v: 0 < v <= 1, "in (0, 1]", finite=False
            ),
            "epsilon_start": checks.unit_interval("agent.epsilon_start", self.epsilon_start),
            "epsilon_end": checks.unit_interval("agent.epsilon_end", self.epsilon_end),
            "exploration_fraction": checks.unit_interval(
                "agent.exploration_fraction", self.exploration_fraction
            ),
            "log_every": checks.whole("agent.log_every", self.log_every, unit=" of steps"),
        }
        for name, value in checked.items():  # as the types the loop uses
            object.__setattr__(self, name, value)


def q_learning(core: SiteCore, *, seed: int = 0, **settings: Any) -> QLearningResult:
    """Tabular Q-learning over (current page, action), run on all of the core's visitors at once.

    Every visitor acts ε-greedily (ε falls linearly from ``epsilon_start`` to ``epsilon_end``
    over ``exploration_fraction`` of the steps); each batch of transitions updates
    ``Q(s, a) += α · mean(target - Q(s, a))`` over the batch's duplicates of ``(s, a)``, with
    ``α = max(min_lr, n(s, a) ** -lr_power)`` for the visit count ``n`` (a Robbins-Monro
    schedule, so the table converges on a fixed MDP). Truncated sessions bootstrap.

    Args:
        core: The simulator to learn in (its ``n_visitors`` transitions per batch).
        seed: Seeds the core and the exploration.
        **settings: :class:`QLearningSettings` (``total_steps``: visitor steps in all, ...).

    Raises:
        ConfigError: A setting out of range (:class:`QLearningSettings`).
    """
    s = QLearningSettings(**settings)
    p, a, b = core.n_pages, core.n_actions, core.n_visitors
    q = torch.zeros(p + 1, a, dtype=torch.float64)  # row P (EXIT) stays 0
    visits = torch.zeros(p + 1, a, dtype=torch.float64)
    rng = torch.Generator().manual_seed(int(seed) + 1)
    obs = core.reset(seed).cpu()
    n_batches = max(1, -(-int(s.total_steps) // b))
    curve, reward_sum, reward_n = [], 0.0, 0
    for i in range(n_batches):
        frac = min(1.0, i / max(1.0, s.exploration_fraction * n_batches))
        eps = s.epsilon_start + frac * (s.epsilon_end - s.epsilon_start)
        state = obs[:, -1]
        greedy = q[state].argmax(1)
        explore = torch.rand(b, generator=rng) < eps
        action = torch.where(explore, torch.randint(0, a, (b,), generator=rng), greedy)
        r = core.step(action)
        landed, reward = r.landed.cpu(), r.reward.cpu().double()
        target = reward + s.gamma * q[landed].max(1).values * (landed != p)
        flat = state * a + action
        counts = torch.bincount(flat, minlength=(p + 1) * a).double().view(p + 1, a)
        delta = torch.zeros((p + 1) * a, dtype=torch.float64)
        delta.index_add_(0, flat, target - q.view(-1)[flat])
        visits += counts
        seen = counts > 0
        lr = visits[seen].pow(-s.lr_power).clamp(min=s.min_lr)
        q[seen] += lr * delta.view(p + 1, a)[seen] / counts[seen]
        obs = r.obs.cpu()
        reward_sum, reward_n = reward_sum + float(reward.sum()), reward_n + b
        if (i + 1) * b // s.log_every > i * b // s.log_every or i == n_batches - 1:
            curve.append(((i + 1) * b, reward_sum / reward_n))
            reward_sum, reward_n = 0.0, 0
    return QLearningResult(q[:p].float(), n_batches * b, curve)


# ---- policies ---------------------------------------------------------------------------------


class ValueIterationPolicy(TablePolicy):
    """The optimal table of a first-order MDP, by :func:`value_iteration`.

    Args:
        name: Policy name in results.
        model: The visitor kind whose first-order tables are solved (:mod:`envs.visitors`,
            one with ``tables``): ``markov`` (the default), the first-order model counted on
            the train split (a deployable policy: ``value_iteration``); ``true``, the
            synthetic store's true model mixed over intents (``true_optimum``: in ``markov``
            mode the exact optimum of the ground truth); ``latent_class``, the fitted visitor
            types mixed likewise.
        gamma: Discount of the Bellman backup (1: undiscounted, as sessions are scored).
        tol: Stop when the value changes by less than this (max over pages).
    """

    kind = "value_iteration"

    def __init__(
        self,
        name: str = "value_iteration",
        model: str | None = None,
        gamma: float = 1.0,
        tol: float = 1e-9,
    ) -> None:
        chosen = visitors.first_order() if model is None else visitors.get(model, key="model")
        if not chosen.tables:
            with_tables = [k.name for k in visitors.kinds().values() if k.tables]
            raise ConfigError(
                f"value iteration model must be a visitor model of first-order tables "
                f"{with_tables}, got {model!r}"
            )
        super().__init__(None, name)
        self.model, self.gamma, self.tol = chosen.name, float(gamma), float(tol)

    def fit(self, site: Site) -> dict[str, Any]:
        """Solve the model's first-order MDP.

        Returns:
            The run record's ``fit`` (``run.json``): ``iterations`` and ``residual`` of value
            iteration, and ``model_value``: the value of an entering visitor *in the model it
            planned in* (``model``'s first-order MDP, intents mixed), over an untruncated
            session (the stationary value, ``env.max_steps`` ignored) and discounted by
            ``gamma``. It is neither the env's truncated return nor the value in another world
            (``eval/results.json`` has those): a visitor model's optimum may be worth about
            twice what the same table earns in the ground truth.
        """
        mdp = site.kind_mdp(self.model).first_order()
        result = value_iteration(mdp, gamma=self.gamma, tol=self.tol)
        self.set_scores(result.q)
        value = float(mdp.entry[0] @ result.v)
        return {"iterations": result.iterations, "residual": result.residual, "model_value": value}


class IntentOracle(Policy):
    """Sees each visitor's latent intent and plays that intent's optimal table: an upper bound
    no deployable policy can exceed (synthetic ``intent`` mode; ground truth only)."""

    needs_latent_state = True
    kind = "intent_oracle"

    def __init__(self, name: str = "intent_oracle", gamma: float = 1.0, tol: float = 1e-9):
        self.name, self.gamma, self.tol = name, float(gamma), float(tol)
        self.q: torch.Tensor | None = None  # (Z, P, A)

    def fit(self, site: Site) -> dict[str, Any]:
        mdp = site.true_mdp()
        self.q = torch.stack(
            [
                value_iteration(mdp, z, gamma=self.gamma, tol=self.tol).q
                for z in range(mdp.n_intents)
            ]
        )
        return {"intents": mdp.n_intents}

    def _q(self) -> torch.Tensor:
        if self.q is None:
            raise ModelError("policy 'intent_oracle' is not fitted yet")
        return self.q

    def action_scores(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Without the intent: the scores averaged over intents (not what it plays)."""
        q = self._q().mean(0)
        pages = current_pages(obs, q.shape[0], self.name)
        scores = q[pages.clamp(max=q.shape[0] - 1)]
        scores[pages == q.shape[0]] = 0.0  # no current page: no preference, as in a table
        return scores.numpy()

    def predict_latent(self, obs: torch.Tensor, core: SiteCore) -> torch.Tensor:
        """Actions ``(B,)`` from the core's true state (its dynamics must expose ``intent``)."""
        intent = core.dynamics.intent(core.state).cpu()
        n_pages = self._q().shape[1]
        # the "no page" id P shows a visitor who left: any action will do (never acted on)
        pages = current_pages(obs, n_pages, self.name).clamp(max=n_pages - 1)
        return self._q()[intent, pages].argmax(1)

    def table_probs(self) -> torch.Tensor:
        q = self._q()
        probs = torch.zeros_like(q)
        probs.scatter_(2, q.argmax(2, keepdim=True), 1.0)
        return probs

    def _save_state(self, out: Path) -> dict[str, Any]:
        np.save(out / "q.npy", self._q().numpy())
        return {"q": "q.npy"}

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> Policy:
        file = policy_file(path, manifest, "q")
        q = load_array(file)
        if q.ndim != 3:
            raise RunFolderError(f"q must be (Z, P, A), got shape {q.shape}", file=str(file))
        policy = cls(str(manifest.get("name", "intent_oracle")))
        policy.q = torch.as_tensor(q)
        return policy


class QLearningPolicy(TablePolicy):
    """Tabular Q-learning in the learned simulator (:func:`q_learning`).

    Args:
        name: Policy name in results.
        n_envs: Visitors simulated together (transitions per update).
        **settings: :class:`QLearningSettings` (``total_steps``, ``gamma``, ...), checked
            here, so a bad or unknown one fails before any work.

    Raises:
        ConfigError: A setting out of its range or unknown, naming it.
    """

    kind = "q_learning"

    def __init__(self, name: str = "q_learning", n_envs: int = 1024, **settings: Any) -> None:
        super().__init__(None, name)
        self.n_envs = checks.whole("agent.n_envs", n_envs, unit=" of visitors")
        self.settings = from_options(QLearningSettings, settings, "agent")

    def fit(self, site: Site) -> dict[str, Any]:
        core = site.core(self.n_envs, "learned")
        start = time.perf_counter()
        result = q_learning(core, seed=site.seed, **dataclasses.asdict(self.settings))
        seconds = time.perf_counter() - start
        self.set_scores(result.q)
        for steps, mean_reward in result.curve:
            site.log_scalars({"train/mean_reward_per_step": mean_reward}, steps)
        site.log_scalars({"time/fps": result.steps / max(seconds, 1e-9)}, result.steps)
        return {
            "steps": result.steps,
            "budget_steps": self.settings.total_steps,
            "seconds": seconds,
        }
