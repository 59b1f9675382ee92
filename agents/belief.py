"""The best any page-observing policy can do on a site of latent intents: value iteration over
the belief about the visitor's intent.

On a :class:`~agents.tabular.SiteMDP` with ``Z`` intents (each a first-order MDP; a visitor
keeps hers for the whole visit) a policy sees the pages and its own recommendations, never the
intent. After any visit it can know no more than the posterior over her intent, the *belief*
``b``: at the entry page ``s0``, ``b ∝ prior ⊙ entry[:, s0]``; after recommending ``a`` on page
``s`` and seeing her land on ``j``, ``b' ∝ b ⊙ p_z(j | s, a)``. The pair (page, belief) is a
sufficient statistic of the visit, so the optimum over *all* history-dependent policies is the
optimum of the MDP over (page, belief): a POMDP optimum, between the best table over pages
(which re-mixes the intents at each step) and the intent oracle (which knows the intent).

It is computed here with two bounds on a regular grid of the belief simplex (resolution
``m``: ``C(m + Z - 1, Z - 1)`` points, 231 for 3 intents and ``m = 20``):

* **lower** (:func:`belief_lower_bound`): point-based value iteration (Pineau, Gordon and Thrun,
  2003). Each page keeps one *alpha vector* per grid point, the exact per-intent value of a
  conditional plan (a policy tree), so ``max_alpha alpha · b`` at the entry beliefs is the
  value of a policy that only observes pages: a value some policy reaches.
* **upper** (:func:`belief_upper_bound`): grid value iteration with Freudenthal interpolation
  (Lovejoy, 1991). The optimal value is convex in ``b``, so interpolating upper values between
  a grid cell's vertices stays above it; starting from the intent oracle's values (an upper
  bound) every backup keeps it one.

Both count ``max_steps`` steps after the entry page, as the env truncates sessions and as
:func:`agents.tabular.policy_value` scores tables (on the intent store the truncation is worth
about 4 page value per session to the oracle), and need rewards ``>= 0`` (page values).
The gap between the two says how close the grid is; refine ``m`` until it is small enough.
"""

from __future__ import annotations

import itertools
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.base import Policy, current_pages, load_array, policy_file
from agents.tabular import SiteMDP, value_iteration
from clickstream.errors import ConfigError, ModelError, RunFolderError
from envs import visitors
from envs.click_model import build_click_model, click_model_options

if TYPE_CHECKING:
    from agents.site import Site


