"""Page identity, normalisation and grouping.

Every distinct raw page is processed once (pages repeat millions of times in big exports), and
the result is mapped back to the hits.

Every raw value is first put in Unicode normal form C (NFC) and trimmed, so ``café`` written
with a combining accent (NFD, as macOS file systems and some exports write it) and with the
precomposed letter are one page.

* **Identity** (``identity``): the normalised path (``path``, default), the page title
  (``title``; the study used ``hits.page.pageTitle`` as its states) or the value as exported
  (``raw``: item ids, category names; nothing but NFC and trimming).
* **Normalisation** of a path or URL: strip scheme, host, query string (except parameters named
  in ``keep_query_params``), fragment and session tokens carried as path parameters
  (``;jsessionid=...``, ``;phpsessid=...``: one per visit, they would make every visit's pages
  new pages); lowercase; collapse repeated slashes; drop a trailing
  slash; replace id-like segments (numbers, long hex, UUIDs) by ``:id`` (``/product/123`` and
  ``/product/456`` are one template), except where the id is the whole page (``12345`` or
  ``/12345``: an item log's item id; collapsing it would merge every page); then the extra
  ordered regex rules of the config.
* **Never silently collapse.** When the identity rules leave fewer distinct pages than
  ``min_page_ratio`` (5 %) of the distinct raw values, or a single page from 10 or more, the data
  would train as a different, smaller site: :func:`assign_pages` refuses, naming the column,
  showing examples and the keys that keep the values (``data.pages.identity=raw``,
  ``data.pages.collapse_ids=false``, a rewrite rule); ``min_page_ratio=0`` accepts the merge.
  Folding (below) is checked the same way.
* **Grouping** (the study worked on page clusters): the first matching regex rule names the group
  (``\\1`` in a group name takes the rule's first capture group); pages matched by no rule take
  their analytics content group (or the category column a CSV maps) where the export has one;
  otherwise the path's first ``fallback_level`` segments. On an **item-level site** (pages with
  no path hierarchy, e.g. thousands of product ids) that last step gives one group per page;
  with ``grouping=auto`` (default), when it would give more than ``max_groups`` groups and at
  least one for every two of those pages, those pages are grouped instead by co-occurrence
  clusters (pages viewed close together in the train split's sessions,
  :mod:`clickstream.grouping`), or, when too few of them are ever viewed next to another page,
  by traffic band (rank decades). ``grouping=cooccurrence`` or ``traffic`` forces one of them
  for the pages no rule or content group places; ``grouping=rules`` never regroups.
* **Folding**: groups with fewer than ``fold_groups_below`` page views fold into ``other``;
  pages with fewer than ``fold_pages_below`` page views fold into one page ``other:<group>``
  per group (rare product pages stop bloating the state space, their group stays).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import pandas as pd

from clickstream import checks
from clickstream.errors import ConfigError, DataError, from_options
from clickstream.grouping import cooccurrence_groups, traffic_bands
from clickstream.schema import OTHER_GROUP

IDENTITIES = ("path", "title", "raw")
GROUPINGS = ("auto", "rules", "cooccurrence", "traffic")

MIN_VALUES_FOR_ONE_PAGE = 10
"""A single page made of this many distinct raw values is refused whatever the ratio (a few
spellings of one page, ``/a`` and ``/a/``, are a site of one page)."""

MIN_LINKED_SHARE = 0.5
"""``grouping=auto`` clusters by co-occurrence only when at least this share of the pages to
regroup is viewed next to another page in some session; otherwise it uses traffic bands."""

ID_SEGMENT = re.compile(
    r"^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?=[0-9a-f]*\d)[0-9a-f]{12,})$"
)
"""Segments that identify one record rather than a page: numbers, UUIDs, hex ids of 12+ chars."""

SESSION_TOKEN = re.compile(r";(?:jsessionid|phpsessid)=[^/;]*", re.IGNORECASE)
"""A server's session token as a path parameter (``/cart;jsessionid=0A1B2C``)."""


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
            raise ConfigError(f"invalid regex {self.pattern!r} in page rules: {exc}") from None


