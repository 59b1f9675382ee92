"""The latent-class visitor model (``envs/latent_class.py``) as a visitor kind: ``latent_class``.

Visitor types, each a first-order chain, fitted by marginal likelihood when
``simulator.latent_class`` is set (e.g. ``{classes: auto}``), written to ``latent_class.npz``.
In the simulator a visitor draws her type at arrival and keeps it, so a recommendation acts on
her own type's row; people get the types' posterior given the history and each type's row.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.dynamics import MixtureDynamics
from envs.latent_class import LatentClassConfig, LatentClassModel
from envs.sequences import PreparedData
from envs.visitors.base import NextPage, TrainContext, Trained, VisitorKind, Visitors, register


class LatentClassVisitors(Visitors):
    """A fitted :class:`~envs.latent_class.LatentClassModel`."""

    def __init__(self, kind: VisitorKind, model: LatentClassModel) -> None:
        self.kind, self.model, self.pages = kind, model, model.pages

    def dynamics(self, top_k: int | None = None) -> MixtureDynamics:
        return self.model.dynamics()

    def _next_distribution(self, ids: np.ndarray) -> NextPage:
        weights = self.model.session_type_posterior(ids)
        return NextPage(weights, self.model.transitions[:, ids[-1]])


@register
class LatentClassKind(VisitorKind):
    name = "latent_class"
    title = "latent classes"
    files = ("latent_class.npz",)
    config_key = "latent_class"
    latent_state = True
    tables = True

    def check(self, options: Mapping[str, Any]) -> None:
        LatentClassConfig.from_dict({"seed": 0, **options})

    def train(self, options: Mapping[str, Any], ctx: TrainContext) -> Trained:
        model = LatentClassModel.fit(
            ctx.splits["train"],
            ctx.data.vocab.page_group,
            ctx.data.vocab.pages,
            LatentClassConfig.from_dict({"seed": ctx.trainer.seed, **options}),
            valid=ctx.splits["valid"],
        )

        def write(path_of: Any, metrics: dict[str, Any]) -> None:
            model.save(path_of(self.files[0]))

        summary = f"latent classes: {model.n_classes} visitor types"
        return Trained(model, model.info, summary, write)

    def load(
        self,
        data: PreparedData,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> LatentClassVisitors:
        path = self.model_file(data, model_path)
        model = LatentClassModel.load(path)
        self.check_pages(model.pages, data, path, "latent-class model")
        return LatentClassVisitors(self, model)
