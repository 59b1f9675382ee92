"""Slate recommenders: exact slate value iteration, greedy top-k, SlateQ.

A slate policy shows ``k`` pages at once (``env.slate_size``; :mod:`envs.slate` for the choice
models). Its action per visitor is ``k`` indices into the core's ``action_pages`` (``(B, k)``).

**Exact slate optimisation without enumerating slates.** With ``t_j = r_j + γ V(j)`` the value
of landing on page ``j``, a slate's value from page ``s`` is ``Q(s, S) = Σ_j p'_S(j | s) t_j``:
the SlateQ decomposition (Ie et al., 2019) of the slate's value into item-wise values combined
through the choice model. It is exact here, because in the first-order site the visitor's next
state is the page she lands on, whatever slate brought her there. The best slate is then found
exactly:

* **Position-biased MNL**: ``Q(s, S) = (A + Σ_i ε_i κ p(s_i) t_{s_i}) / (1 + Σ_i ε_i κ p(s_i))``,
  a ratio of sums over positions. Dinkelbach's method solves it: for a guess ``λ``, the slate
  maximising ``Σ_i ε_i κ p(s_i) (t_{s_i} - λ)`` puts the pages of the largest positive
  ``κ p(x) (t_x - λ)`` in decreasing order on the positions (``ε`` is non-increasing: the
  rearrangement inequality), and ``λ ← Q(s, that slate)`` increases to the optimum in a few
  iterations (finite convergence; we stop when ``λ`` no longer moves).
* **Cascade**: with ``u_x = t_x - A`` (gain over moving organically), ``a_x`` the click
  probability and ``η`` the continuation probability, ``Q(s, S) = A + Σ_i a_i u_i Π_{l<i}
  η (1 - a_l)``. Swapping two neighbours changes the value by the sign of
  ``a u / (1 - η + η a)`` of each, so an optimal slate is sorted by that key and a dynamic
  programme over the sorted pages (pick at most ``k``) is exact: ``O(N k)`` per page.

Enumerating all ordered slates (``tests/unit/test_slate.py`` does it on small sites) gives the
same values. :func:`slate_value_iteration` applies this backup until the values settle, so its
policy is the exact optimum of the **untruncated** (infinite-horizon, stationary) slate MDP, for
any number of pages. The env and :func:`slate_policy_value` stop a session at ``max_steps``;
the optimum at that horizon is a non-stationary policy (backward induction), worth more by a
margin that vanishes as long sessions become rare: on the 50-page ``markov`` store with slates
of 5 and ``max_steps`` 50, 113.2423 against slate value iteration's 113.2234 (1.7e-4
relative; cascade 3.4e-5), while with ``max_steps`` 2 on a toy site a stationary table found by enumeration beats it by
4.5 % (``tests/unit/test_slate.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agents.base import Policy, current_pages, load_array, policy_file
from clickstream.errors import ConfigError, ModelError, RunFolderError
from envs import visitors
from envs.slate import Cascade, PositionMNL, SlateModel, dedupe

if TYPE_CHECKING:
    from agents.site import Site
    from agents.tabular import SiteMDP
    from envs.core import SiteCore


def best_slates(
    model: SlateModel,
    rows: torch.Tensor,
    target: torch.Tensor,
    items: torch.Tensor,
    *,
    allow_empty: bool = True,
    max_iter: int = 100,
    current: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best slate from each of ``S`` states and its value.

    Args:
        model: The slate choice model.
        rows: Organic next-page distributions of the states, ``(S, P + 1)``.
        target: Value of landing on each outcome, ``(P + 1,)`` or per state ``(S, P + 1)``.
        items: The recommendable page ids, ``(N,)`` (``N >= k``).
        allow_empty: Positions may show nothing (the "nothing" action exists); else the top
            position is always filled.
        current: The page each state's visitor is on, ``(S,)``: showing it shows nothing (as
            in the env), so it is never picked. ``None``: no page is excluded.

    Returns:
        Values ``(S,)`` and slates ``(S, k)`` of indices into ``items`` (-1: empty), top first.
    """
    k = model.slate_size
    s = rows.shape[0]
    tgt = target.expand(s, -1) if target.ndim == 1 else target
    base = (rows * tgt).sum(1)  # (S,) value of moving organically
    p_items = rows[:, items]  # (S, N)
    t_items = tgt[:, items]
    if len(items) < k:
        raise ConfigError(f"a slate of {k} needs at least {k} recommendable pages")
    own = None if current is None else items[None, :] == current.to(items.device)[:, None]
    if isinstance(model, PositionMNL):
        eps = torch.as_tensor(model.examination, dtype=rows.dtype)
        c = model.kappa * p_items
        if own is not None:
            c = c.masked_fill(own, 0.0)  # the visitor's own page: no boost, never worth it
        lam = base.clone()
        for _ in range(max_iter):
            vals, idx = (c * (t_items - lam[:, None])).topk(k, dim=1)
            use = vals > 0
            if not allow_empty:
                use[:, 0] = True
            ci = c.gather(1, idx) * use * eps
            new = (base + (ci * t_items.gather(1, idx)).sum(1)) / (1.0 + ci.sum(1))
            done = bool(((new - lam).abs() <= 1e-12 * (1.0 + lam.abs())).all())
            lam = new
            if done:
                break
        return lam, torch.where(use, idx, -1)
    if isinstance(model, Cascade):
        return _cascade_best(model, p_items, t_items, base, allow_empty, own)
    raise ModelError(f"unknown slate model {type(model).__name__}")


