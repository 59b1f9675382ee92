"""Temporal train / valid / test split of sessions: exact counts, order, determinism, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickstream.errors import ClickstreamError
from clickstream.splits import SplitConfig, temporal_split

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def session_hits(starts: dict[str, int], lengths: dict[str, int] | None = None) -> pd.DataFrame:
    """Rows of sessions (contiguous, in dict order); ``starts`` in minutes after T0."""
    rows = []
    for sid, minute in starts.items():
        for step in range((lengths or {}).get(sid, 1)):
            rows.append(
                {
                    "session_id": sid,
                    "session_start": T0 + pd.Timedelta(minutes=minute),
                    "step": step,
                }
            )
    return pd.DataFrame(rows)


def split_of_sessions(hits: pd.DataFrame, cfg: SplitConfig) -> dict[str, str]:
    labels, _ = temporal_split(hits, cfg)
    per_session = pd.DataFrame({"sid": hits["session_id"], "split": labels})
    # every row of a session has the same split
    assert (per_session.groupby("sid")["split"].nunique() == 1).all()
    return per_session.drop_duplicates("sid").set_index("sid")["split"].to_dict()


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (10, (0.8, 0.1, 0.1), (8, 1, 1)),
        (100, (0.8, 0.1, 0.1), (80, 10, 10)),
        (7, (0.8, 0.1, 0.1), (5, 1, 1)),  # floor(5.6) = 5, floor(6.3) = 6
        (3, (0.8, 0.1, 0.1), (2, 0, 1)),  # floor(2.4) = 2, floor(2.7) = 2
        (10, (0.7, 0.2, 0.1), (7, 2, 1)),  # 0.7 * 10 = 7.000000000000001 in floats
        (10, (0.1, 0.2, 0.7), (1, 2, 7)),  # 0.1 + 0.2 = 0.30000000000000004
        (100, (0.29, 0.71, 0.0), (29, 71, 0)),  # 0.29 * 100 = 28.999999999999996
        (10, (1.0, 0.0, 0.0), (10, 0, 0)),
        (10, (0.0, 0.0, 1.0), (0, 0, 10)),
        (1, (0.8, 0.1, 0.1), (0, 0, 1)),
    ],
)
def test_fractions_give_exact_session_counts(
    n: int, fractions: tuple[float, float, float], expected: tuple[int, int, int]
) -> None:
    hits = session_hits(
        {f"s{i:03d}": i for i in range(n)}, {f"s{i:03d}": 1 + i % 3 for i in range(n)}
    )
    cfg = SplitConfig(*fractions)
    labels, record = temporal_split(hits, cfg)
    split = split_of_sessions(hits, cfg)
    counts = tuple(sum(v == name for v in split.values()) for name in ("train", "valid", "test"))
    assert counts == expected
    assert tuple(record[name]["sessions"] for name in ("train", "valid", "test")) == expected
    assert len(labels) == len(hits)
    assert labels.index.equals(hits.index)


def test_sessions_are_assigned_in_start_order() -> None:
    # row order is not start order; sessions s0..s9 start at minutes 9, 8, ..., 0
    hits = session_hits({f"s{i}": 9 - i for i in range(10)}, {"s3": 4, "s9": 2})
    split = split_of_sessions(hits, SplitConfig())
    assert split == {
        **{f"s{i}": "train" for i in range(2, 10)},
        "s1": "valid",  # starts at minute 8
        "s0": "test",  # starts last
    }


def test_ties_broken_by_session_id() -> None:
    hits = session_hits({"b": 0, "c": 0, "a": 0, "d": 5})
    split = split_of_sessions(hits, SplitConfig(0.5, 0.25, 0.25))
    assert split == {"a": "train", "b": "train", "c": "valid", "d": "test"}
    # ids sort as strings: "s10" < "s2"
    hits = session_hits({"s2": 0, "s10": 0})
    assert split_of_sessions(hits, SplitConfig(0.5, 0.5, 0.0)) == {"s10": "train", "s2": "valid"}


def test_boundary_record() -> None:
    hits = session_hits({"a": 0, "b": 10, "c": 20, "d": 30, "e": 40}, {"c": 3})
    _, record = temporal_split(hits, SplitConfig(0.6, 0.2, 0.2))

    def iso(minute: int) -> str:
        return (T0 + pd.Timedelta(minutes=minute)).isoformat()

    assert record == {
        "fractions": {"train": 0.6, "valid": 0.2, "test": 0.2},
        "train": {"sessions": 3, "first_session_start": iso(0), "last_session_start": iso(20)},
        "valid": {"sessions": 1, "first_session_start": iso(30), "last_session_start": iso(30)},
        "test": {"sessions": 1, "first_session_start": iso(40), "last_session_start": iso(40)},
    }
    assert record["train"]["first_session_start"] == "2024-01-01T00:00:00+00:00"
    _, record = temporal_split(hits, SplitConfig(1.0, 0.0, 0.0))
    assert record["valid"] == {
        "sessions": 0,
        "first_session_start": None,
        "last_session_start": None,
    }
    assert record["test"]["sessions"] == 0


@st.composite
def sessions_with_starts(draw) -> tuple[dict[str, int], dict[str, int]]:
    n = draw(st.integers(1, 40))
    ids = draw(
        st.lists(
            st.from_regex(r"[a-z0-9]{1,4}", fullmatch=True), min_size=n, max_size=n, unique=True
        )
    )
    starts = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))  # many ties
    lengths = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    return dict(zip(ids, starts, strict=True)), dict(zip(ids, lengths, strict=True))


fractions_strategy = st.sampled_from(
    [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.6, 0.2, 0.2), (1 / 3, 1 / 3, 1 / 3), (0.9, 0.0, 0.1)]
)


@settings(max_examples=100, deadline=None)
@given(data=sessions_with_starts(), fractions=fractions_strategy, seed=st.integers(0, 2**32 - 1))
def test_split_order_and_determinism(
    data: tuple[dict[str, int], dict[str, int]], fractions: tuple[float, ...], seed: int
) -> None:
    starts, lengths = data
    cfg = SplitConfig(*fractions)
    hits = session_hits(starts, lengths)
    split = split_of_sessions(hits, cfg)

    # later splits never start earlier; within a start time, ids decide
    key = {sid: (starts[sid], sid) for sid in starts}
    train = [key[s] for s, v in split.items() if v == "train"]
    valid = [key[s] for s, v in split.items() if v == "valid"]
    test = [key[s] for s, v in split.items() if v == "test"]
    if train and valid:
        assert max(train) < min(valid)
    if valid and test:
        assert max(valid) < min(test)
    if train and test:
        assert max(train) < min(test)
    n = len(starts)
    assert len(train) == int(np.floor(fractions[0] * n + 1e-9))

    # the same sessions in another row order (rows of a session kept together, in step
    # order) and with another index give the same assignment
    order = np.random.default_rng(seed).permutation(list(starts))
    shuffled = session_hits({sid: starts[sid] for sid in order}, lengths)
    shuffled.index = shuffled.index[::-1] + 1000
    assert split_of_sessions(shuffled, cfg) == split
    _, record_a = temporal_split(hits, cfg)
    _, record_b = temporal_split(shuffled, cfg)
    assert record_a == record_b


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": -0.1, "valid": 0.6, "test": 0.5},
        {"train": 0.8, "valid": 0.1, "test": 0.2},  # sums to 1.1
        {"train": 0.5, "valid": 0.1, "test": 0.1},  # sums to 0.7
        {"train": float("nan"), "valid": 0.5, "test": 0.5},
        {"train": float("inf"), "valid": 0.0, "test": 0.0},
        {"train": 0.9},  # valid and test default to 0.1 each
    ],
)
def test_bad_fractions_raise(fractions: dict[str, float]) -> None:
    with pytest.raises(ClickstreamError, match="split fractions must be >= 0 and sum to 1"):
        SplitConfig.from_dict(fractions)


def test_unknown_split_name_raises() -> None:
    with pytest.raises(ClickstreamError, match=r"unknown split name\(s\) \['validation'\]"):
        SplitConfig.from_dict({"train": 0.8, "validation": 0.1, "test": 0.1})


def test_from_dict_defaults_and_strings() -> None:
    assert SplitConfig.from_dict(None) == SplitConfig(0.8, 0.1, 0.1)
    assert SplitConfig.from_dict({"train": "0.6", "valid": 0.2, "test": 0.2}) == SplitConfig(
        0.6, 0.2, 0.2
    )
