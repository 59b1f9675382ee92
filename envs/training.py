"""Training the GRU visitor model: AdamW, padded length-bucketed batches, early stopping.

Batches group training windows of similar length and cap padded positions per batch
(``max_tokens``), so a batch of two-page sessions holds thousands of them and the GRU runs a
few wide matrix products instead of many narrow ones: on a CPU this is what sets the speed.
Sessions longer than ``max_len`` are cut into windows of ``max_len`` page views for training
(later windows start from an empty state; evaluation always reads whole sessions).

Early stopping watches the validation log-loss; the best epoch's weights are kept. A checkpoint
``last.pt`` after every epoch (weights, optimiser, random states, history, and what it was made
from: the data fingerprint and the settings) lets a run resume; it holds tensors and plain data
only, read with ``torch.load(weights_only=True)``, and a checkpoint made from other data or
settings is refused.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from clickstream import checks
from clickstream.errors import ConfigError, DataError, ModelError, RunFolderError, from_options
from clickstream.io import atomic_file, notice
from envs.sequences import SessionSequences
from envs.visitor_model import (
    NegativeSampler,
    TrainingBatch,
    VisitorModel,
    load_weights_only,
    make_batches,
    pad_batch,
    plain_data,
)

IGNORE = -100  # target of padded positions (F.cross_entropy's ignore_index)

CHECKPOINT_KIND = "nextpage.training_checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class TrainerConfig:
    """How the GRU is trained (``configs/simulator/*.yaml``: ``trainer``).

    Attributes:
        epochs: At most this many passes over the training windows.
        batching: ``random``: every batch a uniform sample of ``batch_sessions`` windows
            (padded to the longest, so keep ``max_len`` short); ``bucketed``: windows of
            similar length together under a ``max_tokens`` budget (least padding, fastest).
            Bucketed batches are not samples of the data: a batch of one-page sessions holds
            nothing but exits, and on a small site the model ends up miscalibrated on
            ``EXIT``. Use ``bucketed`` for big data, where it was measured to be as good
            (MSNBC) and is several times faster (both: docs/results.md, "Visitor model").
        batch_sessions: Windows per batch (at most, when bucketed).
        max_tokens: Bucketed batching: at most this many padded positions per batch.
        max_len: Training window length (page views).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient norm clip (0: none).
        ema_decay: Keep an exponential moving average of the weights with this decay per
            update and validate / keep that average (0: the raw weights). It smooths the
            noise of large learning rates at no cost in training speed.
        patience: Stop after this many epochs without a validation improvement.
        lr_decay: Multiply the learning rate by this after an epoch without improvement
            (1: constant); a noisy plateau at a high rate is what it fixes.
        min_delta: Smallest validation log-loss decrease that counts as one.
        sampled_softmax: Train on a sampled softmax with this many shared negative outcomes
            per batch (0: the full softmax over all ``P + 1``). For sites of thousands of
            pages, where the output layer is most of the work: each batch scores its targets
            and ``sampled_softmax`` outcomes drawn from ``sample_alpha``-flattened target
            frequencies. The normaliser is exact over the target and the page's
            ``sample_exact`` most likely successors (where the prior puts most of the
            probability) and estimated over the rest by importance sampling
            (``GRUNet.sampled_nll``); plain sampled softmax (Jean et al. 2015), whose proposal
            misses the page's own successors, was worse than the first-order prior alone on
            an item store (docs/benchmarks.md).
            Validation and everything after training use the full softmax.
        sample_alpha: Exponent on the outcome frequencies the negatives are drawn from
            (1: by popularity, 0: uniform).
        sample_exact: With a sampled softmax and the prior: each page's most likely
            successors under the prior summed exactly, not sampled (0: none).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
        amp: Mixed precision (bfloat16 autocast) on CUDA; ignored on CPU.
        num_threads: Torch CPU threads (``None``: torch's default).
        seed: Seed of the initial weights and the batch order.
        eval_batch_sessions: Sessions per batch when scoring validation / test sessions.
        show_progress: Progress bar over batches.
    """

    epochs: int = 30
    batching: str = "random"
    batch_sessions: int = 256
    max_tokens: int = 4096
    max_len: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    ema_decay: float = 0.0
    patience: int = 4
    lr_decay: float = 0.7
    min_delta: float = 1e-4
    sampled_softmax: int = 0
    sample_alpha: float = 0.75
    sample_exact: int = 32
    device: str = "cpu"
    amp: bool = True
    num_threads: int | None = None
    seed: int = 0
    eval_batch_sessions: int = 2048
    show_progress: bool = True

    def __post_init__(self) -> None:
        # checked when the config is read, so a bad value ends a run before it writes anything
        # (not as a torch error, or a run that trains nothing, epochs later)
        if self.batching not in ("random", "bucketed"):
            raise ConfigError(f"{KEY}.batching must be random or bucketed, got {self.batching!r}")
        wholes: list[tuple[str, int, str]] = [
            (name, 1, "")
            for name in ("epochs", "batch_sessions", "max_tokens", "max_len", "eval_batch_sessions")
        ]
        wholes += [
            # 0 would stop before the first epoch: nothing trained
            ("patience", 1, "(epochs without improvement before stopping)"),
            ("sampled_softmax", 0, "(0: full softmax)"),
            ("sample_exact", 0, ""),
            ("seed", 0, ""),
        ]
        if self.num_threads is not None:
            wholes.append(("num_threads", 1, "(null: torch's default)"))
        for name, low, note in wholes:
            checks.whole(f"{KEY}.{name}", getattr(self, name), low, note=note, floats=False)
        numbers: list[tuple[str, str, Callable[[float], bool]]] = [
            ("lr", "> 0", lambda v: v > 0),
            ("weight_decay", ">= 0", lambda v: v >= 0),
            ("grad_clip", ">= 0 (0: no clipping)", lambda v: v >= 0),
            ("ema_decay", "in [0, 1) (0: no average)", lambda v: 0 <= v < 1),
            ("lr_decay", "in (0, 1] (1: constant)", lambda v: 0 < v <= 1),
            ("min_delta", ">= 0", lambda v: v >= 0),
            ("sample_alpha", ">= 0", lambda v: v >= 0),
        ]
        for name, rule, ok in numbers:
            checks.number(f"{KEY}.{name}", getattr(self, name), ok, rule)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> TrainerConfig:
        """Build from a plain mapping (a resolved Hydra node); unknown keys raise."""
        return from_options(cls, cfg, KEY)


KEY = "simulator.trainer"
"""Where the settings of :class:`TrainerConfig` are set: error messages name the key there."""


def training_windows(
    seqs: SessionSequences, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut sessions into windows of at most ``max_len`` page views.

    Returns:
        ``(starts, lengths, session)``: start and length of each window in the flat arrays
        and the session it comes from, each shape ``(W,)``.
    """
    lengths = seqs.lengths
    n_windows = -(-lengths // max_len)
    session = np.repeat(np.arange(len(lengths)), n_windows)
    k = np.arange(len(session)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    starts = seqs.offsets[:-1][session] + k * max_len
    win_len = np.minimum(max_len, lengths[session] - k * max_len)
    return starts.astype(np.int64), win_len.astype(np.int64), session.astype(np.int64)


@torch.no_grad()
def mean_log_loss(model: VisitorModel, seqs: SessionSequences, batch_sessions: int = 2048) -> float:
    """Mean ``-ln p(next)`` over every step of ``seqs`` (``EXIT`` included), whole sessions."""
    total, steps = 0.0, 0
    targets = seqs.targets()
    for rows, logp in model.iter_log_probs(seqs, batch_sessions):
        total -= float(logp[np.arange(len(rows)), targets[rows]].astype(np.float64).sum())
        steps += len(rows)
    if steps == 0:  # no sessions: a mean of nothing is no score
        raise DataError("no sessions to score the log-loss on")
    return total / steps


def train(
    model: VisitorModel,
    train_seqs: SessionSequences,
    valid_seqs: SessionSequences,
    cfg: TrainerConfig,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    writer: Any | None = None,
    label: str = "GRU",
    identity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; at the end it holds the weights of the best validation epoch.

    Args:
        model: A fresh model (or the one a checkpoint is resumed into).
        train_seqs: Training sessions.
        valid_seqs: Validation sessions (early stopping).
        cfg: Trainer settings.
        checkpoint: Where to write ``last.pt``-style state after every epoch.
        resume: Continue from ``checkpoint`` if it exists.
        identity: What the checkpoint must have been made from to be resumed:
            ``{"data_fingerprint": ..., "config": {...}}`` (JSON-able), written into every
            checkpoint; a checkpoint with another one is refused (:func:`read_checkpoint`).
        writer: A TensorBoard ``SummaryWriter`` (``train/loss``, ``valid/log_loss``,
            ``time/events_per_sec``), or ``None``.
        label: Which model this is in progress bars and epoch lines (``GRU (held-out)``).

    Returns:
        The history: per-epoch records, best epoch, best validation log-loss and training
        events per second (page views predicted per second of training, evaluation excluded).
        An epoch whose validation log-loss is not finite (NaN or inf weights, which never
        recover) ends training there (``diverged_epoch``); the best epoch before it is kept.

    Raises:
        TrainingDiverged: No epoch has a finite validation log-loss (or none was trained): the
            model would otherwise hold its untrained weights. Names ``label``, the epoch and
            its losses.
    """
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    device = model.device
    use_amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    optimiser = torch.optim.AdamW(model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    starts, lengths, window_session = training_windows(train_seqs, cfg.max_len)
    folds = model.cfg.prior_folds if model.net.use_prior else 0
    window_fold = window_session % folds if folds >= 2 else None
    targets = train_seqs.targets()
    p = model.vocab.n_pages
    window_first = starts == train_seqs.offsets[:-1][window_session]  # starts its session
    n_negatives = int(cfg.sampled_softmax) if 0 < cfg.sampled_softmax < p + 1 else 0
    sampler = None
    if n_negatives:  # what sampled negatives are drawn from: flattened target frequencies
        freq = (np.bincount(targets, minlength=p + 1) + 1.0) ** cfg.sample_alpha
        log_q = torch.as_tensor(np.log(freq / freq.sum()), dtype=torch.float32, device=device)
        sampler = NegativeSampler(log_q, n_negatives, cfg.sample_exact)

    history: dict[str, Any] = {"epochs": [], "best_epoch": None, "best_valid_log_loss": math.inf}
    first_epoch = 1
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = read_checkpoint(ckpt_path, identity)
        try:
            model.net.load_state_dict(state["state_dict"])
            optimiser.load_state_dict(state["optimiser"])
            best_state = state["best_state"]
            ema = state.get("ema")
            history = state["history"]
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            first_epoch = len(history["epochs"]) + 1
            model.fit_prior(train_seqs)  # counts are not in the checkpoint's optimiser state
            model.net.load_state_dict(state["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RunFolderError(
                f"training checkpoint does not fit this model ({type(exc).__name__}: "
                f"{str(exc)[:300]}); start afresh with resume=false",
                file=str(ckpt_path),
            ) from None
    else:
        model.fit_prior(train_seqs)
        best_state = copy.deepcopy(model.net.state_dict())
        ema = None
    if cfg.ema_decay > 0 and ema is None:
        ema = [p.detach().clone() for p in model.net.parameters()]
    bad_epochs = _epochs_without_improvement(history, cfg.min_delta)
    for epoch in range(first_epoch, cfg.epochs + 1):
        if bad_epochs >= cfg.patience:
            break
        model.net.train()
        if cfg.batching == "random":
            order = rng.permutation(len(lengths))
            batches = [
                order[i : i + cfg.batch_sessions] for i in range(0, len(order), cfg.batch_sessions)
            ]
        else:
            batches = make_batches(lengths, cfg.batch_sessions, cfg.max_tokens, rng)
        loss_sum, events, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(
            batches, desc=f"{label} epoch {epoch}", unit="batch", disable=not cfg.show_progress
        )
        for idx in bar:
            _, mask, (pages, times, tgt) = pad_batch(
                starts[idx],
                lengths[idx],
                train_seqs.pages,
                train_seqs.time_bucket,
                targets,
                pad=(p, 0, IGNORE),
            )

            def to(a: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(a).to(device, non_blocking=True)

            batch = TrainingBatch(
                pages=to(pages),
                times=to(times),
                targets=to(tgt),
                valid=to(mask),
                lengths=torch.from_numpy(lengths[idx]) if device.type == "cpu" else None,
                fold=to(window_fold[idx]) if window_fold is not None else None,
                first=to(window_first[idx]),
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = model.batch_loss(batch, sampler)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
            optimiser.step()
            if ema is not None:
                with torch.no_grad():
                    for avg, param in zip(ema, model.net.parameters(), strict=True):
                        avg.lerp_(param, 1.0 - cfg.ema_decay)
            n = int(mask.sum())
            loss_sum += float(loss.detach()) * n
            events += n
            bar.set_postfix(loss=f"{loss_sum / events:.4f}", refresh=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        with _weights(model, ema):
            valid_loss = mean_log_loss(model, valid_seqs, cfg.eval_batch_sessions)
            current = copy.deepcopy(model.net.state_dict())  # what validation saw
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / max(events, 1),
            "valid_log_loss": valid_loss,
            "train_seconds": seconds,
            "events": events,
            "events_per_sec": events / seconds if seconds > 0 else float("nan"),
        }
        history["epochs"].append(record)
        diverged = not math.isfinite(valid_loss)
        if diverged:
            # NaN or inf weights never recover: stop here and keep the best epoch, if any
            history["diverged_epoch"] = epoch
        elif valid_loss < history["best_valid_log_loss"] - cfg.min_delta:
            history["best_valid_log_loss"], history["best_epoch"] = valid_loss, epoch
            best_state = current
            bad_epochs = 0
        else:
            bad_epochs += 1
            for group in optimiser.param_groups:
                group["lr"] *= cfg.lr_decay
        record["lr"] = optimiser.param_groups[0]["lr"]
        if writer is not None:
            writer.add_scalar("train/loss", record["train_loss"], epoch)
            writer.add_scalar("valid/log_loss", valid_loss, epoch)
            writer.add_scalar("time/events_per_sec", record["events_per_sec"], epoch)
            writer.add_scalar("train/lr", record["lr"], epoch)
            writer.flush()
        if cfg.show_progress:
            tqdm.write(
                f"{label} epoch {epoch}: train loss {record['train_loss']:.4f}, valid log-loss "
                f"{valid_loss:.4f}, {record['events_per_sec']:,.0f} events/s"
            )
        if ckpt_path is not None:
            state = {
                "state_dict": model.net.state_dict(),
                "optimiser": optimiser.state_dict(),
                "best_state": best_state,
                "ema": ema,
                "history": history,
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
            }
            write_checkpoint(ckpt_path, state, identity)
        if diverged:
            break

    done = [e for e in history["epochs"]]
    total_events = sum(e["events"] for e in done)
    total_seconds = sum(e["train_seconds"] for e in done)
    history["train_events_per_sec"] = total_events / total_seconds if total_seconds else None
    history["device"] = str(device)
    history["torch_threads"] = torch.get_num_threads()
    if history["best_epoch"] is None:
        raise _no_best_epoch(label, history)
    if "diverged_epoch" in history:  # said aloud: the run ended before its epochs or patience
        notice(
            f"{label} training diverged at epoch {history['diverged_epoch']} (valid log-loss "
            f"{history['epochs'][-1]['valid_log_loss']}): stopped there, keeping epoch "
            f"{history['best_epoch']} (valid log-loss {history['best_valid_log_loss']:.4f}); "
            "lower simulator.trainer.lr or set simulator.trainer.grad_clip to train further"
        )
    model.net.load_state_dict(best_state)
    model.train_state = {"history": history, "trainer_config": dataclasses.asdict(cfg)}
    return history


class TrainingDiverged(ModelError):
    """Training kept no epoch: no validation log-loss was finite (the run diverged), or no
    epoch was trained at all, so nothing trained is left to publish.

    Attributes:
        history: The training history so far (``best_epoch`` ``None``), for a caller that can
            do without this training (another random start, an optional stage).
    """

    def __init__(self, message: str, history: dict[str, Any]) -> None:
        super().__init__(message)
        self.history = history


def _no_best_epoch(label: str, history: dict[str, Any]) -> TrainingDiverged:
    """The error of a run that kept no epoch, naming the model, the epoch and its losses."""
    epochs = history["epochs"]
    if not epochs:
        return TrainingDiverged(
            f"{label} training kept no epoch: none was trained (the checkpoint resumed records "
            "no best epoch); start afresh with resume=false",
            history,
        )
    last = epochs[-1]
    return TrainingDiverged(
        f"{label} training diverged: no epoch has a finite validation log-loss (epoch "
        f"{last['epoch']}: train loss {last['train_loss']}, valid log-loss "
        f"{last['valid_log_loss']}); nothing trained is kept: lower simulator.trainer.lr or set "
        "simulator.trainer.grad_clip",
        history,
    )


@contextlib.contextmanager
def _weights(model: VisitorModel, params: list[torch.Tensor] | None) -> Iterator[None]:
    """Temporarily swap ``params`` (e.g. the moving average) into the network."""
    if params is None:
        yield
        return
    live = [p.detach().clone() for p in model.net.parameters()]
    with torch.no_grad():
        for param, value in zip(model.net.parameters(), params, strict=True):
            param.copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in zip(model.net.parameters(), live, strict=True):
                param.copy_(value)


def _epochs_without_improvement(history: Mapping[str, Any], min_delta: float) -> int:
    """Epochs since the best one (0 for a fresh history), for resuming early stopping."""
    best = history.get("best_epoch")
    if best is None:
        return 0
    return len(history["epochs"]) - int(best)


def write_checkpoint(
    path: str | Path, state: Mapping[str, Any], identity: Mapping[str, Any] | None
) -> None:
    """Write a training checkpoint atomically: tensors (weights, optimiser state, the torch
    random state) and plain data (history, numpy random state, ``identity``), so that
    :func:`read_checkpoint` needs nothing but ``torch.load(weights_only=True)``."""
    out = dict(state)
    out["history"] = plain_data(out["history"])
    out["numpy_rng"] = plain_data(out["numpy_rng"])
    out.update(
        kind=CHECKPOINT_KIND,
        version=CHECKPOINT_VERSION,
        identity=plain_data(dict(identity)) if identity is not None else None,
    )
    with atomic_file(path) as tmp:
        torch.save(out, tmp)


def read_checkpoint(path: str | Path, identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """A checkpoint written by :func:`write_checkpoint`, checked against ``identity``.

    Raises:
        RunFolderError: Not a readable checkpoint (truncated, a pickle of objects, another
            kind of file), or one made from other data or settings than ``identity`` (the
            message names what differs), naming the file.
    """
    path = Path(path)
    state = load_weights_only(path, "training checkpoint")
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise RunFolderError(
            "not a NextPage training checkpoint (or one from an older version); start afresh "
            "with resume=false",
            file=str(path),
        )
    if identity is None:
        return state
    recorded = state.get("identity") or {}
    wanted = plain_data(dict(identity))
    problems = []
    if recorded.get("data_fingerprint") != wanted.get("data_fingerprint"):
        problems.append(
            f"it was made from other data (fingerprint {recorded.get('data_fingerprint')}, "
            f"these data {wanted.get('data_fingerprint')})"
        )
    diff = _differences(recorded.get("config"), wanted.get("config"))
    if diff:
        problems.append("it was made with other settings: " + "; ".join(diff[:10]))
    if problems:
        raise RunFolderError(
            "cannot resume from this checkpoint: "
            + " and ".join(problems)
            + "; start afresh with resume=false (or resume with the data and settings it was "
            "made with)",
            file=str(path),
        )
    return state


def _differences(recorded: Any, wanted: Any, prefix: str = "") -> list[str]:
    """``key: recorded -> wanted`` for every setting that differs (dotted keys)."""
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(recorded) | set(wanted)):
            out += _differences(recorded.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    if recorded != wanted:
        return [f"{prefix.rstrip('.') or 'config'}: {recorded!r} in the checkpoint, {wanted!r} now"]
    return []
