"""From a loader's raw page views to the prepared dataset on disk.

``prepare`` normalises and groups pages, optionally collapses reloads, assigns temporal splits,
builds the page and group catalogs and transition tables, and writes, atomically::

    <out_dir>/hits.parquet         canonical hits (clickstream.schema.CANONICAL_COLUMNS)
    <out_dir>/pages.parquet        page catalog (clickstream.catalog.CATALOG_COLUMNS)
    <out_dir>/groups.parquet       the same statistics per page group
    <out_dir>/transitions.parquet  first-order transitions, level "page" and "group",
                                   with ENTRY and EXIT states; every source row sums to 1
    <out_dir>/meta.json            source, dataset name, counts, dropped records, split
                                   boundaries, config, git commit, summary, the rewards the
                                   data supports, notices
    <out_dir>/manifest.json        every file's size and sha256, the config hash, the data
                                   fingerprint, the source files (clickstream/runfolder.py):
                                   written last, then the folder is published with one rename

A train or test split left with no sessions (too few sessions for the ``split`` fractions, or
a fraction of 0) is refused before anything is written (:func:`check_split_sizes`); an empty
valid split is a notice, since only the visitor model's early stopping needs it.

**Rewards are decided before any training.** ``meta.json`` records under ``rewards`` which
simulator rewards (``env.reward``) the data can pay: ``page_value`` (needs revenue, or a value
column), ``revenue`` (needs transactions), ``engagement`` (needs time on page, from timestamps or
a column) and ``pageviews`` (always). :func:`choose_reward` is what a script calls first: the
requested reward if the data supports it; for the default ``page_value`` on a site without
revenue, the **engagement fallback** (:data:`ENGAGEMENT_FALLBACK`: ``engagement``, the expected
time on the landed page, where time on page is known, else ``pageviews``, 1 per page viewed) with
a one-line notice; otherwise an error naming the config key and the rewards that work.

**Page value** is Google Analytics' (revenue of later transactions, :mod:`clickstream.catalog`)
when the data records revenue; on a site without revenue but with a ``value`` column (a
product's price, a score), ``page_value="auto"`` makes it the page's mean value instead (said in
a notice and recorded in ``meta.json`` under ``page_value``).
"""

from __future__ import annotations

import datetime as _dt
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clickstream.catalog import page_stats, transition_counts
from clickstream.errors import ClickstreamError, ConfigError, DataError
from clickstream.io import notice
from clickstream.pages import PageConfig, assign_pages
from clickstream.runfolder import StageWriter
from clickstream.schema import CANONICAL_COLUMNS, LoadResult, validate_hits
from clickstream.splits import SplitConfig, temporal_split

REPEATS = ("keep", "collapse")

PAGE_VALUE_SOURCES = ("auto", "revenue", "value")
"""What the catalog's ``page_value`` is: GA's (``revenue``), the mean ``value`` per page
(``value``), or ``auto`` (revenue when the data has any, else value when it has a value column)."""

REWARDS = ("page_value", "revenue", "engagement", "pageviews")
"""The simulator's rewards (``envs.rewards.REWARD_KINDS``; a test keeps the two equal)."""

ENGAGEMENT_FALLBACK = ("engagement", "pageviews")
"""The default reward on a site without revenue: the first of these the data supports
(time on page where known, else 1 per page viewed)."""

