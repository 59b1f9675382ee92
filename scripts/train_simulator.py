"""Train the GRU visitor model and compare it with the next-page baselines (and the truth).

With ``simulator.latent_class`` set it also fits the latent-class visitor model
(``envs/latent_class.py``, written to ``out_dir/latent_class.npz`` and scored with the rest),
which ``env.dynamics=latent_class`` simulates.

    python scripts/train_simulator.py data_dir=<prepared dir> out_dir=<dir> [simulator=gru_msnbc]

Writes ``out_dir/model.pt`` (weights, vocabulary, config, metrics), ``out_dir/metrics.json``
(every metric of the GRU and each baseline on the test split, with and without ``EXIT``, plus
the true model's on synthetic data), ``out_dir/metrics.md`` (the tables), TensorBoard curves in
``out_dir/tensorboard``, the last training checkpoint ``last.pt`` and ``manifest.json``, and
prints the comparison. The run works in ``.<out_dir name>.partial`` beside ``out_dir`` and
publishes it with one rename at the end (``clickstream/runfolder.py``); ``resume=true``
continues an interrupted run from the checkpoint there (or the published run, e.g. with more
epochs) when it was made from the same data and settings. See ``configs/train_simulator.yaml``.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from clickstream.errors import ClickstreamError
from clickstream.prepare import git_commit
from clickstream.runfolder import (
    StageWriter,
    config_hash,
    plain_config,
    recover,
    verified_file,
)
from clickstream.synthetic import SyntheticStore
from envs.baselines import FirstOrderMarkov, Popularity, SecondOrderMarkov, TrueModel
from envs.latent_class import LatentClassConfig, LatentClassModel
from envs.metrics import evaluate, format_table
from envs.sequences import load_prepared
from envs.site_env import MODEL_FILES
from envs.training import TrainerConfig, resolve_device, train
from envs.visitor_model import ModelConfig, VisitorModel
from scripts import run_or_exit

VARIANTS = ("with_exit", "without_exit")


CONFIG_KEYS = ("simulator", "seed")
"""Settings that change the visitor model (their hash is in the manifest; the pipeline reuses a
simulator folder while it matches and the data it was made from are the same)."""

RESUME_FREE = frozenset({"epochs", "patience", "device", "num_threads", "eval_batch_sessions"})
"""Trainer settings a run may be resumed with other values of (more epochs, another device);
every other setting, and the data, must be those the checkpoint was made with."""


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate and write the outputs; returns the metrics record."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    sim = resolved["simulator"]
    report = sim.get("report", "with_exit")
    if report not in VARIANTS:
        raise ClickstreamError(f"simulator.report must be one of {VARIANTS}, got {report!r}")
    out_dir = Path(resolved["out_dir"])
    data = load_prepared(resolved["data_dir"])
    assert data.manifest is not None
    k = int(sim.get("min_session_length", 1))
    splits = {name: seqs.min_length(k) for name, seqs in data.splits.items()}

    trainer_cfg = TrainerConfig.from_dict(sim["trainer"])
    torch.manual_seed(trainer_cfg.seed)  # the initial weights: same seed, same model
    model = VisitorModel(
        data.vocab, ModelConfig.from_dict(sim["model"]), device=resolve_device(trainer_cfg.device)
    )
    resume = bool(resolved.get("resume", False))
    work = work_dir(out_dir)
    recover(out_dir)  # a run killed after its manifest was written is published, not redone
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    stage = StageWriter(
        out_dir,
        "train_simulator",
        config_hash=config_hash(resolved, CONFIG_KEYS),
        inputs={"data": data.manifest.digest},
        data_fingerprint=data.manifest.data_fingerprint,
        work_dir=work,
    )
    with stage as out:
        if resume:
            _resume_from_published(out_dir, work)
        writer = _tensorboard(out.dir / "tensorboard")
        history = train(
            model,
            splits["train"],
            splits["valid"],
            trainer_cfg,
            checkpoint=work / "last.pt",
            resume=resume,
            writer=writer,
            label=str(resolved.get("label") or "GRU"),  # the pipeline names main / held-out
            identity=_resume_identity(sim, data.manifest.data_fingerprint),
        )

        predictors: list[Any] = [model]
        baselines = dict(sim.get("baselines") or {})
        tune = bool(baselines.pop("tune_on_valid", True))
        predictors.append(
            Popularity(**dict(baselines.get("popularity") or {})).fit(splits["train"])
        )
        for cls, key in ((FirstOrderMarkov, "markov1"), (SecondOrderMarkov, "markov2")):
            predictors.append(
                cls(**dict(baselines.get(key) or {})).fit(
                    splits["train"], valid=splits["valid"] if tune else None
                )
            )
        latent = None
        if sim.get("latent_class") is not None:  # visitor types for the latent_class simulator
            latent = LatentClassModel.fit(
                splits["train"],
                data.vocab.page_group,
                data.vocab.pages,
                LatentClassConfig.from_dict({"seed": trainer_cfg.seed, **sim["latent_class"]}),
                valid=splits["valid"],
            )
            predictors.append(latent)
        if data.true_model_path is not None:
            store = SyntheticStore.load(data.true_model_path)
            predictors.append(TrueModel(store, data.vocab.pages))

        test = splits["test"]
        models = {
            p.name: evaluate(p, test, batch_sessions=trainer_cfg.eval_batch_sessions)
            for p in predictors
        }
        record: dict[str, Any] = {
            "data_dir": str(resolved["data_dir"]),
            "dataset": data.meta.get("summary"),
            "dataset_created_utc": data.meta.get("created_utc"),
            "repeats": data.meta.get("repeats"),
            "min_session_length": k,
            "steps": {name: s.n_steps for name, s in splits.items()},
            "sessions": {name: len(s) for name, s in splits.items()},
            "models": models,
            "baseline_smoothing": {
                p.name: getattr(p, "tuning", None) for p in predictors if hasattr(p, "tuning")
            },
            "gru": {
                "history": history,
                "train_events_per_sec": history["train_events_per_sec"],
                "best_epoch": history["best_epoch"],
                "parameters": sum(p.numel() for p in model.net.parameters()),
            },
            "latent_class": None if latent is None else latent.info,
            "report": report,
            "seed": resolved.get("seed"),
            "git_commit": git_commit(),
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "config": resolved,
        }
        if writer is not None:
            for name, variants in models.items():
                for metric, value in variants[report].items():
                    writer.add_scalar(f"test/{name}/{metric}", value, 0)
            writer.close()
        tables = "\n\n".join(
            f"### {variant}\n\n```\n{format_table(models, variant)}\n```"
            for variant in (report, *[v for v in VARIANTS if v != report])
        )
        model.metrics = {"test": models, "report": report}
        # model and tables first, metrics.json after: nothing is published before all are
        model.save(out.path("model.pt"), extra={"data_dir": str(resolved["data_dir"])})
        if latent is not None:
            latent.save(out.path(MODEL_FILES["latent_class"]))
        out.write_text("metrics.md", tables + "\n")
        out.write_json("metrics.json", record)
    record["table"] = format_table(models, report)
    return record


def work_dir(out_dir: Path) -> Path:
    """Where a run writes until it publishes ``out_dir``: ``.<name>.partial`` beside it, kept
    when the run is interrupted so that ``resume=true`` continues from its ``last.pt``."""
    return out_dir.parent / f".{out_dir.name}.partial"


def _resume_from_published(out_dir: Path, work: Path) -> None:
    """Without an interrupted run to resume, continue the published one (e.g. with more
    epochs): its verified ``last.pt`` and curves are copied into the work folder."""
    if (work / "last.pt").is_file() or not (out_dir / "last.pt").is_file():
        return
    verified_file(out_dir / "last.pt", "train_simulator")
    shutil.copy2(out_dir / "last.pt", work / "last.pt")
    if (out_dir / "tensorboard").is_dir() and not (work / "tensorboard").exists():
        shutil.copytree(out_dir / "tensorboard", work / "tensorboard")


def _resume_identity(sim: dict[str, Any], fingerprint: str | None) -> dict[str, Any]:
    """What a checkpoint must have been made from to be resumed: the data's fingerprint and
    the settings that change training (all but :data:`RESUME_FREE`)."""
    trainer = {k: v for k, v in (sim.get("trainer") or {}).items() if k not in RESUME_FREE}
    settings = {
        "model": sim.get("model"),
        "trainer": trainer,
        "min_session_length": sim.get("min_session_length", 1),
    }
    return {"data_fingerprint": fingerprint, "config": plain_config(settings, settings.keys())}


def _tensorboard(log_dir: Path) -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: curves are skipped, nothing else
        return None
    return SummaryWriter(log_dir=str(log_dir))


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_simulator")
def main(cfg: DictConfig) -> None:
    record = run_or_exit(run, cfg)
    print(f"test split, {record['report']}:")
    print(record["table"])
    print(f"GRU training: {record['gru']['train_events_per_sec']:,.0f} events/s")
    print(f"written to {cfg.out_dir}")


if __name__ == "__main__":
    main()
