"""train_simulator end to end on a small synthetic store, and the GPU path where CUDA exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.metrics import METRIC_KEYS
from envs.sequences import load_prepared
from envs.training import TrainingDiverged
from envs.visitor_model import VisitorModel
from scripts.train_simulator import run as train_run
from tests.hydra_configs import compose_cfg, prepare_synthetic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_synthetic(
        tmp_path_factory.mktemp("data") / "syn", "data.n_sessions=4000", "data.n_pages=80"
    )


def test_train_simulator_writes_model_and_metrics(synthetic_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    record = train_run(
        compose_cfg(
            "train_simulator",
            [
                f"data_dir={synthetic_dir}",
                f"out_dir={out}",
                "simulator.trainer.epochs=3",
                "show_progress=false",
            ],
        )
    )
    assert {"model.pt", "metrics.json", "metrics.md", "last.pt", "tensorboard"} <= {
        p.name for p in out.iterdir()
    }
    metrics = json.loads((out / "metrics.json").read_text())
    models = metrics["models"]
    assert set(models) == {"gru", "popularity", "markov1", "markov2", "true_model"}
    for variants in models.values():
        for variant in ("with_exit", "without_exit"):
            assert list(variants[variant]) == list(METRIC_KEYS)
    steps = models["gru"]["with_exit"]["steps"]
    assert steps == metrics["steps"]["test"]
    assert all(v["with_exit"]["steps"] == steps for v in models.values())
    loss = {name: v["with_exit"]["log_loss"] for name, v in models.items()}
    # the truth is the floor; every learned model beats guessing by popularity
    assert loss["true_model"] == min(loss.values())
    assert loss["gru"] < loss["popularity"] and loss["markov1"] < loss["popularity"]
    assert metrics["gru"]["train_events_per_sec"] > 0
    assert len(metrics["gru"]["history"]["epochs"]) == 3
    assert metrics["seed"] == 0 and "git_commit" in metrics and "config" in metrics
    assert record["table"].splitlines()[0].startswith("next-page metrics")

    # the checkpoint scores the test split exactly as recorded
    model = VisitorModel.load(out / "model.pt")
    test = load_prepared(synthetic_dir).splits["test"]
    total = 0.0
    targets = test.targets()
    for rows, lp in model.iter_log_probs(test):
        total -= lp[np.arange(len(rows)), targets[rows]].astype(np.float64).sum()
    assert total / test.n_steps == pytest.approx(loss["gru"], rel=1e-6)
    assert model.metrics["test"]["gru"]["with_exit"]["log_loss"] == loss["gru"]


def test_same_seed_same_metrics(synthetic_dir: Path, tmp_path: Path) -> None:
    def once(name: str) -> dict:
        train_run(
            compose_cfg(
                "train_simulator",
                [
                    f"data_dir={synthetic_dir}",
                    f"out_dir={tmp_path / name}",
                    "simulator.trainer.epochs=2",
                    "show_progress=false",
                ],
            )
        )
        return json.loads((tmp_path / name / "metrics.json").read_text())["models"]

    assert once("a") == once("b")


@pytest.mark.gpu
def test_training_and_stepping_on_cuda(synthetic_dir: Path) -> None:
    from envs.training import TrainerConfig, train

    data = load_prepared(synthetic_dir)
    model = VisitorModel(data.vocab, device="cuda")
    train(
        model,
        data.splits["train"],
        data.splits["valid"],
        TrainerConfig(epochs=1, device="cuda", show_progress=False),
    )
    page = torch.zeros(8, dtype=torch.long, device="cuda")
    logits, hidden = model.step(page, model.initial_hidden(8))
    assert logits.shape == (8, data.vocab.n_pages + 1) and logits.is_cuda
    assert hidden.shape == (8, model.hidden_dim) and hidden.is_cuda
    torch.testing.assert_close(
        torch.softmax(logits.float(), -1).sum(-1), torch.ones(8, device="cuda")
    )


def test_train_simulator_fits_the_latent_class_world(synthetic_dir: Path, tmp_path: Path) -> None:
    from agents.site import Site
    from envs.latent_class import LatentClassModel
    from envs.site_env import build_core

    out = tmp_path / "simulator"
    record = train_run(
        compose_cfg(
            "train_simulator",
            [
                f"data_dir={synthetic_dir}",
                f"out_dir={out}",
                "simulator.trainer.epochs=1",
                "simulator.latent_class={classes: 2, restarts: 1, iters: 150}",
                "show_progress=false",
            ],
        )
    )
    model = LatentClassModel.load(out / "latent_class.npz")
    assert model.n_classes == 2 and record["latent_class"]["classes"] == 2
    loss = {name: v["with_exit"]["log_loss"] for name, v in record["models"].items()}
    # visitor types predict the intent store better than one chain; the truth stays the floor
    assert loss["true_model"] < loss["latent_class"] < loss["markov1"]
    core = build_core(
        64, data_dir=synthetic_dir, dynamics="latent_class", model_path=out / "latent_class.npz"
    )
    core.reset(seed=0)
    assert core.dynamics.transitions.shape == (2, core.n_pages, core.n_pages + 1)
    # the held-out world is a visitor model of the same kind, from the held-out folder
    site = Site(data_dir=synthetic_dir, env={"dynamics": "latent_class"}, held_out_dir=out)
    assert site.world_options("held_out")["model_path"] == str(out / "latent_class.npz")
    assert site.worlds()[:2] == ["learned", "held_out"]


def test_train_simulator_calibrates_when_simulated_visitors_leave(
    synthetic_dir: Path, tmp_path: Path
) -> None:
    from envs.exit_calibration import ExitCalibratedDynamics
    from envs.fidelity import sessions_viewing, simulate_organic_sessions
    from envs.site_env import build_core

    out = tmp_path / "calibrated"
    options = "{edges: [1, 2, 4, 8], iterations: 3, sessions: 3000, visitors: 512}"
    record = train_run(_sim_cfg(synthetic_dir, out, f"simulator.exit_calibration={options}"))
    fit = record["gru"]["exit_calibration"]
    assert len(fit["offsets"]) == 4 and set(fit["log_loss"]) == {"valid", "test"}
    # the next-page metrics are the model's own: the offsets' log-loss is recorded beside it
    assert fit["log_loss"]["test"]["model"] == pytest.approx(
        record["models"]["gru"]["with_exit"]["log_loss"], rel=1e-6
    )
    target = fit["target"]["pages_per_session"]
    # 3,000 simulated sessions of lengths with a standard deviation near 6.8: the mean has a
    # standard error of 0.12 (3 % of the target), so 10 % is about three of them
    assert abs(fit["after"]["pages_per_session"] - target) < 0.10 * target
    assert "exit calibration: pages per session" in " ".join(record["trained"])
    assert "conversion" in " ".join(record["trained"])
    # the store's one converting page (the order confirmation) gets the conversion offset
    vocab = load_prepared(synthetic_dir, splits=("train",)).vocab
    assert [vocab.pages[i] for i in fit["converting"]] == ["/ordercompleted.html"]
    assert fit["target"]["conversion_rate"] > 0 and fit["config"]["conversion"]
    model = VisitorModel.load(out / "model.pt")
    assert model.exit_calibration == {
        "edges": [1, 2, 4, 8],
        "offsets": fit["offsets"],
        "converting": fit["converting"],
        "conversion_offset": fit["conversion_offset"],
    }
    # the simulator runs the calibrated model: the same sessions as the fit's last round
    core = build_core(512, data_dir=synthetic_dir, dynamics="gru", model_path=out / "model.pt", max_steps=200)  # fmt: skip
    assert isinstance(core.dynamics, ExitCalibratedDynamics)
    sim = simulate_organic_sessions(core, 3000, seed=0)
    assert sim.lengths.mean() == pytest.approx(fit["after"]["pages_per_session"], rel=1e-6)
    converted = sessions_viewing(sim, np.isin(np.arange(len(vocab.pages)), fit["converting"]))
    assert converted.mean() == pytest.approx(fit["after"]["conversion_rate"], rel=1e-6)


def _sim_cfg(data_dir: Path, out: Path, *extra: str):
    return compose_cfg(
        "train_simulator",
        [
            f"data_dir={data_dir}",
            f"out_dir={out}",
            "simulator.trainer.epochs=3",
            "simulator.trainer.patience=10",
            "simulator.model.hidden_size=16",
            "simulator.model.embedding_dim=8",
            "simulator.baselines.tune_on_valid=false",
            "show_progress=false",
            *extra,
        ],
    )


def test_resume_continues_an_interrupted_run_and_refuses_a_foreign_checkpoint(
    synthetic_dir: Path, tmp_path: Path
) -> None:
    from clickstream.errors import RunFolderError
    from clickstream.faults import SimulatedKill, fault_injection
    from clickstream.runfolder import verify_folder

    whole = tmp_path / "whole"
    train_run(_sim_cfg(synthetic_dir, whole))
    expected = VisitorModel.load(whole / "model.pt").net.state_dict()

    out = tmp_path / "sim"
    partial = out.parent / ".sim.partial"
    # killed while writing the third epoch's checkpoint: two epochs are in the work folder
    with fault_injection() as counted:
        train_run(_sim_cfg(synthetic_dir, tmp_path / "count"))
    third = [i for i, label in enumerate(counted.labels, 1) if label == "write last.pt"][2]
    with pytest.raises(SimulatedKill), fault_injection(at=third):
        train_run(_sim_cfg(synthetic_dir, out))
    assert not out.exists() and (partial / "last.pt").is_file()
    saved = partial / "last.pt"
    state = torch.load(saved, weights_only=True)  # tensors and plain data only
    assert len(state["history"]["epochs"]) == 2

    # another architecture, or other data, cannot continue it: a clear refusal
    with pytest.raises(RunFolderError, match=r"other settings: model\.hidden_size: 16 in"):
        train_run(_sim_cfg(synthetic_dir, out, "resume=true", "simulator.model.hidden_size=8"))
    other = prepare_synthetic(tmp_path / "other", "data.n_sessions=1500", "data.n_pages=80")
    with pytest.raises(RunFolderError, match=r"made from other data \(fingerprint sha256:"):
        train_run(_sim_cfg(other, out, "resume=true"))

    # the same data and settings continue it: the weights of an uninterrupted run
    record = train_run(_sim_cfg(synthetic_dir, out, "resume=true"))
    assert [e["epoch"] for e in record["gru"]["history"]["epochs"]] == [1, 2, 3]
    resumed = VisitorModel.load(out / "model.pt").net.state_dict()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert verify_folder(out, "train_simulator").files.keys() >= {"model.pt", "last.pt"}
    assert not partial.exists()


def test_a_truncated_or_foreign_checkpoint_is_a_clear_error(
    synthetic_dir: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    out = tmp_path / "sim"
    partial = tmp_path / ".sim.partial"
    partial.mkdir()
    (partial / "last.pt").write_bytes(b"PK\x03\x04 not a whole torch file")
    command = [
        sys.executable,
        "scripts/train_simulator.py",
        f"data_dir={synthetic_dir}",
        f"out_dir={out}",
        "resume=true",
        "show_progress=false",
        "hydra.run.dir=" + str(tmp_path / "hydra"),
    ]
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"{partial / 'last.pt'}: training checkpoint cannot be read: truncated" in done.stderr
    # a torch file of another kind: refused by name too
    torch.save({"state_dict": {}}, partial / "last.pt")
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not a NextPage training checkpoint" in done.stderr


@pytest.mark.parametrize("latent", [False, True])
def test_a_diverged_training_publishes_nothing_and_leaves_nothing_behind(
    synthetic_dir: Path, tmp_path: Path, latent: bool
) -> None:
    # a learning rate that sends the weights to NaN in the first epoch: before, the untrained
    # network was published as the model, with best_epoch null and a plausible test score
    out = tmp_path / "sim"
    overrides = [
        f"data_dir={synthetic_dir}",
        f"out_dir={out}",
        "simulator.trainer.epochs=2",
        "simulator.trainer.lr=1e30",
        "simulator.trainer.grad_clip=0",
        "simulator.model.hidden_size=16",
        "show_progress=false",
    ]
    if latent:  # the latent-type GRU alone
        overrides += ["simulator.model=null", "+simulator.latent_gru={types: 2}"]
    label = "latent-type GRU, 2 types, first-order" if latent else "GRU"
    with pytest.raises(TrainingDiverged, match=rf"{label} training diverged.*epoch 1"):
        train_run(compose_cfg("train_simulator", overrides))
    assert list(tmp_path.iterdir()) == []  # no run, no .sim.partial, no .sim.partial.lock
