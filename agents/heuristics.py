"""Simple policies that show what is easy: every one a table over the current page.

* ``organic``: show nothing (the site as it is; every uplift is measured against it);
* ``random``: a uniformly random recommendable page;
* ``popular``: the most viewed page (train split) other than the current one;
* ``most_likely``: the page the visitor is most likely to open next (the study's "relevant
  page"), from the first-order model of the train split;
* ``highest_value``: the page with the highest reward other than the current one;
* ``greedy``: the recommendation with the highest expected reward of the *next* step under
  the click model (one-step lookahead on the first-order model).

With page-group actions a group scores by its pages (traffic and likelihood summed, value and
reward of its best page).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import Policy, TablePolicy, current_pages
from agents.site import Site
from clickstream.errors import ConfigError, ModelError


def recommended_states(site: Site) -> torch.Tensor:
    """Which states each action recommends, ``(A, P + 1)`` float (rows of "nothing": 0)."""
    core = site.template
    return core.shown_mask(torch.arange(core.n_actions)).double()


def _no_recommendation(site: Site) -> int | None:
    pages = site.template.action_pages
    return int(len(pages) - 1) if int(pages[-1]) < 0 else None


class _Heuristic(TablePolicy):
    """A table built from the site's data at ``fit`` time."""

    default_name = "heuristic"

    def __init__(self, name: str | None = None) -> None:
        super().__init__(None, name or self.default_name)

    def fit(self, site: Site) -> dict[str, Any]:
        scores = self.build(site)
        self.set_scores(scores)
        return {}

    def build(self, site: Site) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _per_page(site: Site, value: torch.Tensor, how: str = "sum") -> torch.Tensor:
        """Scores ``(P, A)`` from a per-state value ``(P + 1,)`` of the recommended pages; the
        current page itself (or its group) and "nothing" get -inf."""
        shown = recommended_states(site)  # (A, P + 1)
        if how == "sum":
            per_action = shown @ value
        else:
            per_action = torch.where(shown > 0, value[None, :], -torch.inf).max(1).values
        p = site.template.n_pages
        scores = per_action[None, :].repeat(p, 1)
        scores[shown[:, :p].T > 0] = -torch.inf  # no recommending where the visitor already is
        scores[:, shown.sum(1) == 0] = -torch.inf
        return scores


class Organic(_Heuristic):
    """Show nothing: the site without recommendations (needs the env's "nothing" action)."""

    default_name = "organic"
    kind = "organic"

    def build(self, site: Site) -> torch.Tensor:
        none = _no_recommendation(site)
        if none is None:
            raise ConfigError("organic needs env.allow_no_recommendation=true")
        scores = torch.zeros(site.template.n_pages, site.template.n_actions, dtype=torch.float64)
        scores[:, none] = 1.0
        return scores


class Popular(_Heuristic):
    """The most viewed page (train split) other than the current one."""

    default_name = "popular"
    kind = "popular"

    def build(self, site: Site) -> torch.Tensor:
        traffic = torch.as_tensor(np.r_[site.page_traffic(), 0.0])
        return self._per_page(site, traffic)


class MostLikely(_Heuristic):
    """The first-order model's most likely next page (EXIT aside), per current page."""

    default_name = "most_likely"
    kind = "most_likely"

    def build(self, site: Site) -> torch.Tensor:
        rows = site.markov.transitions.double().cpu()  # (P, P + 1)
        shown = recommended_states(site)
        scores = rows @ shown.T  # (P, A): organic probability of the recommended page(s)
        base = self._per_page(site, torch.zeros(rows.shape[1], dtype=torch.float64))
        return torch.where(torch.isinf(base), base, scores)


class HighestValue(_Heuristic):
    """The page with the highest reward (page value) other than the current one."""

    default_name = "highest_value"
    kind = "highest_value"

    def build(self, site: Site) -> torch.Tensor:
        return self._per_page(site, site.template.reward_per_page.double().cpu(), how="max")


class Greedy(_Heuristic):
    """The highest expected reward of the next step (first-order model and click model)."""

    default_name = "greedy"
    kind = "greedy"

    def build(self, site: Site) -> torch.Tensor:
        mdp = site.markov_mdp()
        return mdp.q_backup(0, torch.zeros(mdp.n_pages, dtype=torch.float64))


class RandomPolicy(Policy):
    """A uniformly random recommendable page (never "nothing"); seeded, so replays repeat.

    Args:
        seed: Seed of the draws (re-seeded by ``fit`` from the site's seed when ``None``).
    """

    name = "random"
    kind = "random"

    def __init__(self, name: str = "random", seed: int | None = None) -> None:
        self.name, self.seed = name, seed
        self.n_actions: int | None = None
        self.none: int | None = None
        self.n_pages: int | None = None
        self._rng = np.random.default_rng(seed)

    def fit(self, site: Site) -> dict[str, Any]:
        self.n_actions, self.n_pages = site.template.n_actions, site.template.n_pages
        self.none = _no_recommendation(site)
        if self.seed is None:
            self.seed = site.seed
        self._rng = np.random.default_rng(self.seed)
        return {}

    def _choices(self) -> int:
        if self.n_actions is None:
            raise ModelError("policy 'random' is not fitted yet")
        return self.n_actions - (self.none is not None)

    def action_scores(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        b = len(current_pages(obs))
        scores = self._rng.random((b, self.n_actions or 0))
        if self.none is not None:
            scores[:, self.none] = -1.0
        return scores

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        obs = np.asarray(observation)
        actions = self._rng.integers(0, self._choices(), size=len(current_pages(obs)))
        return (actions[0] if obs.ndim == 1 else actions), None

    def table_probs(self) -> torch.Tensor:
        probs = torch.full(
            (self.n_pages, self.n_actions), 1.0 / self._choices(), dtype=torch.float64
        )
        if self.none is not None:
            probs[:, self.none] = 0.0
        return probs

    def _save_state(self, out: Path) -> dict[str, Any]:
        return {
            "n_actions": self.n_actions,
            "n_pages": self.n_pages,
            "none": self.none,
            "seed": self.seed,
        }

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> Policy:
        def count(key: str, optional: bool = False) -> int | None:
            value = manifest[key]
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be a count, got {value!r}")
            return value

        policy = cls(str(manifest.get("name", "random")), count("seed", optional=True))
        policy.n_actions, policy.n_pages = count("n_actions"), count("n_pages")
        policy.none = count("none", optional=True)
        return policy