REWARD_NEEDS = {
    "page_value": "revenue (transactions) or a value column (data.columns=value=<column>)",
    "revenue": "transactions with revenue (data.columns=revenue=<column>)",
    "engagement": "time on page (timestamps, or data.columns=time_on_page_s=<column>)",
    "pageviews": "nothing",
}


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
        raise ConfigError(f"repeats must be one of {REPEATS}, got {repeats!r}")
    hits = raw.hits.copy()
    validate_hits(hits, source=f"{raw.source} loader output")
    # groupings learnt from sessions (item-level sites) count the train split only
    train = (temporal_split(hits, split)[0] == "train").to_numpy()
    try:
        assigned = assign_pages(
            hits,
            pages,
            fit_rows=train if train.any() else None,
            source_column=raw.info.get("page_column"),  # type: ignore[arg-type]
        )
    except ClickstreamError as exc:
        if exc.file is not None or not raw.files:
            raise
        shown = ", ".join(raw.files[:2]) + (
            f" and {len(raw.files) - 2} more" if len(raw.files) > 2 else ""
        )
        raise type(exc)(exc.message, file=shown, column=exc.column) from None
    hits["page"] = assigned.page
    hits["page_group"] = assigned.page_group
    record: dict[str, Any] = {"pages": assigned.report, "repeats": repeats}
    if assigned.notices:
        record["page_notices"] = assigned.notices
    if repeats == "collapse":
        before = len(hits)
        hits = collapse_repeats(hits)
        record["repeats_collapsed"] = before - len(hits)
    hits["split"], record["split"] = temporal_split(hits, split)
    hits = hits[list(CANONICAL_COLUMNS)]
    validate_hits(hits, source="canonical hits", canonical=True)
    return hits, record


