"""A synthetic Merchandise-Store-like website whose true visitor model is known exactly.

Real analytics data never says what visitors really do next, so no one can tell how good a
learned next-page model or a recommendation policy is. This store can: it generates sessions
from a visitor model we know, exposes that model (exact next-page distributions, the
Bayes-optimal log-loss, every parameter a ground-truth environment needs) and samples raw hits
in the canonical schema (:mod:`clickstream.schema`), so the rest of the pipeline treats it like
any analytics export.

**The site** is shaped like the Google Merchandise Store: ``/home``, a search page
(``/store-search``), six top categories (``/google+redesign/apparel``), their subcategories
(``/google+redesign/apparel/mens``), four brand pages (``/google+redesign/shop+by+brand/youtube``),
many product pages (``/google+redesign/apparel/mens/google+mens+tee+blue.axd``), the basket, the
sign-in and checkout funnel (``/basket.html`` → ``/signin.html`` → ``/yourinfo.html`` →
``/payment.html`` → ``/revieworder.html`` → ``/ordercompleted.html``) and store policy pages.
``n_pages`` (50 to 10,000) sets the size; everything beyond the fixed pages are products (small
sites also get fewer subcategories). Page groups follow ``configs/pages/merchandise_store.yaml``
(``home``, ``search``, ``category:<name>``, ``brands``, ``product``, ``basket``, ``sign_in``,
``checkout``, ``order_completed``, ``policies``), so preparing the data with that page
configuration reproduces :attr:`SyntheticStore.page_groups`.

**Links.** From each page a visitor moves to one of a few *kinds* of destination: ``EXIT``,
home, search, a top category, a related subcategory, a product of the page's listing (a
subcategory's or category's top products, a brand's products, search results, related products
of a product), a featured product, a brand page, the basket, the next funnel step, a policy
page. A table per intent and page type (:data:`KIND_WEIGHTS`) weights the kinds; inside a kind
destinations are weighted by popularity (Zipf over products). No page links to itself unless
``reload_prob > 0``.

**Visitors.**

* ``mode="intent"`` (default): each session has a latent intent z in ``browse`` (bounces a lot,
  navigates), ``research`` (long sessions, many products, search and FAQ) or ``buy`` (basket and
  checkout, rarely exits in the funnel), drawn from ``intent_prior``. Intent z has its own entry
  distribution ``entry[z]`` (P,) and transition matrix ``T[z]`` (P, P+1), last column ``EXIT``.
  History matters: the exact predictive distribution is the forward filter
  ``p(next | h) = Σ_z p(z | h) T[z][h_last, next]`` with
  ``p(z | h) ∝ prior_z · entry_z(h_0) · Π_t T[z][h_t, h_{t+1}]``.
* ``mode="items"``: an **item-level shop** (a product-view log): ``n_pages`` items named by
  bare numeric ids (``/104233``; no path hierarchy, no home page, no funnel), each in one of
  ``n_categories`` categories (default ``P // 250`` within [4, 20]; the content group, so a
  ``category`` column). Each session has a latent *interest*, one category, drawn in
  proportion to the category's popularity; it lands on an item of that category (85 %) or on
  a site-wide bestseller. From item i (category c) under interest z a visitor exits
  (:data:`ITEM_KIND_WEIGHTS`), moves to one of i's :data:`ITEM_RELATED` related items (same
  category c, fixed per item, weighted by popularity), to one of the
  :data:`ITEM_INTEREST_TOP` most popular items of her interest z (more often when she has
  wandered away from it), or to one of the :data:`ITEM_POPULAR` bestsellers. Item popularity
  is Zipf (``product_zipf``) within categories. History matters: a first-order model sees one
  item's row mixed over all interests, while the session so far tells which interest pulls;
  the latent interests are the store's intents (``intents`` = ``interest_01``, ...), so the
  exact predictive distribution, the Bayes-optimal log-loss and the intent oracle work as in
  ``intent`` mode. No transactions: revenue is 0 everywhere (rewards: engagement, page views);
  time on page is log-normal (median 30 s). Memory: the true model stores
  ``n_categories · P`` rows of about 50 entries (10,000 items, 20 categories: about 10 M
  entries, 0.2 GB).
* ``mode="markov"``: first-order. One matrix ``T[0]`` (P, P+1) and entry ``entry[0]``: the
  first-order marginal of the intent model (each row the intent matrices' rows weighted by how
  often each intent visits that page), so both modes describe the same site and a first-order
  model fitted to intent-mode sessions converges to this matrix. Its bounce rate is lower
  (docs/results.md, "Synthetic store: does it look like the real store?"): a first-order
  chain cannot tell a browser's landing page from a researcher's.

On the default store (200 pages) a first-order model fitted on intent-mode sessions scores
clearly worse than the Bayes-optimal log-loss (docs/results.md, "Synthetic store: how much
does history matter?"; ``tests/unit/test_synthetic.py`` asserts a margin of at least 0.05).

**Other visitors.** ``kind_weights`` and ``entry_weights`` (:class:`SyntheticConfig`) replace
rows of the two tables, so a study can shape how an intent behaves without new code. The
``synthetic_intent`` experiment makes researchers read the store policies before they buy
(policy → basket, then the funnel like buyers): the best recommendation on a product page then
depends on the intent (policies for a researcher, the basket for a buyer), and first-order
value iteration falls well short of the intent oracle, which it nearly matches on the default
store (docs/results.md, "Recommenders in the ``intent`` store").

**Recommendations** change the next-page distribution by the multinomial boost of DESIGN.md,
``p'(j) ∝ p(j) · exp(β · [j = a])`` with the true ``β = cfg.beta``; a recommended page that the
current page does not link to (``p(a) = 0``) changes nothing.

**Hits.** Sessions start at exponential gaps (``sessions_per_day`` on average) from
``start_date``; a ``returning_rate`` share reuse an earlier session's visitor id (visitors are
decorative: every session draws its intent anew). Time on page is log-normal per page type
(:data:`TIME_ON_PAGE`), and unknown (NaN) on a session's last page, as in Google Analytics. Every
view of ``/ordercompleted.html`` is a transaction whose revenue is log-normal (median
``order_value_median``, log-sd ``order_value_sigma``: mean about 200 USD as on the real store).
Sessions are cut at ``max_steps`` page views (default 200, beyond the longest session of the
default store: docs/results.md); a cut session looks like one that exits there.

Arrays (P pages, Z intents; Z = 1 in ``markov`` mode) on :class:`SyntheticStore`:
``prior`` (Z,), ``entry`` (Z, P), the transitions in compressed sparse rows (``indptr``
(Z·P+1,), ``indices`` (nnz,) destination page or ``P`` for EXIT, ``probs`` (nnz,)) with
:attr:`SyntheticStore.transitions` giving the dense (Z, P, P+1) array, ``time_mu`` / ``time_sigma``
(P,) log-normal time-on-page parameters and ``expected_revenue`` (P,) (mean revenue of a view).

Example:
    >>> store = build_store(SyntheticConfig(n_pages=200, mode="intent"))   # doctest: +SKIP
    >>> raw = store.sample_sessions(50_000, seed=1)                          # LoadResult
    >>> store.next_page_distribution(["/home", "/basket.html"])             # (P+1,)
    >>> store.predictive_log_loss(raw.hits)                                 # Bayes-optimal

Run ``python -m clickstream.synthetic`` for the realism comparison with the GA sample day.

The package, one module a job: :mod:`.config` (:class:`SyntheticConfig` and the behaviour
tables), :mod:`.site` (generating the site and its tables: :func:`build_store`), :mod:`.truth`
(the true visitor model: :class:`SyntheticStore`, :func:`apply_recommendation`),
:mod:`.sampling` (sessions and raw hits), :mod:`.store` (the store's files) and :mod:`.realism`
(the comparison with the GA sample day). Everything public is importable from here; this module
also holds :func:`load`, the loader interface of ``configs/data/synthetic.yaml``.
"""

