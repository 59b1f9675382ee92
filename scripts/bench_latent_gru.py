"""Benchmark: the latent-type GRU at 200, 2,000 and 10,000 pages against the plain GRU.

    python scripts/bench_latent_gru.py [--pages 200 2000 10000] [--types 3] [--device cpu]

For each site size, a synthetic item-level store (``mode=items``: bare item ids in categories,
a latent interest per session; its categories are the page groups) samples the sessions, and
in one run, on the same sessions:

* **training events/s** (page views predicted per second, one epoch of at most
  ``--batches`` batches): the plain GRU and the latent-type GRU with ``--types`` types, both
  with the full softmax up to 2,000 pages and a sampled softmax (``--negatives``) above;
* **simulated visitor-steps/s** (B = ``--visitors`` visitors, random recommendations): the
  plain GRU dynamics and the latent-type GRU's, both in candidate mode (each page's
  ``--top-k`` most frequent successors, so no step scores all pages) above 2,000 pages;
* **memory**: each size runs in a fresh process that reads the sessions from a file (the
  store that made them is built in another), so its peak resident set is the models', the
  simulator's and torch's own (reported as well): a P × P float32 table at 10,000 pages
  would add 400 MB at once.

It prints a Markdown table with the ratios latent / plain (measured in the same run: the
machine's load cancels out) and, with ``--out``, writes it to a file. ``--device cuda`` runs
the same on a GPU (``scripts/bench_gpu.py`` is the GPU suite).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from clickstream.synthetic import build_store
from envs.click_model import MultinomialBoost
from envs.core import SiteCore
from envs.dynamics import GRUDynamics, entry_distribution, top_successors
from envs.latent_gru import LatentGRUDynamics, LatentGRUModel
from envs.sequences import SessionSequences, Vocabulary
from envs.training import TrainerConfig, train
from envs.visitor_model import ModelConfig, VisitorModel
from scripts.bench_env import step_rate

FULL_SOFTMAX_PAGES = 2_000
"""Sites up to this size train on the full softmax and simulate every outcome."""


def peak_rss_mb() -> float:
    """The process's peak resident set so far, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def site(pages: int, sessions: int, seed: int = 0) -> tuple[Vocabulary, SessionSequences]:
    """Sessions of a synthetic item store of ``pages`` pages, and its vocabulary."""
    store = build_store(mode="items", n_pages=pages, seed=seed)
    sim = store.simulate(sessions, seed)
    groups = tuple(dict.fromkeys(store.page_groups))
    page_group = np.array([groups.index(g) for g in store.page_groups], dtype=np.int64)
    vocab = Vocabulary(tuple(store.pages), groups, page_group)
    return vocab, SessionSequences.from_lists(sim.to_list(), pages)


def train_rate(model: VisitorModel, seqs: SessionSequences, cfg: TrainerConfig) -> float:
    """Training events/s of one epoch (validation excluded)."""
    history = train(model, seqs, seqs.select(np.arange(len(seqs)) < 500), cfg)
    return float(history["train_events_per_sec"])


def sim_rate(dynamics, n_pages: int, candidates, visitors: int, steps: int, device) -> float:
    """Visitor-steps/s of a core over ``dynamics``, random recommendations."""
    core = SiteCore(
        dynamics,
        MultinomialBoost(1.0),
        torch.ones(n_pages + 1),
        visitors,
        candidates=candidates,
        device=device,
    )
    return step_rate(core, steps)


