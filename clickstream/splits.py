"""Deterministic temporal train / valid / test split of sessions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clickstream.errors import ClickstreamError
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
            raise ClickstreamError(
                f"split fractions must be >= 0 and sum to 1, got train={self.train}, "
                f"valid={self.valid}, test={self.test}"
            )

    @classmethod
    def from_dict(cls, cfg: Mapping[str, float] | None) -> SplitConfig:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(SPLITS))
        if unknown:
            raise ClickstreamError(f"unknown split name(s) {unknown}; known: {list(SPLITS)}")
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
    sessions = hits.drop_duplicates("session_id")[["session_id", "session_start"]]
    sessions = sessions.sort_values(["session_start", "session_id"], kind="stable")
    n = len(sessions)
    n_train = int(np.floor(cfg.train * n + 1e-9))
    n_valid = int(np.floor((cfg.train + cfg.valid) * n + 1e-9)) - n_train
    labels = np.array(
        ["train"] * n_train + ["valid"] * n_valid + ["test"] * (n - n_train - n_valid)
    )
    split_of = pd.Series(labels, index=sessions["session_id"].to_numpy())
    per_row = pd.Series(
        split_of.reindex(hits["session_id"].to_numpy()).to_numpy(), index=hits.index
    )
    record: dict[str, object] = {"fractions": {s: getattr(cfg, s) for s in SPLITS}}
    starts = sessions["session_start"].to_numpy()
    for name in SPLITS:
        mask = labels == name
        record[name] = {
            "sessions": int(mask.sum()),
            "first_session_start": pd.Timestamp(starts[mask][0]).isoformat()
            if mask.any()
            else None,
            "last_session_start": pd.Timestamp(starts[mask][-1]).isoformat()
            if mask.any()
            else None,
        }
    return per_row.astype("str"), record
