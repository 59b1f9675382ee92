"""Study: do a few very long training sessions make a GRU's simulated visits run long?

    python scripts/study_long_sessions.py --data-dir data/ga_sample [--max-lengths 0 100 50]

Trains the GRU of ``configs/simulator/<simulator>.yaml`` on the training split as it is, then
without the sessions longer than each ``--max-lengths`` value (0: keep all), and for each
model prints its test log-loss, its mean ``P(EXIT)`` at the entry page of the training sessions
it saw against their bounce rate (calibration on its own data), and ``--sessions`` organic
sessions rolled out from their entry distribution (pages per session, bounce rate, share cut
at ``--max-steps``). A study for docs/results.md (the latent-type GRU section, GA day);
it writes nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from omegaconf import OmegaConf

from envs.dynamics import GRUDynamics, entry_distribution
from envs.fidelity import simulate_organic
from envs.sequences import SessionSequences, load_prepared
from envs.training import TrainerConfig, mean_log_loss, train
from envs.visitor_model import ModelConfig, VisitorModel
from scripts.configs import compose_stage

ROLL_OUT_VISITORS = 4096
"""Visitors simulated together (``check_simulator``'s ``n_visitors``)."""


def recipe(name: str) -> tuple[ModelConfig, TrainerConfig]:
    """The model and trainer settings of ``simulator=<name>``, composed as
    ``scripts/train_simulator.py`` composes them."""
    cfg = compose_stage("train_simulator", (f"simulator={name}",))
    sim = OmegaConf.to_container(cfg.simulator, resolve=True)
    assert isinstance(sim, dict)
    trainer = {**sim["trainer"], "show_progress": False}
    return ModelConfig.from_dict(sim["model"]), TrainerConfig.from_dict(trainer)


def shorter_than(seqs: SessionSequences, max_length: int) -> SessionSequences:
    """The sessions of at most ``max_length`` page views (0: all)."""
    return seqs if max_length <= 0 else seqs.select(seqs.lengths <= max_length)


@torch.no_grad()
def entry_exit(model: VisitorModel, seqs: SessionSequences) -> float:
    """Mean ``P(EXIT)`` the model gives at the entry pages of ``seqs``."""
    first = torch.as_tensor(seqs.pages[seqs.offsets[:-1]], dtype=torch.long)
    logits, _ = model.step(first, model.initial_hidden(len(first)))
    return float(torch.softmax(logits.float(), -1)[:, seqs.exit_id].mean())


def roll_out(
    model: VisitorModel, entry: np.ndarray, n: int, max_steps: int, seed: int
) -> tuple[float, float, float]:
    """``n`` organic sessions through the simulator core, as ``scripts/check_simulator.py``
    runs them: (pages per session, bounce rate, share cut at ``max_steps``)."""
    sim = simulate_organic(
        GRUDynamics(model, entry), n, max_steps=max_steps, visitors=ROLL_OUT_VISITORS, seed=seed
    )
    lengths = sim.lengths
    return float(lengths.mean()), float(np.mean(lengths == 1)), float(sim.truncated.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="data/ga_sample")
    parser.add_argument("--simulator", default="gru_small")
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[0, 100, 50])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_prepared(args.data_dir)
    train_s, valid_s, test_s = (data.splits[s] for s in ("train", "valid", "test"))
    model_cfg, trainer_cfg = recipe(args.simulator)
    trainer_cfg.seed = args.seed
    test_len = test_s.lengths
    print(
        f"test split: {len(test_len)} sessions, {test_len.mean():.2f} pages per session, "
        f"bounce {np.mean(test_len == 1):.3f}"
    )
    for max_length in args.max_lengths:
        seqs = shorter_than(train_s, max_length)
        torch.manual_seed(args.seed)
        model = VisitorModel(data.vocab, model_cfg)
        train(model, seqs, valid_s, trainer_cfg)
        pages, bounce, cut = roll_out(
            model, entry_distribution(seqs), args.sessions, args.max_steps, args.seed
        )
        label = "all" if max_length <= 0 else f"<= {max_length} pages"
        print(
            f"training sessions {label}: {len(seqs.lengths)} sessions, "
            f"{seqs.lengths.mean():.2f} pages per session, bounce "
            f"{np.mean(seqs.lengths == 1):.3f}; model: test log-loss "
            f"{mean_log_loss(model, test_s):.4f}, P(EXIT) at their entries "
            f"{entry_exit(model, seqs):.3f}; simulated: {pages:.2f} pages per session, "
            f"bounce {bounce:.3f}, cut at {args.max_steps} pages {cut:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
