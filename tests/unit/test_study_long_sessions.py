"""The long-session study's parts: the recipe it reads, the sessions it keeps, its roll-outs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.sequences import SessionSequences, Vocabulary
from envs.visitor_model import ModelConfig, VisitorModel
from scripts.study_long_sessions import entry_exit, recipe, roll_out, shorter_than


def test_the_recipe_is_the_simulator_config_with_its_defaults() -> None:
    model, trainer = recipe("gru_small")
    assert model.prior_smoothing == 200.0 and model.hidden_size == 64  # gru_small over gru
    assert (trainer.max_len, trainer.epochs, trainer.show_progress) == (16, 30, False)


def test_shorter_than_keeps_whole_sessions_up_to_the_length() -> None:
    seqs = SessionSequences.from_lists([[0], [0, 1, 2], [1, 2], [2, 1, 0, 1, 2]], 3)
    assert shorter_than(seqs, 0).lengths.tolist() == [1, 3, 2, 5]
    kept = shorter_than(seqs, 3)
    assert kept.lengths.tolist() == [1, 3, 2]
    assert kept.pages.tolist() == [0, 0, 1, 2, 1, 2]


def test_roll_outs_follow_the_model_and_replay_under_a_seed() -> None:
    vocab = Vocabulary(("/a", "/b"), ("g",), np.array([0, 0]))
    torch.manual_seed(0)
    model = VisitorModel(vocab, ModelConfig(embedding_dim=4, hidden_size=4, markov_prior=False))
    with torch.no_grad():  # from any page: /a or leave, 1/2 each; never /b
        model.net.head.weight.zero_()
        model.net.head.bias.copy_(torch.tensor([0.0, -1e9, 0.0]))
        model.net.group_head.weight.zero_()
        model.net.group_head.bias.zero_()
    seqs = SessionSequences.from_lists([[0], [0, 0]], 2)
    assert entry_exit(model, seqs) == pytest.approx(0.5, abs=1e-6)
    pages, bounce, cut = roll_out(model, np.array([1.0, 0.0]), 20_000, 200, seed=3)
    assert abs(bounce - 0.5) < 0.02 and abs(pages - 2.0) < 0.05 and cut == 0.0  # geometric(1/2)
    assert roll_out(model, np.array([1.0, 0.0]), 20_000, 200, seed=3) == (pages, bounce, cut)
