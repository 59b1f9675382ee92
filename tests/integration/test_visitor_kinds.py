"""Every visitor kind of the registry on a trained tiny simulator: the core built by name
replays the dynamics built from the kind's own classes, the next-page distribution people get
is the simulator's, and a loaded model is checked against the run's data."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from clickstream.errors import ClickstreamError, RunFolderError
from clickstream.synthetic import SyntheticStore
from envs import latent_gru, visitors
from envs.baselines import TrueModel
from envs.click_model import MultinomialBoost
from envs.core import SiteCore
from envs.dynamics import GRUDynamics, MarkovDynamics, TrueDynamics, entry_distribution
from envs.latent_class import LatentClassModel
from envs.latent_gru import LatentGRUDynamics, LatentGRUModel
from envs.rewards import reward_from_catalog
from envs.sequences import load_prepared
from envs.site_env import build_core
from envs.training import mean_log_loss
from envs.visitor_model import VisitorModel
from scripts.train_simulator import run as train_run
from tests.hydra_configs import compose_cfg, prepare_synthetic

pytestmark = pytest.mark.integration


def histories(data) -> list[list[int]]:
    """Prefixes of training sessions (possible under every model, the truth included)."""
    train = data.splits["train"]
    long = [s for s in range(len(train)) if train.lengths[s] >= 4][:3]
    starts = train.offsets[long]
    return [train.pages[o : o + n].tolist() for o, n in zip(starts, (1, 2, 4), strict=True)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = prepare_synthetic(
        tmp_path_factory.mktemp("data") / "syn", "data.n_sessions=1500", "data.n_pages=50"
    )
    train_run(
        compose_cfg(
            "train_simulator",
            [
                f"data_dir={out}",
                "simulator.trainer.epochs=1",
                "simulator.model.hidden_size=16",
                "simulator.model.embedding_dim=8",
                "simulator.baselines.tune_on_valid=false",
                "simulator.latent_class={classes: 2, restarts: 1, iters: 30}",
                "simulator.latent_gru={types: 2, restarts: 2}",
                "show_progress=false",
            ],
        )
    )
    return out


def _by_hand(kind: str, data_dir: Path, top_k: int | None):
    """The dynamics the way the simulator was put together before the registry."""
    data = load_prepared(data_dir, splits=("train",))
    train, pages = data.splits["train"], data.vocab.pages
    if kind == "true":
        return TrueDynamics(SyntheticStore.load(data.true_model_path), pages)
    if kind == "markov":
        return MarkovDynamics.fit(train, pages)
    if kind == "latent_class":
        return LatentClassModel.load(data_dir / "simulator" / "latent_class.npz").dynamics()
    if kind == "latent_gru":
        model = LatentGRUModel.load(data_dir / "simulator" / "latent_gru.pt")
        return LatentGRUDynamics(model, full_logits=top_k is None)
    model = VisitorModel.load(data_dir / "simulator" / "model.pt")
    return GRUDynamics(model, entry_distribution(train), full_logits=top_k is None)


@pytest.mark.parametrize("kind", ["true", "markov", "gru", "latent_class", "latent_gru"])
@pytest.mark.parametrize("top_k", [None, 4])
def test_a_core_built_by_kind_name_replays_the_kinds_own_dynamics(
    data_dir: Path, kind: str, top_k: int | None
) -> None:
    from clickstream.runfolder import read_parquet
    from envs.dynamics import top_successors

    core = build_core(16, data_dir=data_dir, dynamics=kind, top_k=top_k)
    data = load_prepared(data_dir, splits=("train",))
    catalog = read_parquet(data_dir / "pages.parquet")
    reward = reward_from_catalog("page_value", catalog, data.vocab.pages).per_page
    cand = None if top_k is None else top_successors(data.splits["train"], top_k)
    hand = SiteCore(
        _by_hand(kind, data_dir, top_k), MultinomialBoost(1.0), reward, 16, candidates=cand
    )
    rng = np.random.default_rng(0)
    assert torch.equal(core.reset(3), hand.reset(3))
    for _ in range(30):
        a = torch.as_tensor(rng.integers(0, core.n_actions, 16))
        ours, theirs = core.step(a), hand.step(a)
        assert torch.equal(ours.landed, theirs.landed)
        assert torch.equal(ours.reward, theirs.reward)
        assert torch.equal(ours.followed, theirs.followed)
    assert torch.equal(core.state, hand.state)


@pytest.mark.parametrize("kind", ["true", "markov", "gru", "latent_class", "latent_gru"])
def test_next_distribution_is_a_distribution_and_the_simulators(data_dir: Path, kind: str):
    data = load_prepared(data_dir, splits=("train",))
    model = visitors.get(kind).load(data)
    assert model.kind.name == kind and model.pages == data.vocab.pages
    p = data.vocab.n_pages
    for history in histories(data):
        nxt = model.next_distribution(history)
        assert nxt.rows.shape == (nxt.n_types, p + 1) and nxt.weights.shape == (nxt.n_types,)
        assert nxt.weights.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(nxt.rows.sum(axis=1), 1.0, atol=1e-6)
        assert (nxt.n_types > 1) == model.kind.latent_state
    # after an entry page, what the simulator draws from: the types' rows mixed by their
    # posterior given that page (one visitor per type on a latent kind)
    dyn = model.dynamics()
    chains = dyn.chains()
    for page in {h[0] for h in histories(data)}:
        nxt = model.next_distribution([page])
        pages = torch.tensor([page])
        if chains is None and not dyn.latent_state:  # the GRU: its state after the page
            state = dyn.advance(pages, torch.zeros(1, dyn.state_dim))
            sim = dyn.next_probs(pages, state)[0].double().numpy()
        elif chains is None:  # the latent-type GRU: a visitor of each type on that page
            k = len(dyn.type_prior)
            state = torch.zeros(k, dyn.state_dim)
            state[:, dyn.hidden_dim] = torch.arange(k).float()
            state = dyn.advance(pages.expand(k), state)
            rows = dyn.next_probs(pages.expand(k), state).double()
            joint = (dyn.type_prior * dyn.type_entry[:, page]).double()
            sim = (joint @ rows / joint.sum()).numpy()
        else:
            joint = (
                chains.prior[:, None] * chains.entry[:, page, None] * chains.transitions[:, page]
            )
            sim = (joint.sum(0) / joint.sum()).double().numpy()
        np.testing.assert_allclose(nxt.probs, sim, atol=2e-6)


def test_next_distribution_of_each_kind_is_its_models_own(data_dir: Path) -> None:
    data = load_prepared(data_dir, splits=("train",))
    vocab = data.vocab
    gru = VisitorModel.load(data_dir / "simulator" / "model.pt")
    latent = LatentClassModel.load(data_dir / "simulator" / "latent_class.npz")
    truth = TrueModel(SyntheticStore.load(data.true_model_path), vocab.pages)
    markov = MarkovDynamics.fit(data.splits["train"], vocab.pages)
    latent_gru = LatentGRUModel.load(data_dir / "simulator" / "latent_gru.pt")
    for history in histories(data):
        names = [vocab.pages[i] for i in history]
        want = {
            "gru": np.array(
                [
                    dict(gru.predict_next(names, k=vocab.n_pages + 1))[label]
                    for label in vocab.labels()
                ]
            ),
            "latent_class": np.exp(latent.log_prob_next(np.array([history]))[0, -1]),
            "true": np.exp(truth.log_prob_next(np.array([history]))[0, -1]),
            "markov": markov.transitions[history[-1]].double().numpy(),
            "latent_gru": np.exp(
                latent_gru.log_prob_next(np.array([history]))[0, -1].double().numpy()
            ),
        }
        for kind, probs in want.items():
            got = visitors.get(kind).load(data).next_distribution(history).probs
            np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-7, err_msg=kind)


def test_a_learned_kind_loads_only_from_a_verified_folder_of_these_data(
    data_dir: Path, tmp_path: Path
) -> None:
    data = load_prepared(data_dir, splits=("train",))
    for name in ("gru", "latent_class", "latent_gru"):
        kind = visitors.get(name)
        assert kind.model_file(data) == data_dir / "simulator" / kind.files[0]
    # a copy of the simulator folder with a changed model file no longer verifies
    copy = tmp_path / "sim"
    shutil.copytree(data_dir / "simulator", copy)
    with open(copy / "latent_class.npz", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RunFolderError):
        visitors.get("latent_class").load(data, copy / "latent_class.npz")
    # a model of another vocabulary is refused, naming the file
    other = load_prepared(
        prepare_synthetic(tmp_path / "other", "data.n_sessions=300", "data.n_pages=60"),
        splits=("train",),
    )
    hand_saved = tmp_path / "latent_class.npz"  # outside a run folder: read as it is
    shutil.copy(data_dir / "simulator" / "latent_class.npz", hand_saved)
    with pytest.raises(ClickstreamError, match="another page vocabulary") as err:
        visitors.get("latent_class").load(other, hand_saved)
    assert str(hand_saved) in str(err.value)
    with pytest.raises(ClickstreamError, match="needs a synthetic dataset"):
        visitors.ground_truth().load(
            type(data)(tmp_path, data.vocab, data.splits, data.meta, data.manifest)
        )


def test_latent_gru_restarts_are_recorded_and_the_best_start_kept(data_dir: Path) -> None:
    import json

    record = json.loads((data_dir / "simulator" / "metrics.json").read_text())["latent_gru"]
    tried = record["tried"]["2"]
    losses = tried["first_order_restarts"]
    assert len(losses) == 2 and losses[0] != losses[1]
    assert losses[tried["kept_restart"]] == min(losses)
    assert tried["stages"]["first_order"]["valid_log_loss"] == min(losses)


def _latent_gru_record(data_dir: Path, out: Path, options: str) -> dict:
    """Train a tiny simulator on ``data_dir`` into ``out`` with ``simulator.latent_gru =
    options``; the latent-type GRU's record in its ``metrics.json``."""
    import json

    train_run(
        compose_cfg(
            "train_simulator",
            [
                f"data_dir={data_dir}",
                f"out_dir={out}",
                "simulator.trainer.epochs=1",
                "simulator.model.hidden_size=16",
                "simulator.model.embedding_dim=8",
                "simulator.baselines.tune_on_valid=false",
                f"simulator.latent_gru={options}",
                "show_progress=false",
            ],
        )
    )
    return json.loads((out / "metrics.json").read_text())["latent_gru"]


