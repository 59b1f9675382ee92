"""A latent-class visitor model: a few visitor types, each a first-order chain.

Why: the simulator applies a recommendation to a visitor's next-page distribution (the click
model). A model of ``p(next | history)`` such as the GRU gives the *mix* of visitors seen after
that history, and boosting a mix is not the mix of the boosted visitors: the boost is concave in
``p``, so it moves more visitors than it would move one by one, and a visitor pushed to a page
is then treated like the visitors who went there on their own. When visitors differ in what
they want (browsers, researchers, buyers), a simulator must know *who* is pushed. Here each
visitor draws a type when she arrives and keeps it (:class:`envs.dynamics.MixtureDynamics`),
so a recommendation acts on her own type's row.

The model (RecSim's user model with a latent user type, fitted on organic sessions)::

    p(type z)                 = softmax(a)_z
    p(entry page i | z)      ∝ e(i) · exp(c[z, g(i)])
    p(next j | page i, z)    ∝ m(i, j) · exp(v[z, g(i), g(j)])

``m`` and ``e`` are the smoothed first-order table and entry distribution counted on the train
split, shared by every type; ``g`` maps a page to its page group (``EXIT`` is a group of its
own). A type only re-weights which *group* a visitor moves to from each group: few parameters
(``Z × G × (G + 1)``), so types are identified from short sessions, where a mixture of free
first-order chains (``Z × P × (P + 1)``) is not. ``a``, ``c`` and ``v`` maximise the marginal
likelihood ``Σ_sessions log Σ_z p(z) p(session | z)`` by full-batch Adam from several random
starts; the number of types is set or picked by validation log-loss.

:class:`LatentClassModel` is also a next-page predictor (exact forward filtering over the
types), so ``scripts/train_simulator.py`` scores it next to the GRU and the baselines.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clickstream.errors import (
    ConfigError,
    DataError,
    ModelError,
    RunFolderError,
    from_options,
)
from clickstream.io import read_npz
from envs.baselines import _Predictor, _session_log_sums, _session_starts, mean_log_loss
from envs.dynamics import MixtureDynamics, entry_distribution, first_order_table
from envs.sequences import SessionSequences

MAX_DENSE_CELLS = 40_000_000
"""Largest ``Z × P × (P + 1)`` table held densely (the fitted model; float64 when built: 320 MB)."""


@dataclass(frozen=True)
class LatentClassConfig:
    """How the latent-class model is fitted (``simulator.latent_class`` in the configs).

    Attributes:
        classes: Number of visitor types, or ``"auto"``: each of ``1..max_classes`` is fitted
            and the one of least validation log-loss kept.
        max_classes: Largest number of types tried by ``auto``.
        restarts: Random starts per number of types; the best training likelihood wins.
        iters: Adam steps per start (full batch).
        lr: Adam's learning rate.
        smoothing: Prior strength ``k`` of the shared first-order table
            (``(c(i, j) + k · pop(j)) / (c(i) + k)``).
        init_scale: Standard deviation of the random initial group preferences.
        seed: Seed of the random starts.
    """

    classes: int | str = "auto"
    max_classes: int = 5
    restarts: int = 3
    iters: int = 400
    lr: float = 0.05
    smoothing: float = 20.0
    init_scale: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.classes != "auto" and not (isinstance(self.classes, int) and self.classes >= 1):
            raise ConfigError(
                f"latent_class.classes must be an integer >= 1 or 'auto', got {self.classes!r}"
            )
        for name in ("max_classes", "restarts", "iters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"latent_class.{name} must be >= 1")
        if not (self.lr > 0 and self.smoothing > 0 and self.init_scale >= 0):
            raise ConfigError("latent_class.lr and smoothing must be > 0, init_scale >= 0")

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> LatentClassConfig:
        return from_options(cls, dict(options or {}), "simulator.latent_class")

    def candidates(self) -> list[int]:
        """The numbers of types to fit."""
        return list(range(1, self.max_classes + 1)) if self.classes == "auto" else [self.classes]


class LatentClassModel(_Predictor):
    """Visitor types with their own first-order chains (see the module docstring).

    Args:
        prior: Type probabilities, ``(Z,)``.
        entry: Entry distribution per type, ``(Z, P)``.
        transitions: Next-page rows per type, ``(Z, P, P + 1)`` (``EXIT`` last).
        pages: Page names in vocabulary order, length P.
        info: How it was fitted (scores per number of types, log-likelihood, seconds).
    """

    name = "latent_class"

    def __init__(
        self,
        prior: np.ndarray,
        entry: np.ndarray,
        transitions: np.ndarray,
        pages: tuple[str, ...],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.prior = np.asarray(prior, dtype=np.float64)
        self.entry = np.asarray(entry, dtype=np.float64)
        self.transitions = np.asarray(transitions, dtype=np.float64)
        z, p = self.entry.shape
        if self.prior.shape != (z,) or self.transitions.shape != (z, p, p + 1) or len(pages) != p:
            raise ModelError(
                "latent-class model needs prior (Z,), entry (Z, P), transitions (Z, P, P + 1) and "
                f"P page names; got {self.prior.shape}, {self.entry.shape}, "
                f"{self.transitions.shape}, {len(pages)}"
            )
        for what, table in (
            ("prior", self.prior),
            ("entry", self.entry),
            ("transitions", self.transitions),
        ):
            if not (np.all(table >= 0) and np.allclose(table.sum(-1), 1.0)):
                raise ModelError(f"latent-class model: every {what} row must sum to 1")
        self.pages = tuple(pages)
        self._n_pages = p
        self.info = dict(info or {})

    @property
    def n_classes(self) -> int:
        return len(self.prior)

    # ---- fitting -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        train: SessionSequences,
        page_groups: np.ndarray,
        pages: tuple[str, ...],
        config: LatentClassConfig | None = None,
        valid: SessionSequences | None = None,
        base_table: np.ndarray | None = None,
    ) -> LatentClassModel:
        """Fit on ``train``; with ``classes='auto'`` pick the number of types on ``valid``.

        Args:
            train: Training sessions.
            page_groups: Group id of each page, ``(P,)`` (``Vocabulary.page_group``).
            pages: Page names, length P.
            config: Fitting options (default :class:`LatentClassConfig`).
            valid: Validation sessions (needed for ``classes='auto'``).
            base_table: The first-order table the types re-weight, ``(P, P + 1)``; default:
                counted on ``train`` with ``config.smoothing``. A study passes a synthetic
                store's exact first-order marginal, to see what the types would make of a
                table without sampling error (``scripts/study_table_error.py``).

        Raises:
            ClickstreamError: Bad groups, no sessions, a site too large for dense tables,
                ``auto`` without validation sessions, or a base table of the wrong shape,
                with negative entries or rows that do not sum to 1.
        """
        cfg = config or LatentClassConfig()
        p = train.exit_id
        groups = np.asarray(page_groups, dtype=np.int64)
        if groups.shape != (p,) or len(pages) != p or (len(groups) and groups.min() < 0):
            raise ModelError(
                f"latent-class model needs a group id >= 0 for each of the {p} pages and "
                f"{p} page names, got {groups.shape} groups and {len(pages)} names"
            )
        if len(train) == 0:
            raise DataError("latent-class model: the training split has no sessions")
        if cfg.classes == "auto" and (valid is None or len(valid) == 0):
            raise ConfigError(
                "latent_class.classes='auto' picks the number of types on the validation "
                "split, which is empty: set latent_class.classes to a number"
            )
        worst = max(cfg.candidates()) * p * (p + 1)
        if worst > MAX_DENSE_CELLS:
            raise ConfigError(
                f"latent-class model of {max(cfg.candidates())} types over {p} pages needs "
                f"{worst:,} dense cells (at most {MAX_DENSE_CELLS:,}): group pages "
                "(pages config) or use fewer types"
            )
        if base_table is not None:
            base_table = _checked_base_table(base_table, train, pages)
        start = time.perf_counter()
        problem = _Problem(train, groups, cfg.smoothing, base_table)
        fits, scores = {}, {}
        for k in cfg.candidates():
            fits[k] = max(
                (problem.fit(k, cfg, cfg.seed * 1000 + 17 * k + r) for r in range(cfg.restarts)),
                key=lambda f: f["log_likelihood"],
            )
            if valid is not None and len(valid):
                model = cls(fits[k]["prior"], fits[k]["entry"], fits[k]["transitions"], pages)
                scores[k] = mean_log_loss(model, valid)
        best = min(scores, key=scores.__getitem__) if cfg.classes == "auto" else cfg.classes
        chosen = fits[best]
        info = {
            "config": asdict(cfg),
            "classes": best,
            "log_likelihood": chosen["log_likelihood"],
            "train_steps": int(train.n_steps),
            "parameters": best * (problem.n_groups * (problem.n_groups + 2) + 1) - 1,
            "valid_log_loss": {str(k): v for k, v in scores.items()},
            "fit_seconds": round(time.perf_counter() - start, 2),
        }
        return cls(chosen["prior"], chosen["entry"], chosen["transitions"], pages, info)

    # ---- the predictor interface -----------------------------------------------------------

    def _log_belief(self, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """``log p(z, h_0..h_i)`` after every view ``i`` of whole sessions, ``(n, Z)``.

        Raises:
            ClickstreamError: A session no type can produce (naming the page).
        """
        n, z = len(pages), self.n_classes
        first = _session_starts(offsets, n)
        rest = np.flatnonzero(~first)
        with np.errstate(divide="ignore"):
            inc = np.empty((n, z))
            inc[first] = np.log(self.prior)[None, :] + np.log(self.entry[:, pages[first]]).T
            inc[rest] = np.log(self.transitions[:, pages[rest - 1], pages[rest]]).T
        log_b = _session_log_sums(inc, offsets)
        dead = ~np.isfinite(log_b.max(axis=1))
        if dead.any():
            page = self.pages[pages[int(np.flatnonzero(dead)[0])]]
            raise DataError(
                f"a session is impossible under the latent-class model at page {page!r}"
            )
        return log_b

    @staticmethod
    def _normalise(log_b: np.ndarray) -> np.ndarray:
        w = np.exp(log_b - log_b.max(axis=-1, keepdims=True))
        return w / w.sum(axis=-1, keepdims=True)

    def _probs(self, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """``p(next | h) = Σ_z p(z | h) T[z, h_last]`` by forward filtering (segmented sums)."""
        w = self._normalise(self._log_belief(pages, offsets))
        return np.einsum("nz,znj->nj", w, self.transitions[:, pages])

    def session_type_posterior(self, pages: np.ndarray) -> np.ndarray:
        """``p(type | the whole session)`` of one session's page ids, ``(Z,)``."""
        pages = np.asarray(pages, dtype=np.int64)
        if len(pages) == 0:
            raise DataError("a session needs at least one page")
        return self._normalise(self._log_belief(pages, np.array([0, len(pages)]))[-1])

    # ---- simulator and files ---------------------------------------------------------------

    def dynamics(self) -> MixtureDynamics:
        """The model as simulator dynamics: each visitor draws and keeps a type."""
        return MixtureDynamics(self.prior, self.entry, self.transitions, self.pages)

    def save(self, path: str | Path) -> Path:
        """Write the tables and the fitting record to an ``.npz`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                prior=self.prior,
                entry=self.entry,
                transitions=self.transitions,
                pages=np.array(self.pages, dtype=str),
                info=np.array(json.dumps(self.info)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatentClassModel:
        """Read a model written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise RunFolderError(
                "no latent-class visitor model here: train the simulator with "
                "simulator.latent_class set (configs/simulator/)",
                file=str(path),
            )
        return read_npz(
            path,
            "latent-class model",
            lambda z: cls(
                z["prior"],
                z["entry"],
                z["transitions"],
                tuple(str(p) for p in z["pages"]),
                json.loads(str(z["info"])),
            ),
        )


