"""``scripts/study_type_moves.py``: the moves a first-order world credits to each type, by hand
on two tiny types, and the moves counted on the sessions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clickstream.errors import DataError
from envs.dynamics import Chains
from envs.sequences import SessionSequences
from scripts.study_type_moves import counted_moves, credited_moves

# pages 0 (the source group) and 1 (the target group); EXIT is 2
ROWS = np.array(
    [
        [[0.2, 0.6, 0.2], [0.5, 0.0, 0.5]],  # type 0 moves on to page 1 more often
        [[0.4, 0.2, 0.4], [0.5, 0.0, 0.5]],
    ]
)
SOURCE = np.array([True, False])
TARGET = np.array([False, True, False])


def chains(prior: list[float]) -> Chains:
    entry = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    return Chains(torch.tensor(prior), entry, torch.tensor(ROWS))


def test_each_type_is_credited_with_its_filtered_share_of_the_moves() -> None:
    seqs = SessionSequences.from_lists([[0, 1], [0, 0, 1]], exit_id=2)
    # session 1 at page 0: types 1/2 each, credited 0.5·0.6 and 0.5·0.2. Session 2 the same
    # at its first step; after 0 -> 0 the types weigh 0.5·0.2 : 0.5·0.4 = 1/3 : 2/3, credited
    # 1/3·0.6 and 2/3·0.2 at its second step.
    credited = credited_moves(chains([0.5, 0.5]), seqs, SOURCE, TARGET)
    np.testing.assert_allclose(credited, [0.3 + 0.3 + 0.2, 0.1 + 0.1 + 2 / 15])


def test_one_type_is_credited_with_the_rows_expected_moves() -> None:
    seqs = SessionSequences.from_lists([[0, 1], [0, 0, 1], [0]], exit_id=2)
    credited = credited_moves(chains([1.0, 0.0]), seqs, SOURCE, TARGET)
    assert credited[1] == 0.0
    assert credited[0] == pytest.approx(4 * 0.6)  # four steps from page 0


def test_the_moves_are_counted_per_step_from_a_source_page() -> None:
    seqs = SessionSequences.from_lists([[0, 1], [0, 0, 1], [0]], exit_id=2)
    assert counted_moves(seqs, SOURCE, TARGET) == (4, 2)
    second_session = np.array([False, False, True, True, True, False])  # its three views
    assert counted_moves(seqs, SOURCE, TARGET, second_session) == (2, 1)


def test_a_session_no_type_can_make_is_refused_naming_it() -> None:
    no_move = SessionSequences.from_lists([[0, 1], [0, 1, 1]], exit_id=2)  # none goes 1 -> 1
    with pytest.raises(DataError, match="session 's1': its move after step 1 has probability 0"):
        credited_moves(chains([0.5, 0.5]), no_move, SOURCE, TARGET)
    no_entry = SessionSequences.from_lists([[0, 1], [1]], exit_id=2)  # all enter by page 0
    with pytest.raises(DataError, match="session 's1': no type enters by its first page"):
        credited_moves(chains([0.5, 0.5]), no_entry, SOURCE, TARGET)
