"""The synthetic store's ground truth at scale: a truth too large to hold is refused before
any work (the pipeline after prepare_data, the evaluation before its first world), built over
the pages the data saw only, and a truth restricted to those pages is said and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import envs.dynamics as dynamics
from agents.site import check_ground_truth
from clickstream.errors import ModelError
from clickstream.synthetic import SyntheticStore, build_store
from envs.dynamics import check_truth_size, store_tables, truth_cells
from envs.sequences import load_prepared
from tests.hydra_configs import compose_cfg, prepare_synthetic


class Trained(Exception):
    """Raised in place of training: the run got past its checks."""


@pytest.fixture(scope="module")
def seen_all(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50-page store whose sessions saw every page."""
    out = tmp_path_factory.mktemp("seen_all") / "data"
    return prepare_synthetic(out, "data.n_pages=50", "data.n_sessions=2000")


def _limit_just_below(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The truth's limit one cell under this dataset's truth: the store just above the limit."""
    meta = json.loads((data_dir / "meta.json").read_text())
    assert meta["true_model"]["unseen_pages"] == 0
    monkeypatch.setattr(dynamics, "TRUTH_MAX_CELLS", truth_cells(3, 50) - 1)


def test_the_limit_is_inclusive_and_names_the_way_out() -> None:
    check_truth_size(3, 50, truth_cells(3, 50))
    with pytest.raises(ModelError) as err:
        check_truth_size(3, 50, truth_cells(3, 50) - 1)
    assert "worlds=[learned,held_out]" in str(err.value)
    # the documented range: intent mode refuses from about 4,470 pages the data saw
    check_truth_size(3, 4471)
    with pytest.raises(ModelError):
        check_truth_size(3, 4472)


def test_the_truth_is_checked_on_the_pages_the_data_saw() -> None:
    """A 10,000-page store whose data saw 2,000 pages has a truth of 2,000 pages: it is built
    (without the store's dense 10,000-page tables) instead of refused."""
    store = build_store(n_pages=600)
    pages = tuple(store.pages[:300])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dynamics, "TRUTH_MAX_CELLS", truth_cells(3, 300))  # the store's 600: no
        _, _, dense, _ = store_tables(store, pages)
        with pytest.raises(ModelError):
            store_tables(store, tuple(store.pages))
    assert dense.shape == (3, 300, 301)
    assert "transitions" not in store.__dict__  # the dense (Z, P, P + 1) cache was not built


def test_pipeline_refuses_a_truth_too_large_before_training(
    tmp_path: Path, seen_all: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripts import pipeline

    def trained(*args, **kw):
        raise Trained

    monkeypatch.setattr(pipeline, "_simulators", trained)
    _limit_just_below(seen_all, monkeypatch)
    common = [
        f"out_dir={tmp_path / 'run'}",
        f"data_dir={seen_all}",
        "data.n_pages=50",
        "data.n_sessions=2000",
        "show_progress=false",
        "jobs=1",
    ]
    with pytest.raises(ModelError, match=r"worlds=\[learned,held_out\]"):
        pipeline.run(compose_cfg("pipeline", common))
    # leaving the world out goes on to training
    with pytest.raises(Trained):
        pipeline.run(compose_cfg("pipeline", [*common, "worlds=[learned,held_out]"]))
    # an agent that plans in the truth needs it all the same
    with pytest.raises(ModelError):
        pipeline.run(
            compose_cfg("pipeline", [*common, "worlds=[learned]", "references=[intent_oracle]"])
        )


def test_evaluate_refuses_a_truth_too_large_before_any_world(
    tmp_path: Path, seen_all: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripts import evaluate

    def evaluated(*args, **kw):
        raise Trained

    monkeypatch.setattr(evaluate, "world_records", evaluated)
    for name in ("stage_inputs", "training_info", "saved_policies", "check_made_from"):
        monkeypatch.setattr(evaluate, name, lambda *a, **kw: {})  # no trained policies here
    _limit_just_below(seen_all, monkeypatch)
    base = [f"out_dir={tmp_path / 'run'}", f"data_dir={seen_all}", "held_out_dir=null", "jobs=1"]
    with pytest.raises(ModelError, match="too large to hold densely"):
        evaluate.run(compose_cfg("evaluate", base))
    with pytest.raises(Trained):  # without the truth: evaluation starts
        evaluate.run(compose_cfg("evaluate", [*base, "worlds=[learned]"]))


def test_a_truth_restricted_to_the_seen_pages_is_said_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = prepare_synthetic(tmp_path / "data", "data.n_sessions=300")
    capsys.readouterr()
    meta = json.loads((data_dir / "meta.json").read_text())
    record = meta["true_model"]
    vocab = load_prepared(data_dir, splits=("train",)).vocab.pages
    assert record["vocabulary_pages"] == len(vocab) < record["n_pages"] == 200
    assert record["unseen_pages"] == 200 - len(vocab)
    moved = record["ground_truth_restricted"]
    assert 0 < moved["max_row_mass_moved"] <= 1 and 0 < moved["max_entry_mass_moved"] <= 1
    assert any(f"{record['unseen_pages']} of the store's 200 pages" in n for n in meta["notices"])

    store = SyntheticStore.load(data_dir / "true_model")
    dynamics._said_restricted.clear()
    _, entry, dense, _ = store_tables(store, vocab)
    assert "ground truth: the store's 200 pages restricted to the" in capsys.readouterr().err
    idx = np.array([store.page_index(p) for p in vocab])
    full = store.transitions[:, idx][:, :, np.r_[idx, 200]]
    np.testing.assert_allclose(dense, full / full.sum(-1, keepdims=True), rtol=1e-15, atol=0)
    np.testing.assert_allclose(entry.sum(1), 1.0, rtol=1e-12)
    check_ground_truth(data_dir)  # small: fits