def check_split_sizes(split: Mapping[str, Any]) -> str | None:
    """Refuse splits no later stage can use, before anything is published.

    ``train`` fits every model and ``test`` scores them, so either one empty is a
    ``ConfigError`` naming the ``split.*`` fractions and the session counts. An empty ``valid``
    is a notice only: training the visitor model needs it (early stopping) and refuses the
    data then, but the agents and the first-order models do not.

    Args:
        split: The split record of :func:`clickstream.splits.temporal_split`.

    Returns:
        The notice to give when ``valid`` is empty, else ``None``.
    """
    counts = {name: int(split[name]["sessions"]) for name in ("train", "valid", "test")}
    fractions = split["fractions"]
    settings = ", ".join(f"split.{name}={fractions[name]}" for name in counts)
    shown = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    total = sum(counts.values())
    total_shown = f"{total:,} session" + ("" if total == 1 else "s")
    for name in ("train", "test"):
        if counts[name] == 0:
            raise ConfigError(
                f"{settings} leave the {name} split with no sessions ({total_shown}: {shown}); "
                "the train and test splits need at least one session each: raise "
                f"split.{name} or prepare more sessions"
            )
    if counts["valid"] == 0:
        return (
            f"{settings} leave the valid split with no sessions ({total_shown}: {shown}); "
            "scripts/train_simulator.py needs some for early stopping and will refuse these "
            "data: raise split.valid or prepare more sessions to train a visitor model"
        )
    return None


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
    """Headline figures of a canonical hits table.

    ``bounce_rate`` is the share of sessions with one page view, not GA's share with one
    interaction hit (interaction events are not loaded: :mod:`clickstream.catalog`)."""
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
    page_value: str = "auto",
    config: Mapping[str, Any] | None = None,
    extra_outputs: Callable[[StageWriter, dict[str, Any], pd.DataFrame], None] | None = None,
    show_progress: bool = False,
    config_hash: str | None = None,
) -> dict[str, Any]:
    """Prepare a dataset and write it to ``out_dir`` (all files or none).

    Args:
        raw: A loader's result.
        out_dir: Output folder (created; existing outputs are replaced only on success).
        pages: Page configuration (default: normalised paths, no grouping rules).
        split: Split fractions (default 0.8 / 0.1 / 0.1).
        repeats: ``keep`` or ``collapse`` consecutive repeats (see :func:`canonical_hits`).
        stats_split: Sessions the catalog's statistics and the transition tables describe:
            ``all`` (the default: page value, revenue and time on page, which make the
            simulator's reward, the evaluation's revenue and time tables and the converting
            pages of the exit calibration, are then computed from every split, valid and test
            included; the visitor model and the baselines are still fitted to the train
            sessions only) or one split name (``train``, so that nothing in those tables is
            learnt from the valid and test sessions). The catalog lists every page of every
            split either way (the vocabulary); a page without a view in ``stats_split`` gets
            0 views, page value 0 and unknown time on page (:mod:`clickstream.catalog`), said
            in a notice.
        page_value: What the catalog's ``page_value`` is (:data:`PAGE_VALUE_SOURCES`).
        config: The resolved run configuration, recorded in ``meta.json``.
        extra_outputs: Called as ``extra_outputs(out, meta, hits)`` with the open output
            folder, the meta dict and the canonical hits before commit, to write more files
            atomically with the rest; it may add keys to the meta dict. The loader's own
            ``raw.extra_outputs`` (e.g. the synthetic store's true model) runs first.
        show_progress: Show a progress bar over the stages (pages, catalogs, writing).
        config_hash: Hash of the settings that made the data, recorded in the manifest
            (``scripts/prepare_data.py``; the pipeline compares it).

    Returns:
        The meta dict written to ``meta.json`` (its ``summary`` holds the headline figures).
    """
    pages = pages or PageConfig()
    split = split or SplitConfig()
    if page_value not in PAGE_VALUE_SOURCES:
        raise ConfigError(
            f"data.page_value must be one of {list(PAGE_VALUE_SOURCES)}, got {page_value!r}"
        )
    stages = tqdm(total=4, desc="prepare", unit="stage", disable=not show_progress, leave=False)
    stages.set_postfix_str("pages and splits")
    hits, record = canonical_hits(raw, pages, split, repeats)
    notices = list(raw.notices)
    valid_notice = check_split_sizes(record["split"])
    for line in record.pop("page_notices", []):
        notice(line, notices)
    stages.update()
    stages.set_postfix_str("catalogs")
    if stats_split == "all":
        described = hits
    elif stats_split in ("train", "valid", "test"):
        described = hits[hits["split"].to_numpy() == stats_split]
        if len(described) == 0:
            raise DataError(f"stats_split={stats_split!r} holds no sessions")
    else:
        raise ConfigError(
            f"stats_split must be 'all', 'train', 'valid' or 'test', got {stats_split!r}"
        )
    timing = str(raw.info.get("revenue_timing", "with_view"))
    # every page of every split is in the vocabulary; the statistics describe stats_split only
    listed = None if stats_split == "all" else hits
    catalog = page_stats(described, "page", revenue_timing=timing, all_hits=listed)
    groups = (
        page_stats(described, "page_group", revenue_timing=timing, all_hits=listed)
        .drop(columns=["page"])
        .rename(columns={"page_id": "group_id"})
    )
    if listed is not None:
        _notice_unseen(catalog, groups, stats_split, notices)
    value_record = _choose_page_value(described, catalog, groups, page_value, raw, notices)
    if value_record["source"] == "revenue":
        value_record["revenue_timing"] = timing
    transitions = pd.concat(
        [
            transition_counts(described, "page").assign(level="page"),
            transition_counts(described, "page_group").assign(level="group"),
        ],
        ignore_index=True,
    )[["level", "src", "dst", "count", "prob"]]
    summary = summarise(hits)
    if valid_notice is not None:  # after the loader's and the pages' notices
        notice(valid_notice, notices)
    stages.update()
    stages.set_postfix_str("writing")
    meta: dict[str, Any] = {
        "source": raw.source,
        "dataset": dataset_name(raw),
        "files": raw.files,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "summary": summary,
        "dropped": raw.dropped,
        "source_info": {k: v for k, v in raw.info.items() if _is_plain(v)},
        "stats_split": stats_split,
        **record,
        "page_value": value_record,
        "rewards": reward_support(catalog),
        "notices": notices,
        "config": dict(config or {}),
    }
    source = {"source": [_source_stamp(f) for f in raw.files]}
    with StageWriter(out_dir, "prepare_data", config_hash=config_hash, extra=source) as out:
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


def _notice_unseen(
    catalog: pd.DataFrame, groups: pd.DataFrame, stats_split: str, notices: list[str]
) -> None:
    """Say how many pages (and groups) the ``stats_split`` sessions never viewed."""
    unseen = int((catalog["unique_pageviews"].to_numpy() == 0).sum())
    if not unseen:
        return
    unseen_groups = int((groups["unique_pageviews"].to_numpy() == 0).sum())
    notice(
        f"stats_split={stats_split}: {unseen:,} of {len(catalog):,} pages"
        + (f" ({unseen_groups:,} of {len(groups):,} page groups)" if unseen_groups else "")
        + f" have no view in the {stats_split} split: listed in pages.parquet with 0 views, "
        "page value 0 and unknown time on page (the engagement reward gives them the mean), "
        "no transitions",
        notices,
    )


