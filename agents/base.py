"""What every recommendation policy offers, and the policies that are tables over pages.

Every agent (SB3 or not) has the same surface, so scripts never branch on its type:

* ``fit(site)`` learns from a :class:`~agents.site.Site` (the simulator to train in, the
  prepared data, a TensorBoard writer) and returns training metrics;
* ``predict(obs, deterministic=True) -> (actions, None)`` like SB3: ``obs`` ``(B, K)`` page
  histories (:mod:`envs.core`), actions ``(B,)``;
* ``action_scores(obs) -> (B, A)``: higher is better (Q-values, log-probabilities, expected
  values), which ranks the top-k recommendations the web app shows;
* ``save(dir)`` and :func:`load_policy` (``policy.json`` names the class).
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clickstream.errors import ClickstreamError

if TYPE_CHECKING:
    from agents.site import Site

MANIFEST = "policy.json"


class Policy(ABC):
    """A recommendation policy over the simulator's actions."""

    name: str = "policy"

    def fit(self, site: Site) -> dict[str, Any]:
        """Learn (or build) the policy for ``site``; returns metrics of the training."""
        return {}

    @abstractmethod
    def action_scores(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Score of every action for each observation, ``(B, A)``; higher is better."""

    def predict(
        self,
        observation: np.ndarray | torch.Tensor,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Best action per observation ``(B,)`` (a single ``(K,)`` observation gives ``()``)."""
        obs = np.asarray(observation)
        actions = self.action_scores(np.atleast_2d(obs)).argmax(axis=1)
        return (actions[0] if obs.ndim == 1 else actions), None

    def table_probs(self) -> torch.Tensor | None:
        """Action probabilities per current page ``(P, A)`` (or per intent ``(Z, P, A)``) when
        the policy depends on the current page only, for exact policy evaluation; else None."""
        return None

    # ---- persistence -----------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the policy into the folder ``path`` (created); returns it."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        state = self._save_state(out)
        cls = type(self)
        manifest = {"class": f"{cls.__module__}.{cls.__qualname__}", "name": self.name, **state}
        tmp = out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        tmp.replace(out / MANIFEST)
        return out

    def _save_state(self, out: Path) -> dict[str, Any]:
        """Write what the policy needs into ``out``; returns JSON-able settings for ``_load``."""
        return {}

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> Policy:
        raise NotImplementedError


def load_policy(path: str | Path) -> Policy:
    """A policy saved by :meth:`Policy.save` (any class)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        module, _, name = manifest["class"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (OSError, ValueError, KeyError, ImportError, AttributeError) as e:
        raise ClickstreamError(f"not a saved policy ({e})", file=str(path)) from e
    policy = cls._load(path, manifest)
    policy.name = manifest.get("name", policy.name)
    return policy


def policy_folders(
    agents_dir: str | Path, names: Sequence[str] | None = None
) -> dict[str, dict[int, Path]]:
    """Saved policies under a run's ``agents/`` by name and training seed: the
    ``<name>/seed_<S>`` folders holding a ``policy.json`` (of ``names`` only, when given).
    Staging folders (``seed_<S>.partial``) and anything else are skipped."""
    out: dict[str, dict[int, Path]] = {}
    for folder in sorted(Path(agents_dir).glob("*/seed_*")):
        seed = folder.name.removeprefix("seed_")
        wanted = not names or folder.parent.name in names
        if wanted and seed.isdigit() and (folder / MANIFEST).is_file():
            out.setdefault(folder.parent.name, {})[int(seed)] = folder
    return out


def current_pages(obs: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The visitor's current page: the last entry of each history ``(B, K)`` -> ``(B,)``."""
    return torch.as_tensor(np.asarray(obs), dtype=torch.long).reshape(-1, np.shape(obs)[-1])[:, -1]


class TablePolicy(Policy):
    """Scores that depend on the current page only: ``scores[page]`` ``(P + 1, A)``.

    Value iteration, Q-learning and the heuristics are tables; the row ``P`` (no page) is
    never acted on. Ties go to the lowest action index, so the policy is deterministic.

    Args:
        scores: ``(P, A)`` action scores per page.
        name: Policy name in results.
    """

    def __init__(self, scores: torch.Tensor | np.ndarray | None = None, name: str = "table"):
        self.name = name
        self.scores: torch.Tensor | None = None
        if scores is not None:
            self.set_scores(scores)

    def set_scores(self, scores: torch.Tensor | np.ndarray) -> None:
        s = torch.as_tensor(np.asarray(scores), dtype=torch.float64)
        if s.ndim != 2:
            raise ClickstreamError(f"table scores must be (P, A), got {tuple(s.shape)}")
        self.scores = torch.cat([s, s.new_zeros(1, s.shape[1])])  # row P: no current page

    def _table(self) -> torch.Tensor:
        if self.scores is None:
            raise ClickstreamError(f"policy {self.name!r} is not fitted yet")
        return self.scores

    def action_scores(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        table = self._table()
        pages = current_pages(obs).clamp(max=table.shape[0] - 1)
        return table[pages].numpy()

    def table_probs(self) -> torch.Tensor:
        table = self._table()[:-1]
        probs = torch.zeros_like(table)
        probs[torch.arange(len(table)), table.argmax(1)] = 1.0
        return probs

    def _save_state(self, out: Path) -> dict[str, Any]:
        np.save(out / "scores.npy", self._table()[:-1].numpy())
        return {"scores": "scores.npy"}

    @classmethod
    def _load(cls, path: Path, manifest: dict[str, Any]) -> Policy:
        policy = cls.__new__(cls)
        TablePolicy.__init__(policy, np.load(path / manifest["scores"]), manifest.get("name", ""))
        return policy
