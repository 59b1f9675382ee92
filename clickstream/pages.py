"""Page identity, normalisation and grouping.

Every distinct raw page is processed once (pages repeat millions of times in big exports), and
the result is mapped back to the hits.

* **Identity** (``identity``): the normalised path (default) or the page title (the study used
  ``hits.page.pageTitle`` as its states).
* **Normalisation** of a path or URL: strip scheme, host, query string (except parameters named
  in ``keep_query_params``) and fragment; lowercase; collapse repeated slashes; drop a trailing
  slash; replace id-like segments (numbers, long hex, UUIDs) by ``:id``; then the extra ordered
  regex rules of the config.
* **Grouping** (the study worked on page clusters): the first matching regex rule names the group
  (``\\1`` in a group name takes the rule's first capture group); pages matched by no rule take
  their analytics content group where the export has one; otherwise the path's first
  ``fallback_level`` segments. Groups with fewer than ``fold_groups_below`` page views fold into
  ``other``; pages with fewer than ``fold_pages_below`` page views fold into one page
  ``other:<group>`` per group (rare product pages stop bloating the state space, their group
  stays).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import pandas as pd

from clickstream.errors import ClickstreamError, from_options
from clickstream.schema import OTHER_GROUP

ID_SEGMENT = re.compile(
    r"^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?=[0-9a-f]*\d)[0-9a-f]{12,})$"
)
"""Segments that identify one record rather than a page: numbers, UUIDs, hex ids of 12+ chars."""


@dataclass(frozen=True)
class Rule:
    """An ordered regex rule: ``pattern`` searched in the page; ``replace`` or ``group`` applied."""

    pattern: str
    replace: str | None = None
    group: str | None = None

    def compiled(self) -> re.Pattern[str]:
        try:
            return re.compile(self.pattern)
        except re.error as exc:
            raise ClickstreamError(f"invalid regex {self.pattern!r} in page rules: {exc}") from None


@dataclass
class PageConfig:
    """How raw pages become page identities and page groups (``configs/pages/*.yaml``).

    Attributes:
        identity: ``path`` (normalised path) or ``title`` (page title; pages without a title
            fall back to their normalised path, counted in the report).
        normalise: Normalise paths; ``False`` keeps raw pages as they are (e.g. MSNBC's
            category names), only trimmed.
        lowercase: Lowercase paths.
        keep_query_params: Query parameters that distinguish pages (e.g. ``mode`` in
            ``/myaccount.html?mode=vieworder``); all others are dropped.
        collapse_ids: Replace id-like path segments by ``:id``.
        rewrite_rules: Extra normalisation, applied in order: ``re.sub(pattern, replace)``.
        group_rules: Ordered grouping rules; the first whose pattern is found names the group.
        use_content_groups: Use the export's content group for pages no rule matches.
        fallback_level: Number of leading path segments naming the group of a page that no
            rule or content group places (``/a/b/c`` → ``/a`` at level 1).
        fold_pages_below: Pages with fewer page views become ``other:<group>``.
        fold_groups_below: Groups with fewer page views become ``other``.
    """

    identity: str = "path"
    normalise: bool = True
    lowercase: bool = True
    keep_query_params: Sequence[str] = ()
    collapse_ids: bool = True
    rewrite_rules: Sequence[Rule] = ()
    group_rules: Sequence[Rule] = ()
    use_content_groups: bool = True
    fallback_level: int = 1
    fold_pages_below: int = 0
    fold_groups_below: int = 0

    def __post_init__(self) -> None:
        if self.identity not in ("path", "title"):
            raise ClickstreamError(
                f"pages.identity must be 'path' or 'title', got {self.identity!r}"
            )
        if self.fallback_level < 1:
            raise ClickstreamError(f"pages.fallback_level must be >= 1, got {self.fallback_level}")
        self.rewrite_rules = tuple(_rule(r, "replace") for r in self.rewrite_rules)
        self.group_rules = tuple(_rule(r, "group") for r in self.group_rules)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> PageConfig:
        """Build from a plain mapping (a resolved Hydra node); unknown keys raise."""
        return from_options(cls, cfg, "pages")


def _rule(r: Rule | Mapping[str, Any], kind: str) -> Rule:
    rule = r if isinstance(r, Rule) else Rule(**dict(r))
    if getattr(rule, kind) is None:
        raise ClickstreamError(f"page rule {rule.pattern!r} needs a '{kind}'")
    rule.compiled()
    return rule


def normalise_path(raw: str, cfg: PageConfig) -> str:
    """Normalise one page path or URL (see the module docstring)."""
    text = raw.strip()
    if not cfg.normalise:
        return text
    if "://" in text or _looks_like_host(text):
        path, query = _url_path_and_query(text if "://" in text else "//" + text)
    else:  # a path: a leading "//" is a doubled slash, not a host
        path, _, query = text.split("#", 1)[0].partition("?")
    path = path.strip() or "/"
    if cfg.lowercase:
        path = path.lower()
    path = re.sub(r"/{2,}", "/", path)
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1:
        # whitespace may hide before a trailing slash ("/a /"): trim both until stable, and
        # before ids are collapsed, so "/123 /" and "/123" name the same page
        path = path.rstrip("/ \t\r\n").rstrip() or "/"
    if cfg.collapse_ids:
        path = "/".join(":id" if ID_SEGMENT.match(seg) else seg for seg in path.split("/"))
    if cfg.keep_query_params and query:
        kept = [
            (k.strip(), v.strip())
            for k, v in parse_qsl(query, keep_blank_values=True)
            if k.strip() in cfg.keep_query_params
        ]
        if cfg.lowercase:  # lowercase before sorting, so the order is that of the final text
            kept = [(k.lower(), v.lower()) for k, v in kept]
        if kept:
            query = urlencode(sorted(kept))  # percent-escapes come out upper case
            path = f"{path}?{query.lower() if cfg.lowercase else query}"
    for rule in cfg.rewrite_rules:
        path = rule.compiled().sub(rule.replace or "", path)
    return path


def _url_path_and_query(url: str) -> tuple[str, str]:
    """Path and query of a URL; a malformed host (``http://[shop/x``) does not matter here."""
    try:
        parts = urlsplit(url)
        return parts.path, parts.query
    except ValueError:  # urlsplit validates hosts (IPv6 brackets, NFKC); we only need the path
        rest = url.split("://", 1)[1] if "://" in url else url.removeprefix("//")
        rest = rest.split("#", 1)[0]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        path, _, query = rest[cut:].partition("?")
        return path, query


def _looks_like_host(text: str) -> bool:
    """True for a scheme-less URL such as ``shop.example.com/x`` (not for ``basket.html``)."""
    head = text.split("/", 1)[0]
    return (
        "." in head
        and re.fullmatch(r"[\w-]+(\.[\w-]+)+(:\d+)?", head) is not None
        and re.search(r"\.(html?|php|aspx?|jsp|axd)$", head) is None
    )


def group_of(page: str, content_group: str | None, cfg: PageConfig) -> str:
    """Page group of one normalised page (before traffic folding)."""
    for rule in cfg.group_rules:
        m = rule.compiled().search(page)
        if m:
            return m.expand(rule.group or "")
    if cfg.use_content_groups and content_group is not None and str(content_group).strip():
        return str(content_group).strip().lower()
    segments = [s for s in page.split("?")[0].split("/") if s]
    if not segments:
        return "/"
    return "/" + "/".join(segments[: cfg.fallback_level])


@dataclass
class PageAssignment:
    """Result of :func:`assign_pages`: columns to add to the hits and a report."""

    page: pd.Series
    page_group: pd.Series
    report: dict[str, int]


def assign_pages(hits: pd.DataFrame, cfg: PageConfig) -> PageAssignment:
    """Normalise and group the pages of a raw hits table.

    Args:
        hits: Raw hits (``page_raw``, ``page_title``, ``content_group``), shape ``(N, ...)``.
        cfg: Page configuration.

    Returns:
        ``page`` and ``page_group`` aligned with ``hits.index``, and counts for the record
        (pages before and after, pages and groups folded, titles missing).
    """
    report: dict[str, int] = {"raw_pages": int(hits["page_raw"].nunique())}
    raw_codes, raw_uniques = pd.factorize(hits["page_raw"], sort=False)
    normalised = np.array([normalise_path(str(p), cfg) for p in raw_uniques], dtype=object)
    page = normalised[raw_codes]
    if cfg.identity == "title":
        title = hits["page_title"].astype("str").str.strip().str.replace(r"\s+", " ", regex=True)
        missing = hits["page_title"].isna().to_numpy() | (title.fillna("").to_numpy() == "")
        report["page_views_without_title"] = int(missing.sum())
        page = np.where(missing, page, title.to_numpy(dtype=object))
    # Group each distinct (page, content group) pair once; a page's group is the group of its
    # most frequent pair, so that one page never lands in two groups.
    content = hits["content_group"].astype(object).where(hits["content_group"].notna(), None)
    pairs = pd.DataFrame({"page": page, "content": content.to_numpy()})
    counts = pairs.value_counts(dropna=False, sort=True).reset_index(name="n")
    counts = counts.drop_duplicates("page", keep="first")
    group_by_page = {
        p: group_of(p, None if pd.isna(c) else c, cfg)
        for p, c in zip(counts["page"], counts["content"], strict=True)
    }
    page_s = pd.Series(page, index=hits.index, dtype="str")
    group_s = page_s.map(group_by_page).astype("str")
    report["pages"] = int(page_s.nunique())

    if cfg.fold_groups_below > 0:
        views = group_s.value_counts()
        small = set(views.index[views.to_numpy() < cfg.fold_groups_below])
        report["groups_folded"] = len(small)
        group_s = group_s.where(~group_s.isin(small), OTHER_GROUP)
    if cfg.fold_pages_below > 0:
        views = page_s.value_counts()
        rare = page_s.map(views).to_numpy() < cfg.fold_pages_below
        report["pages_folded"] = int(page_s[rare].nunique())
        page_s = page_s.where(~rare, "other:" + group_s)
    report["pages_after_folding"] = int(page_s.nunique())
    report["page_groups"] = int(group_s.nunique())
    return PageAssignment(page=page_s, page_group=group_s, report=report)