def _cascade_best(
    model: Cascade,
    p_items: torch.Tensor,
    t_items: torch.Tensor,
    base: torch.Tensor,
    allow_empty: bool,
    own: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`best_slates` for the cascade: sort by the exchange key, then a DP (docstring);
    ``own`` ``(S, N)`` marks each state's own page, which is never picked (it shows nothing)."""
    k, eta = model.slate_size, model.continue_prob
    a = torch.sigmoid(model.alpha + model.gamma * torch.log(p_items.clamp(min=model.min_prob)))
    if own is not None:
        a = a.masked_fill(own, 0.0)  # g = a·u = 0: the DP never takes it
    u = t_items - base[:, None]
    key = a * u / (1.0 - eta + eta * a).clamp(min=1e-300)
    order = key.argsort(dim=1, descending=True)  # (S, N)
    g = (a * u).gather(1, order)
    h = (eta * (1.0 - a)).gather(1, order)
    s, n = g.shape
    best = torch.zeros(s, k + 1, dtype=g.dtype)  # best[:, m]: at most m picks from the suffix
    take = torch.zeros(n, s, k + 1, dtype=torch.bool)
    for i in range(n - 1, -1, -1):
        pick = g[:, i : i + 1] + h[:, i : i + 1] * best[:, :-1]  # (S, k)
        pick = torch.where(g[:, i : i + 1] > 0, pick, torch.full_like(pick, -torch.inf))
        better = pick > best[:, 1:]
        take[i, :, 1:] = better
        best = torch.cat([best[:, :1], torch.where(better, pick, best[:, 1:])], dim=1)
    slates = torch.full((s, k), -1, dtype=torch.long)
    left = torch.full((s,), k, dtype=torch.long)
    filled = torch.zeros(s, dtype=torch.long)
    rows = torch.arange(s)
    for i in range(n):  # backtrack: walk the sorted pages, taking those the DP took
        took = take[i, rows, left] & (left > 0)
        slates[rows[took], filled[took]] = order[took, i]
        filled += took.long()
        left -= took.long()
    value = base + best[:, k]
    if not allow_empty:  # nothing chosen: the best single page must still be shown
        none = filled == 0
        first = (g[:, 0] + 0.0).clone()
        slates[none, 0] = order[none, 0]
        value = torch.where(none, base + first, value)
    return value, slates


def slate_value_iteration(
    mdp: SiteMDP,
    model: SlateModel,
    z: int = 0,
    *,
    gamma: float = 1.0,
    tol: float = 1e-9,
    max_iter: int = 10_000,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Optimal values ``(P,)`` and slates ``(P, k)`` (page ids, -1 empty) of intent ``z``'s
    slate MDP, by value iteration with the exact slate backup of :func:`best_slates`; and the
    sweeps run. The optimum is the stationary one of the untruncated MDP: it ignores the
    truncation at ``max_steps`` (module docstring for the gap).

    Raises:
        ClickstreamError: No convergence within ``max_iter`` sweeps.
    """
    items, allow_empty = _items(mdp)
    rows = mdp.transitions[z]
    v = torch.zeros(mdp.n_pages, dtype=torch.float64)
    for it in range(1, max_iter + 1):
        target = mdp.reward + gamma * torch.cat([v, v.new_zeros(1)])
        new, slates = best_slates(
            model, rows, target, items, allow_empty=allow_empty, current=torch.arange(len(rows))
        )
        residual = float((new - v).abs().max())
        v = new
        if residual < tol:
            return v, torch.where(slates >= 0, items[slates.clamp(min=0)], -1), it
    raise ModelError(f"slate value iteration did not converge in {max_iter} sweeps")


def _items(mdp: SiteMDP) -> tuple[torch.Tensor, bool]:
    if mdp.shown is not None:
        raise ConfigError("slates need page actions (env.action_level=page)")
    pages = mdp.action_pages
    return pages[pages >= 0], bool((pages < 0).any())


def slate_policy_value(
    mdp: SiteMDP, model: SlateModel, slates: torch.Tensor, horizon: int | None = None
) -> dict[str, Any]:
    """Exact mean return per session of a slate table, over the env's horizon.

    Args:
        mdp: The world (intents, entry, rewards).
        model: The slate choice model.
        slates: Page ids shown on each page, ``(P, k)`` (-1: empty; repeats are emptied).
    """
    horizon = mdp.max_steps if horizon is None else int(horizon)
    slates = torch.as_tensor(slates, dtype=torch.long)
    shown = dedupe(slates, torch.arange(len(slates)))  # a page's own page shows nothing
    per_intent = []
    for z in range(mdp.n_intents):
        rows = model.apply(mdp.transitions[z], shown)
        expected, inner = rows @ mdp.reward, rows[:, : mdp.n_pages]
        v = torch.zeros(mdp.n_pages, dtype=torch.float64)
        for _ in range(horizon):
            v = expected + inner @ v
        per_intent.append(float(mdp.entry[z] @ v))
    mean = float(torch.tensor(per_intent, dtype=torch.float64) @ mdp.prior)
    return {"mean_return": mean, "per_intent": per_intent}


def slate_one_step_value(mdp: SiteMDP, model: SlateModel, slates: torch.Tensor) -> float:
    """Exact expected reward of a session's first decision under a slate table: the entry
    pages and intents as the logs mix them, ``Σ_z prior_z Σ_s entry_z(s) r_z(s, S(s))``.

    Args:
        mdp: The world (intents, entry, rewards).
        model: The slate choice model.
        slates: Page ids shown on each page, ``(P, k)`` (-1: empty; repeats are emptied).
    """
    slates = torch.as_tensor(slates, dtype=torch.long)
    shown = dedupe(slates, torch.arange(len(slates)))  # a page's own page shows nothing
    per_intent = torch.stack(
        [
            mdp.entry[z] @ (model.apply(mdp.transitions[z], shown) @ mdp.reward)
            for z in range(mdp.n_intents)
        ]
    )
    return float(per_intent @ mdp.prior)


def greedy_top_k(mdp: SiteMDP, model: SlateModel) -> torch.Tensor:
    """Greedy top-k slates ``(P, k)`` (page ids, -1 empty): per page, the ``k`` pages with the
    highest expected reward of the next step when recommended alone (the single-page click
    model), best first, keeping only pages that beat showing nothing."""
    items, _ = _items(mdp)
    rows = mdp.transitions[0]
    base = rows @ mdp.reward  # (P,)
    single = mdp.click_model.apply(
        rows[:, None, :].expand(-1, len(items), -1).reshape(-1, rows.shape[1]),
        items.repeat(rows.shape[0]),
    ).reshape(rows.shape[0], len(items), -1)
    value = single @ mdp.reward  # (P, N)
    own = items[None, :] == torch.arange(rows.shape[0])[:, None]
    value = torch.where(own, base[:, None], value)  # the page itself shows nothing
    vals, idx = value.topk(model.slate_size, dim=1)
    return torch.where(vals > base[:, None] + 1e-12, items[idx], -1)


# ---- policies ---------------------------------------------------------------------------------


class SlateTablePolicy(Policy):
    """A slate per current page: ``slates`` ``(P, k)`` action indices (``(B, k)`` actions).

    An empty position is the "nothing" action, or, where the env has none, a repeat of the
    top position's page (a repeat shows nothing).
    """

    kind = "slate_table"

    def __init__(self, name: str = "slate_table") -> None:
        self.name = name
        self.slates: torch.Tensor | None = None  # (P, k) action indices
        self.item_values: torch.Tensor | None = None  # (P, A) scores for the web app

    def set_slates(self, pages: torch.Tensor, core: SiteCore, values: torch.Tensor) -> None:
        """From page ids ``(P, k)`` (-1 empty) and a score per (page, action) ``(P, A)``."""
        action_of = torch.full((core.n_pages,), -1, dtype=torch.long)
        ap = core.action_pages.cpu()
        valid = ap >= 0
        action_of[ap[valid]] = torch.arange(len(ap))[valid]
        nothing = int(torch.nonzero(~valid)[0, 0]) if bool((~valid).any()) else None
        acts = torch.where(pages >= 0, action_of[pages.clamp(min=0)], -1)
        filler = acts[:, :1] if nothing is None else torch.full_like(acts[:, :1], nothing)
        acts = torch.where(acts >= 0, acts, filler.expand_as(acts))
        if bool((acts < 0).any()):  # an all-empty slate and no "nothing": show the best page
            acts = torch.where(acts < 0, values.argmax(1, keepdim=True).expand_as(acts), acts)
        self.slates, self.item_values = acts, values.to(torch.float64)

    def _table(self) -> torch.Tensor:
        if self.slates is None:
            raise ModelError(f"policy {self.name!r} is not fitted yet")
        return self.slates

    def slate_table(self) -> torch.Tensor:
        """The slate of every current page, ``(P, k)`` action indices."""
        return self._table()

    def action_scores(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        pages = current_pages(obs).clamp(max=self._table().shape[0] - 1)
        assert self.item_values is not None
        return self.item_values[pages].numpy()

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        obs = np.asarray(observation)
        pages = current_pages(np.atleast_2d(obs)).clamp(max=self._table().shape[0] - 1)
        slates = self._table()[pages].numpy()
        return (slates[0] if obs.ndim == 1 else slates), None

    def _save_state(self, out: Path) -> dict[str, Any]:
        np.save(out / "slates.npy", self._table().numpy())
        assert self.item_values is not None
        np.save(out / "item_values.npy", self.item_values.numpy())
        return {"slates": "slates.npy", "item_values": "item_values.npy"}

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> Policy:
        slates = load_array(policy_file(path, manifest, "slates"))
        values = load_array(policy_file(path, manifest, "item_values"))
        if slates.ndim != 2 or values.ndim != 2 or slates.shape[0] != values.shape[0]:
            raise RunFolderError(f"slates (P, k) and item_values (P, A) expected in {path}")
        policy = cls(str(manifest.get("name", cls.kind)))
        policy.slates = torch.as_tensor(slates, dtype=torch.long)
        policy.item_values = torch.as_tensor(values, dtype=torch.float64)
        return policy


def _slate_core(site: Site) -> SiteCore:
    core = site.template
    if core.slate_model is None:
        raise ConfigError("slate agents need env.slate_size > 1")
    return core


class SlateValueIteration(SlateTablePolicy):
    """The optimal slate table of a first-order MDP (:func:`slate_value_iteration`).

    Args:
        model: ``markov`` (the first-order model counted on the train split: deployable) or
            ``true`` (the synthetic store's own model: the exact optimum of the untruncated
            slate MDP, :func:`slate_value_iteration`).
    """

    kind = "slate_value_iteration"

    def __init__(
        self, name: str = "slate_value_iteration", model: str | None = None, tol: float = 1e-9
    ) -> None:
        super().__init__(name)
        chosen = visitors.first_order() if model is None else visitors.get(model, key="model")
        if not chosen.tables:
            raise ConfigError(f"slate value iteration needs a model with tables, got {model!r}")
        self.model, self.tol = chosen.name, float(tol)

    def fit(self, site: Site) -> dict[str, Any]:
        """Solve the model's first-order slate MDP.

        Returns:
            The run record's ``fit`` (``run.json``): ``iterations`` (sweeps) and
            ``model_value``, the value of an entering visitor in the model it planned in
            (``model``'s first-order MDP, intents mixed) over an untruncated session: not the
            env's truncated return, nor the value in another world (``eval/results.json``).
        """
        core = _slate_core(site)
        mdp = site.kind_mdp(self.model).first_order()
        v, pages, sweeps = slate_value_iteration(mdp, core.slate_model, tol=self.tol)
        q1 = mdp.q_backup(0, v)  # single-page Q: a ranking of pages for people
        self.set_slates(pages, core, q1)
        return {"iterations": sweeps, "model_value": float(mdp.entry[0] @ v)}


class SlateGreedy(SlateTablePolicy):
    """Greedy top-k (:func:`greedy_top_k`) on the first-order model of the train split."""

    kind = "slate_greedy"

    def __init__(self, name: str = "slate_greedy") -> None:
        super().__init__(name)

    def fit(self, site: Site) -> dict[str, Any]:
        core = _slate_core(site)
        mdp = site.markov_mdp()
        pages = greedy_top_k(mdp, core.slate_model)
        self.set_slates(pages, core, mdp.q_backup(0, torch.zeros(mdp.n_pages, dtype=torch.float64)))
        return {}


class _ItemQ(nn.Module):
    """Item-wise ``Q̄(history, j)`` for every outcome ``j`` (``EXIT`` pinned to 0)."""

    def __init__(self, n_pages: int, history_len: int, dim: int = 32, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(n_pages + 1, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim * history_len, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_pages),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.embed(obs).flatten(1))
        return torch.cat([out, out.new_zeros(len(out), 1)], dim=1)


class SlateQ(SlateTablePolicy):
    """SlateQ (Ie et al., 2019): a deep Q-network learns item-wise values ``Q̄(h, j)`` (the
    return of landing on page ``j`` after history ``h``) by Q-learning on the pages visitors
    land on; a slate's value is ``Σ_j p'_S(j | h) Q̄(h, j)`` through the choice model (whose
    organic ``p`` is the first-order model of the train split), maximised exactly by
    :func:`best_slates` both to act and in the TD target. Target network, replay of recent
    transitions, ε-greedy slates.

    Args:
        total_steps: Visitor steps in the learned simulator.
        n_envs: Visitors per step.
        gamma: Discount of the TD target (sessions end, so 1 is allowed).
        reward_scale: Rewards are multiplied by this while learning.
        target_every: Gradient steps between target-network copies.
    """

    kind = "slate_q"

    def __init__(
        self,
        name: str = "slate_q",
        total_steps: int = 1_000_000,
        n_envs: int = 256,
        gamma: float = 1.0,
        lr: float = 1e-3,
        reward_scale: float = 0.01,
        target_every: int = 500,
        replay_batches: int = 64,
        batch_size: int = 1024,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        exploration_fraction: float = 0.3,
    ) -> None:
        super().__init__(name)
        self.settings = dict(
            total_steps=int(total_steps),
            n_envs=int(n_envs),
            gamma=float(gamma),
            lr=float(lr),
            reward_scale=float(reward_scale),
            target_every=int(target_every),
            replay_batches=int(replay_batches),
            batch_size=int(batch_size),
            epsilon_start=float(epsilon_start),
            epsilon_end=float(epsilon_end),
            exploration_fraction=float(exploration_fraction),
        )

    def fit(self, site: Site) -> dict[str, Any]:
        cfg = self.settings
        torch.manual_seed(site.seed)
        core = site.core(cfg["n_envs"], "learned")
        if core.slate_model is None:
            raise ConfigError("slate_q needs env.slate_size > 1")
        model = core.slate_model
        rows = site.markov.transitions.to(torch.float32).cpu()
        p, k, a = core.n_pages, core.slate_size, core.n_actions
        items = core.action_pages[core.action_pages >= 0].cpu()
        allow_empty = bool((core.action_pages < 0).any())
        hist = core.history_len  # the page columns (the observation extras come first)
        net = _ItemQ(p, hist)
        target_net = _ItemQ(p, core.history_len)
        target_net.load_state_dict(net.state_dict())
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        rng = torch.Generator().manual_seed(site.seed + 1)
        obs = core.reset(site.seed).cpu()
        n_iter = max(1, cfg["total_steps"] // cfg["n_envs"])
        replay: list[tuple[torch.Tensor, ...]] = []
        start, curve = time.perf_counter(), []
        for it in range(n_iter):
            frac = min(1.0, it / max(1.0, cfg["exploration_fraction"] * n_iter))
            eps = cfg["epsilon_start"] + frac * (cfg["epsilon_end"] - cfg["epsilon_start"])
            with torch.no_grad():
                _, chosen = best_slates(
                    model,
                    rows[obs[:, -1]],
                    net(obs[:, -hist:]).double(),
                    items,
                    allow_empty=allow_empty,
                    current=obs[:, -1],
                )
            acts = _to_actions(chosen, items, core)
            explore = torch.rand(len(obs), generator=rng) < eps
            random = torch.randint(0, a, (len(obs), k), generator=rng)
            acts = torch.where(explore[:, None], random, acts)
            r = core.step(acts)
            final = r.final_obs.cpu()
            alive = (~r.terminated).cpu()
            replay.append((obs, r.landed.cpu(), r.reward.cpu() * cfg["reward_scale"], final, alive))
            replay = replay[-cfg["replay_batches"] :]
            obs = r.obs.cpu()
            # one gradient step on a minibatch of recent transitions
            pool = [torch.cat(x) for x in zip(*replay, strict=True)]
            idx = torch.randint(0, len(pool[0]), (cfg["batch_size"],), generator=rng)
            o, j, rew, nxt, live = (x[idx] for x in pool)
            with torch.no_grad():
                v_next, _ = best_slates(
                    model,
                    rows[nxt[:, -1].clamp(max=p - 1)],
                    target_net(nxt[:, -hist:]).double(),
                    items,
                    allow_empty=allow_empty,
                    current=nxt[:, -1].clamp(max=p - 1),
                )
                y = rew.double() + cfg["gamma"] * v_next * live
            q = net(o[:, -hist:]).gather(1, j[:, None])[:, 0]
            loss = nn.functional.mse_loss(q, y.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (it + 1) % cfg["target_every"] == 0:
                target_net.load_state_dict(net.state_dict())
            if (it + 1) % max(1, n_iter // 10) == 0:
                curve.append((int((it + 1) * cfg["n_envs"]), loss.item()))
        seconds = time.perf_counter() - start
        self._net, self._rows, self._items, self._allow_empty = net, rows, items, allow_empty
        self._model, self._history_len, self._core_info = model, core.history_len, core
        if core.history_len == 1:  # a table over pages: exact evaluation, saved as such
            with torch.no_grad():
                pages = torch.arange(p)[:, None]
                qbar = net(pages).double()
                _, chosen = best_slates(
                    model, rows, qbar, items, allow_empty=allow_empty, current=pages[:, 0]
                )
            pg = torch.where(chosen >= 0, items[chosen.clamp(min=0)], -1)
            self.set_slates(pg, core, _scores(qbar, core))
        steps = n_iter * cfg["n_envs"]
        return {
            "steps": steps,
            "seconds": seconds,
            "fps": steps / max(seconds, 1e-9),
            "curve": curve,
        }

    @torch.no_grad()
    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        net = getattr(self, "_net", None)
        if net is None or self._history_len == 1:  # the table (fitted at history 1, or loaded)
            return super().predict(observation, state, episode_start, deterministic)
        obs = torch.as_tensor(np.atleast_2d(np.asarray(observation)), dtype=torch.long)
        page = obs[:, -1].clamp(max=len(self._rows) - 1)
        _, chosen = best_slates(
            self._model,
            self._rows[page],
            net(obs[:, -self._history_len :]).double(),
            self._items,
            allow_empty=self._allow_empty,
            current=page,
        )
        acts = self._actions_of(chosen).numpy()
        return (acts[0] if np.asarray(observation).ndim == 1 else acts), None

    def _actions_of(self, chosen: torch.Tensor) -> torch.Tensor:
        return _to_actions(chosen, self._items, self._core_info)

    def _save_state(self, out: Path) -> dict[str, Any]:
        if self.slates is None:
            raise ModelError(
                "slate_q saves its slate table, which exists for env.history_len=1 only"
            )
        return super()._save_state(out)


def _scores(qbar: torch.Tensor, core: SiteCore) -> torch.Tensor:
    """Item values per action ``(P, A)`` (the "nothing" action: -inf)."""
    ap = core.action_pages.cpu()
    out = qbar[:, ap.clamp(min=0)]
    return torch.where(ap[None, :] >= 0, out, torch.full_like(out, -torch.inf))


def _to_actions(chosen: torch.Tensor, items: torch.Tensor, core: SiteCore) -> torch.Tensor:
    """Slates of item indices (-1 empty) ``(B, k)`` as action indices for the core."""
    ap = core.action_pages.cpu()
    action_of = torch.full((core.n_pages,), 0, dtype=torch.long)
    valid = ap >= 0
    action_of[ap[valid]] = torch.arange(len(ap))[valid]
    nothing = int(torch.nonzero(~valid)[0, 0]) if bool((~valid).any()) else None
    acts = action_of[items[chosen.clamp(min=0)]]
    fill = acts[:, :1] if nothing is None else torch.full_like(acts[:, :1], nothing)
    return torch.where(chosen >= 0, acts, fill.expand_as(acts))