def _checked_base_table(
    table: np.ndarray, train: SessionSequences, pages: tuple[str, ...]
) -> np.ndarray:
    """A given shared table as float64, ``(P, P + 1)`` rows of probabilities that give every
    training transition a chance (else its likelihood, and the fit, would be -inf).

    Raises:
        ModelError: Naming the shape, the rows' sums or the first transition given 0.
    """
    p = len(pages)
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (p, p + 1):
        raise ModelError(f"latent-class base table must be ({p}, {p + 1}), got {table.shape}")
    sums = table.sum(axis=1)
    if not (np.all(table >= 0) and np.allclose(sums, 1.0)):
        raise ModelError(
            "latent-class base table: rows must be non-negative and sum to 1 (row sums "
            f"{sums.min():.6g} to {sums.max():.6g}, smallest entry {table.min():.6g})"
        )
    impossible = np.flatnonzero(table[train.pages, train.targets()] == 0)
    if len(impossible):
        src, dst = train.pages[impossible[0]], train.targets()[impossible[0]]
        after = "EXIT" if dst == p else repr(pages[dst])
        raise ModelError(
            f"latent-class base table gives probability 0 to {len(impossible):,} training "
            f"transitions, the first {pages[src]!r} -> {after}"
        )
    return table


class _Problem:
    """The marginal likelihood of the training sessions as a torch function of the parameters.

    A type only re-weights destination *groups*, so the normaliser of a row needs only the base
    table's mass per group, ``S[i, g] = Σ_{j in g} m(i, j)``: ``log Z[z, i] = logsumexp_g(log
    S[i, g] + v[z, g(i), g])``. The likelihood then reads the observed transitions and a
    ``(Z, P, G + 1)`` normaliser, never the dense ``(Z, P, P + 1)`` table: a fitting step costs
    ``O(Z · (P · G + steps))`` instead of ``O(Z · P²)`` (1,713 pages, 3 types: 13x faster a step,
    docs/benchmarks.md).
    """

    def __init__(
        self,
        train: SessionSequences,
        groups: np.ndarray,
        smoothing: float,
        table: np.ndarray | None = None,
    ) -> None:
        src, dst = train.pages, train.targets()
        if table is None:
            table = first_order_table(train, smoothing)
        self.n_groups = int(groups.max()) + 1 if len(groups) else 1
        dst_group = np.r_[groups, self.n_groups]  # EXIT: a group of its own
        mass = np.zeros((table.shape[0], self.n_groups + 1))
        np.add.at(mass.T, dst_group, table.T)  # S[i, g]: row i's base mass on group g
        # -inf: a group without pages has no mass, a given table's ruled-out moves none
        with np.errstate(divide="ignore"):
            self.log_mass = torch.as_tensor(np.log(mass))
            self.base = torch.as_tensor(np.log(table))  # (P, P + 1), shared by every type
        self.entry_base = torch.as_tensor(np.log(entry_distribution(train)))
        self.src_group = torch.as_tensor(groups)
        self.dst_group = torch.as_tensor(dst_group)
        self.src = torch.as_tensor(src)
        self.dst = torch.as_tensor(dst)
        self.observed_base = self.base[self.src, self.dst]  # per step, fixed while fitting
        self.step_groups = (self.src_group[self.src], self.dst_group[self.dst])
        self.session = torch.as_tensor(np.repeat(np.arange(len(train)), train.lengths))
        self.first = torch.as_tensor(train.pages[train.offsets[:-1]])
        self.n_sessions = len(train)

    def tables(
        self, v: torch.Tensor, c: torch.Tensor, a: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log prior ``(Z,)``, log entry ``(Z, P)`` and log transitions ``(Z, P, P + 1)``
        (dense: built once, for the fitted model)."""
        log_t = torch.log_softmax(
            self.base[None] + v[:, self.src_group][:, :, self.dst_group], dim=-1
        )
        return torch.log_softmax(a, dim=0), self._log_entry(c), log_t

    def _log_entry(self, c: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.entry_base[None] + c[:, self.src_group], dim=-1)

    def log_likelihood(self, v: torch.Tensor, c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        log_norm = torch.logsumexp(self.log_mass[None] + v[:, self.src_group], dim=-1)  # (Z, P)
        log_t = (
            self.observed_base[None]
            + v[:, self.step_groups[0], self.step_groups[1]]
            - log_norm[:, self.src]
        )  # (Z, steps): log p(dst | src, z) of each observed transition
        per_type = torch.log_softmax(a, dim=0)[None] + self._log_entry(c)[:, self.first].T
        per_type = per_type.index_add(0, self.session, log_t.T)  # (S, Z)
        return torch.logsumexp(per_type, dim=1).sum()

    def fit(self, k: int, cfg: LatentClassConfig, seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        g = self.n_groups
        v = cfg.init_scale * torch.randn(k, g, g + 1, generator=gen, dtype=torch.float64)
        c = cfg.init_scale * torch.randn(k, g, generator=gen, dtype=torch.float64)
        a = torch.zeros(k, dtype=torch.float64)
        params = [t.requires_grad_() for t in (v, c, a)]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        n = float(len(self.src) + self.n_sessions)
        for _ in range(cfg.iters):
            opt.zero_grad()
            loss = -self.log_likelihood(v, c, a) / n
            loss.backward()
            opt.step()
        with torch.no_grad():
            ll = float(self.log_likelihood(v, c, a))
            log_prior, log_e, log_t = self.tables(v, c, a)
        order = torch.argsort(log_prior, descending=True)  # types by size: a stable labelling
        return {
            "log_likelihood": ll,
            "prior": log_prior[order].exp().numpy(),
            "entry": log_e[order].exp().numpy(),
            "transitions": log_t[order].exp().numpy(),
        }
