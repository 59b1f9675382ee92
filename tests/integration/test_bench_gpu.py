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


def test_without_cuda_the_default_run_refuses_instead_of_running_on_the_cpu(
    monkeypatch, capsys
) -> None:
    """The full-size run takes hours on a CPU: without CUDA and without ``--device cpu`` it
    refuses (exit 2, the way out named) before preparing anything."""
    import torch

    def started(*args, **kw):
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench_gpu, "run", started)
    with pytest.raises(SystemExit) as err:
        bench_gpu.main([])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "no CUDA device here" in message and "--device cpu" in message


def test_bench_latent_gru_names_a_missing_cuda_device(monkeypatch, capsys) -> None:
    """``--device cuda`` without CUDA: a clear message (exit 2), not a child's traceback."""
    import subprocess

    import torch

    from scripts import bench_latent_gru

    def started(*args, **kw):
        raise AssertionError("a child process was started")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(subprocess, "run", started)
    with pytest.raises(SystemExit) as err:
        bench_latent_gru.main(["--device", "cuda", "--pages", "50"])
    assert err.value.code == 2
    assert "no CUDA device here: run with --device cpu" in capsys.readouterr().err


def test_bench_latent_gru_gives_each_child_one_size() -> None:
    from scripts.bench_latent_gru import _without_pages

    argv = ["--pages", "200", "2000", "--sessions", "5", "--pages=7", "--threads", "1"]
    assert _without_pages(argv) == ["--sessions", "5", "--threads", "1"]
