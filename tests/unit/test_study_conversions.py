"""``scripts/study_conversions.py``: the funnel figures counted by hand on four sessions."""

from __future__ import annotations

import numpy as np

from envs.sequences import SessionSequences
from scripts.study_conversions import funnel


def test_funnel_counts_sessions_by_group_and_length_by_hand() -> None:
    # pages 0 (group 0), 1 (group 1, the basket), 2 (group 2, converting); 3 pages
    seqs = SessionSequences.from_lists(
        [[0], [0, 1, 2, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1]], 3
    )
    page_group = np.array([0, 1, 2])
    converting = np.array([False, False, True])
    got = funnel(seqs, page_group, 3, converting)
    assert float(got["conversion"]) == 0.25  # one of four sessions views page 2
    np.testing.assert_allclose(got["reach"], [1.0, 0.75, 0.25])
    # of the three sessions at the basket one converts; group 2's one converts
    np.testing.assert_allclose(got["converts"], [0.25, 1 / 3, 1.0])
    # lengths 1, 5, 11, 2: bands 1-4, 5-9, 10-19, 20+
    np.testing.assert_allclose(got["length_share"], [0.5, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(got["by_length"][:3], [0.0, 1.0, 0.0])
    assert np.isnan(got["by_length"][3])  # no session of 20 pages or more
