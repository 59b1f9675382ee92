"""train_simulator's settings are checked before any work, naming the key users set.

An audit found ``simulator.trainer.epochs=0`` ending in a TypeError, ``lr=-0.01`` in torch's
ValueError, ``lr=0`` and ``min_session_length=-1`` accepted, ``batch_sessions=0`` in range()'s
ValueError, ``min_session_length=1000`` in a ZeroDivisionError, and failed runs (even
``hidden_size=0`` or ``device=gpu``) leaving ``.<out>.partial/`` and its lock behind.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from clickstream.errors import ClickstreamError, ConfigError, DataError
from envs.training import TrainerConfig
from envs.visitor_model import ModelConfig
from scripts.train_simulator import run as train_run
from tests.hydra_configs import compose_cfg, prepare_synthetic

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "simulator.trainer.epochs must be a whole number >= 1, got 0"),
        ({"epochs": -1}, "simulator.trainer.epochs must be a whole number >= 1, got -1"),
        ({"epochs": 2.5}, "simulator.trainer.epochs must be a whole number >= 1, got 2.5"),
        ({"epochs": "abc"}, "simulator.trainer.epochs must be a whole number >= 1, got 'abc'"),
        ({"lr": -0.01}, "simulator.trainer.lr must be a finite number > 0, got -0.01"),
        ({"lr": 0}, "simulator.trainer.lr must be a finite number > 0, got 0"),
        ({"lr": float("nan")}, "simulator.trainer.lr must be a finite number > 0, got nan"),
        (
            {"batch_sessions": 0},
            "simulator.trainer.batch_sessions must be a whole number >= 1, got 0",
        ),
        ({"max_tokens": 0}, "simulator.trainer.max_tokens must be a whole number >= 1, got 0"),
        ({"max_len": 0}, "simulator.trainer.max_len must be a whole number >= 1, got 0"),
        (
            {"eval_batch_sessions": 0},
            "simulator.trainer.eval_batch_sessions must be a whole number >= 1, got 0",
        ),
        (
            {"patience": 0},
            "simulator.trainer.patience must be a whole number >= 1 (epochs without "
            "improvement before stopping), got 0",
        ),
        (
            {"weight_decay": -1.0},
            "simulator.trainer.weight_decay must be a finite number >= 0, got -1.0",
        ),
        (
            {"grad_clip": -1.0},
            "simulator.trainer.grad_clip must be a finite number >= 0 (0: no clipping), got -1.0",
        ),
        (
            {"ema_decay": 1.0},
            "simulator.trainer.ema_decay must be a finite number in [0, 1) (0: no average), "
            "got 1.0",
        ),
        (
            {"lr_decay": 0.0},
            "simulator.trainer.lr_decay must be a finite number in (0, 1] (1: constant), got 0.0",
        ),
        (
            {"min_delta": -0.1},
            "simulator.trainer.min_delta must be a finite number >= 0, got -0.1",
        ),
        (
            {"sampled_softmax": -1},
            "simulator.trainer.sampled_softmax must be a whole number >= 0 (0: full softmax), "
            "got -1",
        ),
        (
            {"sample_alpha": -1.0},
            "simulator.trainer.sample_alpha must be a finite number >= 0, got -1.0",
        ),
        (
            {"sample_exact": -1},
            "simulator.trainer.sample_exact must be a whole number >= 0, got -1",
        ),
        (
            {"num_threads": 0},
            "simulator.trainer.num_threads must be a whole number >= 1 (null: torch's "
            "default), got 0",
        ),
        ({"seed": -1}, "simulator.trainer.seed must be a whole number >= 0, got -1"),
        (
            {"batching": "sorted"},
            "simulator.trainer.batching must be random or bucketed, got 'sorted'",
        ),
    ],
)
def test_trainer_settings_are_checked_when_read(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainerConfig.from_dict(options)
    assert str(info.value) == message


def test_trainer_defaults_and_shipped_values_pass() -> None:
    TrainerConfig()
    TrainerConfig.from_dict({"num_threads": None, "lr": 1, "lr_decay": 1.0, "ema_decay": 0.99})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hidden_size": 0}, "simulator.model.hidden_size must be a whole number >= 1, got 0"),
        (
            {"prior_folds": -1},
            "simulator.model.prior_folds must be a whole number >= 0 (0 or 1: no "
            "cross-fitting), got -1",
        ),
        (
            {"max_prior_pages": 0},
            "simulator.model.max_prior_pages must be a whole number >= 1 or null, got 0",
        ),
        ({"dropout": 1.0}, "simulator.model.dropout must be in [0, 1), got 1.0"),
        (
            {"prior_smoothing": float("inf")},
            "simulator.model.prior_smoothing must be > 0, got inf",
        ),
    ],
)
def test_model_settings_name_the_simulator_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict(options)
    assert str(info.value) == message


# --------------------------------------------------------------------------------------------
# train_simulator: a bad setting ends the run before it writes anything


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_synthetic(
        tmp_path_factory.mktemp("data") / "syn", "data.n_sessions=200", "data.n_pages=50"
    )


def _refused(data_dir: Path, tmp_path: Path, *overrides: str) -> ClickstreamError:
    """Run train_simulator with ``overrides``; its error, after checking nothing was left."""
    runs = tmp_path / "runs"
    runs.mkdir()
    cfg = compose_cfg(
        "train_simulator",
        [f"data_dir={data_dir}", f"out_dir={runs / 'sim'}", "show_progress=false", *overrides],
    )
    with pytest.raises(ClickstreamError) as info:
        train_run(cfg)
    assert sorted(p.name for p in runs.iterdir()) == []  # no .sim.partial, no lock
    return info.value


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "simulator.trainer.epochs=0",
            "simulator.trainer.epochs must be a whole number >= 1, got 0",
        ),
        (
            "simulator.trainer.lr=-0.01",
            "simulator.trainer.lr must be a finite number > 0, got -0.01",
        ),
        ("simulator.trainer.lr=0", "simulator.trainer.lr must be a finite number > 0, got 0"),
        (
            "simulator.trainer.batch_sessions=0",
            "simulator.trainer.batch_sessions must be a whole number >= 1, got 0",
        ),
        (
            "simulator.min_session_length=-1",
            "simulator.min_session_length must be a whole number >= 1 (1: keep every "
            "session), got -1",
        ),
        (
            "simulator.model.hidden_size=0",
            "simulator.model.hidden_size must be a whole number >= 1, got 0",
        ),
        ("device=gpu", "device must be cpu, cuda, cuda:N or auto, got 'gpu'"),
        # every trained kind checks its own settings first, not when its training starts
        (
            "+simulator.latent_class={bogus: 1}",
            "unknown simulator.latent_class option(s) ['bogus']; known: ['classes', "
            "'init_scale', 'iters', 'lr', 'max_classes', 'restarts', 'seed', 'smoothing']",
        ),
        (
            "+simulator.latent_gru={typez: 3}",
            "unknown simulator.latent_gru option(s) ['typez']; known: ['candidates', "
            "'init_scale', 'max_len', 'memory_lr', 'memory_min_gain', 'min_gain', 'one_type', "
            "'page_preferences', 'restarts', 'table_biases', 'table_fit', 'table_lr', 'trunk', "
            "'types']",
        ),
        (
            "+simulator.second_order={kk: 1}",
            "simulator.second_order has no setting ['kk']: k, k1, alpha, tune_on_valid",
        ),
    ],
)
def test_a_bad_setting_is_refused_before_the_work_folder(
    data_dir: Path, tmp_path: Path, override: str, message: str
) -> None:
    exc = _refused(data_dir, tmp_path, override)
    assert isinstance(exc, ConfigError)
    assert str(exc) == message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_before_the_work_folder(
    data_dir: Path, tmp_path: Path
) -> None:
    exc = _refused(data_dir, tmp_path, "device=cuda")
    assert str(exc) == (
        "device=cuda asked for, but CUDA is not available on this machine: use device=cpu or "
        "device=auto"
    )


def test_a_split_emptied_by_min_session_length_names_split_setting_and_count(
    data_dir: Path, tmp_path: Path
) -> None:
    exc = _refused(data_dir, tmp_path, "simulator.min_session_length=1000")
    assert isinstance(exc, DataError)
    assert str(exc) == (
        f"{data_dir}: split 'train' holds no sessions of simulator.min_session_length=1000 "
        "page views or more (it holds 160 sessions, all shorter): lower "
        "simulator.min_session_length"
    )


def test_command_line_prints_the_error_and_exits_2(data_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train_simulator.py"),
            f"data_dir={data_dir}",
            f"out_dir={runs / 'sim'}",
            "simulator.trainer.epochs=0",
            "show_progress=false",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: simulator.trainer.epochs must be a whole number >= 1, got 0"
    )
    assert "Traceback" not in proc.stderr
    assert list(runs.iterdir()) == []
