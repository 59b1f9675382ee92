"""Train the visitor models of a simulator config and compare them with the next-page baselines
(and the truth).

Every visitor kind the ``simulator`` config sets (``envs/visitors/``: the GRU from
``simulator.model``, always in the shipped configs; the latent-class model when
``simulator.latent_class`` is set; ...)
is trained on the train split, written to ``out_dir`` under its own file names and scored on the
test split with the rest; ``env.dynamics=<kind>`` then simulates it.

    python scripts/train_simulator.py data_dir=<prepared dir> out_dir=<dir> [simulator=gru_msnbc]

Writes each kind's files (the GRU's ``model.pt``: weights, vocabulary, config, metrics, and its
last training checkpoint ``last.pt``), ``out_dir/metrics.json`` (every metric of each visitor
model and each baseline on the test split, with and without ``EXIT``, plus the true model's on
synthetic data), ``out_dir/metrics.md`` (the tables), TensorBoard curves in
``out_dir/tensorboard`` and ``manifest.json``, and prints the comparison. The run works in
``.<out_dir name>.partial`` beside ``out_dir`` and publishes it with one rename at the end
(``clickstream/runfolder.py``); ``resume=true`` continues an interrupted run from the checkpoint
there (or the published run, e.g. with more epochs) when it was made from the same data and
settings. Every setting (``simulator.trainer``, ``simulator.model``, each kind's settings,
``exit_calibration``, ``baselines``, ``min_session_length``, the device) is checked, and every split must keep a session after ``min_session_length``, before
that folder is made: a bad one ends the run with its key named and nothing written. See
``configs/train_simulator.yaml``. A training that diverges (no epoch with a finite validation
log-loss) ends the run with its work folder removed: nothing untrained is published.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from clickstream import checks
from clickstream.errors import ConfigError, DataError
from clickstream.prepare import git_commit
from clickstream.runfolder import StageWriter, config_hash, verified_file
from clickstream.synthetic import SyntheticStore
from envs import visitors
from envs.baselines import FirstOrderMarkov, Popularity, SecondOrderMarkov, TrueModel
from envs.core import resolve_device
from envs.exit_calibration import ExitCalibrationConfig
from envs.metrics import evaluate, format_table
from envs.sequences import PreparedData, SessionSequences, load_prepared
from envs.training import TrainerConfig, TrainingDiverged
from envs.visitors import TrainContext, Trained
from scripts import run_or_exit

VARIANTS = ("with_exit", "without_exit")


CONFIG_KEYS = ("simulator", "seed")
"""Settings that change the visitor model (their hash is in the manifest; the pipeline reuses a
simulator folder while it matches and the data it was made from are the same)."""


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate and write the outputs; returns the metrics record."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    sim = resolved["simulator"]
    report = sim.get("report", "with_exit")
    if report not in VARIANTS:
        raise ConfigError(f"simulator.report must be one of {VARIANTS}, got {report!r}")
    out_dir = Path(resolved["out_dir"])
    # every setting is checked before the data are read and the work folder is made: a bad
    # one ends the run leaving nothing behind
    k = checks.whole(
        "simulator.min_session_length",
        sim.get("min_session_length", 1),
        note="(1: keep every session)",
        floats=False,
    )
    trainer_cfg = TrainerConfig.from_dict(sim["trainer"])
    resolve_device(trainer_cfg.device)  # an unknown device, or CUDA on a machine without it
    kinds = visitors.trained_kinds(sim)
    for kind in kinds:
        kind.check(sim[kind.config_key])
    if sim.get("exit_calibration") is not None:  # else refused only after the models trained
        ExitCalibrationConfig.from_dict(sim["exit_calibration"])
    make_baselines(sim.get("baselines"))  # made again, to be fitted, once the models trained
    resume = bool(resolved.get("resume", False))

    data = load_prepared(resolved["data_dir"])
    assert data.manifest is not None
    splits = {name: seqs.min_length(k) for name, seqs in data.splits.items()}
    for name, seqs in splits.items():
        if len(seqs) == 0:  # nothing to train on, stop early on or score
            raise DataError(
                f"split {name!r} holds no sessions of simulator.min_session_length={k} page "
                f"views or more (it holds {len(data.splits[name]):,} sessions, all shorter): "
                "lower simulator.min_session_length",
                file=str(resolved["data_dir"]),
            )
    work = work_dir(out_dir)
    # locks the work folder, publishes a run killed after its manifest was written (not
    # redone), then empties the work folder unless this run resumes it
    stage = StageWriter(
        out_dir,
        "train_simulator",
        config_hash=config_hash(resolved, CONFIG_KEYS),
        inputs={"data": data.manifest.digest},
        data_fingerprint=data.manifest.data_fingerprint,
        work_dir=work,
        fresh=not resume,
    )
    try:
        return _train(resolved, data, splits, k, trainer_cfg, kinds, stage, work, resume)
    except TrainingDiverged:
        # nothing trained to resume from (the checkpoints hold the diverged weights): leave
        # no work folder or lock behind, as a run refused before it started
        _remove_work_dir(work)
        raise


def _train(
    resolved: dict[str, Any],
    data: PreparedData,
    splits: dict[str, SessionSequences],
    k: int,
    trainer_cfg: TrainerConfig,
    kinds: list[visitors.VisitorKind],
    stage: StageWriter,
    work: Path,
    resume: bool,
) -> dict[str, Any]:
    """Train every kind and the baselines in the locked work folder, score them on the test
    split and publish the run (:func:`run` has checked the settings)."""
    sim = resolved["simulator"]
    report = sim.get("report", "with_exit")
    tune, markov1, markov2, popularity = make_baselines(sim.get("baselines"))
    with stage as out:
        if resume:
            _resume_from_published(Path(resolved["out_dir"]), work, kinds)
        writer = _tensorboard(out.dir / "tensorboard")
        ctx = TrainContext(
            data=data,
            splits=splits,
            trainer=trainer_cfg,
            settings=sim,
            work=work,
            resume=resume,
            writer=writer,
            label=resolved.get("label"),  # the pipeline names main / held-out
            data_dir=str(resolved["data_dir"]),
        )
        trained: dict[str, Trained] = {
            kind.name: kind.train(sim[kind.config_key], ctx) for kind in kinds
        }

        tuned = [
            model.fit(splits["train"], valid=splits["valid"] if tune else None)
            for model in (markov1, markov2)
        ]
        popularity.fit(splits["train"])
        predictors: list[Any] = [
            *(t.predictor for t in trained.values()),
            popularity,
            *tuned,
        ]
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
            "baseline_smoothing": {p.name: p.tuning for p in tuned},
            # how each visitor kind of the config was trained (null: not set)
            **{
                kind.name: trained[kind.name].record if kind.name in trained else None
                for kind in visitors.kinds().values()
                if kind.config_key is not None
            },
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
        # models and tables first, metrics.json after: nothing is published before all are
        for done in trained.values():
            done.write(out.path, {"test": models, "report": report})
        out.write_text("metrics.md", tables + "\n")
        out.write_json("metrics.json", record)
    record["table"] = format_table(models, report)
    record["trained"] = [done.summary for done in trained.values()]
    return record


BASELINES = {"popularity": Popularity, "markov1": FirstOrderMarkov, "markov2": SecondOrderMarkov}
"""The next-page baselines of ``simulator.baselines``, by key."""


def make_baselines(
    options: Any,
) -> tuple[bool, FirstOrderMarkov, SecondOrderMarkov, Popularity]:
    """The unfitted baselines of ``simulator.baselines`` and whether their smoothing is tuned
    on the validation split (``tune_on_valid``).

    Raises:
        ConfigError: An unknown key, a value that is not a mapping, or a setting a baseline
            refuses, naming ``simulator.baselines.<key>``.
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"simulator.baselines must be a mapping, got {options!r}")
    unknown = sorted(set(options) - {"tune_on_valid", *BASELINES})
    if unknown:
        known = ["tune_on_valid", *BASELINES]
        raise ConfigError(f"simulator.baselines has no setting {unknown}; known: {known}")
    tune = checks.flag("simulator.baselines.tune_on_valid", options.get("tune_on_valid", True))
    made: dict[str, Any] = {}
    for key, cls in BASELINES.items():
        settings = options.get(key) or {}
        if not isinstance(settings, Mapping):
            raise ConfigError(f"simulator.baselines.{key} must be a mapping, got {settings!r}")
        try:
            made[key] = cls(**dict(settings))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"simulator.baselines.{key}: {exc}") from None
    return tune, made["markov1"], made["markov2"], made["popularity"]


