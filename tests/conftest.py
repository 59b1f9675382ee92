"""Shared fixtures: where the public data lives, and skipping GPU tests without CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NEXTPAGE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    """Path of a file in ``../shared/data``; skips the test with a clear reason when absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"public data file {path} not found (set NEXTPAGE_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def ga_sample_path() -> Path:
    return shared_file("ga_sample_20170801.parquet")


@pytest.fixture(scope="session")
def msnbc_path() -> Path:
    return shared_file("msnbc990928.zip")


@pytest.fixture(scope="session")
def ga4_sample_path() -> Path:
    return shared_file("ga4_events_sampled.parquet")


@pytest.fixture(scope="session")
def webapp_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny but complete pipeline run folder for the web app's tests, built once per session
    (``tests/hydra_configs.py``: ``tiny_run``)."""
    from tests.hydra_configs import tiny_run

    return tiny_run(tmp_path_factory.mktemp("webapp") / "run")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op torch thread for the test run: the tensors are small, and on a busy 2-core
    machine torch's thread pool spins against the other work (measured in a tiny pipeline run:
    142 s with two threads under load, 4.6 s with one)."""
    from scripts.parallel import one_torch_thread

    with one_torch_thread():
        yield
