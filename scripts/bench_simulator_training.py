"""Benchmark: training speed of the GRU visitor model, padded batches vs session-parallel.

    python scripts/bench_simulator_training.py --data-dir data/msnbc [--events 1000000] [--device cpu]

Both batchings train the same network (``envs.visitor_model.GRUNet``, one layer of 100) on the
first ``--events`` page views of the train split (sessions of one page view dropped, as in the
MSNBC comparison) and report events (predicted page views) per second:

* **padded** (what ``envs/training.py`` does): windows of similar length padded into ``(B, T)``
  batches under a token budget; one GRU call per batch, full backpropagation through time;
* **session-parallel** (GRU4Rec's scheme, the baseline): ``B`` sessions side by side, one page
  view each per step; a step is one GRU call of length 1, one loss and one update, with the
  hidden state carried (detached) and reset where a session ends.

The ratio padded / session-parallel is measured in the same run. The validation log-loss after
the pass is printed too, so speed is not bought with quality.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from torch.nn import functional as F

from envs.core import resolve_device
from envs.sequences import SessionSequences, load_prepared
from envs.training import TrainerConfig, mean_log_loss, train
from envs.visitor_model import ModelConfig, VisitorModel


def first_events(seqs: SessionSequences, n_events: int) -> SessionSequences:
    """The first sessions holding about ``n_events`` page views."""
    keep = seqs.offsets[1:] <= n_events
    return seqs.select(keep)


def session_parallel_epoch(
    model: VisitorModel, seqs: SessionSequences, batch: int, lr: float
) -> tuple[float, int]:
    """One GRU4Rec-style pass; returns (seconds, events)."""
    net, device = model.net, model.device
    net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr)
    targets = seqs.targets()
    starts, ends = seqs.offsets[:-1], seqs.offsets[1:]
    n_sessions = len(starts)
    lanes = np.arange(min(batch, n_sessions))  # session in each lane
    pos = starts[lanes].copy()
    next_session = len(lanes)
    hidden = torch.zeros(net.cfg.num_layers, len(lanes), net.cfg.hidden_size, device=device)
    events, t0 = 0, time.perf_counter()
    active = np.ones(len(lanes), dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        page = torch.as_tensor(seqs.pages[pos[idx]], device=device).view(-1, 1)
        tgt = torch.as_tensor(targets[pos[idx]], device=device)
        logits, h = net(page, None, hidden[:, idx].contiguous())
        loss = F.cross_entropy(logits[:, 0], tgt)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        hidden[:, idx] = h.detach()
        events += len(idx)
        pos[idx] += 1
        done = idx[pos[idx] >= ends[lanes[idx]]]
        for lane in done:  # refill finished lanes with new sessions, state reset
            if next_session < n_sessions:
                lanes[lane], pos[lane] = next_session, starts[next_session]
                hidden[:, lane] = 0.0
                next_session += 1
            else:
                active[lane] = False
    return time.perf_counter() - t0, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/msnbc")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sp-batch", type=int, default=64, help="session-parallel lanes")
    args = parser.parse_args()

    data = load_prepared(args.data_dir, splits=("train", "valid"))
    train_seqs = first_events(data.splits["train"].min_length(2), args.events)
    valid = data.splits["valid"].min_length(2)
    valid = first_events(valid, 200_000)
    device = resolve_device(args.device)
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, device {device}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"train: {len(train_seqs):,} sessions, {train_seqs.n_steps:,} events; "
        f"valid: {valid.n_steps:,} events"
    )
    # GRU4Rec's size (one layer of 100), no extras, as in the MSNBC comparison
    cfg = ModelConfig(
        embedding_dim=64, hidden_size=100, dropout=0.0, use_groups=False, group_head=False
    )

    torch.manual_seed(0)
    padded = VisitorModel(data.vocab, cfg, device=device)
    trainer = TrainerConfig(
        epochs=1,
        patience=10,
        batching="bucketed",
        max_tokens=8192,
        max_len=64,
        show_progress=False,
        device=str(device),
    )
    history = train(padded, train_seqs, valid, trainer)
    rec = history["epochs"][0]
    pad_rate = rec["events_per_sec"]
    print(
        f"padded (token budget {trainer.max_tokens})     {rec['train_seconds']:7.2f} s  "
        f"{pad_rate:>10,.0f} events/s  valid log-loss {rec['valid_log_loss']:.4f}"
    )

    torch.manual_seed(0)
    sp = VisitorModel(data.vocab, cfg, device=device)
    seconds, events = session_parallel_epoch(sp, train_seqs, args.sp_batch, lr=trainer.lr)
    sp_rate = events / seconds
    print(
        f"session-parallel (B={args.sp_batch})          {seconds:7.2f} s  "
        f"{sp_rate:>10,.0f} events/s  valid log-loss {mean_log_loss(sp, valid):.4f}"
    )
    print(f"ratio padded / session-parallel: {pad_rate / sp_rate:.1f}x")


if __name__ == "__main__":
    main()
