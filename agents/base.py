"""What every recommendation policy offers, and the policies that are tables over pages.

Every agent (SB3 or not) has the same surface, so scripts never branch on its type:

* ``fit(site)`` learns from a :class:`~agents.site.Site` (the simulator to train in, the
  prepared data, a TensorBoard writer) and returns training metrics;
* ``predict(obs, deterministic=True) -> (actions, None)`` like SB3: ``obs`` ``(B, K)`` page
  histories (:mod:`envs.core`), actions ``(B,)``;
* ``action_scores(obs) -> (B, A)``: higher is better (Q-values, log-probabilities, expected
  values), which ranks the top-k recommendations the web app shows;
* ``save(dir)`` and :func:`load_policy`: ``policy.json`` names the policy's *kind*, looked up
  in :data:`POLICY_KINDS` (a registry in this file); nothing named in a file is ever imported,
  and the arrays and weights beside it are read as data only (``numpy`` without pickle,
  ``torch.load(weights_only=True)``). Every file read is a regular file of the folder's own
  (no symbolic link) and, in a published folder, one its manifest lists
  (:func:`clickstream.runfolder.folder_file`).
"""

from __future__ import annotations

import importlib
import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from clickstream.errors import ClickstreamError, ModelError, RunFolderError
from clickstream.faults import boundary
from clickstream.runfolder import folder_file, read_json, safe_name, verify_folder

if TYPE_CHECKING:
    from agents.site import Site
    from envs.core import SiteCore

MANIFEST = "policy.json"

POLICY_KINDS: dict[str, str | type[Policy]] = {
    "table": "agents.base:TablePolicy",
    "organic": "agents.heuristics:Organic",
    "random": "agents.heuristics:RandomPolicy",
    "popular": "agents.heuristics:Popular",
    "most_likely": "agents.heuristics:MostLikely",
    "highest_value": "agents.heuristics:HighestValue",
    "greedy": "agents.heuristics:Greedy",
    "value_iteration": "agents.tabular:ValueIterationPolicy",
    "q_learning": "agents.tabular:QLearningPolicy",
    "intent_oracle": "agents.tabular:IntentOracle",
    "belief_value_iteration": "agents.belief:BeliefValueIteration",
    "belief_qmdp": "agents.belief:BeliefQMDP",
    "belief_distillation": "agents.distill:BeliefDistillation",
    "belief_ppo": "agents.belief_ppo:BeliefPPO",
    "sb3": "agents.sb3:SB3Agent",
    "slate_table": "agents.slate:SlateTablePolicy",
    "slate_value_iteration": "agents.slate:SlateValueIteration",
    "slate_greedy": "agents.slate:SlateGreedy",
    "slate_q": "agents.slate:SlateQ",
}
"""Every policy class a saved ``policy.json`` may name, by kind. The paths are this project's
own code, written here, never read from a file; a new agent adds its line here (or calls
:func:`register_policy`)."""


