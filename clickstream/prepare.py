"""From a loader's raw page views to the prepared dataset on disk.

``prepare`` normalises and groups pages, optionally collapses reloads, assigns temporal splits,
builds the page and group catalogs and transition tables, and writes, atomically::

    <out_dir>/hits.parquet         canonical hits (clickstream.schema.CANONICAL_COLUMNS)
    <out_dir>/pages.parquet        page catalog (clickstream.catalog.CATALOG_COLUMNS)
    <out_dir>/groups.parquet       the same statistics per page group
    <out_dir>/transitions.parquet  first-order transitions, level "page" and "group",
                                   with ENTRY and EXIT states; every source row sums to 1
    <out_dir>/meta.json            source, counts, dropped records, split boundaries, config,
                                   git commit, summary (written last: its presence marks a
                                   complete folder)
"""

from __future__ import annotations

import datetime as _dt
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clickstream.catalog import page_stats, transition_counts
from clickstream.errors import ClickstreamError
from clickstream.io import AtomicOutputDir
from clickstream.pages import PageConfig, assign_pages
from clickstream.schema import CANONICAL_COLUMNS, LoadResult, validate_hits
from clickstream.splits import SplitConfig, temporal_split

REPEATS = ("keep", "collapse")


def canonical_hits(
    raw: LoadResult, pages: PageConfig, split: SplitConfig, repeats: str = "keep"
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Raw hits → canonical hits (pages, groups, splits) and a record of what was done.

    Args:
        raw: A loader's result.
        pages: Page identity, normalisation and grouping.
        split: Temporal split fractions.
        repeats: ``keep`` consecutive views of the same page (GA counts reloads as page
            views) or ``collapse`` them into one view (time on page and revenue add up). It
            moves next-page scores a lot, so it is recorded with every output.
    """
    if repeats not in REPEATS:
        raise ClickstreamError(f"repeats must be one of {REPEATS}, got {repeats!r}")
    hits = raw.hits.copy()
    validate_hits(hits, source=f"{raw.source} loader output")
    assigned = assign_pages(hits, pages)
    hits["page"] = assigned.page
    hits["page_group"] = assigned.page_group
    record: dict[str, Any] = {"pages": assigned.report, "repeats": repeats}
    if repeats == "collapse":
        before = len(hits)
        hits = collapse_repeats(hits)
        record["repeats_collapsed"] = before - len(hits)
    hits["split"], record["split"] = temporal_split(hits, split)
    hits = hits[list(CANONICAL_COLUMNS)]
    validate_hits(hits, source="canonical hits", canonical=True)
    return hits, record


def collapse_repeats(hits: pd.DataFrame) -> pd.DataFrame:
    """Merge consecutive views of the same page in a session into the first of them.

    The merged view keeps the first view's time and adds up time on page (unknown if any part
    is unknown, as for the last page) and revenue; it is a transaction if any part was.
    """
    sid = hits["session_id"].to_numpy()
    page = hits["page"].to_numpy()
    same_as_prev = np.r_[False, (sid[1:] == sid[:-1]) & (page[1:] == page[:-1])]
    run = np.cumsum(~same_as_prev) - 1
    first_rows = hits.loc[~same_as_prev].reset_index(drop=True)
    grouped = pd.DataFrame(
        {
            "run": run,
            "time_on_page_s": hits["time_on_page_s"].to_numpy(),
            "revenue": hits["revenue"].to_numpy(),
            "is_transaction": hits["is_transaction"].to_numpy(),
        }
    ).groupby("run", sort=True)
    first_rows["time_on_page_s"] = grouped["time_on_page_s"].sum(min_count=1).to_numpy()
    unknown = (grouped["time_on_page_s"].count() < grouped.size()).to_numpy()
    first_rows.loc[unknown, "time_on_page_s"] = np.nan
    first_rows["revenue"] = grouped["revenue"].sum().to_numpy()
    first_rows["is_transaction"] = grouped["is_transaction"].any().to_numpy()
    sid = first_rows["session_id"].to_numpy()
    new = np.r_[True, sid[1:] != sid[:-1]]
    idx = np.arange(len(sid))
    first_rows["step"] = idx - np.maximum.accumulate(np.where(new, idx, 0))
    return first_rows


def summarise(hits: pd.DataFrame) -> dict[str, float | int]:
    """Headline figures of a canonical hits table."""
    sessions = hits.groupby("session_id", sort=False)
    length = sessions.size()
    converted = sessions["is_transaction"].any()
    n = len(length)
    return {
        "sessions": int(n),
        "page_views": len(hits),
        "pages": int(hits["page"].nunique()),
        "page_groups": int(hits["page_group"].nunique()),
        "transactions": int(hits["is_transaction"].sum()),
        "revenue": round(float(hits["revenue"].sum()), 2),
        "conversion_rate": float(converted.sum() / n),
        "bounce_rate": float((length == 1).sum() / n),
        "pages_per_session": float(len(hits) / n),
    }


def prepare(
    raw: LoadResult,
    out_dir: str | Path,
    *,
    pages: PageConfig | None = None,
    split: SplitConfig | None = None,
    repeats: str = "keep",
    stats_split: str = "all",
    config: Mapping[str, Any] | None = None,
    extra_outputs: Callable[[AtomicOutputDir, dict[str, Any], pd.DataFrame], None] | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Prepare a dataset and write it to ``out_dir`` (all files or none).

    Args:
        raw: A loader's result.
        out_dir: Output folder (created; existing outputs are replaced only on success).
        pages: Page configuration (default: normalised paths, no grouping rules).
        split: Split fractions (default 0.8 / 0.1 / 0.1).
        repeats: ``keep`` or ``collapse`` consecutive repeats (see :func:`canonical_hits`).
        stats_split: Sessions the catalog and transition tables describe: ``all`` or one split
            name (e.g. ``train``, so that nothing in them is learnt from the test split).
        config: The resolved run configuration, recorded in ``meta.json``.
        extra_outputs: Called as ``extra_outputs(out, meta, hits)`` with the open output
            folder, the meta dict and the canonical hits before commit, to write more files
            atomically with the rest; it may add keys to the meta dict. The loader's own
            ``raw.extra_outputs`` (e.g. the synthetic store's true model) runs first.
        show_progress: Show a progress bar over the stages (pages, catalogs, writing).

    Returns:
        The meta dict written to ``meta.json`` (its ``summary`` holds the headline figures).
    """
    pages = pages or PageConfig()
    split = split or SplitConfig()
    stages = tqdm(total=4, desc="prepare", unit="stage", disable=not show_progress, leave=False)
    stages.set_postfix_str("pages and splits")
    hits, record = canonical_hits(raw, pages, split, repeats)
    stages.update()
    stages.set_postfix_str("catalogs")
    if stats_split == "all":
        described = hits
    elif stats_split in ("train", "valid", "test"):
        described = hits[hits["split"].to_numpy() == stats_split]
        if len(described) == 0:
            raise ClickstreamError(f"stats_split={stats_split!r} holds no sessions")
    else:
        raise ClickstreamError(
            f"stats_split must be 'all', 'train', 'valid' or 'test', got {stats_split!r}"
        )
    catalog = page_stats(described, "page")
    groups = (
        page_stats(described, "page_group")
        .drop(columns=["page"])
        .rename(columns={"page_id": "group_id"})
    )
    transitions = pd.concat(
        [
            transition_counts(described, "page").assign(level="page"),
            transition_counts(described, "page_group").assign(level="group"),
        ],
        ignore_index=True,
    )[["level", "src", "dst", "count", "prob"]]
    summary = summarise(hits)
    stages.update()
    stages.set_postfix_str("writing")
    meta: dict[str, Any] = {
        "source": raw.source,
        "files": raw.files,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "summary": summary,
        "dropped": raw.dropped,
        "source_info": {k: v for k, v in raw.info.items() if _is_plain(v)},
        "stats_split": stats_split,
        **record,
        "config": dict(config or {}),
    }
    with AtomicOutputDir(out_dir) as out:
        out.write_parquet("hits.parquet", hits)
        out.write_parquet("pages.parquet", catalog)
        out.write_parquet("groups.parquet", groups)
        out.write_parquet("transitions.parquet", transitions)
        stages.update()
        stages.set_postfix_str(f"{raw.source} extras")
        for write_extra in (raw.extra_outputs, extra_outputs):
            if write_extra is not None:
                write_extra(out, meta, hits)
        out.write_json("meta.json", meta)
    stages.update()
    stages.close()
    return meta


