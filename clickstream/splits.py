"""Deterministic temporal train / valid / test split of sessions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clickstream.errors import ConfigError, DataError
from clickstream.schema import SPLITS


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of sessions, in order of session start, for each split (sum to 1)."""

    train: float = 0.8
    valid: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        fractions = (self.train, self.valid, self.test)
        if any(not np.isfinite(f) or f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
            raise ConfigError(
                f"split fractions must be >= 0 and sum to 1, got train={self.train}, "
                f"valid={self.valid}, test={self.test}"
            )

    @classmethod
    def from_dict(cls, cfg: Mapping[str, float] | None) -> SplitConfig:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(SPLITS))
        if unknown:
            raise ConfigError(f"unknown split name(s) {unknown}; known: {list(SPLITS)}")
        return cls(**{k: float(v) for k, v in cfg.items()})


def temporal_split(hits: pd.DataFrame, cfg: SplitConfig) -> tuple[pd.Series, dict[str, object]]:
    """Assign each session to a split by its start time.

    Sessions are ordered by ``(session_start, session_id)``; the first ``train`` fraction of them
    (rounded down) is ``train``, the next ``valid`` fraction ``valid``, the rest ``test``. The
    same data always gives the same split.

    Returns:
        The split name per row (aligned with ``hits.index``) and a record of the boundaries:
        sessions per split and the first and last session start of each.
    """
    if len(hits) == 0:
        raise DataError("cannot split zero page views")
    # integer codes throughout: string lookups on millions of rows cost seconds
    codes, names = pd.factorize(hits["session_id"], sort=False)
    first_row = np.unique(codes, return_index=True)[1]  # per session code
    start_ns = hits["session_start"].to_numpy(dtype="datetime64[ns]")[first_row].view(np.int64)
    n = len(first_row)
    if len(np.unique(start_ns)) < n:  # ties in start time: break them by session id
        name_rank = np.argsort(np.argsort(np.asarray(names, dtype=object), kind="stable"))
        order = np.lexsort((name_rank, start_ns))
    else:
        order = np.argsort(start_ns, kind="stable")
    n_train = int(np.floor(cfg.train * n + 1e-9))
    n_valid = int(np.floor((cfg.train + cfg.valid) * n + 1e-9)) - n_train
    split_code = np.empty(n, dtype=np.int64)  # per session code: 0 train, 1 valid, 2 test
    split_code[order] = np.repeat([0, 1, 2], [n_train, n_valid, n - n_train - n_valid])
    labels = np.asarray(SPLITS, dtype=object)[split_code[order]]  # in time order
    per_row = pd.Series(
        np.asarray(SPLITS, dtype=object)[split_code[codes]], index=hits.index, dtype="str"
    )
    starts = start_ns[order].view("datetime64[ns]")
    record: dict[str, object] = {"fractions": {s: getattr(cfg, s) for s in SPLITS}}
    for name in SPLITS:
        mask = labels == name
        record[name] = {
            "sessions": int(mask.sum()),
            "first_session_start": pd.Timestamp(starts[mask][0], tz="UTC").isoformat()
            if mask.any()
            else None,
            "last_session_start": pd.Timestamp(starts[mask][-1], tz="UTC").isoformat()
            if mask.any()
            else None,
        }
    return per_row, record