class Policy(ABC):
    """A recommendation policy over the simulator's actions.

    Attributes:
        kind: The name of the class in :data:`POLICY_KINDS` (what ``policy.json`` records).
        needs_latent_state: It acts on each visitor's hidden type, read from the simulator
            (:meth:`predict_latent`), not on the pages alone: it plays only where types are
            known (the ground truth), is never served, and has no closing evaluation in the
            learned world.
        recurrent: It remembers the whole visit, not only the observation: :meth:`predict`
            takes and returns a per-visitor ``state`` (``episode_start`` marks the visitors
            whose visit just began), as SB3's recurrent policies do, and
            :meth:`select_state` keeps the rows of the visitors still simulated.
    """

    name: str = "policy"
    kind: ClassVar[str] = ""
    needs_latent_state: ClassVar[bool] = False
    recurrent: ClassVar[bool] = False

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

    def check_observations(self, core: SiteCore) -> None:
        """Refuse a world whose observations this policy cannot read (a network trained on
        another layout: ``env.history_len``, ``env.observe_*``). Policies that read only the
        current page (the last column) read every layout; this one does nothing.

        Raises:
            ConfigError: The world's observations are not the ones the policy was trained on.
        """
        return None

    def select_state(self, state: Any, keep: np.ndarray) -> Any:
        """The per-visitor ``state`` of the visitors where ``keep`` (bool ``(B,)``) holds
        (recurrent policies; the state of any other is ``None``)."""
        return None

    def predict_latent(self, obs: torch.Tensor, core: SiteCore) -> torch.Tensor:
        """Actions ``(B,)`` from observations ``(B, K)`` and the core's hidden visitor state
        (policies with :attr:`needs_latent_state` only)."""
        raise ModelError(f"policy {self.name!r} acts on observations only (predict)")

    def table_probs(self) -> torch.Tensor | None:
        """Action probabilities per current page ``(P, A)`` (or per intent ``(Z, P, A)``) when
        the policy depends on the current page only, for exact policy evaluation; else None."""
        return None

    # ---- persistence -----------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the policy into the folder ``path`` (created); returns it.

        Raises:
            ClickstreamError: The class is not in :data:`POLICY_KINDS` under its ``kind``
                (it could not be loaded again).
        """
        kind = type(self).kind
        if not kind or POLICY_KINDS.get(kind) not in (type(self), _dotted(type(self))):
            raise ModelError(
                f"policy class {_dotted(type(self))} is not registered under its kind "
                f"{kind!r}: add it to agents.base.POLICY_KINDS (or call register_policy)"
            )
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        boundary(f"save policy {self.name}: its files")
        state = self._save_state(out)
        manifest = {"kind": kind, "name": self.name, **state}
        boundary(f"save policy {self.name}: {MANIFEST}")
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


def _dotted(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Add a policy class to :data:`POLICY_KINDS` under its ``kind`` (usable as a decorator)."""
    if not cls.kind:
        raise ModelError(f"policy class {_dotted(cls)} needs a `kind` to be registered")
    POLICY_KINDS[cls.kind] = cls
    return cls


def policy_class(kind: Any, file: Path | None = None) -> type[Policy]:
    """The registered class of ``kind``.

    Raises:
        RunFolderError: ``kind`` is not a registered kind (naming ``file`` and the known kinds).
    """
    entry = POLICY_KINDS.get(kind) if isinstance(kind, str) else None
    if entry is None:
        raise RunFolderError(
            f"unknown policy kind {kind!r}: known kinds are {sorted(POLICY_KINDS)} "
            "(policies are chosen from this registry by name, never imported from a file)",
            file=str(file) if file is not None else None,
        )
    if isinstance(entry, str):
        module, _, qualname = entry.partition(":")
        entry = getattr(importlib.import_module(module), qualname)
    assert isinstance(entry, type) and issubclass(entry, Policy)
    return entry


def load_policy(path: str | Path) -> Policy:
    """A policy saved by :meth:`Policy.save`: its class from :data:`POLICY_KINDS` by the kind
    ``policy.json`` names, its arrays and weights read as data only.

    Raises:
        RunFolderError: No readable ``policy.json``, an unknown kind (or an older file naming a
            class to import), files that are not what the kind saves, or files that are not the
            folder's own (a symbolic link, or not listed in its manifest); naming the file.
    """
    path = Path(path)
    file = folder_file(path, MANIFEST)
    manifest = read_json(file, MANIFEST)
    if not isinstance(manifest, dict):
        raise RunFolderError(f"{MANIFEST} is not a JSON object", file=str(file))
    if "kind" not in manifest and "class" in manifest:
        raise RunFolderError(
            f"names a class to import ({str(manifest['class'])[:100]!r}): a policy saved by an "
            "older version; this one loads policies only by kind from its registry "
            f"({sorted(POLICY_KINDS)}): retrain it (`python scripts/train.py` or "
            "`python scripts/pipeline.py`)",
            file=str(file),
        )
    cls = policy_class(manifest.get("kind"), file)
    try:
        policy = cls._load(path, manifest)
    except RunFolderError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise RunFolderError(
            f"not what a {manifest['kind']!r} policy saves ({type(exc).__name__}: "
            f"{str(exc)[:200]})",
            file=str(file),
        ) from None
    name = manifest.get("name")
    if isinstance(name, str) and name:
        policy.name = name
    return policy


