"""The latent-type GRU (``envs/latent_gru.py``) as a visitor kind: ``latent_gru``.

Trained when ``simulator.latent_gru`` is set (e.g. ``{types: auto}``), with the GRU trunk of
``simulator.model`` and the trainer of ``simulator.trainer`` (windows of ``latent_gru.max_len``:
a type belongs to a whole session). ``types: auto`` trains each candidate ``K`` and keeps the
one the validation split prefers (every candidate trained in the same two stages); every
candidate's figures go to ``metrics.json``. A model of one type is then trained again as the
plain GRU is, in one stage (``latent_gru.one_type``), and that is the one kept. Written to
``latent_gru.pt`` (weights, vocabulary, configs, the number of types). In the simulator a
visitor draws her type at arrival and keeps it; people get the types' posterior after the
history and each type's row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.core import resolve_device
from envs.dynamics import Dynamics
from envs.exit_calibration import calibrate_trained, calibrated, describe
from envs.fidelity import converting_pages
from envs.latent_gru import (
    LatentGRUDynamics,
    LatentGRUModel,
    LatentTypesConfig,
    train_in_stages,
    train_one_stage,
)
from envs.sequences import PreparedData
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

    def _next_distribution(self, ids: np.ndarray) -> NextPage:
        weights, rows = self.model.next_types(ids)
        return NextPage(weights, rows)


@register
class LatentGRUKind(VisitorKind):
    name = "latent_gru"
    title = "latent-type GRU"
    files = ("latent_gru.pt",)
    config_key = "latent_gru"
    latent_state = True
    tables = True  # when first-order (the memory stage not kept): LatentGRUDynamics.chains

    def check(self, options: Mapping[str, Any]) -> None:
        LatentTypesConfig.from_dict(options)

    def train(self, options: Mapping[str, Any], ctx: TrainContext) -> Trained:
        types = LatentTypesConfig.from_dict(options)
        trunk = ModelConfig.from_dict(ctx.settings.get("model"))
        trainer = dataclasses.replace(ctx.trainer, max_len=int(types.max_len))
        device = resolve_device(trainer.device)
        fingerprint = ctx.data.manifest.data_fingerprint if ctx.data.manifest else None
        label = f"latent-type GRU ({ctx.label})" if ctx.label else "latent-type GRU"
        one_stage = types.one_type == "one_stage"

        def fresh(k: int) -> LatentGRUModel:
            torch.manual_seed(trainer.seed)  # the initial weights: same seed, same model
            return LatentGRUModel(
                ctx.data.vocab,
                trunk,
                device,
                n_types=k,
                init_scale=types.init_scale,
                page_preferences=types.page_preferences,
            )

        def identity_of(k: int) -> dict[str, Any]:
            identity = resume_identity(ctx.settings, fingerprint)
            identity["config"]["latent_gru"] = {**dataclasses.asdict(types), "k": k}
            return identity

        def train_single() -> tuple[LatentGRUModel, dict[str, dict[str, Any]]]:
            model = fresh(1)
            history = train_one_stage(
                model,
                ctx.splits["train"],
                ctx.splits["valid"],
                trainer,
                checkpoint=ctx.work / f"{model.name}_k1_one_stage.pt",
                resume=ctx.resume,
                writer=ctx.writer,
                label=f"{label}, 1 type",
                identity=identity_of(1),
            )
            return model, {"one_stage": history}

        tried: dict[int, dict[str, Any]] = {}
        models: dict[int, LatentGRUModel] = {}
        for k in types.tried:
            if k == 1 and one_stage and len(types.tried) == 1:
                models[k], stages = train_single()  # types: 1, nothing to compare with
            else:
                models[k] = fresh(k)
                stages = train_in_stages(
                    models[k],
                    ctx.splits["train"],
                    ctx.splits["valid"],
                    trainer,
                    checkpoints=ctx.work,
                    resume=ctx.resume,
                    writer=ctx.writer,
                    label=f"{label}, {k} type{'s' if k > 1 else ''}",
                    identity=identity_of(k),
                    memory_lr=types.memory_lr,
                    restarts=types.restarts,
                    trunk=types.trunk,
                    table_lr=types.table_lr,
                    table_fit=types.table_fit,
                    table_biases=types.table_biases,
                    memory_min_gain=types.memory_min_gain,
                )
            tried[k] = _candidate_record(models[k], stages)
        chosen = choose_types({k: r["valid_log_loss"] for k, r in tried.items()}, types.min_gain)
        model = models[chosen]
        kept = tried[chosen]
        if chosen == 1 and one_stage and "one_stage" not in kept["stages"]:
            # picked against two-stage candidates; kept as the plain GRU is trained
            model, stages = train_single()
            kept = _candidate_record(model, stages)
        calibration = calibrate_trained(
            model,
            LatentGRUVisitors(self, model).dynamics,
            ctx.splits,
            ctx.settings.get("exit_calibration"),
            converting_pages(ctx.data.catalog(), ctx.data.vocab),
        )
        gru_stage = "one_stage" if "one_stage" in kept["stages"] else "memory"  # the GRU's speed
        record = {
            "types": chosen,
            "tried": {str(k): r for k, r in tried.items()},
            "kept": kept,
            "history": model.train_state.get("history"),
            "train_events_per_sec": kept["stages"][gru_stage]["train_events_per_sec"],
            "parameters": sum(p.numel() for p in model.net.parameters()),
            "exit_calibration": calibration,
        }

        def write(path_of: Any, metrics: dict[str, Any]) -> None:
            model.metrics = metrics
            model.save(path_of(self.files[0]), extra={"data_dir": ctx.data_dir})

        summary = (
            f"latent-type GRU: {chosen} visitor type{'s' if chosen > 1 else ''} (validation "
            "log-loss "
            + ", ".join(f"K={k} {r['valid_log_loss']:.4f}" for k, r in tried.items())
            + ")"
        )
        if kept is not tried[chosen]:
            summary += f"; the one type trained in one stage: {kept['valid_log_loss']:.4f}"
        summary += f", {record['train_events_per_sec']:,.0f} events/s"
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


def _candidate_record(model: LatentGRUModel, stages: Mapping[str, Any]) -> dict[str, Any]:
    """What ``metrics.json`` records of one trained model: the kept stage's validation
    log-loss, every stage's figures, the type prior and the first stage's restarts."""
    if "one_stage" in stages:
        keep = "one_stage"
    else:  # two stages: the model holds the one train_in_stages kept
        keep = "memory" if model.latent.memory else "first_order"
    with torch.no_grad():
        prior = model.latent.log_type_prior().exp().cpu().numpy()
    first = stages.get("first_order", {})
    return {
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
        "first_order_restarts": first.get("restarts"),
        "kept_restart": first.get("kept_restart"),
    }


def choose_types(valid_log_loss: Mapping[int, float], min_gain: float) -> int:
    """The number of types the validation split picks: the fewest whose log-loss no larger
    count beats by ``min_gain`` or more (more types must earn their keep)."""
    counts = sorted(valid_log_loss)
    best = counts[0]
    for k in counts[1:]:
        if valid_log_loss[k] < valid_log_loss[best] - min_gain:
            best = k
    return int(best)