def _remove_work_dir(work: Path) -> None:
    """Delete a work folder and its lock file (once the run has released the lock)."""
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (work.parent / f"{work.name}.lock").unlink()


def work_dir(out_dir: Path) -> Path:
    """Where a run writes until it publishes ``out_dir``: ``.<name>.partial`` beside it, kept
    when the run is interrupted so that ``resume=true`` continues from its ``last.pt``."""
    return out_dir.parent / f".{out_dir.name}.partial"


def _resume_from_published(out_dir: Path, work: Path, kinds: list[visitors.VisitorKind]) -> None:
    """Without an interrupted run to resume, continue the published one (e.g. with more
    epochs): its verified checkpoints (``last.pt``) and curves are copied into the work
    folder."""
    names = [name for kind in kinds for name in kind.checkpoints]
    if any((work / name).is_file() for name in names):
        return
    published = [name for name in names if (out_dir / name).is_file()]
    if not published:
        return
    for name in published:
        verified_file(out_dir / name, "train_simulator")
        shutil.copy2(out_dir / name, work / name)
    if (out_dir / "tensorboard").is_dir() and not (work / "tensorboard").exists():
        shutil.copytree(out_dir / "tensorboard", work / "tensorboard")


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
    for line in record["trained"]:
        print(line)
    print(f"written to {cfg.out_dir}")


if __name__ == "__main__":
    main()
