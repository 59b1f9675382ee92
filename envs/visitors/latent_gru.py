"""The latent-type GRU (``envs/latent_gru.py``) as a visitor kind: ``latent_gru``.

Trained when ``simulator.latent_gru`` is set (e.g. ``{types: auto}``), with the GRU trunk of
``simulator.model`` and the trainer of ``simulator.trainer`` (windows of ``latent_gru.max_len``:
a type belongs to a whole session). ``types: auto`` trains each candidate ``K`` and keeps the
one the validation split prefers; every candidate's figures go to ``metrics.json``. Written to
``latent_gru.pt`` (weights, vocabulary, configs, the number of types). In the simulator a
visitor draws her type at arrival and keeps it; people get the types' posterior after the
history and each type's row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from envs.dynamics import Dynamics
from envs.exit_calibration import calibrate_trained, calibrated, describe
from envs.latent_gru import (
    LatentGRUDynamics,
    LatentGRUModel,
    LatentTypesConfig,
    train_in_stages,
)
from envs.sequences import PreparedData
from envs.training import resolve_device
from envs.visitor_model import ModelConfig
from envs.visitors.base import NextPage, TrainContext, Trained, VisitorKind, Visitors, register
from envs.visitors.gru import resume_identity


class LatentGRUVisitors(Visitors):
    """A trained :class:`~envs.latent_gru.LatentGRUModel`."""

    def __init__(self, kind: VisitorKind, model: LatentGRUModel) -> None:
        self.kind, self.model, self.pages = kind, model, model.vocab.pages

    def dynamics(self, top_k: int | None = None) -> Dynamics:
        # candidate mode (top_k) scores only the candidates from the top-layer output
        dyn = LatentGRUDynamics(self.model, full_logits=top_k is None)
        return calibrated(dyn, self.model.exit_calibration)

    def next_distribution(self, history: Sequence[int]) -> NextPage:
        weights, rows = self.model.next_types(history)
        return NextPage(weights, rows)


@register
class LatentGRUKind(VisitorKind):
    name = "latent_gru"
    title = "latent-type GRU"
    files = ("latent_gru.pt",)
    config_key = "latent_gru"
    latent_state = True

    def train(self, options: Mapping[str, Any], ctx: TrainContext) -> Trained:
        types = LatentTypesConfig.from_dict(options)
        trunk = ModelConfig.from_dict(ctx.settings.get("model"))
        trainer = dataclasses.replace(ctx.trainer, max_len=int(types.max_len))
        device = resolve_device(trainer.device)
        fingerprint = ctx.data.manifest.data_fingerprint if ctx.data.manifest else None
        label = f"latent-type GRU ({ctx.label})" if ctx.label else "latent-type GRU"
        tried: dict[int, dict[str, Any]] = {}
        models: dict[int, LatentGRUModel] = {}
        for k in types.tried:
            torch.manual_seed(trainer.seed)  # the initial weights: same seed, same model
            model = LatentGRUModel(
                ctx.data.vocab,
                trunk,
                device,
                n_types=k,
                init_scale=types.init_scale,
                page_preferences=types.page_preferences,
            )
            identity = resume_identity(ctx.settings, fingerprint)
            identity["config"]["latent_gru"] = {**dataclasses.asdict(types), "k": k}
            stages = train_in_stages(
                model,
                ctx.splits["train"],
                ctx.splits["valid"],
                trainer,
                checkpoints=ctx.work,
                resume=ctx.resume,
                writer=ctx.writer,
                label=f"{label}, {k} type{'s' if k > 1 else ''}",
                identity=identity,
                memory_lr=types.memory_lr,
                restarts=types.restarts,
                trunk=types.trunk,
                table_lr=types.table_lr,
            )
            keep = "memory" if model.latent.memory else "first_order"
            models[k] = model
            with torch.no_grad():
                prior = model.latent.log_type_prior().exp().cpu().numpy()
            tried[k] = {
                "valid_log_loss": stages[keep]["best_valid_log_loss"],
                "kept": keep,
                "stages": {
                    name: {
                        "valid_log_loss": h["best_valid_log_loss"],
                        "best_epoch": h["best_epoch"],
                        "train_events_per_sec": h["train_events_per_sec"],
                        "train_seconds": sum(e["train_seconds"] for e in h["epochs"]),
                    }
                    for name, h in stages.items()
                },
                "prior": [round(float(x), 4) for x in prior],
                "first_order_restarts": stages["first_order"]["restarts"],
                "kept_restart": stages["first_order"]["kept_restart"],
            }
        chosen = choose_types({k: r["valid_log_loss"] for k, r in tried.items()}, types.min_gain)
        model = models[chosen]
        calibration = calibrate_trained(
            model,
            LatentGRUVisitors(self, model).dynamics,
            ctx.splits,
            ctx.settings.get("exit_calibration"),
        )
        record = {
            "types": chosen,
            "tried": {str(k): r for k, r in tried.items()},
            "history": model.train_state.get("history"),
            "train_events_per_sec": tried[chosen]["stages"]["memory"]["train_events_per_sec"],
            "parameters": sum(p.numel() for p in model.net.parameters()),
            "exit_calibration": calibration,
        }

        def write(path_of: Any, metrics: dict[str, Any]) -> None:
            model.metrics = metrics
            model.save(path_of(self.files[0]), extra={"data_dir": ctx.data_dir})

        summary = (
            f"latent-type GRU: {chosen} visitor types (validation log-loss "
            + ", ".join(f"K={k} {r['valid_log_loss']:.4f}" for k, r in tried.items())
            + f"), {record['train_events_per_sec']:,.0f} events/s"
        )
        if calibration is not None:
            summary += f"; {describe(calibration)}"
        return Trained(model, record, summary, write)

    def load(
        self,
        data: PreparedData,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> LatentGRUVisitors:
        path = self.model_file(data, model_path)
        model = LatentGRUModel.load(path, device=device)
        self.check_pages(model.vocab.pages, data, path, "latent-type GRU")
        return LatentGRUVisitors(self, model)


def choose_types(valid_log_loss: Mapping[int, float], min_gain: float) -> int:
    """The number of types the validation split picks: the fewest whose log-loss no larger
    count beats by ``min_gain`` or more (more types must earn their keep)."""
    counts = sorted(valid_log_loss)
    best = counts[0]
    for k in counts[1:]:
        if valid_log_loss[k] < valid_log_loss[best] - min_gain:
            best = k
    return int(best)
