"""``scripts/bench_gpu.py``: the CPU smoke run (CI) and the real run where CUDA is."""

from __future__ import annotations

import re

import pytest

from scripts import bench_gpu

pytestmark = pytest.mark.integration

SMALL = ["--pages", "50", "--sessions", "400", "--steps", "3", "--ppo-steps", "2048"]


def _rows(text: str) -> dict[str, list[float]]:
    """``| first cell | numbers... |`` rows of the printed tables, by first cell."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 1 and re.fullmatch(r"[\d,.]+", cells[1]):
            rows[cells[0]] = [float(c.replace(",", "")) for c in cells[1:]]
    return rows


def test_cpu_smoke_run_checks_and_prints_the_tables(capsys) -> None:
    args = [*SMALL, "--device", "cpu", "--batches", "64", "128", "--ppo-envs", "64"]
    args += ["--check-sessions", "512"]
    assert bench_gpu.main(args) == 0
    out = capsys.readouterr().out
    # against itself the check must find nothing: the same numbers
    assert "max abs difference 0.00e+00; organic sessions: as on the CPU" in out
    assert "| pages | B = 64 | B = 128 |" in out
    rows = _rows(out)
    assert len(rows["50"]) == 2 and all(r > 0 for r in rows["50"])  # visitor-steps/s
    ppo = re.search(r"PPO training .*: ([\d,]+) env steps/s", out)
    assert ppo and float(ppo.group(1).replace(",", "")) > 0


@pytest.mark.gpu
def test_cuda_run_matches_the_cpu() -> None:
    args = [*SMALL, "--device", "cuda", "--batches", "4096", "--ppo-envs", "256"]
    assert bench_gpu.main(args) == 0
