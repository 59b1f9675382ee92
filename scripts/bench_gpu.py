"""Benchmark: the simulator, GRU training and PPO on a GPU, after checking it against the CPU.

    python scripts/bench_gpu.py                       # on a CUDA machine: the full table
    python scripts/bench_gpu.py --device cpu --pages 50 --batches 64 --steps 3 \\
        --sessions 400 --ppo-steps 2048              # a smoke run (the test suite's)

Installs nothing: the project (``pip install -e .``) and a CUDA build of torch are all it
uses. For each site size (``--pages``: 200, 1,000 and 10,000 pages of the synthetic store,
``--sessions`` each, at least 30 per page) it prepares the data in a temporary folder, then:

1. **correctness**, on the smallest site: the GRU visitor model's next-page log-probabilities on
   ``--device`` equal the CPU's (max abs difference under 1e-4), and organic sessions simulated
   on ``--device`` have the CPU's mean length and return (within 5 standard errors: the random
   streams of two devices differ);
2. **GRU training**: one epoch of ``scripts/train_simulator.py`` (the default GRU, padded
   length-bucketed batches) on ``--device``, events (page views) per second;
3. **simulator**: visitor-steps per second of the batched core (``scripts/bench_env.py``'s
   ``rate_core``: random recommendations, ``--steps`` steps after a warm-up) in the GRU world,
   for each batch size of ``--batches``; sites of 5,000 pages or more use candidate mode
   (``top_k=50``: each page's 50 most frequent successors, ``EXIT`` and the recommendation are
   scored, not all pages: no ``B x P`` logits, and nothing of size ``P x P`` anywhere);
4. **PPO training**: env steps per second of ``configs/agent/ppo.yaml`` (``--ppo-steps``
   steps, periodic evaluations off) with the simulator and the networks on ``--device``, and
   ``--ppo-envs`` visitors stepped together (``scripts/bench_agents.py``'s ``rate_nextpage``).

Prints the tables in the format of ``docs/benchmarks.md``; exits 1 if a check fails. Targets
(issue 23) on an H100/H200: simulator >= 50M visitor-steps/s at 1,000 pages and >= 25M at
10,000; GRU training >= 1M events/s at 10,000 pages.
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from scripts.bench_agents import rate_nextpage
from scripts.bench_env import rate_core
from scripts.configs import agent_settings, compose_stage

LARGE_SITE = 5_000
"""Sites of this many pages or more are simulated in candidate mode (``top_k``)."""


def prepare(out: Path, pages: int, sessions: int) -> Path:
    """A synthetic store of ``pages`` pages and ``sessions`` sessions, prepared in ``out``."""
    from scripts.prepare_data import run

    cfg = compose_stage(
        "prepare_data",
        [
            "data=synthetic",
            f"data.n_pages={pages}",
            f"data.n_sessions={sessions}",
            f"out_dir={out}",
            "show_progress=false",
        ],
    )
    run(cfg)
    return out


def train_gru(data_dir: Path, device: str) -> dict[str, Any]:
    """One epoch of the default GRU visitor model on ``device``; its training record."""
    from scripts.train_simulator import run

    cfg = compose_stage(
        "train_simulator",
        [
            f"data_dir={data_dir}",
            f"device={device}",
            "simulator.trainer.epochs=1",
            "simulator.baselines.tune_on_valid=false",
            "show_progress=false",
        ],
    )
    record = run(cfg)
    epoch = _first_epoch(record)
    return {
        "events_per_sec": float(epoch["events_per_sec"]),
        "train_seconds": float(epoch.get("train_seconds", math.nan)),
    }


def _first_epoch(record: dict[str, Any]) -> dict[str, Any]:
    """The first epoch's record wherever ``train_simulator`` keeps it."""
    stack: list[Any] = [record]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "events_per_sec" in node:
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise RuntimeError("the simulator's training record holds no events_per_sec")


