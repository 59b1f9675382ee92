"""The next-item evaluation protocol: exact ranks with pessimistic ties, both variants, chunking."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from envs.metrics import (
    METRIC_KEYS,
    NextPagePredictor,
    RankingMetrics,
    evaluate,
    format_table,
    target_ranks,
)
from envs.sequences import SessionSequences

# 3 steps, P + 1 = 5 outcomes (pages 0..3, EXIT = 4).
HAND_PROBS = np.array(
    [
        [0.4, 0.3, 0.1, 0.1, 0.1],  # target 1: one score above (0.4)          -> rank 2
        [0.2, 0.2, 0.2, 0.1, 0.3],  # target 0: EXIT above, ties with 1 and 2  -> rank 1+1+2 = 4
        [0.1, 0.1, 0.1, 0.1, 0.6],  # target EXIT: the best                      -> rank 1
    ]
)
HAND_TARGETS = np.array([1, 0, 4])


def test_hand_example_with_exit() -> None:
    m = RankingMetrics()
    m.update(np.log(HAND_PROBS), HAND_TARGETS)
    r = m.result()
    assert list(r) == list(METRIC_KEYS)
    # ranks 2, 4, 1
    assert r["recall@1"] == pytest.approx(1 / 3)
    assert r["recall@5"] == r["recall@10"] == r["recall@20"] == 1.0
    assert r["mrr@5"] == pytest.approx((1 / 2 + 1 / 4 + 1) / 3)  # 0.583333
    assert r["mrr@20"] == pytest.approx((1 / 2 + 1 / 4 + 1) / 3)
    # 1/log2(3) + 1/log2(5) + 1/log2(2) = 0.6309298 + 0.4306766 + 1, over 3 = 0.6872021
    assert r["ndcg@20"] == pytest.approx(0.6872021, abs=1e-7)
    # -(ln 0.3 + ln 0.2 + ln 0.6) / 3 = (1.2039728 + 1.6094379 + 0.5108256) / 3 = 1.1080788
    assert r["log_loss"] == pytest.approx(1.1080788, abs=1e-7)
    assert r["steps"] == 3


def test_hand_example_without_exit() -> None:
    m = RankingMetrics(exclude_exit=True)
    m.update(np.log(HAND_PROBS), HAND_TARGETS)
    r = m.result()
    # step 3 (target EXIT) is dropped; ranks among pages 0..3 only:
    # step 1: [0.4, 0.3, 0.1, 0.1], target 1 -> rank 2; p = 0.3 / 0.9 = 1/3
    # step 2: [0.2, 0.2, 0.2, 0.1], target 0 -> rank 1 + 0 + 2 = 3; p = 0.2 / 0.7 = 2/7
    assert r["steps"] == 2
    assert r["recall@1"] == 0.0
    assert r["recall@5"] == 1.0
    assert r["mrr@5"] == pytest.approx((1 / 2 + 1 / 3) / 2)  # 0.416667
    assert r["ndcg@20"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)  # 0.565465
    # (ln 3 + ln 3.5) / 2 = (1.098612 + 1.252763) / 2 = 1.175688
    assert r["log_loss"] == pytest.approx((math.log(3) + math.log(3.5)) / 2, rel=1e-12)


def test_pessimistic_ties() -> None:
    # a constant model ranks every target last, not first
    lp = np.zeros((4, 30))
    assert target_ranks(lp, np.array([0, 7, 15, 29])).tolist() == [30, 30, 30, 30]
    m = RankingMetrics()
    m.update(lp - np.log(30), np.array([0, 7, 15, 29]))
    r = m.result()
    assert r["recall@20"] == r["mrr@20"] == r["ndcg@20"] == 0.0
    assert r["log_loss"] == pytest.approx(math.log(30))
    # ranks 1..30 at the edges of the cut-offs: score i for column i, target column c has
    # rank 30 - c (the higher columns beat it); rank 20 counts for @20, rank 21 does not
    lp = np.tile(np.arange(30.0), (3, 1))
    assert target_ranks(lp, np.array([10, 9, 29])).tolist() == [20, 21, 1]
    m = RankingMetrics()
    m.update(lp, np.array([10, 9, 29]))
    r = m.result()
    assert r["recall@20"] == pytest.approx(2 / 3)
    assert r["mrr@20"] == pytest.approx((1 / 20 + 1) / 3)
    assert r["mrr@5"] == pytest.approx(1 / 3)


def test_neg_inf_scores_tie_and_infinite_log_loss() -> None:
    ninf = -np.inf
    lp = np.array(
        [
            [0.0, ninf, ninf, ninf, ninf],  # target 2 (impossible): 1 above, ties 1 and 3, 4
            [ninf, ninf, ninf, ninf, 0.0],  # only EXIT possible, target page 0
            [np.log(0.5), np.log(0.5), ninf, ninf, ninf],  # target 1: tie with 0 -> rank 2
        ]
    )
    t = np.array([2, 0, 1])
    assert target_ranks(lp, t).tolist() == [5, 5, 2]
    m = RankingMetrics()
    m.update(lp, t)
    r = m.result()
    assert r["log_loss"] == math.inf  # reported, not hidden
    assert r["recall@5"] == 1.0 and r["recall@1"] == 0.0
    w = RankingMetrics(exclude_exit=True)
    w.update(lp, t)
    rw = w.result()
    # without EXIT: ranks 4 (1 above, ties 1, 3), 4 (all four pages tie), 2
    assert rw["mrr@5"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 2) / 3)
    assert rw["log_loss"] == math.inf
    # a finite row alone stays finite (no NaN from -inf - -inf in the renormalisation)
    w2 = RankingMetrics(exclude_exit=True)
    w2.update(lp[2:], t[2:])
    assert w2.result()["log_loss"] == pytest.approx(math.log(2))


def test_bad_input_raises() -> None:
    m = RankingMetrics()
    with pytest.raises(ValueError, match="NaN"):
        m.update(np.array([[0.0, np.nan]]), np.array([0]))
    with pytest.raises(ValueError, match="targets"):
        m.update(np.zeros((1, 3)), np.array([3]))
    with pytest.raises(ValueError, match="must be"):
        m.update(np.zeros((2, 3)), np.array([0]))
    assert m.result()["steps"] == 0 and math.isnan(m.result()["recall@1"])


def _reference(lp: np.ndarray, t: np.ndarray, exclude_exit: bool) -> dict[str, float]:
    """The protocol written out step by step (slow, obvious)."""
    rows = []
    c = lp.shape[1]
    for scores, target in zip(lp.astype(np.float64), t, strict=True):
        if exclude_exit:
            if target == c - 1:
                continue
            scores = scores[:-1]
        s = scores[target]
        greater = sum(1 for j, v in enumerate(scores) if v > s)
        ties = sum(1 for j, v in enumerate(scores) if v == s and j != target)
        rank = 1 + greater + ties
        norm = math.log(sum(math.exp(v) for v in scores)) if exclude_exit else 0.0
        rows.append((rank, norm - s))
    ranks = np.array([r for r, _ in rows])
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in (1, 5, 10, 20)}
    for k in (5, 20):
        out[f"mrr@{k}"] = float(np.mean(np.where(ranks <= k, 1 / ranks, 0)))
    out["ndcg@20"] = float(np.mean(np.where(ranks <= 20, 1 / np.log2(ranks + 1), 0)))
    out["log_loss"] = float(np.mean([nll for _, nll in rows]))
    out["steps"] = len(rows)
    return out


def _random_log_probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    # coarse scores so that ties are frequent
    logits = rng.integers(0, 6, size=(n, c)).astype(np.float64)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def test_matches_step_by_step_reference_and_chunking() -> None:
    rng = np.random.default_rng(0)
    n, c = 400, 25
    lp = _random_log_probs(rng, n, c)
    t = rng.integers(0, c, size=n)
    for exclude in (False, True):
        ref = _reference(lp, t, exclude)
        one = RankingMetrics(exclude_exit=exclude)
        one.update(lp, t)
        chunked = RankingMetrics(exclude_exit=exclude)
        cuts = np.sort(rng.choice(np.arange(1, n), size=7, replace=False))
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
            chunked.update(lp[a:b], t[a:b])
        merged = RankingMetrics(exclude_exit=exclude)
        half = RankingMetrics(exclude_exit=exclude)
        merged.update(lp[:150], t[:150])
        half.update(lp[150:], t[150:])
        merged.merge(half)
        for res in (one.result(), chunked.result(), merged.result()):
            assert res["steps"] == ref["steps"]
            for key in METRIC_KEYS:
                assert res[key] == pytest.approx(ref[key], rel=1e-12, abs=1e-12), key


def test_torch_and_float32_input() -> None:
    lp = torch.log(torch.tensor(HAND_PROBS, dtype=torch.float32))
    m = RankingMetrics()
    m.update(lp, torch.tensor(HAND_TARGETS))
    assert m.result()["mrr@5"] == pytest.approx((1 / 2 + 1 / 4 + 1) / 3)
    assert m.result()["log_loss"] == pytest.approx(1.1080788, abs=1e-6)


class _TablePredictor:
    """Yields fixed log-probabilities per step, in shuffled chunks (order is free)."""

    name = "table"

    def __init__(self, log_probs: np.ndarray, chunks: int = 3, repeat: bool = False) -> None:
        self.log_probs = log_probs
        self.chunks = chunks
        self.repeat = repeat

    @property
    def n_outcomes(self) -> int:
        return self.log_probs.shape[1]

    def iter_log_probs(
        self, seqs: SessionSequences, batch_sessions: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng(1).permutation(seqs.n_steps)
        if self.repeat:
            order = np.r_[order, order[:1]]
        for rows in np.array_split(order, self.chunks):
            yield rows, torch.as_tensor(self.log_probs[rows])


def test_evaluate_pulls_targets_and_checks_coverage() -> None:
    seqs = SessionSequences.from_lists([[0, 1, 2], [3], [2, 2]], exit_id=4)
    # targets: 1, 2, EXIT | EXIT | 2, EXIT
    targets = seqs.targets()
    assert targets.tolist() == [1, 2, 4, 4, 2, 4]
    rng = np.random.default_rng(2)
    lp = _random_log_probs(rng, seqs.n_steps, 5)
    pred = _TablePredictor(lp)
    assert isinstance(pred, NextPagePredictor)
    res = evaluate(pred, seqs)
    assert set(res) == {"with_exit", "without_exit"}
    for variant, exclude in (("with_exit", False), ("without_exit", True)):
        ref = _reference(lp, targets, exclude)
        for key in METRIC_KEYS:
            assert res[variant][key] == pytest.approx(ref[key], rel=1e-12), key
    assert res["without_exit"]["steps"] == 3
    assert set(evaluate(pred, seqs, exclude_exit=True)) == {"without_exit"}
    assert set(evaluate(pred, seqs, exclude_exit=False)) == {"with_exit"}
    with pytest.raises(ValueError, match="twice"):
        evaluate(_TablePredictor(lp, repeat=True), seqs)
    with pytest.raises(ValueError, match="outcomes"):
        evaluate(_TablePredictor(lp[:, :4]), seqs)

    class Skipping(_TablePredictor):
        def iter_log_probs(self, seqs, batch_sessions):  # type: ignore[override]
            yield from list(super().iter_log_probs(seqs, batch_sessions))[:-1]

    with pytest.raises(ValueError, match="skipped"):
        evaluate(Skipping(lp), seqs)


def test_format_table() -> None:
    m = RankingMetrics()
    m.update(np.log(HAND_PROBS), HAND_TARGETS)
    w = RankingMetrics(exclude_exit=True)
    w.update(np.log(HAND_PROBS), HAND_TARGETS)
    results = {
        "markov1": {"with_exit": m.result(), "without_exit": w.result()},
        "a-long-model-name": {"with_exit": m.result(), "without_exit": w.result()},
    }
    text = format_table(results)
    lines = text.splitlines()
    assert "with_exit" in lines[0]
    assert lines[1].split() == ["model", *METRIC_KEYS]
    assert len({len(line) for line in lines[1:]}) == 1  # fixed width
    assert lines[3].split()[0] == "markov1"
    assert lines[3].split()[1] == "0.3333" and lines[3].split()[-1] == "3"
    assert format_table(results, "without_exit").splitlines()[3].split()[-1] == "2"
    with pytest.raises(ValueError):
        format_table(results, "both")
