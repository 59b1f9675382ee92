"""Count baselines and the true model: proper distributions, hand counts, back-off, exact Bayes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clickstream.errors import ClickstreamError
from clickstream.synthetic import SyntheticStore, build_store
from envs.baselines import FirstOrderMarkov, Popularity, SecondOrderMarkov, TrueModel
from envs.metrics import RankingMetrics, evaluate
from envs.sequences import SessionSequences, Vocabulary, sequences_from_hits

# P = 3 pages, EXIT = 3. Steps (current -> target):
#   [0, 1, 2]: 0->1, 1->2, 2->E     [0, 1]: 0->1, 1->E     [1, 2, 0]: 1->2, 2->0, 0->E
# transition counts c(cur, next) over next = 0, 1, 2, E:
#   row 0: [0, 2, 0, 1]   row 1: [0, 0, 2, 1]   row 2: [1, 0, 0, 1]
# target counts: [1, 2, 2, 3] over 8 steps (entry pages are not targets)
TOY = [[0, 1, 2], [0, 1], [1, 2, 0]]
TOY_COUNTS = np.array([[0, 2, 0, 1], [0, 0, 2, 1], [1, 0, 0, 1]], dtype=float)


def _all_rows(model, seqs: SessionSequences) -> np.ndarray:
    out = np.full((seqs.n_steps, seqs.exit_id + 1), np.nan)
    for rows, lp in model.iter_log_probs(seqs, batch_sessions=2):
        out[rows] = lp
    return out


def test_popularity_equals_target_frequencies() -> None:
    seqs = SessionSequences.from_lists(TOY, exit_id=3)
    raw = Popularity(alpha=0.0).fit(seqs)
    np.testing.assert_allclose(raw.probs, [1 / 8, 2 / 8, 2 / 8, 3 / 8], rtol=1e-15)
    smooth = Popularity().fit(seqs)  # alpha 0.5: (c + 0.5) / (8 + 4 * 0.5)
    np.testing.assert_allclose(smooth.probs, [0.15, 0.25, 0.25, 0.35], rtol=1e-15)
    rows = _all_rows(smooth, seqs)
    np.testing.assert_allclose(np.exp(rows), np.tile(smooth.probs, (8, 1)), rtol=1e-15)


def test_first_order_equals_hand_counts() -> None:
    seqs = SessionSequences.from_lists(TOY, exit_id=3)
    m = FirstOrderMarkov(k=2.0).fit(seqs)
    np.testing.assert_array_equal(m.transition_counts(np.arange(3)), TOY_COUNTS)
    pop = np.array([0.15, 0.25, 0.25, 0.35])
    # p1(n | c) = (c(c, n) + 2 pop(n)) / (c(c) + 2); row 0: [0.3, 2.5, 0.5, 1.7] / 5
    np.testing.assert_allclose(m.next_distribution([0]), [[0.06, 0.5, 0.1, 0.34]], rtol=1e-14)
    expected = (TOY_COUNTS + 2 * pop) / (TOY_COUNTS.sum(axis=1, keepdims=True) + 2)
    np.testing.assert_allclose(m.next_distribution(np.arange(3)), expected, rtol=1e-14)
    # iter_log_probs: each step's row is its current page's row
    np.testing.assert_allclose(np.exp(_all_rows(m, seqs)), expected[seqs.pages], rtol=1e-14)
    # a page never seen in training falls back to popularity, not uniform
    wide = FirstOrderMarkov(k=2.0).fit(SessionSequences.from_lists(TOY, exit_id=4))
    np.testing.assert_allclose(wide.next_distribution([3])[0], wide.popularity.probs, rtol=1e-15)


def _two_paths(n_a: int = 50, n_b: int = 40) -> SessionSequences:
    # after (0, 1) always 2, after (3, 1) always 4: only the previous page tells them apart
    return SessionSequences.from_lists([[0, 1, 2]] * n_a + [[3, 1, 4]] * n_b, exit_id=5)


def _recall1_after(model, seqs: SessionSequences, page: int) -> float:
    targets = seqs.targets()
    m = RankingMetrics()
    for rows, lp in model.iter_log_probs(seqs, batch_sessions=16):
        keep = seqs.pages[rows] == page
        m.update(lp[keep], targets[rows][keep])
    return m.result()["recall@1"]


def test_second_order_uses_the_previous_page() -> None:
    seqs = _two_paths()
    m1 = FirstOrderMarkov().fit(seqs)
    m2 = SecondOrderMarkov().fit(seqs)
    # first order always predicts 2 after page 1 (50 against 40): right on 50 of 90 steps
    assert _recall1_after(m1, seqs, page=1) == pytest.approx(50 / 90)
    assert _recall1_after(m2, seqs, page=1) == 1.0
    # with equal counts first order ties 2 and 4 exactly; pessimistic ties give it 0
    even = _two_paths(40, 40)
    assert _recall1_after(FirstOrderMarkov().fit(even), even, page=1) == 0.0
    assert _recall1_after(SecondOrderMarkov().fit(even), even, page=1) == 1.0
    # the interpolation by hand: p2(n | 0, 1) = (c(0, 1, n) + k p1(n | 1)) / (50 + k)
    k = m2.k
    p1 = m1.next_distribution([1])[0]
    c = np.zeros(6)
    c[2] = 50
    np.testing.assert_allclose(m2.next_distribution([0], [1])[0], (c + k * p1) / (50 + k))
    # entry pages have their own ENTRY context: (ENTRY, 0) was seen 50 times, always -> 1
    e = m2.next_distribution([m2.entry_context], [0])[0]
    p1_0 = m1.next_distribution([0])[0]
    c = np.zeros(6)
    c[1] = 50
    np.testing.assert_allclose(e, (c + k * p1_0) / (50 + k))
    assert m2.n_contexts == 6  # (E,0) (0,1) (1,2) (E,3) (3,1) (1,4)


def test_second_order_backs_off_to_first_order() -> None:
    seqs = _two_paths()
    m2 = SecondOrderMarkov().fit(seqs)
    # (2, 1) and (ENTRY, 1) never occur in training: exactly the first-order row of page 1
    for prev in (2, m2.entry_context):
        np.testing.assert_array_equal(
            m2.next_distribution([prev], [1]), m2.first_order.next_distribution([1])
        )


@pytest.mark.parametrize("model_cls", [Popularity, FirstOrderMarkov, SecondOrderMarkov])
def test_distributions_sum_to_one_and_log_prob_next_agrees(model_cls) -> None:
    rng = np.random.default_rng(0)
    p = 12
    sessions = [rng.integers(0, p, size=rng.integers(1, 7)).tolist() for _ in range(60)]
    train = SessionSequences.from_lists(sessions[:40], exit_id=p)
    test = SessionSequences.from_lists(sessions[40:], exit_id=p)
    m = model_cls().fit(train)
    assert m.n_outcomes == p + 1
    rows = _all_rows(m, test)
    assert np.isfinite(rows).all()  # smoothing: every outcome possible
    np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-9)
    # (B, T) interface: padded with P, same rows as the flat interface, NaN on padding
    lengths = test.lengths
    padded = np.full((len(test), lengths.max()), p)
    for i in range(len(test)):
        padded[i, : lengths[i]] = test.session(i)
    out = m.log_prob_next(padded)
    mask = np.arange(padded.shape[1])[None, :] < lengths[:, None]
    np.testing.assert_allclose(out[mask], rows, rtol=1e-12)
    assert np.isnan(out[~mask]).all()
    res = evaluate(m, test, batch_sessions=7)
    assert res["with_exit"]["steps"] == test.n_steps


def test_vocabulary_mismatch_and_unfitted_raise() -> None:
    m = FirstOrderMarkov().fit(SessionSequences.from_lists(TOY, exit_id=3))
    with pytest.raises(ClickstreamError, match="same vocabulary"):
        next(m.iter_log_probs(SessionSequences.from_lists(TOY, exit_id=4)))
    with pytest.raises(ClickstreamError, match="fit"):
        _ = SecondOrderMarkov().n_outcomes


def test_tuning_on_validation_picks_the_best_k() -> None:
    seqs = _two_paths()
    m = FirstOrderMarkov().fit(seqs, valid=seqs, grid=(1.0, 10.0, 100.0))
    assert set(m.tuning) == {1.0, 10.0, 100.0}
    assert m.k == min(m.tuning, key=m.tuning.get) == 1.0  # scoring on train: least smoothing


# ---- the true model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store() -> SyntheticStore:
    return build_store(n_pages=60, mode="intent", seed=0)


def _sequences(
    store: SyntheticStore, n: int, seed: int, pages: list[str]
) -> tuple[SessionSequences, pd.DataFrame]:
    """Sampled sessions as SessionSequences in a vocabulary of ``pages`` (any order)."""
    hits = store.sample_sessions(n, seed).hits
    vocab = Vocabulary(
        pages=tuple(pages), groups=("all",), page_group=np.zeros(len(pages), dtype=np.int64)
    )
    canonical = hits.assign(page=hits["page_raw"])
    return sequences_from_hits(canonical, vocab), hits


@pytest.fixture(scope="module")
def permuted(store: SyntheticStore) -> list[str]:
    # a vocabulary order unlike the store's (as pages.parquet orders pages by traffic)
    return [store.pages[i] for i in np.random.default_rng(5).permutation(store.n_pages)]


def test_true_model_equals_bayes_log_loss(store: SyntheticStore, permuted: list[str]) -> None:
    seqs, hits = _sequences(store, 400, seed=3, pages=permuted)
    tm = TrueModel(store, permuted)
    rows = _all_rows(tm, seqs)
    np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-9)
    nll = -rows[np.arange(seqs.n_steps), seqs.targets()].mean()
    assert nll == pytest.approx(store.predictive_log_loss(hits), rel=1e-9)
    res = evaluate(tm, seqs, batch_sessions=64)
    assert res["with_exit"]["log_loss"] == pytest.approx(nll, rel=1e-12)


def test_true_model_equals_next_page_distribution(
    store: SyntheticStore, permuted: list[str]
) -> None:
    seqs, _ = _sequences(store, 50, seed=4, pages=permuted)
    tm = TrueModel(store, permuted)
    rows = np.exp(_all_rows(tm, seqs))
    longest = int(np.argmax(seqs.lengths))
    for s in (0, 1, longest):
        lo = seqs.offsets[s]
        for t in range(seqs.lengths[s]):
            history = [permuted[i] for i in seqs.pages[lo : lo + t + 1]]
            exact = store.next_page_distribution(history)  # store order, EXIT last
            np.testing.assert_allclose(rows[lo + t, :-1], exact[tm.store_index], atol=1e-12)
            assert rows[lo + t, -1] == pytest.approx(exact[-1], abs=1e-12)
    # the (B, T) interface gives the same rows
    pages = seqs.pages[seqs.offsets[longest] : seqs.offsets[longest + 1]][None, :]
    np.testing.assert_allclose(
        np.exp(tm.log_prob_next(pages))[0],
        rows[seqs.offsets[longest] : seqs.offsets[longest + 1]],
        atol=1e-12,
    )


def test_true_model_with_partial_vocabulary(store: SyntheticStore) -> None:
    # a vocabulary of some store pages: rows are the store's predictive restricted to them,
    # renormalised
    seqs_full, hits = _sequences(store, 30, seed=6, pages=list(store.pages))
    seen = sorted(set(hits["page_raw"].astype(str)))
    missing = [p for p in store.pages if p not in seen]
    vocab_pages = seen[::-1]
    seqs, _ = _sequences(store, 30, seed=6, pages=vocab_pages)
    tm = TrueModel(store, vocab_pages)
    rows = np.exp(_all_rows(tm, seqs))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-9)
    full = np.exp(_all_rows(TrueModel(store, list(store.pages)), seqs_full))
    restricted = np.c_[full[:, tm.store_index], full[:, -1]]
    np.testing.assert_allclose(rows, restricted / restricted.sum(axis=1, keepdims=True))
    assert len(missing) + len(seen) == store.n_pages
    with pytest.raises(ClickstreamError, match="not a page of the synthetic store"):
        TrueModel(store, [*vocab_pages, "/no/such/page"])


def test_true_model_rejects_impossible_histories(store: SyntheticStore) -> None:
    possible = store.transitions.sum(axis=0)[:, :-1] > 0  # (P, P): any intent links a -> b
    a, b = map(int, np.argwhere(~possible)[0])
    seqs = SessionSequences.from_lists([[a, b, a]], exit_id=store.n_pages)
    with pytest.raises(ClickstreamError, match="impossible"):
        list(TrueModel(store, list(store.pages)).iter_log_probs(seqs))


def test_true_model_beats_first_order_on_intent_data(
    store: SyntheticStore, permuted: list[str]
) -> None:
    train, _ = _sequences(store, 20_000, seed=7, pages=permuted)
    test, _ = _sequences(store, 2_000, seed=8, pages=permuted)
    true_ll = evaluate(TrueModel(store, permuted), test, exclude_exit=False)
    m1_ll = evaluate(FirstOrderMarkov().fit(train), test, exclude_exit=False)
    assert true_ll["with_exit"]["log_loss"] < m1_ll["with_exit"]["log_loss"] - 0.03


def test_scoring_holds_a_bounded_number_of_probabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch ends where its steps would hold more than ``EVAL_CELLS`` probabilities, whatever
    ``batch_sessions`` allows (2,048 sessions held 3 GB at a few thousand pages), and the
    scores do not change."""
    import envs.baselines as baselines

    rng = np.random.default_rng(0)
    lists = [rng.integers(0, 4, size=n).tolist() for n in rng.integers(1, 9, size=200)]
    lists.append(rng.integers(0, 4, size=40).tolist())  # one session above the cap: kept whole
    seqs = SessionSequences.from_lists(lists, exit_id=4)
    for model in (
        Popularity().fit(seqs),
        FirstOrderMarkov().fit(seqs),
        SecondOrderMarkov().fit(seqs),
    ):
        whole = np.full((seqs.n_steps, 5), np.nan)
        for rows, lp in model.iter_log_probs(seqs, batch_sessions=2048):
            whole[rows] = lp
        monkeypatch.setattr(
            baselines, "EVAL_CELLS", 10 * 5, raising=False
        )  # at most 10 steps, or one session
        capped = np.full((seqs.n_steps, 5), np.nan)
        sizes = []
        for rows, lp in model.iter_log_probs(seqs, batch_sessions=2048):
            capped[rows] = lp
            sizes.append(len(rows))
        monkeypatch.undo()
        assert max(sizes) == 40 and sorted(sizes)[-2] <= 10
        np.testing.assert_array_equal(capped, whole)