@dataclass
class PageConfig:
    """How raw pages become page identities and page groups (``configs/pages/*.yaml``).

    Attributes:
        identity: ``path`` (normalised path), ``title`` (page title; pages without a title
            fall back to their normalised path, counted in the report) or ``raw`` (the value
            as exported, only NFC-normalised and trimmed: item ids, names).
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
        grouping: ``auto``, ``rules``, ``cooccurrence`` or ``traffic``: how pages that no rule
            or content group places are grouped (module docstring).
        n_groups: Co-occurrence clusters (default ``sqrt(P) / 3`` within [4, 32]).
        max_groups: ``grouping=auto`` regroups the path fallback's groups above this many.
        min_page_ratio: Refuse when identity rules or folding leave fewer distinct pages than
            this share of the distinct raw values (0 accepts any merge).
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
    grouping: str = "auto"
    n_groups: int | None = None
    max_groups: int = 100
    min_page_ratio: float = 0.05

    def __post_init__(self) -> None:
        # named by their override path (data.pages.<key>), the way a user sets them
        if self.identity not in IDENTITIES:
            raise ConfigError(
                f"data.pages.identity must be one of {list(IDENTITIES)}, got {self.identity!r}"
            )
        if self.grouping not in GROUPINGS:
            raise ConfigError(
                f"data.pages.grouping must be one of {list(GROUPINGS)}, got {self.grouping!r}"
            )
        if self.n_groups is not None:
            self.n_groups = checks.whole("data.pages.n_groups", self.n_groups, 2, note="or null")
        self.max_groups = checks.whole("data.pages.max_groups", self.max_groups, 1)
        self.min_page_ratio = checks.unit_interval("data.pages.min_page_ratio", self.min_page_ratio)
        self.fallback_level = checks.whole("data.pages.fallback_level", self.fallback_level, 1)
        for key in ("fold_pages_below", "fold_groups_below"):
            setattr(self, key, checks.whole(f"data.pages.{key}", getattr(self, key), 0))
        for key in ("normalise", "lowercase", "collapse_ids", "use_content_groups"):
            setattr(self, key, checks.flag(f"data.pages.{key}", getattr(self, key)))
        self.rewrite_rules = tuple(_rule(r, "replace") for r in self.rewrite_rules)
        self.group_rules = tuple(_rule(r, "group") for r in self.group_rules)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> PageConfig:
        """Build from a plain mapping (a resolved Hydra node); unknown keys raise."""
        return from_options(cls, cfg, "data.pages")


def _rule(r: Rule | Mapping[str, Any], kind: str) -> Rule:
    rule = r if isinstance(r, Rule) else Rule(**dict(r))
    if getattr(rule, kind) is None:
        raise ConfigError(f"page rule {rule.pattern!r} needs a '{kind}'")
    rule.compiled()
    return rule


def normalise_path(raw: str, cfg: PageConfig) -> str:
    """Normalise one page path or URL (see the module docstring)."""
    text = unicodedata.normalize("NFC", raw).strip()
    if not cfg.normalise or cfg.identity == "raw":
        return text
    if "://" in text or _looks_like_host(text):
        path, query = _url_path_and_query(text if "://" in text else "//" + text)
    else:  # a path: a leading "//" is a doubled slash, not a host
        path, _, query = text.split("#", 1)[0].partition("?")
    path = SESSION_TOKEN.sub("", path).strip() or "/"
    if cfg.lowercase:
        path = path.lower()
    path = re.sub(r"/{2,}", "/", path)
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1:
        # whitespace may hide before a trailing slash ("/a /"): trim both until stable, and
        # before ids are collapsed, so "/123 /" and "/123" name the same page
        path = path.rstrip("/ \t\r\n").rstrip() or "/"
    segments = path.split("/")
    # an id that is the whole page (an item log's "12345") names the page: keep it
    if cfg.collapse_ids and len(segments) > 2:
        path = "/".join(":id" if ID_SEGMENT.match(seg) else seg for seg in segments)
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
    """Result of :func:`assign_pages`: columns to add to the hits and a report.

    Attributes:
        page: Page per hit, aligned with the hits' index.
        page_group: Page group per hit.
        report: Counts for the record (raw values, pages, groups, folding, the grouping used).
        notices: What was decided for the user (e.g. an item-level regrouping), one line each.
    """

    page: pd.Series
    page_group: pd.Series
    report: dict[str, Any]
    notices: list[str] = dataclasses.field(default_factory=list)


def assign_pages(
    hits: pd.DataFrame,
    cfg: PageConfig,
    *,
    fit_rows: np.ndarray | None = None,
    source_column: str | None = None,
) -> PageAssignment:
    """Normalise and group the pages of a raw hits table.

    Args:
        hits: Raw hits (``page_raw``, ``page_title``, ``content_group``; ``session_id`` for
            the co-occurrence grouping), shape ``(N, ...)``, sessions contiguous.
        cfg: Page configuration.
        fit_rows: Rows whose sessions the co-occurrence and traffic groupings count, shape
            ``(N,)`` bool (the train split; default all rows).
        source_column: The export's column the raw pages came from, named in errors (default
            ``page_raw``, or ``page_title`` for the title identity).

    Returns:
        ``page`` and ``page_group`` aligned with ``hits.index``, counts for the record (pages
        before and after, pages and groups folded, titles missing, the grouping) and notices.

    Raises:
        ClickstreamError: The identity rules or folding merged most distinct raw values (see
            the module docstring), naming the column, examples and the keys that fix it.
    """
    raw_text = hits["page_raw"].astype("str")
    raw_codes, raw_uniques = pd.factorize(raw_text, sort=False)
    clean = np.array(
        [unicodedata.normalize("NFC", str(p)).strip() for p in raw_uniques], dtype=object
    )
    report: dict[str, Any] = {"raw_pages": len(set(clean))}
    notices: list[str] = []
    normalised = np.array([normalise_path(str(p), cfg) for p in clean], dtype=object)
    page = normalised[raw_codes]
    source = clean[raw_codes]
    column = source_column or "page_raw"
    if cfg.identity == "title":
        title = (
            hits["page_title"]
            .astype("str")
            .map(lambda t: unicodedata.normalize("NFC", t) if isinstance(t, str) else t)
            .str.strip()
            .str.replace(r"\s+", " ", regex=True)
        )
        missing = hits["page_title"].isna().to_numpy() | (title.fillna("").to_numpy() == "")
        report["page_views_without_title"] = int(missing.sum())
        page = np.where(missing, page, title.to_numpy(dtype=object))
        source = np.where(missing, source, title.to_numpy(dtype=object))
        column = source_column or "page_title"
    _check_not_collapsed(source, page, cfg, column, "identity")

    # Group each distinct (page, content group) pair once; a page's group is the group of its
    # most frequent pair, so that one page never lands in two groups.
    content = hits["content_group"].astype(object).where(hits["content_group"].notna(), None)
    pairs = pd.DataFrame({"page": page, "content": content.to_numpy()})
    counts = pairs.value_counts(dropna=False, sort=True).reset_index(name="n")
    counts = counts.drop_duplicates("page", keep="first")
    group_by_page: dict[str, str] = {}
    by_path: list[str] = []  # pages that only the path fallback places
    for p, c in zip(counts["page"], counts["content"], strict=True):
        group, how = _group_and_how(p, None if pd.isna(c) else c, cfg)
        group_by_page[p] = group
        if how == "path":
            by_path.append(p)
    page_s = pd.Series(page, index=hits.index, dtype="str")
    report["pages"] = int(page_s.nunique())
    report["grouping"] = _regroup_items(
        hits, page_s, by_path, group_by_page, cfg, fit_rows, notices
    )
    group_s = page_s.map(group_by_page).astype("str")

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
        _check_not_collapsed(source, page_s.to_numpy(dtype=object), cfg, column, "folding")
    report["pages_after_folding"] = int(page_s.nunique())
    report["page_groups"] = int(group_s.nunique())
    return PageAssignment(page=page_s, page_group=group_s, report=report, notices=notices)


def _group_and_how(page: str, content_group: str | None, cfg: PageConfig) -> tuple[str, str]:
    """:func:`group_of` and what placed the page: ``rule``, ``content`` or ``path``."""
    for rule in cfg.group_rules:
        m = rule.compiled().search(page)
        if m:
            return m.expand(rule.group or ""), "rule"
    if cfg.use_content_groups and content_group is not None and str(content_group).strip():
        return str(content_group).strip().lower(), "content"
    return group_of(page, None, cfg), "path"


def _check_not_collapsed(
    source: np.ndarray, page: np.ndarray, cfg: PageConfig, column: str, step: str
) -> None:
    """Refuse when ``step`` (``identity`` or ``folding``) merged most distinct raw values."""
    if cfg.min_page_ratio <= 0:
        return
    table = pd.DataFrame({"raw": source, "page": page}).drop_duplicates()
    n_raw = int(table["raw"].nunique())
    n_pages = int(table["page"].nunique())
    single = n_pages == 1 and n_raw >= MIN_VALUES_FOR_ONE_PAGE
    if not single and n_pages >= cfg.min_page_ratio * n_raw:
        return
    # examples from the pages that absorbed the most raw values
    merged = table.groupby("page", sort=False)["raw"].agg(["count", "first"])
    merged = merged.sort_values("count", ascending=False, kind="stable")
    shown = table[table["page"].isin(merged.index[:3])].groupby("page", sort=False).head(3)
    examples = ", ".join(
        f"{r!r} -> {p!r}" for r, p in zip(shown["raw"], shown["page"], strict=True)
    )
    if step == "identity":
        how = {
            "path": "the path rules (ids collapse to ':id', query strings drop, rewrite rules)",
            "title": "the page titles",
            "raw": "trimming",
        }[cfg.identity]
        fix = (
            "keep every value as its own page with data.pages.identity=raw (or "
            "data.pages.collapse_ids=false, or a data.pages.rewrite_rules entry that keeps "
            "what tells pages apart)"
        )
    else:
        how = f"folding pages with fewer than {cfg.fold_pages_below} page views"
        fix = "lower data.pages.fold_pages_below (0 folds nothing)"
    raise DataError(
        f"page identity would merge {n_raw:,} distinct values into {n_pages:,} page(s) by "
        f"{how}, e.g. {examples}: the data would train as another, smaller site. To fix it, "
        f"{fix}; to accept the merge, set data.pages.min_page_ratio=0",
        column=column,
    )


def _regroup_items(
    hits: pd.DataFrame,
    page_s: pd.Series,
    by_path: list[str],
    group_by_page: dict[str, str],
    cfg: PageConfig,
    fit_rows: np.ndarray | None,
    notices: list[str],
) -> str:
    """Regroup the pages only the path fallback placed, for item-level sites (in place).

    Returns:
        The grouping used for them: ``rules`` (kept), ``cooccurrence`` or ``traffic``.
    """
    if cfg.grouping == "rules" or not by_path:
        return "rules"
    path_groups = {group_by_page[p] for p in by_path}
    item_level = len(path_groups) > cfg.max_groups and len(path_groups) >= 0.5 * len(by_path)
    if cfg.grouping == "auto" and not item_level:
        return "rules"
    codes = pd.Index(by_path).get_indexer(page_s)  # -1: placed by a rule or content group
    if fit_rows is not None:
        codes = np.where(np.asarray(fit_rows, dtype=bool), codes, -1)
    sessions = pd.factorize(hits["session_id"], sort=False)[0] if "session_id" in hits else None
    grouping = cfg.grouping
    if grouping in ("auto", "cooccurrence") and sessions is not None:
        names, record = cooccurrence_groups(codes, sessions, len(by_path), cfg.n_groups)
        linked_share = record["linked_pages"] / len(by_path)
        if grouping == "cooccurrence" or linked_share >= MIN_LINKED_SHARE:
            grouping = "cooccurrence"
        else:
            grouping = "traffic"
    else:
        grouping = "traffic"
        linked_share = 0.0
    if grouping == "traffic":
        names = traffic_bands(np.bincount(codes[codes >= 0], minlength=len(by_path)))
    for p, name in zip(by_path, names, strict=True):
        group_by_page[p] = str(name)
    n_groups = len(set(names))
    why = (
        f"{len(by_path):,} pages with no path hierarchy ({len(path_groups):,} path groups)"
        if cfg.grouping == "auto"
        else f"data.pages.grouping={cfg.grouping}"
    )
    how = (
        f"co-occurrence in sessions into {n_groups} clusters"
        if grouping == "cooccurrence"
        else f"traffic band (page-view rank decades) into {n_groups} groups"
        + (
            f", since only {linked_share:.0%} of them are ever viewed next to another page"
            if cfg.grouping == "auto"
            else ""
        )
    )
    notices.append(
        f"pages: {why}: grouped by {how}; choose with data.pages.grouping="
        "rules|cooccurrence|traffic, or map a category column (data.columns=category=<column>)"
    )
    return grouping
