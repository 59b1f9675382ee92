"""The synthetic store's own visitors, the ground truth: ``true``.

Nothing to train: a synthetic dataset carries the store it was sampled from
(``true_model.npz``), and the default env builds one in memory. A visitor draws her intent at
arrival and keeps it (:class:`~envs.dynamics.TrueDynamics`); people get the intents' posterior
given the history and each intent's row.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from clickstream.errors import ConfigError
from clickstream.synthetic import SyntheticStore
from envs.dynamics import TrueDynamics, store_tables
from envs.sequences import PreparedData
from envs.visitors.base import NextPage, VisitorKind, Visitors, mixture_next_page, register


class TrueVisitors(Visitors):
    """A synthetic store in a page order (default: the store's own)."""

    def __init__(
        self, kind: VisitorKind, store: SyntheticStore, pages: tuple[str, ...] | None = None
    ) -> None:
        self.kind, self.store = kind, store
        self._order = pages
        self.pages = tuple(store.pages) if pages is None else tuple(pages)

    def dynamics(self, top_k: int | None = None) -> TrueDynamics:
        return TrueDynamics(self.store, self._order)

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prior, entry, transitions, _ = store_tables(
            self.store, self._order, TrueDynamics.max_dense_cells
        )
        return prior, entry, transitions

    def _next_distribution(self, ids: np.ndarray) -> NextPage:
        return mixture_next_page(*self._tables, ids, "synthetic store's true model")


@register
class TrueKind(VisitorKind):
    name = "true"
    title = "the synthetic store's true model"
    ground_truth = True
    latent_state = True
    tables = True

    def load(
        self,
        data: PreparedData,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> TrueVisitors:
        if data.true_model_path is None:
            raise ConfigError(
                "dynamics='true' needs a synthetic dataset (true_model.npz)",
                file=str(data.data_dir),
            )
        return TrueVisitors(self, SyntheticStore.load(data.true_model_path), data.vocab.pages)

    def from_store(self, store: SyntheticStore) -> TrueVisitors:
        return TrueVisitors(self, store)
