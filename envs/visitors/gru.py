"""The GRU visitor model (``envs/visitor_model.py``) as a visitor kind: ``gru``, the default.

Trained from ``simulator.model`` (the network) and ``simulator.trainer`` (``envs/training.py``),
written to ``model.pt`` (weights, vocabulary, config, test metrics) with ``last.pt`` (the last
epoch's training state) beside it. The simulator runs it as :class:`~envs.dynamics.GRUDynamics`;
people get its distribution after the whole history.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clickstream.runfolder import plain_config
from envs.core import resolve_device
from envs.dynamics import Dynamics, GRUDynamics, entry_distribution
from envs.exit_calibration import calibrate_trained, calibrated, describe
from envs.fidelity import converting_pages
from envs.sequences import PreparedData
from envs.training import train
from envs.visitor_model import ModelConfig, VisitorModel
from envs.visitors.base import NextPage, TrainContext, Trained, VisitorKind, Visitors, register

RESUME_FREE = frozenset({"epochs", "patience", "device", "num_threads", "eval_batch_sessions"})
"""Trainer settings a run may be resumed with other values of (more epochs, another device);
every other setting, and the data, must be those the checkpoint was made with."""


class GRUVisitors(Visitors):
    """A trained GRU and the entry distribution of the sessions it was trained on (the train
    split, ``min_session_length`` applied: the GRU does not model where sessions start)."""

    def __init__(self, kind: VisitorKind, model: VisitorModel, entry: np.ndarray) -> None:
        self.kind, self.model, self.entry = kind, model, entry
        self.pages = model.vocab.pages

    def dynamics(self, top_k: int | None = None) -> Dynamics:
        # candidate mode (top_k) scores only the candidates from the top-layer output
        dyn = GRUDynamics(self.model, self.entry, full_logits=top_k is None)
        return calibrated(dyn, self.model.exit_calibration)

    def _next_distribution(self, ids: np.ndarray) -> NextPage:
        logp = self.model.log_prob_next(ids[None, :])[0, -1]
        p = logp.double().exp().cpu().numpy()
        return NextPage.single(p / p.sum())  # float32 softmax: renormalise in float64


@register
class GRUKind(VisitorKind):
    name = "gru"
    title = "GRU"
    files = ("model.pt",)
    checkpoints = ("last.pt",)
    config_key = "model"
    default = True

    def check(self, options: Mapping[str, Any]) -> None:
        ModelConfig.from_dict(options)

    def train(self, options: Mapping[str, Any], ctx: TrainContext) -> Trained:
        cfg = ctx.trainer
        torch.manual_seed(cfg.seed)  # the initial weights: same seed, same model
        model = VisitorModel(
            ctx.data.vocab, ModelConfig.from_dict(options), device=resolve_device(cfg.device)
        )
        manifest = ctx.data.manifest
        history = train(
            model,
            ctx.splits["train"],
            ctx.splits["valid"],
            cfg,
            checkpoint=ctx.work / "last.pt",
            resume=ctx.resume,
            writer=ctx.writer,
            label=f"GRU ({ctx.label})" if ctx.label else "GRU",
            identity=resume_identity(ctx.settings, manifest.data_fingerprint if manifest else None),
        )
        model.min_session_length = ctx.min_session_length  # load() counts the entry the same
        entry = entry_distribution(ctx.splits["train"])
        calibration = calibrate_trained(
            model,
            GRUVisitors(self, model, entry).dynamics,
            ctx.splits,
            ctx.settings.get("exit_calibration"),
            converting_pages(ctx.data.catalog(), ctx.data.vocab),
        )
        record = {
            "history": history,
            "train_events_per_sec": history["train_events_per_sec"],
            "best_epoch": history["best_epoch"],
            "parameters": sum(p.numel() for p in model.net.parameters()),
            "exit_calibration": calibration,
        }

        def write(path_of: Any, metrics: dict[str, Any]) -> None:
            model.metrics = metrics
            model.save(path_of("model.pt"), extra={"data_dir": ctx.data_dir})

        rate = history["train_events_per_sec"]  # None: no epoch trained (resumed past epochs)
        summary = "GRU training: " + (f"{rate:,.0f} events/s" if rate else "no epoch trained")
        if calibration is not None:
            summary += f"; {describe(calibration)}"
        return Trained(model, record, summary, write)

    def load(
        self,
        data: PreparedData,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> GRUVisitors:
        path = self.model_file(data, model_path)
        model = VisitorModel.load(path, device=device)
        self.check_pages(model.vocab.pages, data, path, "visitor model")
        # the sessions it (and its exit calibration) was fitted on: min_session_length applied
        train = self.train_split(data, model.min_session_length, path)
        return GRUVisitors(self, model, entry_distribution(train))


def resume_identity(settings: Mapping[str, Any], fingerprint: str | None) -> dict[str, Any]:
    """What a checkpoint must have been made from to be resumed: the data's fingerprint and
    the settings that change training (all but :data:`RESUME_FREE`)."""
    trainer = {k: v for k, v in (settings.get("trainer") or {}).items() if k not in RESUME_FREE}
    chosen = {
        "model": settings.get("model"),
        "trainer": trainer,
        "min_session_length": settings.get("min_session_length", 1),
    }
    return {"data_fingerprint": fingerprint, "config": plain_config(chosen, chosen.keys())}
