"""Fixes of the visitors-layer audit: a diverged training is refused, a loaded world counts its
entry on the sessions it was trained on, damaged model files are refused, settings are checked
before anything trains, the latent-type GRU's calibrated log-loss is the simulated world's, and
every kind checks a history the same way."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clickstream.errors import ConfigError, DataError, RunFolderError
from clickstream.runfolder import read_manifest, seal
from envs import visitors
from envs.dynamics import MarkovDynamics, entry_distribution
from envs.exit_calibration import (
    ExitCalibrationConfig,
    calibrated_log_loss,
    fit_exit_calibration,
)
from envs.latent_class import LatentClassConfig, LatentClassModel
from envs.latent_gru import LatentGRUModel
from envs.sequences import PreparedData, SessionSequences, Vocabulary
from envs.training import TrainerConfig, TrainingDiverged, train
from envs.visitor_model import ModelConfig, VisitorModel
from envs.visitors import TrainContext
from envs.visitors.gru import GRUVisitors
from envs.visitors.latent_class import LatentClassVisitors
from envs.visitors.latent_gru import LatentGRUVisitors
from envs.visitors.markov import MarkovVisitors
from envs.visitors.second_order import SecondOrderKind
from scripts.train_simulator import run as train_run
from tests.hydra_configs import compose_cfg

P = 5
SMALL = ModelConfig(embedding_dim=8, hidden_size=8, group_dim=4)
QUICK = {"epochs": 1, "num_threads": 1, "show_progress": False, "batch_sessions": 64}


def _data(revenue: list[float] | None = None) -> PreparedData:
    """Five pages in two groups. Sessions of one view enter by page 4 only, longer ones by
    pages 0..3 only: where visitors enter depends on min_session_length."""
    rng = np.random.default_rng(0)

    def sessions(n: int) -> list[list[int]]:
        out = []
        for _ in range(n):
            if rng.random() < 0.4:
                out.append([4])
            else:
                length = int(rng.integers(2, 6))
                out.append([int(rng.integers(0, 4)), *rng.integers(0, P, length - 1).tolist()])
        return out

    pages = tuple(f"/p{i}" for i in range(P))
    vocab = Vocabulary(pages, ("g0", "g1"), np.array([i % 2 for i in range(P)]))
    splits = {
        name: SessionSequences.from_lists(sessions(n), P)
        for name, n in (("train", 300), ("valid", 60), ("test", 60))
    }
    data = PreparedData(data_dir=Path("/nonexistent"), vocab=vocab, splits=splits, meta={})
    table = pd.DataFrame({"page": list(pages), "revenue": revenue or [0.0] * P})
    data.catalog = lambda: table  # type: ignore[method-assign]
    return data


def _context(data: PreparedData, tmp_path: Path, min_length: int = 1) -> TrainContext:
    splits = {name: seqs.min_length(min_length) for name, seqs in data.splits.items()}
    settings = {"model": {"embedding_dim": 8, "hidden_size": 8}, "trainer": {}}
    settings["min_session_length"] = min_length
    return TrainContext(
        data=data,
        splits=splits,
        trainer=TrainerConfig.from_dict({**QUICK, "seed": 0}),
        settings=settings,
        work=tmp_path,
    )


# ---- 1. a diverged training is refused -----------------------------------------------------


def test_a_training_without_a_finite_validation_loss_raises_instead_of_keeping_the_start():
    data = _data()
    torch.manual_seed(0)
    model = VisitorModel(data.vocab, SMALL)
    cfg = TrainerConfig.from_dict({**QUICK, "epochs": 3, "lr": 1e30, "grad_clip": 0.0})
    with pytest.raises(TrainingDiverged, match=r"GRU training diverged.*epoch 1.*nan") as info:
        train(model, data.splits["train"], data.splits["valid"], cfg, label="GRU")
    # it stopped at the first epoch that diverged: NaN weights never recover
    assert len(info.value.history["epochs"]) == 1
    assert info.value.history["best_epoch"] is None


def test_a_training_that_diverges_after_a_good_epoch_keeps_it_and_says_so(monkeypatch, capsys):
    import envs.training as training

    data = _data()
    torch.manual_seed(0)
    model = VisitorModel(data.vocab, SMALL)
    cfg = TrainerConfig.from_dict({**QUICK, "epochs": 4})
    losses = iter([2.5, 2.4, float("nan"), 2.3])  # the third epoch's weights went NaN
    monkeypatch.setattr(training, "mean_log_loss", lambda *args, **kwargs: next(losses))
    history = train(model, data.splits["train"], data.splits["valid"], cfg, label="GRU")
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]  # stopped at the NaN epoch
    assert history["best_epoch"] == 2 and history["diverged_epoch"] == 3
    err = capsys.readouterr().err
    assert "GRU training diverged at epoch 3" in err and "keeping epoch 2" in err


# ---- 2. min_session_length when a trained world is loaded ----------------------------------


def test_a_loaded_gru_and_second_order_enter_by_the_sessions_they_were_trained_on(tmp_path):
    data = _data()
    ctx = _context(data, tmp_path, min_length=2)
    fitted = entry_distribution(data.splits["train"].min_length(2))
    every = entry_distribution(data.splits["train"])
    assert 0.5 * np.abs(fitted - every).sum() > 0.3  # page 4 enters one-view sessions only

    gru = visitors.get("gru")
    written = gru.train(ctx.settings["model"], ctx)
    written.write(lambda name: tmp_path / name, {"test": {}, "report": "with_exit"})
    np.testing.assert_array_equal(gru.load(data, tmp_path / "model.pt").entry, fitted)

    second = visitors.get("second_order")
    written = second.train({"tune_on_valid": False}, ctx)
    written.write(lambda name: tmp_path / name, {})
    np.testing.assert_array_equal(second.load(data, tmp_path / "second_order.npz").entry, fitted)


def test_a_malformed_recorded_min_session_length_is_refused(tmp_path):
    data = _data()
    model = VisitorModel(data.vocab, SMALL)
    model.min_session_length = 1
    path = model.save(tmp_path / "model.pt")
    state = torch.load(path, weights_only=True)
    state["min_session_length"] = "2"
    torch.save(state, path)
    with pytest.raises(RunFolderError, match="min_session_length"):
        VisitorModel.load(path)
    with pytest.raises(RunFolderError, match="min_session_length"):
        SecondOrderKind.train_split(data, 2.5, tmp_path / "second_order.npz")


# ---- 3. NaN / inf weights -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_model_file_with_weights_that_are_not_finite_is_refused(tmp_path, bad):
    model = VisitorModel(_data().vocab, SMALL)
    with torch.no_grad():
        model.net.head.bias[0] = bad
    path = model.save(tmp_path / "model.pt")
    with pytest.raises(RunFolderError, match=r"model\.pt.*not finite.*'head\.bias'"):
        VisitorModel.load(path)


# ---- 4. settings checked before anything trains ------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("++simulator.exit_calibration={edges: [1, 2, 500]}", "edges reach 500"),
        ("++simulator.exit_calibration={edges: [1, x]}", r"exit_calibration\.edges\[1\]"),
        ("++simulator.exit_calibration={iterations: 0}", r"exit_calibration\.iterations"),
        ("simulator.baselines.markov1.k=-1", r"simulator\.baselines\.markov1: k must be > 0"),
        ("+simulator.baselines.markov2.bogus=1", r"simulator\.baselines\.markov2: .*bogus"),
        ("simulator.baselines.popularity.alpha=abc", r"simulator\.baselines\.popularity"),
        ("+simulator.baselines.markov3={}", r"simulator\.baselines has no setting \['markov3'\]"),
        ("simulator.baselines.tune_on_valid=maybe", r"baselines\.tune_on_valid must be true"),
    ],
)
def test_bad_calibration_or_baseline_settings_end_the_run_before_it_reads_or_writes(
    tmp_path, override, message
):
    out = tmp_path / "sim"
    cfg = compose_cfg(
        "train_simulator",
        [f"data_dir={tmp_path / 'no_data'}", f"out_dir={out}", "show_progress=false", override],
    )
    # the data folder does not exist: a setting checked after reading it would say so instead
    with pytest.raises(ConfigError, match=message):
        train_run(cfg)
    assert list(tmp_path.iterdir()) == []


# ---- 5. the latent-type GRU's calibrated log-loss -------------------------------------------


def test_the_calibrated_log_loss_of_a_latent_gru_is_that_of_the_world_simulated():
    data = _data(revenue=[0.0, 0.0, 0.0, 5.0, 0.0])
    torch.manual_seed(0)
    model = LatentGRUModel(data.vocab, SMALL, "cpu", n_types=2, init_scale=3.0)
    model.fit_prior(data.splits["train"])
    with torch.no_grad():  # types that leave at very different rates
        model.latent.type_move.normal_(0.0, 3.0)
    calibration = {
        "edges": [1, 2, 4],
        "offsets": [1.5, -1.0, 0.5],
        "converting": [3],
        "conversion_offset": 1.2,
    }
    seqs = data.splits["test"]

    def calibrated_row(row: np.ndarray, position: int) -> np.ndarray:
        bucket = np.searchsorted(calibration["edges"], position, side="right") - 1
        out = row.copy()
        out[-1] *= math.exp(calibration["offsets"][bucket])
        out[3] *= math.exp(calibration["conversion_offset"])
        return out / out.sum()

    # what the simulator does: each type's row calibrated, the types filtered on those rows
    total = 0.0
    for s in range(len(seqs)):
        session = seqs.session(s).tolist()
        log_w = None
        for t in range(len(session)):
            weights, rows = model.next_types(session[: t + 1])
            if log_w is None:  # the entry term: prior x entry, as next_types starts
                log_w = np.log(weights)
            rows = np.stack([calibrated_row(r, t + 1) for r in rows])
            target = session[t + 1] if t + 1 < len(session) else P
            w = np.exp(log_w - log_w.max())
            total -= math.log(float((w / w.sum()) @ rows[:, target]))
            log_w = log_w + np.log(rows[:, target])
    want = total / seqs.n_steps
    got = calibrated_log_loss(model, seqs, calibration)
    assert got == pytest.approx(want, abs=1e-6)
    # the offsets on the mixed row are another figure: the test tells the two apart
    mixed = 0.0
    for s in range(len(seqs)):
        session = seqs.session(s).tolist()
        for t in range(len(session)):
            weights, rows = model.next_types(session[: t + 1])
            target = session[t + 1] if t + 1 < len(session) else P
            mixed -= math.log(calibrated_row(weights @ rows, t + 1)[target])
    assert abs(mixed / seqs.n_steps - want) > 1e-4
    # without offsets: the model's own log-loss
    assert calibrated_log_loss(model, seqs, None) == pytest.approx(
        calibrated_log_loss(model, seqs, {"edges": [1], "offsets": [0.0]}), abs=1e-6
    )


# ---- 6. one check of a history for every kind ------------------------------------------------


def _loaded(kind: str) -> visitors.Visitors:
    data = _data()
    train_split, pages = data.splits["train"], data.vocab.pages
    if kind == "gru":
        return GRUVisitors(
            visitors.get(kind), VisitorModel(data.vocab, SMALL), entry_distribution(train_split)
        )
    if kind == "latent_gru":
        return LatentGRUVisitors(visitors.get(kind), LatentGRUModel(data.vocab, SMALL, n_types=2))
    if kind == "markov":
        return MarkovVisitors(visitors.get(kind), MarkovDynamics.fit(train_split, pages))
    if kind == "latent_class":
        cfg = LatentClassConfig(classes=2, restarts=1, iters=5)
        fitted = LatentClassModel.fit(train_split, data.vocab.page_group, pages, cfg)
        return LatentClassVisitors(visitors.get(kind), fitted)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["gru", "latent_gru", "markov", "latent_class"])
@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([], "at least one page view"),
        ([-1], r"history\[0\] = -1 is not a page id"),
        ([P], r"history\[0\] = 5 is not a page id"),
        ([0, P], r"history\[1\] = 5"),
        ([0, -1], r"history\[1\] = -1"),
        ([0, P + 3], r"history\[1\] = 8"),
        ([0, 1.0], r"history\[1\] must be a page id"),
        ([True], r"history\[0\] must be a page id"),
        (np.zeros((1, 2), dtype=np.int64), "one list of page ids"),
    ],
)
def test_every_kind_refuses_a_bad_history_the_same_way(kind, history, message):
    model = _loaded(kind)
    with pytest.raises(DataError, match=message):
        model.next_distribution(history)
    nxt = model.next_distribution(np.array([0, 3]))  # numpy ids are ids too
    assert nxt.probs.shape == (P + 1,) and nxt.probs.sum() == pytest.approx(1.0, abs=1e-12)


def test_second_order_and_true_refuse_a_bad_history_too(tmp_path):
    data = _data()
    ctx = _context(data, tmp_path)
    second = visitors.get("second_order")
    second.train({"tune_on_valid": False}, ctx).write(lambda name: tmp_path / name, {})
    model = second.load(data, tmp_path / "second_order.npz")
    for history in ([], [-1], [0, -1], [0, P]):
        with pytest.raises(DataError):
            model.next_distribution(history)


# ---- 7. the latent-type GRU's flags are read as written -------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("memory", "false"), ("page_preferences", 0), ("n_types", 2.5), ("init_scale", "big")],
)
def test_a_tampered_latent_gru_setting_is_refused(tmp_path, key, value):
    model = LatentGRUModel(_data().vocab, SMALL, n_types=2)
    path = model.save(tmp_path / "latent_gru.pt")
    state = torch.load(path, weights_only=True)
    state["latent_types"][key] = value
    torch.save(state, path)
    with pytest.raises(RunFolderError, match=rf"latent_gru\.pt.*{key}={value!r}"):
        LatentGRUModel.load(path)


# ---- 8. a model of other data -------------------------------------------------------------


def _sealed_run(folder: Path, data_digest: str, fingerprint: str) -> Path:
    folder.mkdir(parents=True)
    VisitorModel(_data().vocab, SMALL).save(folder / "model.pt")
    seal(folder, "train_simulator", inputs={"data": data_digest}, data_fingerprint=fingerprint)
    return folder / "model.pt"


def _data_with_manifest(folder: Path, fingerprint: str) -> PreparedData:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")
    data = _data()
    data.manifest = seal(folder, "prepare_data", data_fingerprint=fingerprint)
    data.data_dir = folder
    return data


def test_a_model_of_another_dataset_says_the_data_files_differ(tmp_path):
    data = _data_with_manifest(tmp_path / "data", "sha256:" + "a" * 64)
    path = _sealed_run(tmp_path / "sim", "sha256:" + "c" * 64, "sha256:" + "b" * 64)
    with pytest.raises(RunFolderError, match="other data files") as info:
        visitors.get("gru").load(data, path)
    assert "prepared again" not in str(info.value)
    assert "sha256:bbbbbbbbbbbb" in str(info.value) and "sha256:aaaaaaaaaaaa" in str(info.value)


def test_a_model_of_the_same_files_prepared_again_says_so(tmp_path):
    fingerprint = "sha256:" + "a" * 64
    data = _data_with_manifest(tmp_path / "data", fingerprint)
    assert read_manifest(tmp_path / "data").data_fingerprint == fingerprint
    path = _sealed_run(tmp_path / "sim", "sha256:" + "c" * 64, fingerprint)
    with pytest.raises(RunFolderError, match="the same data files, prepared again since"):
        visitors.get("gru").load(data, path)


# ---- 9. no conversion to match ---------------------------------------------------------------


def test_a_training_split_without_conversions_fits_no_conversion_offset():
    # page 4 has revenue but no training session reaches it (only the test split does)
    data = _data()
    train_split = data.splits["train"].select(
        np.array([4 not in data.splits["train"].session(i) for i in range(300)])
    )
    converting = np.array([False, False, False, False, True])
    dynamics = MarkovDynamics.fit(data.splits["train"], data.vocab.pages)
    cfg = ExitCalibrationConfig(sessions=500, visitors=128, iterations=2)
    result = fit_exit_calibration(lambda: dynamics, train_split, cfg, converting=converting)
    assert "conversion_offset" not in result and "converting" not in result
    assert result["config"]["conversion"] is False
    assert result["target"]["conversion_rate"] == 0.0