@dataclass
class BeliefGrid:
    """A regular grid on the belief simplex and the lookups of its Freudenthal triangulation.

    Attributes:
        points: The grid's beliefs, ``(N, Z)`` float64 (rows sum to 1).
        resolution: ``m``; every coordinate is a multiple of ``1 / m``.
        lookup: Grid index of each vertex, by the mixed-radix code of its cumulative counts
            ``x_1 .. x_{Z-1}`` (``x_i = m · sum_{k >= i} b_k``), ``((m + 1) ** (Z - 1),)``;
            -1 where no grid point has that code.
    """

    points: torch.Tensor
    resolution: int
    lookup: torch.Tensor

    @classmethod
    def regular(cls, n_intents: int, resolution: int) -> BeliefGrid:
        """All beliefs whose coordinates are multiples of ``1 / resolution``."""
        z, m = int(n_intents), int(resolution)
        if z < 1 or m < 1:
            raise ModelError(f"a belief grid needs >= 1 intent and resolution >= 1, got {z}, {m}")
        counts = [
            (m - sum(c), *c) for c in itertools.product(range(m + 1), repeat=z - 1) if sum(c) <= m
        ]
        points = torch.tensor(counts, dtype=torch.float64) / m
        lookup = torch.full(((m + 1) ** (z - 1),), -1, dtype=torch.long)
        lookup[cls._code(_cumulative(torch.tensor(counts, dtype=torch.float64)), m)] = torch.arange(
            len(counts)
        )
        return cls(points, m, lookup)

    @property
    def n_intents(self) -> int:
        return self.points.shape[1]

    @staticmethod
    def _code(x: torch.Tensor, m: int) -> torch.Tensor:
        """Mixed-radix code of integer cumulative counts ``(..., Z)`` (``x_0 = m`` dropped)."""
        radix = (m + 1) ** torch.arange(x.shape[-1] - 1)
        return (x[..., 1:].round().long() * radix).sum(-1)

    def interpolation(self, beliefs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid cell holding each belief and its barycentric weights in that cell.

        Args:
            beliefs: ``(..., Z)``, rows on the simplex.

        Returns:
            ``(vertices, weights)``, both ``(..., Z)``: grid indices and weights (``>= 0``,
            summing to 1) with ``sum_k weights_k · points[vertices_k] = belief``.
        """
        m, z = self.resolution, self.n_intents
        if z == 1:  # one intent: the simplex is a point
            shape = beliefs.shape
            return torch.zeros(shape, dtype=torch.long), torch.ones(shape, dtype=beliefs.dtype)
        x = m * _cumulative(beliefs)
        x[..., 0] = m
        base = x.floor().clamp(0, m)
        frac = (x - base)[..., 1:]  # (..., Z - 1)
        order = torch.sort(frac, dim=-1, descending=True, stable=True)
        steps = torch.nn.functional.one_hot(order.indices + 1, z).to(x.dtype)  # (..., Z-1, Z)
        vertices = torch.cat([base[..., None, :], base[..., None, :] + steps.cumsum(-2)], -2)
        d = order.values
        weights = torch.cat([1 - d[..., :1], d[..., :-1] - d[..., 1:], d[..., -1:]], dim=-1).clamp(
            min=0
        )
        code = self._code(vertices.clamp(max=m), m).clamp(max=len(self.lookup) - 1)
        index = self.lookup[code]
        # a vertex off the simplex only ever comes with weight 0 (an exact grid coordinate)
        weights = torch.where(index >= 0, weights, torch.zeros_like(weights))
        return index.clamp(min=0), weights / weights.sum(-1, keepdim=True)


def _cumulative(beliefs: torch.Tensor) -> torch.Tensor:
    """``x_i = sum_{k >= i} b_k`` along the last axis."""
    return beliefs.flip(-1).cumsum(-1).flip(-1)


@dataclass
class BeliefBound:
    """A bound on the belief-state optimum.

    Attributes:
        value: Mean return per session, bounded, over the entry distribution.
        per_page: Values at each page's grid points, ``(P, N)`` (the lower bound: of the
            best alpha vector at each point).
        horizon: Backups run (steps after the entry page).
        plans: The lower bound: the most distinct alpha vectors (policy trees) a page kept;
            the upper bound: the grid's points.
    """

    value: float
    per_page: torch.Tensor
    horizon: int
    plans: int


def _action_rows(mdp: SiteMDP) -> torch.Tensor:
    """``p_z(j | s, a)`` for every intent, ``(P, A, P + 1, Z)``."""
    return torch.stack(
        [mdp.action_rows(z, torch.arange(mdp.n_actions)) for z in range(mdp.n_intents)], -1
    )


def _supports(rows: torch.Tensor) -> list[torch.Tensor]:
    """Pages each page can lead to under any action and intent (``EXIT`` left out: it pays 0)."""
    p = rows.shape[0]
    reach = (rows[:, :, :p] > 0).any(-1).any(1)  # (P, P)
    return [reach[s].nonzero().flatten() for s in range(p)]


def _problem(
    mdp: SiteMDP, resolution: int, horizon: int | None
) -> tuple[int, BeliefGrid, torch.Tensor, list[torch.Tensor]]:
    """What both bounds start from: the horizon (default the env's), the grid, the action rows
    ``(P, A, P + 1, Z)`` and each page's successors.

    Raises:
        ClickstreamError: A negative reward (the bounds need rewards ``>= 0``).
    """
    if float(mdp.reward.min()) < 0:
        raise ModelError("the belief bounds need rewards >= 0 (page values)")
    horizon = mdp.max_steps if horizon is None else int(horizon)
    rows = _action_rows(mdp)
    return horizon, BeliefGrid.regular(mdp.n_intents, resolution), rows, _supports(rows)


def _entry_weights(mdp: SiteMDP) -> torch.Tensor:
    """Unnormalised beliefs after the entry page, ``(P, Z)``: ``prior_z · entry_z(s)``."""
    return (mdp.prior[:, None] * mdp.entry).T


def entry_belief(world: SiteMDP) -> torch.Tensor:
    """The belief on entering by each page, ``(P, Z)``; a visit first seen on a page nobody
    enters by (the web app's path, a window of the history) starts from the prior."""
    entry = _entry_weights(world)
    mass = entry.sum(1, keepdim=True)
    return torch.where(mass > 0, entry / mass.clamp(min=1e-300), world.prior[None])


def belief_lower_bound(
    mdp: SiteMDP, resolution: int = 20, horizon: int | None = None
) -> BeliefBound:
    """Point-based value iteration: a value some page-observing policy reaches.

    Every backup at a grid belief ``b`` of page ``s`` builds, for each action, the alpha vector
    ``alpha_a(z) = sum_j p_z(j | s, a) (r_j + alpha_j(z))``, where ``alpha_j`` is the vector of
    page ``j`` best at the next belief ``b ⊙ p(j | s, a)``, and keeps the action whose vector
    scores highest at ``b``. Each vector is the exact per-intent value of a policy tree with
    ``k`` steps to go, so after ``horizon`` backups from zero the bound is attained by a policy
    over the env's sessions (``horizon`` steps after the entry page, as
    :func:`agents.tabular.policy_value` scores them).
    """
    plans = point_based_plans(mdp, resolution, horizon)
    entry = _entry_weights(mdp)  # (P, Z)
    value = float(torch.einsum("pmz,pz->pm", plans.vectors, entry).max(1).values.sum())
    grid = BeliefGrid.regular(mdp.n_intents, resolution).points
    per_page = torch.einsum("pmz,nz->pnm", plans.vectors, grid).max(-1).values
    return BeliefBound(value, per_page, plans.horizon, plans.vectors.shape[1])


@dataclass
class Plans:
    """Alpha vectors of point-based value iteration and the first action of each.

    Attributes:
        vectors: Per page, the distinct vectors, ``(P, M, Z)`` (padding rows: :data:`_NEVER`).
        actions: The action each vector's plan starts with, ``(P, M)``.
        horizon: Backups run.
        rows: The action rows planned with, ``p_z(j | s, a)``, ``(P, A, P + 1, Z)``.
    """

    vectors: torch.Tensor
    actions: torch.Tensor
    horizon: int
    rows: torch.Tensor


def point_based_plans(mdp: SiteMDP, resolution: int = 20, horizon: int | None = None) -> Plans:
    """The alpha vectors of :func:`belief_lower_bound` (see there), with their actions."""
    horizon, grid, rows, supports = _problem(mdp, resolution, horizon)
    g, r = grid.points, mdp.reward
    p, n = mdp.n_pages, len(grid.points)
    # the vectors of each page (duplicates dropped: many grid points share a plan), padded
    # with a vector that never wins (its score is hugely negative at any belief)
    vectors = torch.zeros(p, 1, mdp.n_intents, dtype=torch.float64)
    actions = torch.full((p, 1), mdp.n_actions - 1, dtype=torch.long)
    for _ in range(horizon):
        new = torch.empty(p, n, mdp.n_intents, dtype=torch.float64)
        new_actions = torch.empty(p, n, dtype=torch.long)
        for s in range(p):
            nxt = supports[s]
            t = rows[s][:, nxt]  # (A, d, Z)
            # the score of every next page's vectors at every next belief b ⊙ p(j | s, a),
            # as one matrix product over the Z intents (3x faster than the einsum)
            u = t[:, :, None, :] * vectors[nxt][None]  # (A, d, M, Z)
            scores = g @ u.reshape(-1, u.shape[-1]).T  # (N, A · d · M)
            best = scores.view(n, *u.shape[:3]).argmax(-1)  # (N, A, d)
            chosen = vectors[nxt[None, None, :], best]  # (N, A, d, Z)
            vec = (t[None] * (r[nxt][None, None, :, None] + chosen)).sum(2)  # (N, A, Z)
            vec = vec + rows[s][None, :, p, :] * r[p]  # EXIT pays r[P] (0 for page values)
            pick = (vec * g[:, None, :]).sum(-1).argmax(1)  # (N,)
            new[s], new_actions[s] = vec[torch.arange(n), pick], pick
        vectors, actions = _unique_padded(new, new_actions)
    return Plans(vectors, actions, horizon, rows)


_NEVER = -1e30
"""The padding vector's entries: with beliefs >= 0 and not all 0 it scores below any plan."""


def _unique_padded(
    vectors: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each page's distinct vectors and their actions, ``(P, N, Z)`` -> ``(P, M, Z)`` padded
    with :data:`_NEVER` (and ``(P, M)`` actions)."""
    kept = []
    for v, a in zip(vectors, actions, strict=True):
        unique, inverse = torch.unique(v, dim=0, return_inverse=True)
        first = torch.full((len(unique),), len(v), dtype=torch.long)
        first = first.scatter_reduce(0, inverse, torch.arange(len(v)), "amin")
        kept.append((unique, a[first]))
    width = max(len(u) for u, _ in kept)
    out = torch.full((len(kept), width, vectors.shape[-1]), _NEVER, dtype=vectors.dtype)
    out_actions = torch.zeros(len(kept), width, dtype=torch.long)
    for s, (u, a) in enumerate(kept):
        out[s, : len(u)], out_actions[s, : len(a)] = u, a
    return out, out_actions


def belief_upper_bound(
    mdp: SiteMDP, resolution: int = 20, horizon: int | None = None
) -> BeliefBound:
    """Grid value iteration with Freudenthal interpolation: an upper bound on what any
    page-observing policy can reach in ``horizon`` steps after the entry page (the optimal
    ``k``-step value is convex in the belief, so interpolating its upper values between a grid
    cell's vertices stays above it; every backup from the exact zero keeps that)."""
    horizon, grid, rows, supports = _problem(mdp, resolution, horizon)
    g, r = grid.points, mdp.reward
    p = mdp.n_pages
    cells = []
    for s in range(p):  # the next beliefs do not change between backups: interpolate once
        t = rows[s][:, supports[s]]  # (A, d, Z)
        w = g[:, None, None, :] * t[None]  # (N, A, d, Z)
        mass = w.sum(-1)  # (N, A, d): p(j | s, a, b)
        beliefs = w / mass.clamp(min=1e-300)[..., None]
        vertices, weights = grid.interpolation(beliefs)
        exit_mass = (g[:, None, :] * rows[s][None, :, p, :]).sum(-1)  # (N, A)
        cells.append((supports[s], mass, vertices, weights, exit_mass))
    v = torch.zeros(p, len(g), dtype=torch.float64)
    for _ in range(horizon):
        new = torch.empty_like(v)
        for s, (nxt, mass, vertices, weights, exit_mass) in enumerate(cells):
            later = (v[nxt[None, None, :, None], vertices] * weights).sum(-1)  # (N, A, d)
            q = (mass * (r[nxt] + later)).sum(-1) + exit_mass * r[p]  # (N, A)
            new[s] = q.max(1).values
        v = new
    entry = _entry_weights(mdp)
    mass = entry.sum(1)
    seen = mass > 0
    vertices, weights = grid.interpolation(entry[seen] / mass[seen, None])
    pages = torch.arange(p)[seen]
    value = float((mass[seen] * (v[pages[:, None], vertices] * weights).sum(-1)).sum())
    return BeliefBound(value, v, horizon, len(g))


@dataclass
class BeliefOptimum:
    """Both bounds of the belief-state optimum at one grid resolution."""

    lower: float
    upper: float
    resolution: int
    lower_plans: int
    grid_points: int

    @property
    def gap(self) -> float:
        return self.upper - self.lower


def belief_optimum(mdp: SiteMDP, resolution: int = 20, horizon: int | None = None) -> BeliefOptimum:
    """Lower and upper bounds of the best page-observing policy's mean return per session."""
    lo = belief_lower_bound(mdp, resolution, horizon)
    hi = belief_upper_bound(mdp, resolution, horizon)
    return BeliefOptimum(lo.value, hi.value, int(resolution), lo.plans, hi.plans)


# ---- a policy that plays the plans, tracking each visitor's belief -------------------------

MAX_ROW_CELLS = 50_000_000
"""Largest ``P × A × (P + 1) × Z`` table of action rows a belief policy keeps (float32:
200 MB): the belief update needs ``p_z(j | s, a)`` for every step it may see."""


def refuse_observation_extras(site: Site, name: str) -> None:
    """A belief policy tracks the visit from the pages themselves and replays an observation
    as pages (:meth:`BeliefPolicy.action_scores`): the env's observation extras would be read
    as pages, so they are refused.

    Raises:
        ConfigError: ``env.observe_entry_page`` or ``env.observe_position`` is on.
    """
    on = [key for key in ("observe_entry_page", "observe_position") if site.env.get(key)]
    if on:
        raise ConfigError(
            f"{name} tracks the visitor's belief from the pages she viewed and reads "
            f"observations as pages only: set {' and '.join(f'env.{k}=false' for k in on)}"
        )


def kind_with_tables(model: str, agent: str) -> str:
    """The name of the visitor kind ``model``, which must have first-order tables per type.

    Raises:
        ConfigError: An unknown kind, or one without tables (a GRU), naming those with.
    """
    chosen = visitors.get(model, key="model")
    if not chosen.tables:
        with_tables = [k.name for k in visitors.kinds().values() if k.tables]
        raise ConfigError(
            f"{agent} needs first-order tables per visitor type; model {model!r} has none "
            f"({with_tables} have)"
        )
    return chosen.name


class BeliefPolicy(Policy):
    """A policy that tracks each visitor's belief about her type through her visit with a
    visitor model's first-order rows per type, and acts on (page, belief): a recurrent policy
    whose state is the belief, the page it acted on and the action it took.

    The belief is moved by ``p_z(j | s, a)``, read from one of two forms of the same rows:
    ``rows``, every action's rows per type at once (``(P, A, P + 1, Z)``: the point-based
    planner's own table, small sites only), or ``world``, the types' organic rows with the
    click model (:meth:`agents.tabular.SiteMDP.landing_likelihood`: any size).

    Subclasses say how to act on a belief (:meth:`choose`) and how to score the actions
    there (:meth:`scores`).
    """

    recurrent = True
    rows: torch.Tensor | None = None  # (P, A, P + 1, Z) float32
    world: SiteMDP | None = None  # or the types' organic rows and the click model
    entry: torch.Tensor | None = None  # (P, Z) the belief on entering by each page

    def tracking(self) -> torch.Tensor:
        """The entry beliefs, ``(P, Z)``, once the policy can track a belief."""
        if self.entry is None or (self.rows is None and self.world is None):
            raise ModelError(f"policy {self.name!r} is not fitted yet")
        return self.entry

    def track_like(self, other: BeliefPolicy) -> None:
        """Track beliefs exactly as ``other`` does (a student of its teacher)."""
        self.entry = other.tracking().clone()
        self.rows, self.world = other.rows, other.world

    def likelihood(
        self, pages: torch.Tensor, actions: torch.Tensor, landed: torch.Tensor
    ) -> torch.Tensor:
        """``p_z(landed | page, action)`` per type, ``(B, Z)`` float64."""
        self.tracking()
        if self.world is not None:
            return self.world.landing_likelihood(pages, actions, landed)
        assert self.rows is not None
        return self.rows[pages, actions, landed].double()

    def n_actions(self) -> int:
        """Actions the policy chooses among."""
        self.tracking()
        return self.world.n_actions if self.world is not None else self.rows.shape[1]

    def beliefs(self, pages: torch.Tensor, state: Any, starts: torch.Tensor) -> torch.Tensor:
        """Each visitor's belief on landing on ``pages`` ``(B,)``: from her entry page where
        ``starts``, else her last belief moved by what she did after its action."""
        entry = self.tracking()
        fresh = entry[pages]
        if state is None:
            return fresh / fresh.sum(1, keepdim=True).clamp(min=1e-300)
        belief, last_page, last_action = (torch.as_tensor(x) for x in state)
        moved = belief * self.likelihood(last_page, last_action, pages)
        # a move the model calls impossible (or a new visit) restarts from the entry belief
        lost = starts | (moved.sum(1) <= 0)
        b = torch.where(lost[:, None], fresh, moved)
        return b / b.sum(1, keepdim=True).clamp(min=1e-300)

    def choose(self, pages: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """The action ``(B,)`` at each (page, belief)."""
        return self.scores(pages, belief).argmax(1)

    @abstractmethod
    def scores(self, pages: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """The score of every action at each (page, belief), ``(B, A)``; higher is better."""

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """Actions ``(B,)`` and the new state ``(belief, page, action)`` per visitor."""
        n_pages = len(self.tracking())
        obs = np.atleast_2d(np.asarray(observation))
        pages = current_pages(obs).clamp(max=n_pages - 1)
        starts = (
            torch.ones(len(pages), dtype=torch.bool)
            if episode_start is None
            else torch.as_tensor(np.asarray(episode_start), dtype=torch.bool).reshape(-1)
        )
        belief = self.beliefs(pages, state, starts)
        chosen = self.choose(pages, belief)
        out = chosen.numpy()
        return (out[0] if np.asarray(observation).ndim == 1 else out), (belief, pages, chosen)

    def select_state(self, state: Any, keep: np.ndarray) -> Any:
        if state is None:
            return None
        mask = torch.as_tensor(np.asarray(keep), dtype=torch.bool)
        return tuple(torch.as_tensor(x)[mask] for x in state)

    def action_scores(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """:meth:`scores` at the belief the observed pages give, replayed with the policy's
        own recommendations from the first page of the observation (the web app's path),
        ``(B, A)``."""
        p = len(self.tracking())
        hist = torch.as_tensor(np.atleast_2d(np.asarray(obs)), dtype=torch.long)
        state, started = None, torch.zeros(len(hist), dtype=torch.bool)
        for k in range(hist.shape[1]):
            page = hist[:, k]
            seen = page < p
            if not bool(seen.any()):
                continue
            # rows still before their first page restart at it (episode_start stays True)
            _, state = self.predict(hist[:, : k + 1].clamp(max=p - 1).numpy(), state, ~started)
            started |= seen
        if state is None:
            return np.zeros((len(hist), self.n_actions()))
        belief, pages, _ = state
        return self.scores(pages, belief).numpy()


class BeliefValueIteration(BeliefPolicy):
    """Point-based value iteration over the belief about the visitor's type, played by
    tracking each visitor's belief through her visit (:class:`BeliefPolicy`).

    With ``model: latent_class`` it plans in the learned world's visitor types and is
    deployable (it sees only pages and its own recommendations); with ``model: true`` it plans
    in the synthetic store's true intents: the belief-state reference, the best any
    page-observing policy can do, between the intent-weighted table and the intent oracle.

    Args:
        model: A visitor kind with first-order tables per type (:mod:`envs.visitors`):
            ``latent_class`` (learned types), ``true`` (the store's intents), ``markov`` (one
            type: plain value iteration).
        name: Policy name in results.
        resolution: The belief grid's ``m`` (:class:`BeliefGrid`).
        horizon: Backups (default the env's ``max_steps``).
    """

    kind = "belief_value_iteration"

    def __init__(
        self,
        model: str,
        name: str = "belief_value_iteration",
        resolution: int = 8,
        horizon: int | None = None,
    ) -> None:
        self.name, self.model = name, kind_with_tables(model, "belief value iteration")
        self.resolution = int(resolution)
        self.horizon = None if horizon is None else int(horizon)
        self.vectors: torch.Tensor | None = None  # (P, M, Z)
        self.actions: torch.Tensor | None = None  # (P, M)
        self.reward: torch.Tensor | None = None  # (P + 1,)

    def fit(self, site: Site) -> dict[str, Any]:
        refuse_observation_extras(site, self.name)
        mdp = site.kind_mdp(self.model)
        cells = mdp.n_pages * mdp.n_actions * (mdp.n_pages + 1) * mdp.n_intents
        if cells > MAX_ROW_CELLS:
            raise ConfigError(
                f"belief value iteration keeps every action row per type: {cells:,} cells "
                f"here, above {MAX_ROW_CELLS:,}; use page groups (env.action_level=group) or "
                "a smaller site"
            )
        start = time.perf_counter()
        value = self.plan(mdp)
        return {
            "model_value": value,  # the plans' value in the model planned in (a lower bound)
            "plans_per_page": int(self._fitted()[0].shape[1]),
            "types": mdp.n_intents,
            "seconds": time.perf_counter() - start,
        }

    def plan(self, mdp: SiteMDP) -> float:
        """Plan in ``mdp`` (its types are what the policy believes in); returns the plans'
        value there, :func:`belief_lower_bound`'s."""
        plans = point_based_plans(mdp, self.resolution, self.horizon)
        self.vectors, self.actions = plans.vectors, plans.actions
        self.rows = plans.rows.float()
        self.entry = entry_belief(mdp)
        self.reward = mdp.reward.clone()
        return float(
            torch.einsum("pmz,pz->pm", self.vectors, _entry_weights(mdp)).max(1).values.sum()
        )

    def _fitted(self) -> tuple[torch.Tensor, ...]:
        if self.vectors is None or self.actions is None or self.rows is None:
            raise ModelError(f"policy {self.name!r} is not fitted yet")
        assert self.entry is not None and self.reward is not None
        return self.vectors, self.actions, self.rows, self.entry, self.reward

    def choose(self, pages: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """The action of the best plan at each (page, belief)."""
        vectors, actions, *_ = self._fitted()
        best = torch.einsum("bmz,bz->bm", vectors[pages], belief).argmax(1)
        return actions[pages, best]

    def scores(self, pages: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """The value of each action at (page, belief), ``(B, A)``:
        ``sum_j max_alpha sum_z b_z p_z(j | s, a) (r_j + alpha_j(z))``."""
        vectors, _, rows, _, reward = self._fitted()
        p = len(vectors)
        t = rows[pages, :, :p].double()  # (B, A, P, Z)
        w = belief[:, None, None, :] * t
        later = torch.einsum("bajz,jmz->bajm", w, vectors).max(-1).values  # (B, A, P)
        now = (w.sum(-1) * reward[:p]).sum(-1)  # (B, A)
        return now + later.sum(-1)

    def _save_state(self, out: Path) -> dict[str, Any]:
        vectors, actions, rows, entry, reward = self._fitted()
        arrays = {
            "vectors": vectors.numpy(),
            "actions": actions.numpy(),
            "rows": rows.numpy(),
            "entry": entry.numpy(),
            "reward": reward.numpy(),
        }
        for key, array in arrays.items():
            np.save(out / f"{key}.npy", array)
        return {
            **{key: f"{key}.npy" for key in arrays},
            "model": self.model,
            "resolution": self.resolution,
            "horizon": self.horizon,
        }

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> Policy:
        arrays = {
            key: torch.as_tensor(load_array(policy_file(path, manifest, key)))
            for key in ("vectors", "actions", "rows", "entry", "reward")
        }
        p, m, z = arrays["vectors"].shape
        a = arrays["rows"].shape[1]
        shapes = {
            "actions": (p, m),
            "rows": (p, a, p + 1, z),
            "entry": (p, z),
            "reward": (p + 1,),
        }
        for key, shape in shapes.items():
            if tuple(arrays[key].shape) != shape:
                raise RunFolderError(
                    f"{key} must have shape {shape} (from vectors {(p, m, z)}), got "
                    f"{tuple(arrays[key].shape)}",
                    file=str(path / manifest[key]),
                )
        policy = cls(
            str(manifest["model"]),
            str(manifest.get("name", cls.kind)),
            int(manifest.get("resolution", 8)),
            manifest.get("horizon"),
        )
        policy.vectors = arrays["vectors"].double()
        policy.actions = arrays["actions"].long()
        policy.rows = arrays["rows"].float()
        policy.entry, policy.reward = arrays["entry"].double(), arrays["reward"].double()
        return policy


# ---- QMDP: the types' own values, weighed by the belief ------------------------------------


def save_world(out: Path, world: SiteMDP, prefix: str = "world_") -> dict[str, Any]:
    """Write the tables a belief is tracked with (``.npy``, data only) and return their
    manifest entries; :func:`load_world` reads them back."""
    arrays = {
        "transitions": world.transitions.numpy(),
        "entry": world.entry.numpy(),
        "prior": world.prior.numpy(),
        "reward": world.reward.numpy(),
        "action_pages": world.action_pages.numpy(),
    }
    if world.shown is not None:
        arrays["shown"] = world.shown.numpy()
    files = {}
    for key, array in arrays.items():
        np.save(out / f"{prefix}{key}.npy", array)
        files[f"{prefix}{key}"] = f"{prefix}{key}.npy"
    kind, params = click_model_options(world.click_model)
    return {
        **files,
        f"{prefix}click_model": {"kind": kind, "params": params},
        f"{prefix}max_steps": world.max_steps,
    }


def load_world(path: Path, manifest: dict[str, Any], prefix: str = "world_") -> SiteMDP:
    """The tables :func:`save_world` wrote, checked to fit one another.

    Raises:
        RunFolderError: A missing or malformed table or click model.
    """

    def array(key: str) -> torch.Tensor:
        return torch.as_tensor(load_array(policy_file(path, manifest, prefix + key)))

    click = manifest.get(f"{prefix}click_model")
    if not isinstance(click, dict) or not isinstance(click.get("params"), dict):
        raise RunFolderError(
            f"{prefix}click_model must be {{kind, params}}, got {click!r}", file=str(path)
        )
    try:
        click_model = build_click_model(str(click.get("kind")), **click["params"])
        world = SiteMDP(
            transitions=array("transitions").double(),
            entry=array("entry").double(),
            prior=array("prior").double(),
            reward=array("reward").double(),
            click_model=click_model,
            action_pages=array("action_pages").long(),
            shown=array("shown").bool() if f"{prefix}shown" in manifest else None,
            max_steps=int(manifest.get(f"{prefix}max_steps", 50)),
        )
    except (ConfigError, ModelError, TypeError, ValueError) as exc:
        raise RunFolderError(
            f"the saved world's tables do not fit: {exc}", file=str(path)
        ) from None
    if world.shown is not None and tuple(world.shown.shape) != (
        world.n_actions,
        world.n_pages + 1,
    ):
        raise RunFolderError(
            f"{prefix}shown must have shape {(world.n_actions, world.n_pages + 1)} (actions, "
            f"pages + 1), got {tuple(world.shown.shape)}",
            file=str(path),
        )
    # page actions name the page shown (group actions: ``shown`` lists the pages)
    bad = (world.action_pages < -1) | (world.action_pages >= world.n_pages)
    if world.shown is None and bool(bad.any()):
        raise RunFolderError(
            f"{prefix}action_pages holds ids outside [-1, {world.n_pages})", file=str(path)
        )
    return world


class BeliefQMDP(BeliefPolicy):
    """Each type's optimal action values, weighed by the belief: ``Q(s, b, a) = Σ_z b_z
    Q*_z(s, a)`` (QMDP; Littman, Cassandra and Kaelbling, 1995), the belief tracked through
    the visit with the types' rows.

    It acts as if the visitor's type would be known from the next step on, so it never
    recommends a page only to learn her type; it is not the belief-state optimum
    (:class:`BeliefValueIteration`) but costs ``Z`` value iterations (``O(Z · P · A)`` per
    sweep with the multinomial boost) and no ``P × A × P`` table, so it plans for sites of
    thousands of pages, where it is the history-aware planner to beat and to learn from.

    Args:
        model: A visitor kind with first-order tables per type (``latent_class``: the
            learned world's types, deployable; ``true``: the store's intents, a reference).
        name: Policy name in results.
    """

    kind = "belief_qmdp"

    def __init__(self, model: str, name: str = "belief_qmdp") -> None:
        self.name, self.model = name, kind_with_tables(model, "QMDP")
        self.q: torch.Tensor | None = None  # (Z, P, A) float32

    def fit(self, site: Site) -> dict[str, Any]:
        refuse_observation_extras(site, self.name)
        start = time.perf_counter()
        self.plan(site.kind_mdp(self.model))
        return {"types": int(self.q.shape[0]), "seconds": time.perf_counter() - start}

    def plan(self, world: SiteMDP) -> None:
        """Value iteration per type of ``world`` (what the policy believes in)."""
        self.q = torch.stack([value_iteration(world, z).q for z in range(world.n_intents)]).float()
        self.world, self.rows, self.entry = world, None, entry_belief(world)

    def scores(self, pages: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """``Σ_z b_z Q*_z(s, a)`` at each (page, belief), ``(B, A)``."""
        if self.q is None:
            raise ModelError(f"policy {self.name!r} is not fitted yet")
        return torch.einsum("bz,zba->ba", belief.float(), self.q[:, pages])

    def _save_state(self, out: Path) -> dict[str, Any]:
        if self.q is None or self.world is None:
            raise ModelError(f"policy {self.name!r} is not fitted yet")
        np.save(out / "q.npy", self.q.numpy())
        return {"q": "q.npy", "model": self.model, **save_world(out, self.world)}

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> Policy:
        world = load_world(path, manifest)
        q = torch.as_tensor(load_array(policy_file(path, manifest, "q"))).float()
        shape = (world.n_intents, world.n_pages, world.n_actions)
        if tuple(q.shape) != shape:
            raise RunFolderError(
                f"q must have shape {shape} (types, pages, actions of the saved world), got "
                f"{tuple(q.shape)}",
                file=str(path / manifest["q"]),
            )
        policy = cls(str(manifest["model"]), str(manifest.get("name", cls.kind)))
        policy.q, policy.world, policy.entry = q, world, entry_belief(world)
        return policy
