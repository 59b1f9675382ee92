"""First-order visitors counted on the train split: ``markov``.

Nothing to train or store: the smoothed first-order table (:func:`envs.dynamics.
first_order_table`) and entry distribution are counted from the prepared data when the model
is loaded. These are the tables the heuristics and value iteration use, so the web app falls
back to them when a run's learned world has no trained model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from envs.dynamics import MarkovDynamics
from envs.sequences import PreparedData
from envs.visitors.base import NextPage, VisitorKind, Visitors, register


class MarkovVisitors(Visitors):
    """First-order dynamics (tables ``(P, P + 1)``, entry ``(P,)``)."""

    def __init__(self, kind: VisitorKind, dynamics: MarkovDynamics) -> None:
        self.kind, self._dynamics, self.pages = kind, dynamics, dynamics.pages

    def dynamics(self, top_k: int | None = None) -> MarkovDynamics:
        return self._dynamics

    def _next_distribution(self, ids: np.ndarray) -> NextPage:
        row = self._dynamics.transitions[int(ids[-1])].cpu().double().numpy()
        return NextPage.single(row / row.sum())  # float32 table: renormalise in float64


@register
class MarkovKind(VisitorKind):
    name = "markov"
    title = "first-order Markov"
    tables = True
    first_order = True

    def load(
        self,
        data: PreparedData,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> MarkovVisitors:
        return MarkovVisitors(self, MarkovDynamics.fit(data.splits["train"], data.vocab.pages))