@pytest.mark.parametrize("one_type", ["one_stage", "two_stages"])
def test_one_type_picked_by_auto_is_kept_as_one_stage_trains_it(
    data_dir: Path, tmp_path: Path, one_type: str
) -> None:
    """``auto`` compares candidates trained alike (two stages); when it picks one type the kept
    model is trained again in one stage (``one_type: one_stage``), and the saved model is that
    one; ``two_stages`` keeps the candidate itself."""
    # a gain no second type can earn: auto picks one type
    options = f"{{types: auto, candidates: [1, 2], min_gain: 10.0, one_type: {one_type}}}"
    record = _latent_gru_record(data_dir, tmp_path / "sim", options)
    assert record["types"] == 1
    assert set(record["tried"]) == {"1", "2"}
    assert set(record["tried"]["1"]["stages"]) == {"first_order", "memory"}  # like against like
    kept = record["kept"]
    if one_type == "one_stage":
        assert set(kept["stages"]) == {"one_stage"} and kept["kept"] == "one_stage"
        assert set(record["history"]) == {"one_stage"}
    else:
        assert kept == record["tried"]["1"]
    data = load_prepared(data_dir, splits=("valid",))
    model = LatentGRUModel.load(tmp_path / "sim" / "latent_gru.pt")
    assert model.n_types == 1
    loss = mean_log_loss(model, data.splits["valid"])
    assert loss == pytest.approx(kept["valid_log_loss"], rel=1e-5)


