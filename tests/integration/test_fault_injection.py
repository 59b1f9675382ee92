"""Kill the pipeline at each write boundary; the next run reuses what is complete and verified
and recomputes the rest, ending with the same results as a run that was never killed.

Every stage's writes are covered: ``prepare_data`` (the tables, the synthetic store's true
model, ``meta.json``), ``train_simulator`` (the checkpoint, the model, the metrics), ``train``
for four agents (tables, an SB3 PPO agent: policy files and ``run.json``), ``evaluate`` (results
and charts), and for each the manifest and the renames that publish it. Two settings: a fresh
run folder, and a complete one republished by ``force=true`` (where a kill mid-swap must
neither lose nor half-keep the old folders nor the stage folders nested in ``data/``).

The default run tries a sample of the crash points; ``-m slow`` tries every one and prints the
count (``docs/security.md`` records it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from clickstream.faults import SimulatedKill, fault_injection
from clickstream.runfolder import verify_folder
from scripts.pipeline import run as pipeline_run
from tests.hydra_configs import TINY_RUN, compose_cfg

pytestmark = pytest.mark.integration

FAULT_RUN = (
    *TINY_RUN,
    "n_sessions=200",
    "agent_eval_sessions=128",
    "++agent_overrides.ppo.total_timesteps=256",
)
AGENTS = ("organic", "greedy", "value_iteration", "ppo")  # TINY_RUN's, in the pipeline's order
STAGES = ("prepare_data", "train_simulator", *(f"{a}/seed_0" for a in AGENTS), "evaluate")


def pipeline(out: Path, *overrides: str) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pipeline_run(compose_cfg("pipeline", [f"out_dir={out}", *FAULT_RUN, *overrides]))
    finally:
        torch.set_num_threads(threads)


def status(report: dict[str, Any]) -> dict[str, str]:
    """``ran`` / ``reused`` of each stage in :data:`STAGES`."""
    s = report["stages"]
    return {
        "prepare_data": s["prepare_data"],
        "train_simulator": s["train_simulator"],
        **{f"{a}/seed_0": report["agents"][f"{a}/seed_0"] for a in AGENTS},
        "evaluate": s["evaluate"],
    }


def records(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "eval" / "results.json").read_text())["records"]


def folders(out: Path) -> list[Path]:
    return [
        out / "data",
        out / "data" / "simulator",
        *(out / "agents" / a / "seed_0" for a in AGENTS),
        out / "eval",
    ]


def manifest_points(labels: list[str]) -> dict[str, int]:
    """The 1-based boundary at which each stage writes its manifest (in :data:`STAGES` order):
    a kill after it leaves a finished folder that recovery publishes."""
    points = [i for i, label in enumerate(labels, 1) if label.endswith("write manifest.json")]
    assert len(points) == len(STAGES), labels
    return dict(zip(STAGES, points, strict=True))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run that was never killed, and the write boundaries of a fresh run and of a
    ``force=true`` republication."""
    out = tmp_path_factory.mktemp("reference") / "run"
    with fault_injection() as fresh:
        report = pipeline(out)
    assert set(status(report).values()) == {"ran"}
    with fault_injection() as again:
        assert set(status(pipeline(out, "force=true")).values()) == {"ran"}
    return {
        "out": out,
        "records": records(out),
        "fresh": fresh.labels,
        "republish": again.labels,
    }


def crash_and_recover(reference: dict[str, Any], out: Path, mode: str, at: int) -> str:
    """Kill a run at boundary ``at``, run again, check the outcome; returns the label."""
    labels = reference[mode]
    if mode == "republish":
        shutil.copytree(reference["out"], out)
    with pytest.raises(SimulatedKill), fault_injection(at=at):
        pipeline(out, *(["force=true"] if mode == "republish" else []))
    report = pipeline(out)
    # a stage is reused when its (new) manifest was written before the kill; with none
    # written, a republication leaves the old, consistent run, all of it reused
    done = manifest_points(labels)
    nothing_new = mode == "republish" and at <= min(done.values())
    expected = {s: "reused" if i < at or nothing_new else "ran" for s, i in done.items()}
    assert status(report) == expected, (at, labels[at - 1], report["why"])
    for folder in folders(out):
        verify_folder(folder)
    left = list(out.rglob(".*"))  # no temporary folder or file, no work folder
    assert left == [], (at, labels[at - 1])
    assert records(out) == reference["records"], (at, labels[at - 1])
    return labels[at - 1]


def sample(labels: list[str]) -> list[int]:
    """A few crash points: inside each stage's writes, after its manifest, in the swap."""
    wanted = (
        "prepare_data: write meta.json",
        "publish data: rename the old folder aside",
        "publish data: carry over simulator",
        "train_simulator: write metrics.json",
        "publish simulator: rename the new folder into place",
        "save policy ppo: policy.json",
        "publish eval: remove the old folder",
    )
    return [labels.index(w) + 1 for w in wanted if w in labels]


@pytest.mark.parametrize("mode", ["fresh", "republish"])
def test_a_kill_at_sampled_boundaries_is_recovered(
    reference: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    points = sample(reference[mode])
    assert len(points) >= 3
    for at in points:
        crash_and_recover(reference, tmp_path / f"{mode}_{at}", mode, at)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fresh", "republish"])
def test_a_kill_at_every_boundary_is_recovered(
    reference: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    labels = reference[mode]
    tried = [
        crash_and_recover(reference, tmp_path / str(at), mode, at)
        for at in range(1, len(labels) + 1)
    ]
    print(f"\n{mode}: {len(tried)} crash points tried, all recovered")
    assert len(tried) == len(labels) >= 50
