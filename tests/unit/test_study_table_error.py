"""``scripts/study_table_error.py``: its table predictors by hand on tiny chains, and the
latent-class fit with a given table (the Bayes rate is ``envs.baselines.TrueModel``'s,
tested in ``test_baselines.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.sequences import SessionSequences
from scripts.study_table_error import (
    counted_table,
    first_order_log_loss,
    first_sessions,
    latent_class_log_losses,
)

# two pages; EXIT last
ROWS = np.array([[0.0, 0.5, 0.5], [0.25, 0.0, 0.75]])


def test_a_first_order_table_scores_each_step() -> None:
    seqs = SessionSequences.from_lists([[0, 1], [1]], exit_id=2)  # steps 0->1, 1->EXIT, 1->EXIT
    by_hand = -(np.log(0.5) + 2 * np.log(0.75)) / 3
    assert first_order_log_loss(ROWS, seqs) == pytest.approx(by_hand)


def test_the_counted_table_backs_off_to_popularity_and_the_first_sessions_are_cut() -> None:
    seqs = SessionSequences.from_lists([[0, 1], [0], [1, 0, 1]], exit_id=2)
    table, k = counted_table(seqs, seqs)
    np.testing.assert_allclose(table.sum(axis=1), 1.0)
    assert (table > 0).all() and k > 0
    first = first_sessions(seqs, 2)
    assert len(first) == 2 and first.pages.tolist() == [0, 1, 0]
    assert first.offsets.tolist() == [0, 2, 3]


def test_the_latent_class_fit_with_the_exact_table_scores_closer_to_the_truth() -> None:
    """The two-type store of the latent-class tests, 80 training sessions: with the
    generating table in place of the counted one, 0.008 above the truth instead of 0.016."""
    from envs.baselines import mean_log_loss
    from envs.latent_class import LatentClassConfig
    from tests.unit.test_latent_class import GROUPS, PAGES, SHARED, sample, two_types

    truth = two_types()
    train, test = sample(truth, 80, seed=6), sample(truth, 4000, seed=7)
    config = LatentClassConfig(classes=2, restarts=2, iters=300)
    losses = latent_class_log_losses(train, test, GROUPS, PAGES, SHARED, config)
    best = mean_log_loss(truth, test)
    assert losses["exact"] - best < 0.01 < 0.015 < losses["counted"] - best