def measure(pages: int, data: Path, args: argparse.Namespace) -> dict[str, float]:
    """Every figure of one site size (run in a process of its own)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    base_rss = peak_rss_mb()
    device = torch.device(args.device)
    with np.load(data) as z:
        vocab = Vocabulary(
            tuple(str(p) for p in z["pages"]), tuple(str(g) for g in z["groups"]), z["page_group"]
        )
        seqs = SessionSequences.from_lists(np.split(z["flat"], z["offsets"][1:-1]), pages)
    arch = ModelConfig(embedding_dim=64, hidden_size=64, dropout=0.0)
    # one epoch over at most `batches` batches of 256 windows
    seqs_t = seqs.select(np.arange(len(seqs)) < 256 * args.batches)
    large = pages > FULL_SOFTMAX_PAGES
    cfg = TrainerConfig(
        epochs=1,
        batch_sessions=256,
        max_len=16,
        show_progress=False,
        sampled_softmax=args.negatives if large else 0,
        device=args.device,
        eval_batch_sessions=64,  # validation scores all P + 1 outcomes: small batches
    )
    torch.manual_seed(0)
    plain = VisitorModel(vocab, arch, device)
    out = {"torch_rss": base_rss, "plain_train": train_rate(plain, seqs_t, cfg)}
    torch.manual_seed(0)
    latent = LatentGRUModel(vocab, arch, device, n_types=args.types)
    out["latent_train"] = train_rate(latent, seqs_t, cfg)
    candidates = top_successors(seqs, args.top_k) if large else None
    entry = entry_distribution(seqs)
    for name, dyn in (
        ("plain_sim", GRUDynamics(plain, entry, full_logits=not large)),
        ("latent_sim", LatentGRUDynamics(latent, full_logits=not large)),
    ):
        out[name] = sim_rate(dyn, pages, candidates, args.visitors, args.steps, device)
    out["peak_rss"] = peak_rss_mb()
    return out


def _without_pages(argv: list[str]) -> list[str]:
    """``argv`` without its ``--pages`` option (a child is given one size of its own)."""
    out, skipping = [], False
    for arg in argv:
        if arg == "--pages":
            skipping = True
        elif arg.startswith("--pages="):
            skipping = False
        elif skipping and not arg.startswith("-"):
            continue
        else:
            skipping = False
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[200, 2_000, 10_000])
    parser.add_argument("--types", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=60, help="training batches timed")
    parser.add_argument("--negatives", type=int, default=1024)
    parser.add_argument("--visitors", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--make-site", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    given = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(given)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --device cpu or on a GPU")
    if args.make_site is not None:  # child: sample the sessions of one size into a file
        vocab, seqs = site(args.pages[0], args.sessions)
        np.savez(
            args.make_site,
            pages=np.array(vocab.pages),
            groups=np.array(vocab.groups),
            page_group=vocab.page_group,
            flat=seqs.pages,
            offsets=seqs.offsets,
        )
        return
    if args.measure is not None:  # child: the figures of one size, as JSON
        print(json.dumps(measure(args.pages[0], args.measure, args)))
        return
    child = [sys.executable, __file__, *_without_pages(given)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pages in args.pages:
            data = Path(tmp) / f"site_{pages}.npz"
            size = ["--pages", str(pages)]
            subprocess.run([*child, *size, "--make-site", str(data)], check=True)
            done = subprocess.run(
                [*child, *size, "--measure", str(data)], check=True, capture_output=True, text=True
            )
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((pages, pages > FULL_SOFTMAX_PAGES, figures))
            print(f"{pages} pages: {figures}", flush=True)
    lines = [
        f"`python scripts/bench_latent_gru.py {' '.join(given)}`: torch "
        f"{torch.__version__}, {args.device}, {args.threads or torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; {args.types} types, "
        f"{args.sessions:,} sessions per site",
        "",
        "| pages | softmax / simulator | training events/s: GRU | latent-type GRU | ratio "
        "| visitor-steps/s: GRU | latent-type GRU | ratio | peak RSS (MB; torch alone) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pages, large, f in rows:
        how = (
            f"sampled ({args.negatives}) / top-{args.top_k} candidates"
            if large
            else "full / every outcome"
        )
        lines.append(
            f"| {pages:,} | {how} | {f['plain_train']:,.0f} | {f['latent_train']:,.0f} "
            f"| {f['latent_train'] / f['plain_train']:.2f} | {f['plain_sim']:,.0f} "
            f"| {f['latent_sim']:,.0f} | {f['latent_sim'] / f['plain_sim']:.2f} "
            f"| {f['peak_rss']:,.0f} ({f['torch_rss']:,.0f}) |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
