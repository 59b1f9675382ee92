"""The GRU's first-order prior, held sparsely: the same numbers as the dense table it replaces,
at 10,000 pages without a P × P array, in training (cross-fitted folds), in the simulator's
paths (``step``, ``score_outcomes``) and through checkpoints (including version-1 dense ones)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.sequences import SessionSequences, Vocabulary
from envs.training import TrainerConfig, train
from envs.visitor_model import ModelConfig, VisitorModel, prior_tables

K = 10.0


def dense_reference(seqs: SessionSequences, p: int, k: float, folds: int = 0):
    """The dense table of the earlier implementation (``(P + 1, P + 1)``, zero padding row),
    and its out-of-fold tables: ``log((c(i, j) + k·pop(j)) / (c(i) + k))``."""
    n = p + 1
    src, dst = seqs.pages, seqs.targets()
    pair = src * n + dst
    counts = np.bincount(pair, minlength=p * n).reshape(p, n)
    pop = (np.bincount(dst, minlength=n) + 1.0) / (len(dst) + n)

    def table(c: np.ndarray) -> np.ndarray:
        out = np.zeros((n, n))
        out[:-1] = np.log((c + k * pop) / (c.sum(1, keepdims=True) + k))
        return out

    full = table(counts)
    if folds < 2:
        return full, None
    fold_of_view = np.repeat(np.arange(len(seqs)) % folds, seqs.lengths)
    per_fold = []
    for f in range(folds):
        own = np.bincount(pair[fold_of_view == f], minlength=p * n).reshape(p, n)
        per_fold.append(table(counts - own))
    return full, np.stack(per_fold)


def random_sessions(p: int, n_sessions: int, seed: int = 0) -> SessionSequences:
    rng = np.random.default_rng(seed)
    # sparse, skewed links: each page has a few favourite successors
    fav = rng.integers(0, p, size=(p, 4))
    sessions = []
    for _ in range(n_sessions):
        page, s = int(rng.integers(0, p)), []
        for _ in range(int(rng.integers(1, 8))):
            s.append(page)
            page = (
                int(fav[page, rng.integers(0, 4)])
                if rng.random() < 0.8
                else int(rng.integers(0, p))
            )
        sessions.append(s)
    return SessionSequences.from_lists(sessions, exit_id=p)


def make_vocab(p: int, n_groups: int = 3) -> Vocabulary:
    return Vocabulary(
        pages=tuple(f"/p{i}" for i in range(p)),
        groups=tuple(f"g{g}" for g in range(n_groups)),
        page_group=np.arange(p) % n_groups,
    )


@pytest.fixture
def small() -> tuple[Vocabulary, SessionSequences]:
    return make_vocab(40), random_sessions(40, 300)


def test_sparse_prior_equals_the_dense_table_full_and_per_fold(small) -> None:
    vocab, seqs = small
    p = vocab.n_pages
    torch.manual_seed(0)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4, prior_folds=3))
    model.fit_prior(seqs)
    full, folds = dense_reference(seqs, p, K, folds=3)
    pages = torch.arange(p)
    rows = model.net.add_prior(torch.zeros(p, p + 1), pages).numpy()
    np.testing.assert_allclose(rows, full[:p], rtol=1e-5, atol=1e-5)
    for f in range(3):
        fold = torch.full((p,), f)
        rows = model.net.add_prior(torch.zeros(p, p + 1), pages, fold).numpy()
        np.testing.assert_allclose(rows, folds[f][:p], rtol=1e-5, atol=1e-5)
    # each row is a distribution: the prior alone is a proper first-order model
    np.testing.assert_allclose(np.exp(full[:p]).sum(1), 1.0, atol=1e-9)
    # the table holds the observed transitions only
    n_pairs = len(np.unique(seqs.pages * (p + 1) + seqs.targets()))
    assert model.net.prior_keys.numel() == n_pairs < p * (p + 1)


def test_logits_equal_the_dense_prior_implementation_in_every_path(small) -> None:
    """The network's logits with the sparse prior = its logits without a prior + dense rows:
    whole batches (log_prob_next), one step (the simulator), candidate scoring, training."""
    vocab, seqs = small
    p = vocab.n_pages
    torch.manual_seed(1)
    cfg = dict(hidden_size=8, embedding_dim=4, dropout=0.0)
    model = VisitorModel(vocab, ModelConfig(**cfg, markov_prior=True, prior_folds=2))
    model.fit_prior(seqs)
    plain = VisitorModel(vocab, ModelConfig(**cfg, markov_prior=False))
    weights = {k: v for k, v in model.net.state_dict().items() if not k.startswith("prior_")}
    plain.net.load_state_dict(weights)
    full, folds = dense_reference(seqs, p, K, folds=2)
    full_t = torch.as_tensor(full, dtype=torch.float32)

    pages = torch.randint(0, p, (5, 7))
    model.net.eval(), plain.net.eval()
    with torch.no_grad():
        got, _ = model.net(pages)
        want, _ = plain.net(pages)
    torch.testing.assert_close(got, want + full_t[pages], rtol=1e-5, atol=1e-5)

    hidden = model.initial_hidden(6)
    page = torch.tensor([0, 3, 7, 39, 12, 3])
    logits, h = model.step(page, hidden)
    logits_plain, h_plain = plain.step(page, hidden)
    torch.testing.assert_close(h, h_plain)
    torch.testing.assert_close(logits, logits_plain + full_t[page], rtol=1e-5, atol=1e-5)
    out, _ = model.step_hidden(page, hidden)
    outcomes = torch.randint(0, p + 1, (6, 9))
    torch.testing.assert_close(
        model.score_outcomes(out, page, outcomes), logits.gather(1, outcomes), rtol=1e-5, atol=1e-5
    )

    # training: each position's out-of-fold table
    fold = torch.tensor([0, 1, 1, 0, 1])
    model.net.train(), plain.net.train()
    out, _ = model.net.encode(pages)
    flat_fold = fold[:, None].expand_as(pages).reshape(-1)
    got = model.net.scores(out.reshape(-1, 8), pages.reshape(-1), flat_fold)
    want = plain.net.scores(out.reshape(-1, 8), pages.reshape(-1))
    dense_rows = torch.as_tensor(folds, dtype=torch.float32)[flat_fold, pages.reshape(-1)]
    torch.testing.assert_close(got, want + dense_rows, rtol=1e-5, atol=1e-5)
    got.sum().backward()  # the sparse add passes gradients to the head
    assert model.net.head.weight.grad is not None


def test_prior_at_10000_pages_holds_no_dense_table() -> None:
    p = 10_000
    vocab = make_vocab(p, n_groups=20)
    seqs = random_sessions(p, 20_000, seed=2)
    model = VisitorModel(vocab, ModelConfig(hidden_size=16, embedding_dim=8, prior_folds=2))
    assert model.net.use_prior  # no page-count limit under `auto`
    tracemalloc.start()
    model.fit_prior(seqs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_pairs = len(np.unique(seqs.pages * (p + 1) + seqs.targets()))
    sizes = {name: buf.numel() for name, buf in model.net.named_buffers()}
    assert sizes["prior_keys"] == sizes["prior_vals"] == n_pairs
    assert sizes["prior_base"] == sizes["prior_row"] == p + 1
    assert sizes["prior_indptr"] == p + 2
    assert sizes["fold_prior_row"] == 2 * (p + 1) and sizes["fold_prior_vals"] == 2 * n_pairs
    prior_cells = sum(v for k, v in sizes.items() if "prior" in k)
    assert prior_cells < 10 * n_pairs + 10 * p  # against P·(P+1) = 100,010,000 dense
    # counting made no P × P array either: a dense float64 table alone would be 800 MB
    assert peak < 50e6, f"fit_prior peaked at {peak / 1e6:.0f} MB"

    # the rows it gives are the smoothed first-order model's, spot-checked densely for 3 pages
    n = p + 1
    pages = torch.tensor([seqs.pages[0], seqs.pages[5], 123])
    rows = model.net.add_prior(torch.zeros(3, n), pages).double().exp()
    np.testing.assert_allclose(rows.sum(1).numpy(), 1.0, atol=1e-4)
    src, dst = seqs.pages, seqs.targets()
    pop = (np.bincount(dst, minlength=n) + 1.0) / (len(dst) + n)
    for r, i in enumerate(pages.tolist()):
        c = np.bincount(dst[src == i], minlength=n)
        want = (c + K * pop) / (c.sum() + K)
        np.testing.assert_allclose(rows[r].numpy(), want, rtol=1e-4, atol=1e-9)

    # an epoch (sampled softmax, cross-fitted tables) and the simulator's step at this size
    few = random_sessions(p, 300, seed=3)
    cfg = TrainerConfig(epochs=1, sampled_softmax=256, show_progress=False)
    history = train(model, few, few, cfg)
    assert np.isfinite(history["best_valid_log_loss"])
    page = torch.tensor([int(seqs.pages[0]), 1])
    logits, _ = model.step(page, model.initial_hidden(2))
    assert logits.shape == (2, n) and torch.isfinite(logits).all()
    assert model._output_tables()[1].shape == (1, n)  # no dense (P + 1)² cache at this size
    model.net.eval()
    with torch.no_grad():
        whole, _ = model.net(page[:, None])
    torch.testing.assert_close(logits, whole[:, 0], rtol=1e-4, atol=1e-4)


def test_checkpoints_keep_the_sparse_prior_and_read_version_1_dense_ones(
    small, tmp_path: Path
) -> None:
    vocab, seqs = small
    p = vocab.n_pages
    torch.manual_seed(2)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4))
    model.fit_prior(seqs)
    again = VisitorModel.load(model.save(tmp_path / "model.pt"))
    pages = torch.randint(0, p, (4, 6))
    assert torch.equal(model.log_prob_next(pages), again.log_prob_next(pages))
    assert again.net.fold_prior_vals.numel() == 0  # training-only tables are not saved

    # a version-1 checkpoint: the dense (P + 1, P + 1) buffer `log_prior`
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    full, _ = dense_reference(seqs, p, K)
    sd = {k: v for k, v in state["state_dict"].items() if not k.startswith("prior_")}
    sd["log_prior"] = torch.as_tensor(full, dtype=torch.float32)
    state.update(version=1, state_dict=sd)
    state["model_config"]["max_prior_pages"] = 4096
    torch.save(state, tmp_path / "v1.pt")
    old = VisitorModel.load(tmp_path / "v1.pt")
    torch.testing.assert_close(
        old.log_prob_next(pages), model.log_prob_next(pages), rtol=1e-5, atol=1e-5
    )


def test_prior_tables_of_an_empty_fold_fall_back_to_popularity() -> None:
    seqs = SessionSequences.from_lists([[0, 1], [1, 2]], exit_id=3)
    t = prior_tables(seqs, 3, K, folds=2)
    # fold 0 holds session 0 (0 -> 1 -> EXIT): without it page 0 has no transitions left
    assert t["fold_row"][0][0] == pytest.approx(-np.log(K))
    i = int(np.searchsorted(t["keys"], 0 * 4 + 1))
    assert t["fold_vals"][0][i] == 0.0 and t["vals"][i] > 0


def test_sampled_nll_with_every_outcome_is_the_exact_cross_entropy(small) -> None:
    vocab, seqs = small
    p = vocab.n_pages
    torch.manual_seed(4)
    for prior in (True, False):
        model = VisitorModel(
            vocab, ModelConfig(hidden_size=8, embedding_dim=4, prior_folds=2, markov_prior=prior)
        )
        model.fit_prior(seqs)
        pages = torch.randint(0, p, (30,))
        pages[:3] = torch.as_tensor(seqs.pages[:3])  # pages with observed successors
        targets = torch.randint(0, p + 1, (30,))
        targets[:3] = torch.as_tensor(seqs.targets()[:3])  # targets among them
        out = torch.randn(30, 8, requires_grad=True)
        every = torch.arange(p + 1)
        for fold, k in ((None, 0), (torch.randint(0, 2, (30,)), 2), (None, 1000)):
            exact = torch.nn.functional.cross_entropy(
                model.net.scores(out, pages, fold), targets, reduction="none"
            )
            got = model.net.sampled_nll(
                out, pages, targets, every, torch.zeros(p + 1), fold, exact=k
            )
            torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-5)
            (g_exact,) = torch.autograd.grad(exact.sum(), out)
            (g_got,) = torch.autograd.grad(got.sum(), out)
            torch.testing.assert_close(g_got, g_exact, rtol=1e-4, atol=1e-5)


def test_sampled_nll_estimates_the_cross_entropy_without_bias_in_the_normaliser(small) -> None:
    """exp(sampled nll - exact nll) = Ẑ / Z: importance sampling makes its mean over draws 1."""
    vocab, seqs = small
    p = vocab.n_pages
    torch.manual_seed(5)
    model = VisitorModel(vocab, ModelConfig(hidden_size=8, embedding_dim=4))
    model.fit_prior(seqs)
    pages, targets = torch.as_tensor(seqs.pages[:20]), torch.as_tensor(seqs.targets()[:20])
    out = torch.randn(20, 8)
    exact = torch.nn.functional.cross_entropy(
        model.net.scores(out, pages), targets, reduction="none"
    )
    q = torch.rand(p + 1) + 0.2
    q = q / q.sum()
    ratios = []
    with torch.no_grad():
        for _ in range(1000):
            draws = torch.multinomial(q, 10, replacement=True)
            neg, counts = torch.unique(draws, return_counts=True)
            log_w = torch.log(counts.float()) - np.log(10) - torch.log(q[neg])
            nll = model.net.sampled_nll(out, pages, targets, neg, log_w, exact=2)
            ratios.append(torch.exp(nll - exact))
    ratios = torch.stack(ratios).double()
    mean, se = ratios.mean(0), ratios.std(0) / np.sqrt(len(ratios))
    assert float(se.max()) > 1e-3  # it was sampled, not exact
    # every position's mean within 4 standard errors of 1 (and close in absolute terms)
    assert (torch.abs(mean - 1) < 4 * se + 1e-6).all(), (mean, se)
    assert float(torch.abs(mean - 1).max()) < 0.1


def test_sampled_softmax_training_learns_the_toy_routes() -> None:
    """History decides after page 1 (0→1→2 against 3→4→1→5): a sampled softmax of 3 negatives
    out of 7 outcomes still learns it, and validation is the full softmax's log-loss."""
    vocab = make_vocab(6, n_groups=2)
    seqs = SessionSequences.from_lists([[0, 1, 2], [3, 4, 1, 5]] * 100, exit_id=6)
    torch.manual_seed(0)
    model = VisitorModel(vocab, ModelConfig(hidden_size=16, embedding_dim=8))
    cfg = TrainerConfig(
        epochs=40, lr=0.02, patience=50, show_progress=False, sampled_softmax=3, sample_alpha=0.0
    )
    history = train(model, seqs, seqs, cfg)
    top1 = np.zeros(seqs.n_steps, dtype=np.int64)
    for rows, lp in model.iter_log_probs(seqs):
        top1[rows] = lp.argmax(1)
    assert (top1 == seqs.targets()).all()
    assert history["best_valid_log_loss"] < 0.2