def _choose_page_value(
    described: pd.DataFrame,
    catalog: pd.DataFrame,
    groups: pd.DataFrame,
    source: str,
    raw: LoadResult,
    notices: list[str],
) -> dict[str, Any]:
    """Settle what ``page_value`` means (in place in both catalogs); the record for meta."""
    has_revenue = bool((described["revenue"].to_numpy() > 0).any())
    has_value = bool(described["value"].notna().any()) if "value" in described else False
    column = raw.info.get("value_column")
    if source == "auto":
        source = "value" if has_value and not has_revenue else "revenue"
        if source == "value":
            notice(
                f"page value: the data records no revenue, so a page's value is the mean of "
                f"the value column{f' {column!r}' if column else ''} over its views; set "
                "data.page_value=revenue to keep Google Analytics' definition (all 0 here)",
                notices,
            )
    elif source == "value" and not has_value:
        raise ConfigError(
            "data.page_value=value needs a value column: map one with "
            "data.columns=value=<column> (a price or a score per page view), or set "
            "data.page_value=revenue"
        )
    if source == "value":
        for table in (catalog, groups):
            table["page_value"] = table["value"].fillna(0.0)
    record: dict[str, Any] = {"source": source}
    if source == "value" and column:
        record["column"] = column
    return record


def reward_support(catalog: pd.DataFrame) -> dict[str, Any]:
    """Which simulator rewards a page catalog can pay (non-zero on some page).

    Mirrors ``envs.rewards.reward_from_catalog``: ``page_value`` and ``revenue`` need a
    non-zero value on some page, ``engagement`` a known time on page > 0, ``pageviews`` nothing.

    Returns:
        ``{"supported": [...], "missing": {reward: what it needs}, "default": <the reward the
        default page_value becomes>}``.
    """

    def nonzero(column: str) -> bool:
        values = pd.to_numeric(catalog[column], errors="coerce").to_numpy(np.float64)
        return bool((np.isfinite(values) & (values != 0)).any())

    ok = {
        "page_value": nonzero("page_value"),
        "revenue": nonzero("revenue"),
        "engagement": nonzero("avg_time_on_page_s"),
        "pageviews": True,
    }
    supported = [r for r in REWARDS if ok[r]]
    default = "page_value" if ok["page_value"] else next(r for r in ENGAGEMENT_FALLBACK if ok[r])
    return {
        "supported": supported,
        "missing": {r: REWARD_NEEDS[r] for r in REWARDS if not ok[r]},
        "default": default,
    }


def supported_rewards(meta: Mapping[str, Any], data_dir: str | Path | None = None) -> list[str]:
    """The rewards a prepared dataset supports (``meta.json``'s ``rewards``).

    Datasets prepared before this was recorded are read from ``<data_dir>/pages.parquet``.
    """
    return list(_support(meta, data_dir)["supported"])