from __future__ import annotations

import os
from typing import Any

from clickstream.schema import LoadResult
from clickstream.synthetic.config import (
    ENTRY_KINDS,
    ENTRY_WEIGHTS,
    FUNNEL,
    INTENTS,
    KIND_WEIGHTS,
    KINDS,
    MAX_PAGES,
    MIN_PAGES,
    MODES,
    PAGE_TYPES,
    SyntheticConfig,
)
from clickstream.synthetic.realism import ga_sample_stats, main, realism_table, session_stats
from clickstream.synthetic.sampling import SimulatedSessions
from clickstream.synthetic.site import (
    BRANDS,
    CATEGORIES,
    COLORS,
    FEATURED_SIZE,
    ITEM_ENTRY_INTEREST,
    ITEM_INTEREST_TOP,
    ITEM_KIND_WEIGHTS,
    ITEM_POPULAR,
    ITEM_RELATED,
    ITEM_TIME_ON_PAGE,
    LIST_SIZE,
    MODIFIERS,
    POLICIES,
    PRODUCT_NOUNS,
    RELATED_SIZE,
    SEARCH_SIZE,
    TIME_ON_PAGE,
    build_store,
)
from clickstream.synthetic.store import FORMAT_VERSION
from clickstream.synthetic.truth import SyntheticStore, apply_recommendation

