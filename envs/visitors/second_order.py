"""Second-order Markov visitors: ``second_order``, where the next page depends on the previous
page and the current one.

``p(next | previous, current)`` is the smoothed second-order model of the baselines
(:class:`envs.baselines.SecondOrderMarkov`: counts of ``(previous, current) → next`` backed off
to the first-order row, the previous page of an entry page being ``ENTRY``), fitted when
``simulator.second_order`` is set (``configs/simulator/second_order.yaml``) and written to
``second_order.npz`` as dense rows: one per context seen in training, plus the first-order row
of every page (what an unseen context gets). On sites with little data its log-loss beats the
GRU's (the GA sample day, ``docs/results.md``), so it is a world worth simulating
(``docs/visitor_models.md`` has its fidelity there).

It is also the worked example of ``docs/visitor_models.md``: one module and one config, no
other file changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clickstream.errors import ConfigError, ModelError
from clickstream.io import read_npz
from envs.baselines import SecondOrderMarkov
from envs.dynamics import Dynamics, entry_distribution, sample_categorical
from envs.sequences import PreparedData
from envs.visitors.base import NextPage, TrainContext, Trained, VisitorKind, Visitors, register

MAX_CELLS = 20_000_000
"""Largest ``(contexts + P) × (P + 1)`` table written (float64: 160 MB)."""


class SecondOrderTables:
    """Dense rows of a second-order model.

    Args:
        keys: Contexts seen in training, ``previous · (P + 1) + current`` (``previous = P``:
            ``ENTRY``), sorted, ``(R,)`` int64.
        context_rows: ``p(· | context)``, ``(R, P + 1)`` float64.
        first_rows: ``p(· | current)`` of every page (unseen contexts), ``(P, P + 1)``.
        pages: Page names, length P.
        info: How it was fitted.

    Raises:
        ClickstreamError: Shapes, keys or rows that do not fit together.
    """

    def __init__(
        self,
        keys: np.ndarray,
        context_rows: np.ndarray,
        first_rows: np.ndarray,
        pages: tuple[str, ...],
        info: dict[str, Any] | None = None,
    ) -> None:
        p = len(pages)
        self.keys = np.asarray(keys, dtype=np.int64)
        self.context_rows = np.asarray(context_rows, dtype=np.float64)
        self.first_rows = np.asarray(first_rows, dtype=np.float64)
        self.pages, self.info = tuple(pages), dict(info or {})
        r = len(self.keys)
        if (
            self.keys.ndim != 1
            or self.context_rows.shape != (r, p + 1)
            or self.first_rows.shape != (p, p + 1)
        ):
            raise ModelError(
                f"second-order tables need keys (R,), rows (R, P + 1) and first-order rows "
                f"(P, P + 1) for P = {p} pages; got {self.keys.shape}, "
                f"{self.context_rows.shape}, {self.first_rows.shape}"
            )
        if r and (
            np.any(np.diff(self.keys) <= 0)
            or self.keys[0] < 0
            or self.keys[-1] >= (p + 1) * (p + 1)
            or np.any(self.keys % (p + 1) >= p)
        ):
            raise ModelError("second-order context keys must be sorted, distinct page pairs")
        for what, rows in (("context", self.context_rows), ("first-order", self.first_rows)):
            if not (np.all(rows >= 0) and np.allclose(rows.sum(1), 1.0)):
                raise ModelError(f"second-order model: every {what} row must sum to 1")

    @property
    def n_pages(self) -> int:
        return len(self.pages)

    @classmethod
    def from_model(cls, model: SecondOrderMarkov, pages: tuple[str, ...]) -> SecondOrderTables:
        """The rows of a fitted :class:`~envs.baselines.SecondOrderMarkov`.

        Raises:
            ClickstreamError: Too many cells (:data:`MAX_CELLS`).
        """
        p = model.n_pages
        keys = model._counts.keys
        cells = (len(keys) + p) * (p + 1)
        if cells > MAX_CELLS:
            raise ConfigError(
                f"second-order visitors of {p} pages with {len(keys):,} contexts need "
                f"{cells:,} dense cells (at most {MAX_CELLS:,}): group pages (pages config)"
            )
        rows = model.next_distribution(keys // (p + 1), keys % (p + 1))
        first = model.first_order.next_distribution(np.arange(p))
        info = {"k": model.k, "k1": model.first_order.k, "contexts": len(keys)}
        return cls(keys, rows, first, pages, info)

    def rows(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """``p(· | previous, current)``, ``(n, P + 1)``."""
        key = np.asarray(previous, dtype=np.int64) * (self.n_pages + 1) + current
        pos = np.minimum(np.searchsorted(self.keys, key), max(len(self.keys) - 1, 0))
        found = self.keys[pos] == key if len(self.keys) else np.zeros(len(key), dtype=bool)
        return np.where(found[:, None], self.context_rows[pos], self.first_rows[current])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                keys=self.keys,
                context_rows=self.context_rows,
                first_rows=self.first_rows,
                pages=np.array(self.pages, dtype=str),
                info=np.array(json.dumps(self.info)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> SecondOrderTables:
        """Read :meth:`save`'s file as data only (no pickle).

        Raises:
            RunFolderError: Not a readable second-order model file, naming it.
        """
        return read_npz(
            path,
            "second-order model",
            lambda z: cls(
                z["keys"],
                z["context_rows"],
                z["first_rows"],
                tuple(str(p) for p in z["pages"]),
                json.loads(str(z["info"])),
            ),
        )


class SecondOrderDynamics(Dynamics):
    """The tables in the simulator: a visitor's state is (previous page, current page)."""

    state_dim = 2

    def __init__(self, tables: SecondOrderTables, entry: np.ndarray) -> None:
        self.pages, self.n_pages = tables.pages, tables.n_pages
        self.entry = torch.as_tensor(entry, dtype=torch.float32)
        self.keys = torch.as_tensor(tables.keys)
        self.context_rows = torch.as_tensor(tables.context_rows, dtype=torch.float32)
        self.first_rows = torch.as_tensor(tables.first_rows, dtype=torch.float32)

    def to(self, device: torch.device | str) -> SecondOrderDynamics:
        self.entry, self.keys = self.entry.to(device), self.keys.to(device)
        self.context_rows = self.context_rows.to(device)
        self.first_rows = self.first_rows.to(device)
        return self

    def start(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pages = sample_categorical(self.entry.expand(n, -1), generator)
        entry_context = torch.full_like(pages, self.n_pages)  # ENTRY
        return pages, torch.stack([entry_context, pages], dim=1).float()

    def next_probs(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        key = state[:, 0].long() * (self.n_pages + 1) + pages
        if len(self.keys) == 0:
            return self.first_rows[pages]
        pos = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
        found = self.keys[pos] == key
        return torch.where(found[:, None], self.context_rows[pos], self.first_rows[pages])

    def log_scores(
        self, pages: torch.Tensor, state: torch.Tensor, outcomes: torch.Tensor
    ) -> torch.Tensor:
        return torch.log(self.next_probs(pages, state).gather(1, outcomes))

    def advance(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.stack([state[:, 1], pages.to(state.dtype)], dim=1)


class SecondOrderVisitors(Visitors):
    def __init__(self, kind: VisitorKind, tables: SecondOrderTables, entry: np.ndarray) -> None:
        self.kind, self.tables, self.entry, self.pages = kind, tables, entry, tables.pages

    def dynamics(self, top_k: int | None = None) -> SecondOrderDynamics:
        return SecondOrderDynamics(self.tables, self.entry)

    def _next_distribution(self, ids: np.ndarray) -> NextPage:
        previous = ids[-2] if len(ids) > 1 else self.n_pages  # ENTRY
        return NextPage.single(self.tables.rows(np.array([previous]), ids[-1:])[0])


@register
class SecondOrderKind(VisitorKind):
    name = "second_order"
    title = "second-order Markov"
    files = ("second_order.npz",)
    config_key = "second_order"
    seeded = False

    def check(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - {"k", "k1", "alpha", "tune_on_valid"})
        if unknown:
            raise ConfigError(
                f"simulator.second_order has no setting {unknown}: k, k1, alpha, tune_on_valid"
            )

    def train(self, options: Mapping[str, Any], ctx: TrainContext) -> Trained:
        self.check(options)
        settings = dict(options)
        tune = bool(settings.pop("tune_on_valid", True))
        model = SecondOrderMarkov(**settings, name=self.name)
        model.fit(ctx.splits["train"], valid=ctx.splits["valid"] if tune else None)
        tables = SecondOrderTables.from_model(model, ctx.data.vocab.pages)
        # load() counts the entry distribution on the same sessions
        tables.info["min_session_length"] = ctx.min_session_length
        record = {**tables.info, "tuning": model.tuning}

        def write(path_of: Any, metrics: dict[str, Any]) -> None:
            tables.save(path_of(self.files[0]))

        summary = f"second-order Markov: {len(tables.keys):,} contexts, k = {model.k:g}"
        return Trained(model, record, summary, write)

    def load(
        self,
        data: PreparedData,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> SecondOrderVisitors:
        path = self.model_file(data, model_path)
        tables = SecondOrderTables.load(path)
        self.check_pages(tables.pages, data, path, "second-order model")
        # the sessions it was fitted on (files written before it was recorded: every session)
        train = self.train_split(data, tables.info.get("min_session_length", 1), path)
        return SecondOrderVisitors(self, tables, entry_distribution(train))
