"""Prepared hits as integer sequences: vocabulary, targets, time buckets, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clickstream.errors import ClickstreamError
from clickstream.prepare import prepare
from clickstream.synthetic import build_store
from envs.sequences import (
    SessionSequences,
    Vocabulary,
    load_prepared,
    sequences_from_hits,
    time_buckets,
)


def test_targets_are_next_page_or_exit() -> None:
    seqs = SessionSequences.from_lists([[0, 1, 2], [3], [1, 1]], exit_id=4)
    assert seqs.targets().tolist() == [1, 2, 4, 4, 1, 4]
    assert seqs.lengths.tolist() == [3, 1, 2]
    assert seqs.min_length(2).targets().tolist() == [1, 2, 4, 1, 4]
    assert seqs.min_length(2).session_ids.tolist() == ["s0", "s2"]


def test_from_lists_refuses_bad_sessions() -> None:
    with pytest.raises(ClickstreamError, match="no page views"):
        SessionSequences.from_lists([[0], []], exit_id=3)
    with pytest.raises(ClickstreamError, match=r"\[0, 3\)"):
        SessionSequences.from_lists([[0, 3]], exit_id=3)


def test_time_buckets() -> None:
    # edges 5, 15, 30, 60, 120, 300, 900 s; 0 = unknown
    got = time_buckets(np.array([np.nan, 0.0, 5.0, 5.1, 899.0, 901.0]))
    assert got.tolist() == [0, 1, 1, 2, 7, 8]


def test_load_prepared_synthetic(tmp_path: Path) -> None:
    store = build_store(n_pages=60, seed=0)
    raw = store.sample_sessions(400, seed=1)
    prepare(raw, tmp_path / "syn")
    data = load_prepared(tmp_path / "syn")
    hits = pd.read_parquet(tmp_path / "syn" / "hits.parquet")
    pages = pd.read_parquet(tmp_path / "syn" / "pages.parquet")
    assert data.vocab.pages == tuple(pages.sort_values("page_id")["page"])
    assert data.vocab.exit_id == len(pages)
    assert sum(len(s) for s in data.splits.values()) == hits["session_id"].nunique() == 400
    assert sum(s.n_steps for s in data.splits.values()) == len(hits)
    test = data.splits["test"]
    part = hits[hits["split"] == "test"]
    names = np.asarray(data.vocab.pages, dtype=object)[test.pages]
    assert names.tolist() == part["page"].tolist()
    # time bucket of a page view = the previous view's time on page; entry pages have none
    assert (test.time_bucket[test.offsets[:-1]] == 0).all()
    assert data.true_model_path == tmp_path / "syn" / "true_model"


def test_missing_prepared_files_name_the_command(tmp_path: Path) -> None:
    with pytest.raises(ClickstreamError, match=r"meta\.json is missing.*prepare_data\.py"):
        load_prepared(tmp_path)


def test_unknown_page_is_named() -> None:
    vocab = Vocabulary(pages=("/a", "/b"), groups=("g",), page_group=np.array([0, 0]))
    hits = pd.DataFrame(
        {
            "session_id": ["s", "s"],
            "step": [0, 1],
            "page": ["/a", "/zzz"],
            "time_on_page_s": [1.0, np.nan],
        }
    )
    with pytest.raises(ClickstreamError, match="'/zzz' is not in the vocabulary"):
        sequences_from_hits(hits, vocab)
    with pytest.raises(ClickstreamError, match="unknown page '/zzz' at position 1"):
        vocab.ids(["/a", "/zzz"])
    assert vocab.ids(["/a", "/zzz", "/b"], unknown="skip").tolist() == [0, 1]