def check_model(data_dir: Path, device: str, n: int = 64) -> float:
    """Max abs difference of the GRU's next-page log-probabilities, ``device`` against CPU, on
    ``n`` test sessions."""
    from envs.sequences import load_prepared
    from envs.visitor_model import VisitorModel

    seqs = load_prepared(data_dir, splits=("test",)).splits["test"]
    path = data_dir / "simulator" / "model.pt"
    cpu, dev = VisitorModel.load(path, device="cpu"), VisitorModel.load(path, device=device)
    rows = [seqs.session(i) for i in range(min(n, len(seqs)))]  # the first n, padded with P
    pages = torch.full((len(rows), max(len(r) for r in rows)), cpu.vocab.n_pages, dtype=torch.long)
    for i, r in enumerate(rows):
        pages[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    with torch.no_grad():
        a = cpu.log_prob_next(pages)
        b = dev.log_prob_next(pages.to(device)).cpu()
    real = pages != cpu.vocab.n_pages  # positions inside a session
    return float((a - b).abs()[real].max())


def organic_sessions(
    data_dir: Path, device: str, n: int, top_k: int | None, dynamics: str
) -> dict[str, float]:
    """Mean length and return of ``n`` organic sessions (nothing recommended) and their
    standard errors, simulated on ``device``."""
    from envs.site_env import build_core

    core = build_core(n, data_dir=data_dir, dynamics=dynamics, device=device, top_k=top_k)
    core.reset(seed=0)
    none = torch.full((n,), core.n_actions - 1, dtype=torch.long, device=core.device)
    length = torch.ones(n, device=core.device)
    ret = torch.zeros(n, device=core.device)
    live = torch.ones(n, dtype=torch.bool, device=core.device)
    for _ in range(core.max_steps):
        out = core.step(none)
        ret += out.reward * live
        ended = (out.terminated | out.truncated) & live
        length += (live & ~ended).float()
        live &= ~ended
        if not bool(live.any()):
            break
    length, ret = length.double().cpu(), ret.double().cpu()
    return {
        "length": float(length.mean()),
        "length_se": float(length.std() / math.sqrt(n)),
        "return": float(ret.mean()),
        "return_se": float(ret.std() / math.sqrt(n)),
    }


def check_simulator(data_dir: Path, device: str, n: int, dynamics: str) -> list[str]:
    """Organic sessions on ``device`` against the CPU's; the problems found (none: ``[]``)."""
    here = organic_sessions(data_dir, device, n, None, dynamics)
    there = organic_sessions(data_dir, "cpu", n, None, dynamics)
    problems = []
    for key in ("length", "return"):
        se = math.hypot(here[f"{key}_se"], there[f"{key}_se"])
        if abs(here[key] - there[key]) > 5 * se + 1e-9:
            problems.append(
                f"mean session {key} on {device} {here[key]:.4f} vs CPU {there[key]:.4f} "
                f"(more than 5 standard errors, {se:.4f})"
            )
    return problems


def ppo_rate(data_dir: Path, device: str, steps: int, n_envs: int, dynamics: str) -> float:
    """PPO training env steps/s, simulator and networks on ``device``."""
    from agents.site import Site

    site = Site(data_dir=data_dir, env={"dynamics": dynamics, "device": device}, seed=0)
    settings = {**agent_settings("ppo", "none"), "device": device, "n_envs": n_envs}
    try:
        return rate_nextpage("ppo", site, steps, settings)
    finally:
        site.close()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every measurement; returns them (and the checks' results)."""
    device = args.device
    out: dict[str, Any] = {"sim": {}, "training": {}, "checks": [], "ppo": None}
    for i, pages in enumerate(args.pages):
        sessions = max(args.sessions, 30 * pages)
        data_dir = prepare(work / f"pages_{pages}", pages, sessions)
        out["training"][pages] = train_gru(data_dir, device)
        if i == 0:  # correctness against the CPU, on the smallest site
            diff = check_model(data_dir, device)
            if diff > 1e-4:
                out["checks"].append(f"GRU log-probabilities differ from the CPU's by {diff:.2e}")
            out["checks"] += check_simulator(data_dir, device, args.check_sessions, args.dynamics)
            out["model_max_abs_diff"] = diff
            out["ppo"] = ppo_rate(data_dir, device, args.ppo_steps, args.ppo_envs, args.dynamics)
        top_k = 50 if pages >= LARGE_SITE else None
        for b in args.batches:
            kwargs = {"data_dir": str(data_dir), "dynamics": args.dynamics, "top_k": top_k}
            out["sim"][(pages, b)] = rate_core(b, args.steps, {**kwargs, "device": device})
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return (
            f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
        )
    return f"{platform.processor() or platform.machine()} CPU, torch {torch.__version__}"


def print_tables(args: argparse.Namespace, res: dict[str, Any]) -> None:
    print(f"\n{_machine(args.device)}; device {args.device}; {args.steps} steps a measurement")
    print(
        f"correctness against the CPU: GRU log-probabilities max abs difference "
        f"{res['model_max_abs_diff']:.2e}; organic sessions: "
        + ("as on the CPU" if not res["checks"] else "; ".join(res["checks"]))
    )
    print("\nSimulator (batched core, GRU world, random recommendations), visitor-steps/s:\n")
    print("| pages | " + " | ".join(f"B = {b:,}" for b in args.batches) + " |")
    print("|---:|" + "---:|" * len(args.batches))
    for pages in args.pages:
        mode = " (`top_k=50`)" if pages >= LARGE_SITE else ""
        cells = " | ".join(f"{res['sim'][(pages, b)]:,.0f}" for b in args.batches)
        print(f"| {pages:,}{mode} | {cells} |")
    print("\nGRU visitor model training (one epoch, default GRU, padded batches):\n")
    print("| pages | events/s | seconds |")
    print("|---:|---:|---:|")
    for pages in args.pages:
        g = res["training"][pages]
        print(f"| {pages:,} | {g['events_per_sec']:,.0f} | {g['train_seconds']:.1f} |")
    print(
        f"\nPPO training (configs/agent/ppo.yaml, {args.ppo_envs} visitors, {args.pages[0]:,} "
        f"pages): {res['ppo']:,.0f} env steps/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device",
        default=None,
        help="cuda or cpu (default: cuda; without CUDA the run refuses unless --device cpu)",
    )
    parser.add_argument("--pages", type=int, nargs="+", default=[200, 1_000, 10_000])
    parser.add_argument("--dynamics", default="gru", help="the simulated visitors' kind")
    parser.add_argument("--batches", type=int, nargs="+", default=[4_096, 16_384, 65_536, 131_072])
    parser.add_argument("--steps", type=int, default=50, help="simulator steps a measurement")
    parser.add_argument("--sessions", type=int, default=20_000, help="at least, per site")
    parser.add_argument("--check-sessions", type=int, default=4_096)
    parser.add_argument("--ppo-steps", type=int, default=1_000_000)
    parser.add_argument("--ppo-envs", type=int, default=4_096)
    args = parser.parse_args(argv)
    if args.device is None:  # the full-size run is hours on a CPU: never started silently
        if not torch.cuda.is_available():
            parser.error(
                "no CUDA device here, and the default sizes (up to 10,000 pages, 131,072 "
                "visitors, 1M PPO steps) take hours on the CPU: run on a GPU, or pass "
                "--device cpu, with small sizes (e.g. --device cpu --pages 50 --sessions 400 "
                "--batches 64 --ppo-steps 2048 --ppo-envs 64)"
            )
        args.device = "cuda"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu (small sizes) or on a GPU")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        res = run(args, Path(tmp))
    print_tables(args, res)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if res["checks"]:
        print("CHECK FAILED: " + "; ".join(res["checks"]))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