def format_summary(meta: Mapping[str, Any]) -> str:
    """A short human-readable summary of a prepared dataset."""
    s = meta["summary"]
    lines = [
        f"source            {meta['source']} "
        + (f"({len(meta['files'])} file(s))" if meta["files"] else "(generated)"),
        f"sessions          {s['sessions']:,}",
        f"page views        {s['page_views']:,}  ({s['pages_per_session']:.2f} per session)",
        f"pages             {s['pages']:,}",
        f"page groups       {s['page_groups']:,}",
        f"transactions      {s['transactions']:,}",
        f"revenue           {s['revenue']:,.2f}",
        f"conversion rate   {s['conversion_rate']:.2%}",
        f"bounce rate       {s['bounce_rate']:.2%}",
        f"repeats           {meta['repeats']}",
    ]
    split = meta["split"]
    lines.append(
        "splits            "
        + ", ".join(f"{name} {split[name]['sessions']:,}" for name in ("train", "valid", "test"))
    )
    dropped = {k: v for k, v in meta.get("dropped", {}).items() if v}
    if dropped:
        lines.append("dropped           " + ", ".join(f"{k}: {v:,}" for k, v in dropped.items()))
    return "\n".join(lines)


def git_commit() -> str | None:
    """The current git commit of the project (with ``-dirty`` if it has local changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def _is_plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool | list | dict | type(None)) or np.isscalar(
        value
    )