def _support(meta: Mapping[str, Any], data_dir: str | Path | None) -> dict[str, Any]:
    if isinstance(meta.get("rewards"), Mapping):
        return dict(meta["rewards"])
    if data_dir is None:
        raise DataError(
            "this dataset's meta.json does not say which rewards it supports: prepare it "
            "again (python scripts/prepare_data.py ...)"
        )
    path = Path(data_dir) / "pages.parquet"
    try:
        return reward_support(pd.read_parquet(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the page catalog: {exc}", file=str(path)) from None


def choose_reward(
    meta: Mapping[str, Any],
    requested: str,
    *,
    key: str = "env.reward",
    data_dir: str | Path | None = None,
) -> tuple[str, str | None]:
    """The reward a run uses, decided from the data before anything trains.

    Args:
        meta: The prepared dataset's ``meta.json``.
        requested: The reward the configuration asks for (``page_value`` by default; ``auto``
            takes the data's default).
        key: The configuration key the script reads the reward from, named in messages
            (``env.reward`` for the pipeline and ``train.py``, ``reward`` for
            ``check_simulator.py``).
        data_dir: The dataset's folder (for datasets prepared before rewards were recorded).

    Returns:
        ``(reward, notice)``: ``notice`` is a one-line message when the reward differs from
        the requested one (the engagement fallback for ``page_value`` on a site without
        revenue), else ``None``.

    Raises:
        ClickstreamError: An unknown reward, or one other than ``page_value`` that the data
            cannot pay, naming ``key``, what the reward needs and the rewards that work.
    """
    if isinstance(requested, bool):  # not a reward name a YAML file could have meant
        requested = str(requested).lower()
    if requested not in (*REWARDS, "auto"):
        raise ConfigError(f"{key} must be one of {[*REWARDS, 'auto']}, got {requested!r}")
    support = _support(meta, data_dir)
    supported = list(support["supported"])
    if requested in supported:
        return requested, None
    fallback = str(support["default"])
    if requested == "auto":
        return fallback, f"reward: {fallback} ({key}=auto: what this data supports)"
    name = meta.get("dataset") or meta.get("source") or "this dataset"
    if requested == "page_value":
        what = {
            "engagement": "engagement (expected seconds on the landed page)",
            "pageviews": "pageviews (1 per page viewed; the data records no time on page)",
        }[fallback]
        return fallback, (
            f"reward: {name} records no revenue and no value column, so the reward is {what} "
            f"instead of page_value; set {key}=<{'|'.join(supported)}> to choose"
        )
    raise ConfigError(
        f"{key}={requested} needs {REWARD_NEEDS[requested]}, and {name} has none: choose "
        f"{key}={' or '.join(r for r in supported)} (what this data supports)"
    )


_SUFFIXES = re.compile(
    r"(\.(csv|tsv|txt|parquet|json|jsonl|ndjson|xlsx|xls|seq|zip))?(\.(gz|zst|zstd|bz2))?$",
    re.IGNORECASE,
)


def dataset_name(raw: LoadResult) -> str:
    """A short name of the data actually loaded, for run titles and reports.

    The loader's own name where it gives one (the synthetic store:
    ``synthetic_<mode>_<pages>p``); one file: its name without extensions
    (``ga_sample_20170801``); several files in one folder: the folder's name; else the first
    file's name and how many more.
    """
    given = raw.info.get("dataset_name")
    if isinstance(given, str) and given:
        return given
    if not raw.files:
        return raw.source
    paths = [Path(f) for f in raw.files]
    stem = _SUFFIXES.sub("", paths[0].name) or paths[0].name
    if len(paths) == 1:
        return stem
    parents = {p.parent for p in paths}
    if len(parents) == 1 and paths[0].parent.name:
        return paths[0].parent.name
    return f"{stem}+{len(paths) - 1}"


def format_summary(meta: Mapping[str, Any]) -> str:
    """A short human-readable summary of a prepared dataset."""
    s = meta["summary"]
    lines = [
        f"source            {meta['source']} "
        + (f"({len(meta['files'])} file(s))" if meta["files"] else "(generated)")
        + (f": {meta['dataset']}" if meta.get("dataset") else ""),
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
    rewards = meta.get("rewards")
    if isinstance(rewards, Mapping):
        lines.append(
            f"rewards           {', '.join(rewards['supported'])} (default: {rewards['default']})"
        )
    for line in meta.get("notices", []):
        lines.append(f"note              {line}")
    return "\n".join(lines)


def _source_stamp(file: str | Path) -> dict[str, Any]:
    """A source file's path, size and modification time (the pipeline re-prepares the data
    when one of them changes)."""
    path = Path(file)
    try:
        st = path.stat()
    except OSError:
        return {"path": str(path), "size": None, "mtime_ns": None}
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def source_changed(stamps: list[dict[str, Any]] | None) -> str | None:
    """Which recorded source file (:func:`_source_stamp`) changed since, or ``None``."""
    for stamp in stamps or []:
        if _source_stamp(stamp["path"]) != stamp:
            return f"the source file {stamp['path']} changed since the data were prepared"
    return None


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