def test_types_one_trains_one_stage_only(data_dir: Path, tmp_path: Path) -> None:
    """``types: 1``: nothing to compare, so the one type is trained once, in one stage."""
    record = _latent_gru_record(data_dir, tmp_path / "sim", "{types: 1}")
    assert record["types"] == 1 and set(record["tried"]) == {"1"}
    assert set(record["tried"]["1"]["stages"]) == {"one_stage"}
    assert record["kept"] == record["tried"]["1"]
    one_stage = record["kept"]["stages"]["one_stage"]
    assert record["train_events_per_sec"] == one_stage["train_events_per_sec"]


@pytest.mark.parametrize("table_biases", [True, False])
def test_a_full_batch_table_fit_reaches_the_first_stage(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table_biases: bool
) -> None:
    """``table_fit: full_batch`` in the config fits the counted first stage by L-BFGS
    (converged, its history says so), with the output biases or without them as
    ``table_biases`` says, and the saved model scores what its record says."""
    fit, asked = latent_gru.fit_counted_full_batch, []

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs["biases"])
        return fit(*args, **kwargs)

    monkeypatch.setattr(latent_gru, "fit_counted_full_batch", spy)
    options = (
        "{types: 2, trunk: counted, table_fit: full_batch, page_preferences: false, "
        f"table_biases: {str(table_biases).lower()}}}"
    )
    record = _latent_gru_record(data_dir, tmp_path / "sim", options)
    assert asked and set(asked) == {table_biases}  # every start
    first = record["history"]["first_order"]
    assert first["fit"] == "full_batch" and first["epochs"][0]["converged"]
    assert record["kept"]["stages"]["first_order"]["valid_log_loss"] == first["best_valid_log_loss"]
    data = load_prepared(data_dir, splits=("valid",))
    model = LatentGRUModel.load(tmp_path / "sim" / "latent_gru.pt")
    assert not model.page_preferences
    loss = mean_log_loss(model, data.splits["valid"])
    assert loss == pytest.approx(record["kept"]["valid_log_loss"], rel=1e-5)