def load_published_policy(path: str | Path, root: str | Path | None = None) -> Policy:
    """:func:`load_policy` of a run folder's ``agents/<name>/seed_<S>``, after verifying its
    manifest (``scripts/train.py`` publishes it; ``clickstream/runfolder.py``); with ``root``
    (the run folder), after checking it lies there with no symbolic link on the way."""
    verify_folder(path, "train", root=root)
    return load_policy(path)


def policy_file(path: Path, manifest: dict[str, Any], key: str) -> Path:
    """The file ``manifest[key]`` names in the policy folder ``path`` (a plain name inside it).

    Raises:
        RunFolderError: The entry is missing or points outside the folder, or the file is not
            the folder's own (missing, a symbolic link, not listed in its manifest).
    """
    name = manifest.get(key)
    if not safe_name(name):
        raise RunFolderError(
            f"{key!r} must name a file inside the policy folder, got {name!r}",
            file=str(path / MANIFEST),
        )
    return folder_file(path, name)


def load_array(file: Path) -> np.ndarray:
    """A numeric ``.npy`` array, read without pickle (an object array is refused unread).

    Raises:
        RunFolderError: Missing, truncated, not an ``.npy`` file, or not numbers; naming it.
    """
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RunFolderError(
            f"not a readable array of numbers ({type(exc).__name__}: {str(exc)[:200]})",
            file=str(file),
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise RunFolderError("not an array of numbers", file=str(file))
    return array


def policy_folders(
    agents_dir: str | Path, names: Sequence[str] | Mapping[str, Sequence[int] | None] | None = None
) -> dict[str, dict[int, Path]]:
    """Saved policies under a run's ``agents/`` by name and training seed: the
    ``<name>/seed_<S>`` folders holding a ``manifest.json``; of ``names`` only, when given,
    and, when ``names`` maps each name to training seeds, of those seeds only (``None``: all).
    Staging folders (``seed_<S>.partial``) and anything else are skipped."""
    out: dict[str, dict[int, Path]] = {}
    for folder in sorted(Path(agents_dir).glob("*/seed_*")):
        name, seed = folder.parent.name, folder.name.removeprefix("seed_")
        if not seed.isdigit() or not (folder / MANIFEST).is_file():
            continue
        if names and name not in names:
            continue
        seeds = names.get(name) if isinstance(names, Mapping) else None
        if seeds is None or int(seed) in seeds:
            out.setdefault(name, {})[int(seed)] = folder
    return out


def _as_array(obs: Any) -> np.ndarray:
    if isinstance(obs, torch.Tensor):
        return obs.detach().cpu().numpy()
    return np.asarray(obs)


def check_page_ids(
    obs: Any, name: str, n_pages: int, nvec: np.ndarray | None = None, layout: str = ""
) -> np.ndarray:
    """``obs`` as an integer array ``(B, K)`` or ``(K,)``, checked in one vectorised pass.

    Without ``nvec`` (a policy that reads the current page only: any ``K``), the last column
    must hold page ids in ``[0, P]`` (``P``: no page). With ``nvec`` (a network trained on one
    layout, ``(K,)`` values per column), every column ``j`` must hold ids in
    ``[0, nvec[j])`` and ``K`` must be ``len(nvec)``, and the batch must not be empty.
    ``layout`` says the expected layout in the message (``env.history_len``, extras).

    Raises:
        ModelError: Another dtype, shape or an id out of range (which would otherwise clamp
            to the "no page" row, wrap around from -1, or fail deep inside torch), naming the
            valid range and the expected shape.
    """
    a = _as_array(obs)
    k = "K" if nvec is None else str(len(nvec))
    ok = a.dtype.kind in "iu" and a.ndim in (1, 2) and a.shape[-1] >= 1
    if ok and nvec is not None:
        ok = a.shape[-1] == len(nvec) and a.size > 0
    if ok and a.size:
        # negative ids become huge as unsigned: one comparison finds both ends
        if nvec is None:
            ok = not bool((a[..., -1].astype(np.uint64) > n_pages).any())
        else:
            ok = not bool((a.astype(np.uint64) >= nvec.astype(np.uint64)).any())
    if ok:
        return a
    ids = (
        f" with ids from {a.min()} to {a.max()}"
        if a.size and a.dtype.kind in "iuf" and a.ndim
        else ""
    )
    what = "the current page (the last column)" if nvec is None else "every page column"
    raise ModelError(
        f"policy {name!r} takes observations of shape (B, {k}) or ({k},){layout}: integer page "
        f"ids in [0, {n_pages}] ({n_pages}: no page) in {what}; got shape {a.shape} "
        f"{a.dtype}{ids}"
    )


def current_pages(
    obs: np.ndarray | torch.Tensor, n_pages: int | None = None, name: str = "policy"
) -> torch.Tensor:
    """The visitor's current page: the last entry of each history ``(B, K)`` -> ``(B,)``.

    With ``n_pages`` (``P``), the observations are checked first (:func:`check_page_ids`:
    integer ids, the current page in ``[0, P]``; the policy ``name`` in the message)."""
    if n_pages is not None:
        a = check_page_ids(obs, name, n_pages, layout=TABLE_LAYOUT)
    else:
        a = _as_array(obs)
    return torch.as_tensor(a.reshape(-1, a.shape[-1])[:, -1], dtype=torch.long)


TABLE_LAYOUT = " (K = env.history_len pages, after any extras)"
"""What a table policy's observations are, in its messages: it reads the last column only."""


class TablePolicy(Policy):
    """Scores that depend on the current page only: ``scores[page]`` ``(P + 1, A)``.

    Value iteration, Q-learning and the heuristics are tables; the row ``P`` (no page) is
    never acted on. Ties go to the lowest action index, so the policy is deterministic. An
    observation whose current page is not in ``[0, P]`` is refused (:func:`check_page_ids`),
    not clamped to the row ``P``.

    Args:
        scores: ``(P, A)`` action scores per page.
        name: Policy name in results.
    """

    kind = "table"

    def __init__(self, scores: torch.Tensor | np.ndarray | None = None, name: str = "table"):
        self.name = name
        self.scores: torch.Tensor | None = None
        if scores is not None:
            self.set_scores(scores)

    def set_scores(self, scores: torch.Tensor | np.ndarray) -> None:
        s = torch.as_tensor(np.asarray(scores), dtype=torch.float64)
        if s.ndim != 2:
            raise ModelError(f"table scores must be (P, A), got {tuple(s.shape)}")
        self.scores = torch.cat([s, s.new_zeros(1, s.shape[1])])  # row P: no current page

    def _table(self) -> torch.Tensor:
        if self.scores is None:
            raise ModelError(f"policy {self.name!r} is not fitted yet")
        return self.scores

    def action_scores(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        table = self._table()
        return table[current_pages(obs, table.shape[0] - 1, self.name)].numpy()

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
        file = policy_file(path, manifest, "scores")
        policy = cls.__new__(cls)
        try:
            TablePolicy.__init__(policy, load_array(file), str(manifest.get("name", "")))
        except ClickstreamError as exc:
            raise RunFolderError(exc.message, file=str(file)) from None
        return policy
