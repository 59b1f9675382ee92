"""The GRU visitor model: distributions, learning a toy sequence, step API, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clickstream.errors import ClickstreamError
from envs.sequences import SessionSequences, Vocabulary
from envs.training import TrainerConfig, mean_log_loss, train, training_windows
from envs.visitor_model import ModelConfig, VisitorModel, make_batches, pad_batch

P = 6


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(
        pages=tuple(f"/p{i}" for i in range(P)),
        groups=("a", "b"),
        page_group=np.array([0, 0, 0, 1, 1, 1]),
    )


def toy_sessions(n: int = 200) -> SessionSequences:
    """Two deterministic routes: 0→1→2→EXIT and 3→4→1→5→EXIT (after 1, history decides)."""
    return SessionSequences.from_lists([[0, 1, 2], [3, 4, 1, 5]] * (n // 2), exit_id=P)


def quick_trainer(**kw) -> TrainerConfig:
    base = dict(epochs=40, lr=0.02, patience=50, show_progress=False, seed=0)
    base.update(kw)
    return TrainerConfig(**base)


def test_distributions_sum_to_one(vocab: Vocabulary) -> None:
    torch.manual_seed(0)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4, use_groups=True))
    pages = torch.randint(0, P, (5, 7))
    logp = model.log_prob_next(pages)
    assert logp.shape == (5, 7, P + 1)
    np.testing.assert_allclose(logp.exp().sum(-1).numpy(), 1.0, atol=1e-5)
    for rows, lp in model.iter_log_probs(toy_sessions(10)):
        np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, atol=1e-5)
        assert lp.shape == (len(rows), P + 1)


def test_learns_a_deterministic_toy_sequence(vocab: Vocabulary) -> None:
    seqs = toy_sessions()
    model = VisitorModel(vocab, ModelConfig(hidden_size=16, embedding_dim=8))
    history = train(model, seqs, seqs, quick_trainer())
    targets = seqs.targets()
    top1 = np.zeros(seqs.n_steps, dtype=np.int64)
    for rows, lp in model.iter_log_probs(seqs):
        top1[rows] = lp.argmax(1)
    # Recall@1 = 1 on every step, including the one after page 1 that needs the history
    assert (top1 == targets).all()
    assert mean_log_loss(model, seqs) < 0.05
    assert history["best_valid_log_loss"] < 0.05


def test_step_api_replays_the_full_forward_pass(vocab: Vocabulary) -> None:
    torch.manual_seed(1)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4, num_layers=2))
    pages = torch.randint(0, P, (3, 5))
    full = model.log_prob_next(pages)
    hidden = model.initial_hidden(3)
    assert hidden.shape == (3, 2 * 8)
    for t in range(5):
        logits, hidden = model.step(pages[:, t], hidden)
        torch.testing.assert_close(torch.log_softmax(logits, -1), full[:, t], atol=1e-6, rtol=0)


def test_chunked_scoring_equals_one_pass(vocab: Vocabulary) -> None:
    torch.manual_seed(2)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4, use_time=True))
    rng = np.random.default_rng(0)
    seqs = SessionSequences.from_lists(
        [rng.integers(0, P, size=n).tolist() for n in rng.integers(1, 30, size=40)], exit_id=P
    )
    seqs.time_bucket = rng.integers(0, 5, size=seqs.n_steps)

    def scores(**kw) -> np.ndarray:
        out = np.zeros((seqs.n_steps, P + 1), dtype=np.float32)
        seen = np.zeros(seqs.n_steps, dtype=int)
        for rows, lp in model.iter_log_probs(seqs, **kw):
            out[rows] = lp
            seen[rows] += 1
        assert (seen == 1).all()  # every step exactly once
        return out

    np.testing.assert_allclose(scores(chunk_len=4, batch_sessions=7), scores(), atol=1e-5)


def test_checkpoint_round_trip_gives_identical_predictions(
    vocab: Vocabulary, tmp_path: Path
) -> None:
    torch.manual_seed(3)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4, use_groups=True))
    model.metrics = {"test": {"log_loss": 1.23}}
    path = model.save(tmp_path / "model.pt")
    again = VisitorModel.load(path)
    pages = torch.randint(0, P, (4, 6))
    assert torch.equal(model.log_prob_next(pages), again.log_prob_next(pages))
    assert again.vocab.pages == vocab.pages and again.metrics == model.metrics
    assert again.predict_next(["/p0", "/p1"], k=3) == model.predict_next(["/p0", "/p1"], k=3)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(ClickstreamError, match="not found"):
        VisitorModel.load(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ClickstreamError, match="not a NextPage visitor model"):
        VisitorModel.load(tmp_path / "other.pt")


def test_predict_next(vocab: Vocabulary) -> None:
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4))
    top = model.predict_next(["/p0"], k=P + 1)
    assert len(top) == P + 1 and abs(sum(p for _, p in top) - 1) < 1e-5
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    no_exit = model.predict_next(["/p0"], k=P + 1, include_exit=False)
    assert len(no_exit) == P and "EXIT" not in {name for name, _ in no_exit}
    with pytest.raises(ClickstreamError, match="unknown page '/nope' at position 1"):
        model.predict_next(["/p0", "/nope"])
    with pytest.raises(ClickstreamError, match="at least one"):
        model.predict_next([])


def test_same_seed_same_weights_and_resume_continues_exactly(
    vocab: Vocabulary, tmp_path: Path
) -> None:
    seqs = toy_sessions(40)
    # with a moving average of the weights, whose state must survive the resume as well
    cfg = quick_trainer(epochs=4, batch_sessions=16, ema_decay=0.9)

    def weights(model: VisitorModel) -> list[torch.Tensor]:
        return [p.detach().clone() for p in model.net.parameters()]

    torch.manual_seed(0)
    a = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4))
    train(a, seqs, seqs, cfg)
    torch.manual_seed(0)
    b = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4))
    train(b, seqs, seqs, cfg)
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))

    # two epochs, stop, resume for the other two: the same weights as four in one go
    ckpt = tmp_path / "last.pt"
    torch.manual_seed(0)
    c = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4))
    train(c, seqs, seqs, quick_trainer(epochs=2, batch_sessions=16, ema_decay=0.9), checkpoint=ckpt)
    d = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4))
    history = train(d, seqs, seqs, cfg, checkpoint=ckpt, resume=True)
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3, 4]
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(d), strict=True))


def test_training_windows_cover_every_step_once() -> None:
    seqs = SessionSequences.from_lists([[0] * 5, [1] * 1, [2] * 12], exit_id=P)
    starts, lengths, session = training_windows(seqs, max_len=4)
    assert session.tolist() == [0, 0, 1, 2, 2, 2]
    assert lengths.tolist() == [4, 1, 1, 4, 4, 4]
    covered = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
    assert sorted(covered.tolist()) == list(range(seqs.n_steps))


def test_batches_respect_the_token_budget_and_cover_everything() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=500)
    batches = make_batches(lengths, batch_sessions=64, max_tokens=256, rng=rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 256
    rows, mask, (pages,) = pad_batch(np.array([0, 10]), np.array([3, 1]), np.arange(20), pad=(-7,))
    assert rows.tolist() == [[0, 1, 2], [10, -1, -1]]
    assert pages.tolist() == [[0, 1, 2], [10, -7, -7]]
    assert mask.sum() == 4


def test_random_batches_keep_exit_calibrated(vocab: Vocabulary) -> None:
    """Half the sessions bounce on page 0, half go on: P(EXIT | entry on 0) must be about 0.5."""
    rng = np.random.default_rng(0)
    sessions = [[0] if rng.random() < 0.5 else [0, 1, 2] for _ in range(600)]
    seqs = SessionSequences.from_lists(sessions, exit_id=P)
    bounce = np.mean([len(s) == 1 for s in sessions])
    torch.manual_seed(0)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4))
    train(model, seqs, seqs, quick_trainer(epochs=15, batching="random", batch_sessions=32))
    p_exit = float(model.log_prob_next(torch.tensor([[0]]))[0, 0, P].exp())
    assert abs(p_exit - bounce) < 0.05


def test_scoring_holds_a_bounded_number_of_log_probabilities(
    vocab: Vocabulary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``iter_log_probs`` never holds more than ``EVAL_CELLS`` log-probabilities at once, however
    many sessions ``batch_sessions`` allows (the pipeline's 2,048 sessions × T × (P + 1) reached
    5 GB at a few thousand pages), and scores every step as one uncapped pass does."""
    import envs.visitor_model as vm

    torch.manual_seed(3)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4, use_time=True))
    rng = np.random.default_rng(1)
    lists = [rng.integers(0, P, size=n).tolist() for n in rng.integers(1, 12, size=300)]
    lists.append(rng.integers(0, P, size=400).tolist())  # longer than a batch's positions
    seqs = SessionSequences.from_lists(lists, exit_id=P)
    seqs.time_bucket = rng.integers(0, 5, size=seqs.n_steps)

    def scores() -> tuple[np.ndarray, int]:
        out = np.zeros((seqs.n_steps, P + 1), dtype=np.float32)
        seen = np.zeros(seqs.n_steps, dtype=int)
        most = 0
        for rows, lp in model.iter_log_probs(seqs, batch_sessions=2048):
            out[rows] = lp
            seen[rows] += 1
            most = max(most, lp.size)
        assert (seen == 1).all()
        return out, most

    whole, _ = scores()  # 1 << 23 cells: everything in one batch
    monkeypatch.setattr(
        vm, "EVAL_CELLS", 64 * (P + 1), raising=False
    )  # at most 64 positions per batch
    capped, most = scores()
    assert most <= 64 * (P + 1)
    np.testing.assert_allclose(capped, whole, atol=1e-6, rtol=0)
