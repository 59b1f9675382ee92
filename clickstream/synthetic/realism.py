"""Realism: sessions of the synthetic store next to the GA sample day.

``python -m clickstream.synthetic`` prints :func:`realism_table`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from clickstream.synthetic.config import MODES, SyntheticConfig
from clickstream.synthetic.site import build_store


def session_stats(hits: pd.DataFrame) -> dict[str, float]:
    """Shape of a raw or canonical hits table: pages per session, bounce and conversion rates.

    Bounce rate is the share of sessions with one page view; conversion rate the share of
    sessions with a transaction.
    """
    sid = hits["session_id"].to_numpy()
    new = np.r_[True, sid[1:] != sid[:-1]]
    starts = np.flatnonzero(new)
    lengths = np.diff(np.r_[starts, len(sid)])
    converted = np.add.reduceat(hits["is_transaction"].to_numpy(dtype=np.int64), starts) > 0
    top = hits["time_on_page_s"].to_numpy(dtype=np.float64)
    tx = hits["is_transaction"].to_numpy(dtype=bool)
    return {
        "sessions": len(starts),
        "page_views": len(sid),
        "pages_per_session": float(lengths.mean()),
        "median_pages_per_session": float(np.median(lengths)),
        "bounce_rate": float((lengths == 1).mean()),
        "conversion_rate": float(converted.mean()),
        "median_time_on_page_s": float(np.nanmedian(top)),
        "mean_time_on_page_s": float(np.nanmean(top)),
        "mean_order_value": float(hits["revenue"].to_numpy()[tx].mean()) if tx.any() else 0.0,
    }


def ga_sample_stats(path: str | os.PathLike[str]) -> dict[str, float]:
    """The same figures as :func:`session_stats` for a GA360 export, computed by DuckDB.

    Page views are ``PAGE`` hits; bounces are sessions with one page view; conversions are
    sessions with a hit-level transaction.
    """
    import duckdb

    sql = """
    WITH v AS (
      SELECT s.fullVisitorId || '-' || s.visitId AS sid,
             count(*) FILTER (WHERE h.type = 'PAGE') AS pv,
             count(*) FILTER (WHERE h.transaction.transactionRevenue IS NOT NULL) AS tx
      FROM read_parquet(?) AS s, UNNEST(s.hits) AS t(h)
      GROUP BY 1),
    p AS (
      SELECT h.type = 'PAGE' AS is_page,
             h.transaction.transactionRevenue / 1e6 AS revenue,
             lead(h.time) OVER (PARTITION BY s.fullVisitorId, s.visitId ORDER BY h.hitNumber)
               - h.time AS gap_ms
      FROM read_parquet(?) AS s, UNNEST(s.hits) AS t(h)
      WHERE h.type = 'PAGE' OR h.transaction.transactionRevenue IS NOT NULL)
    SELECT (SELECT count(*) FROM v WHERE pv > 0) AS sessions,
           (SELECT sum(pv) FROM v) AS page_views,
           (SELECT sum(pv) / count(*) FROM v WHERE pv > 0) AS pages_per_session,
           (SELECT median(pv) FROM v WHERE pv > 0) AS median_pages_per_session,
           (SELECT avg((pv = 1)::INT) FROM v WHERE pv > 0) AS bounce_rate,
           (SELECT avg((tx > 0)::INT) FROM v WHERE pv > 0) AS conversion_rate,
           (SELECT median(gap_ms) / 1000 FROM p WHERE is_page) AS median_time_on_page_s,
           (SELECT avg(gap_ms) / 1000 FROM p WHERE is_page) AS mean_time_on_page_s,
           (SELECT avg(revenue) FROM p WHERE revenue IS NOT NULL) AS mean_order_value
    """
    con = duckdb.connect()
    try:
        row = con.execute(sql, [str(path), str(path)]).fetchdf().iloc[0]
    finally:
        con.close()
    return {k: float(v) for k, v in row.items()}


def realism_table(
    ga_path: str | os.PathLike[str] | None = None,
    configs: Sequence[SyntheticConfig] | None = None,
    seed: int = 1,
) -> pd.DataFrame:
    """The GA sample day next to synthetic sessions, one row per figure of
    :func:`session_stats`, one column per source.

    Args:
        ga_path: The GA360 sample file; left out when ``None`` or missing.
        configs: Stores to sample (``cfg.n_sessions`` sessions each); default both modes of
            the default store.
        seed: Sampling seed.
    """
    configs = configs or [SyntheticConfig(mode=m) for m in MODES]
    columns: dict[str, dict[str, float]] = {}
    if ga_path is not None and Path(ga_path).is_file():
        columns["GA sample 2017-08-01"] = ga_sample_stats(ga_path)
    for cfg in configs:
        raw = build_store(cfg).sample_sessions(cfg.n_sessions, seed)
        columns[f"synthetic {cfg.mode} (P={cfg.n_pages})"] = session_stats(raw.hits)
    return pd.DataFrame(columns)


def main() -> None:  # pragma: no cover - a report for people
    """Print :func:`realism_table` for the GA sample in ``../shared/data`` (or
    ``$NEXTPAGE_SHARED_DATA``)."""
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    ga = Path(os.environ.get("NEXTPAGE_SHARED_DATA", default)) / "ga_sample_20170801.parquet"
    table = realism_table(ga)
    print(table.to_string(float_format=lambda v: f"{v:,.4f}"))