__all__ = [
    "BRANDS",
    "CATEGORIES",
    "COLORS",
    "ENTRY_KINDS",
    "ENTRY_WEIGHTS",
    "FEATURED_SIZE",
    "FORMAT_VERSION",
    "FUNNEL",
    "INTENTS",
    "ITEM_ENTRY_INTEREST",
    "ITEM_INTEREST_TOP",
    "ITEM_KIND_WEIGHTS",
    "ITEM_POPULAR",
    "ITEM_RELATED",
    "ITEM_TIME_ON_PAGE",
    "KINDS",
    "KIND_WEIGHTS",
    "LIST_SIZE",
    "MAX_PAGES",
    "MIN_PAGES",
    "MODES",
    "MODIFIERS",
    "PAGE_TYPES",
    "POLICIES",
    "PRODUCT_NOUNS",
    "RELATED_SIZE",
    "SEARCH_SIZE",
    "TIME_ON_PAGE",
    "SimulatedSessions",
    "SyntheticConfig",
    "SyntheticStore",
    "apply_recommendation",
    "build_store",
    "ga_sample_stats",
    "load",
    "main",
    "realism_table",
    "session_stats",
]


# ---- the loader interface -------------------------------------------------------------------


def load(path: str | os.PathLike[str] | None = None, **options: Any) -> LoadResult:
    """Loader interface of the data configs: build the store and sample its sessions.

    Args:
        path: Unused (the synthetic store has no input file); accepted so every loader is
            called the same way, ``load(path, **options)``.
        **options: :class:`SyntheticConfig` fields (``n_pages``, ``mode``, ``n_sessions``,
            ``seed``, ...); ``show_progress`` is accepted and ignored (generation takes
            seconds).

    Returns:
        ``cfg.n_sessions`` sessions sampled with ``cfg.sample_seed`` (default ``seed + 1``);
        ``info["store"]`` holds the :class:`SyntheticStore` (save it with
        ``info["store"].save(out_dir / "true_model")``) and ``info["session_intents"]`` the
        true intent of each session.
    """
    options.pop("show_progress", None)
    cfg = SyntheticConfig.from_dict(options)
    store = build_store(cfg)
    seed = cfg.seed + 1 if cfg.sample_seed is None else cfg.sample_seed
    return store.sample_sessions(cfg.n_sessions, seed)
