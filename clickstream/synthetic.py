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
  (about 34 % against 48 %): a first-order chain cannot tell a browser's landing page from a
  researcher's.

On the default store (200 pages) the Bayes-optimal log-loss of intent-mode sessions is about
2.47 nats per step; a first-order model fitted on 200,000 of them scores about 2.55 on the same
test sessions (``tests/unit/test_synthetic.py`` asserts a margin of at least 0.05).

**Other visitors.** ``kind_weights`` and ``entry_weights`` (:class:`SyntheticConfig`) replace
rows of the two tables, so a study can shape how an intent behaves without new code. The
``synthetic_intent`` experiment makes researchers read the store policies before they buy
(policy → basket, then the funnel like buyers): the best recommendation on a product page then
depends on the intent (policies for a researcher, the basket for a buyer), and first-order
value iteration reaches about 84 % of the intent oracle instead of 98 % on the default store.

**Recommendations** change the next-page distribution by the multinomial boost of DESIGN.md,
``p'(j) ∝ p(j) · exp(β · [j = a])`` with the true ``β = cfg.beta``; a recommended page that the
current page does not link to (``p(a) = 0``) changes nothing.

**Hits.** Sessions start at exponential gaps (``sessions_per_day`` on average) from
``start_date``; a ``returning_rate`` share reuse an earlier session's visitor id (visitors are
decorative: every session draws its intent anew). Time on page is log-normal per page type
(:data:`TIME_ON_PAGE`), and unknown (NaN) on a session's last page, as in Google Analytics. Every
view of ``/ordercompleted.html`` is a transaction whose revenue is log-normal (median
``order_value_median``, log-sd ``order_value_sigma``: mean about 200 USD as on the real store).
Sessions are cut at ``max_steps`` page views (default 200; on the default store fewer than one
in a million sessions get there); a cut session looks like one that exits there.

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
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clickstream.errors import (
    ConfigError,
    DataError,
    RunFolderError,
    from_options,
)
from clickstream.io import atomic_file
from clickstream.schema import EXIT, LoadResult, coerce_raw_hits, session_boundaries

FORMAT_VERSION = 1
MODES = ("intent", "markov", "items")
INTENTS = ("browse", "research", "buy")

PAGE_TYPES = (
    "home",
    "search",
    "category",
    "subcategory",
    "brand",
    "product",
    "basket",
    "signin",
    "yourinfo",
    "payment",
    "revieworder",
    "ordercompleted",
    "policy",
)
"""Page types, in the order of :data:`SyntheticStore.page_type_ids`."""

FUNNEL = ("basket", "signin", "yourinfo", "payment", "revieworder", "ordercompleted")
"""The checkout funnel in order; ``next`` links of each step go to the following one."""

KINDS = (
    "exit",  # end the session
    "home",
    "search",
    "category",  # a top category, by popularity
    "sub",  # category → its subcategories; subcategory → siblings; product → its subcategory
    "list",  # the page's product listing (see module docstring)
    "featured",  # the site's top products (home page carousel, banners)
    "brand",  # a brand page
    "basket",
    "next",  # the next funnel step
    "policy",  # a store policy / FAQ page
)

# Kind weights per intent and page type; rows need not sum to 1 (they are normalised over the
# kinds a page has). Tuned so that sessions look like the GA sample day (4.3 page views per
# session, ~49 % bounces, 1.7 % conversion): see `python -m clickstream.synthetic`.
KIND_WEIGHTS: dict[str, dict[str, dict[str, float]]] = {
    "browse": {
        "home": {"exit": 0.72, "category": 0.18, "brand": 0.07, "featured": 0.09, "search": 0.02,
                 "policy": 0.01, "basket": 0.01},
        "search": {"exit": 0.55, "list": 0.40, "home": 0.05, "category": 0.08, "search": 0.02},
        "category": {"exit": 0.62, "sub": 0.18, "list": 0.15, "category": 0.08, "home": 0.05,
                     "brand": 0.02},
        "subcategory": {"exit": 0.62, "list": 0.25, "sub": 0.10, "category": 0.06, "home": 0.05,
                        "brand": 0.02},
        "brand": {"exit": 0.70, "list": 0.15, "brand": 0.08, "home": 0.06, "category": 0.06},
        "product": {"exit": 0.66, "list": 0.14, "sub": 0.10, "category": 0.06, "home": 0.05,
                    "featured": 0.04, "basket": 0.02, "brand": 0.01},
        "basket": {"exit": 0.60, "home": 0.15, "featured": 0.10, "category": 0.10, "next": 0.05},
        "signin": {"exit": 0.60, "home": 0.20, "basket": 0.15, "next": 0.05},
        "yourinfo": {"exit": 0.60, "basket": 0.20, "home": 0.10, "next": 0.10},
        "payment": {"exit": 0.60, "basket": 0.15, "home": 0.10, "next": 0.15},
        "revieworder": {"exit": 0.50, "next": 0.30, "basket": 0.10, "home": 0.10},
        "ordercompleted": {"exit": 0.70, "home": 0.30},
        "policy": {"exit": 0.65, "policy": 0.15, "home": 0.20, "category": 0.10},
    },
    "research": {
        "home": {"exit": 0.07, "category": 0.25, "featured": 0.20, "search": 0.20, "brand": 0.10,
                 "policy": 0.08, "basket": 0.02},
        "search": {"exit": 0.07, "list": 0.65, "search": 0.12, "home": 0.05, "category": 0.08},
        "category": {"exit": 0.07, "sub": 0.30, "list": 0.40, "category": 0.10, "home": 0.05,
                     "search": 0.05},
        "subcategory": {"exit": 0.07, "list": 0.55, "sub": 0.15, "category": 0.08,
                        "search": 0.07, "home": 0.05},
        "brand": {"exit": 0.08, "list": 0.55, "brand": 0.15, "category": 0.08, "home": 0.05,
                  "search": 0.05},
        "product": {"exit": 0.09, "list": 0.45, "sub": 0.15, "search": 0.08, "category": 0.06,
                    "featured": 0.05, "basket": 0.03, "policy": 0.03, "home": 0.03},
        "basket": {"exit": 0.20, "featured": 0.25, "category": 0.20, "home": 0.15, "search": 0.10,
                   "next": 0.10},
        "signin": {"exit": 0.30, "basket": 0.25, "home": 0.25, "next": 0.20},
        "yourinfo": {"exit": 0.30, "next": 0.30, "basket": 0.30, "home": 0.10},
        "payment": {"exit": 0.30, "next": 0.30, "basket": 0.30, "home": 0.10},
        "revieworder": {"exit": 0.30, "next": 0.40, "basket": 0.20, "home": 0.10},
        "ordercompleted": {"exit": 0.60, "home": 0.40},
        "policy": {"exit": 0.12, "policy": 0.35, "home": 0.20, "category": 0.15, "search": 0.15},
    },
    "buy": {
        "home": {"exit": 0.05, "category": 0.20, "featured": 0.25, "search": 0.15, "basket": 0.30,
                 "brand": 0.05},
        "search": {"exit": 0.05, "list": 0.80, "search": 0.05, "home": 0.05, "basket": 0.05},
        "category": {"exit": 0.05, "sub": 0.30, "list": 0.45, "basket": 0.10, "home": 0.05,
                     "category": 0.05},
        "subcategory": {"exit": 0.05, "list": 0.65, "basket": 0.12, "sub": 0.10, "home": 0.04,
                        "category": 0.04},
        "brand": {"exit": 0.06, "list": 0.65, "basket": 0.12, "home": 0.07, "brand": 0.05,
                  "category": 0.05},
        "product": {"exit": 0.06, "basket": 0.40, "list": 0.25, "sub": 0.10, "featured": 0.06,
                    "search": 0.05, "home": 0.04, "category": 0.04},
        "basket": {"exit": 0.12, "next": 0.50, "featured": 0.12, "home": 0.10, "category": 0.08,
                   "search": 0.04},
        "signin": {"exit": 0.10, "next": 0.65, "basket": 0.15, "home": 0.10},
        "yourinfo": {"exit": 0.06, "next": 0.78, "basket": 0.10, "home": 0.06},
        "payment": {"exit": 0.06, "next": 0.82, "basket": 0.08, "home": 0.04},
        "revieworder": {"exit": 0.04, "next": 0.88, "basket": 0.05, "home": 0.03},
        "ordercompleted": {"exit": 0.75, "home": 0.25},
        "policy": {"exit": 0.10, "home": 0.35, "category": 0.25, "search": 0.15, "policy": 0.15},
    },
}  # fmt: skip

ENTRY_KINDS = ("home", "category", "subcategory", "brand", "product", "search", "policy", "basket")

# Where sessions of each intent land (landing page kinds; products and categories by popularity).
ENTRY_WEIGHTS: dict[str, dict[str, float]] = {
    "browse": {"home": 0.38, "category": 0.07, "subcategory": 0.05, "brand": 0.25,
               "product": 0.20, "search": 0.02, "policy": 0.03},
    "research": {"home": 0.35, "category": 0.08, "subcategory": 0.10, "brand": 0.07,
                 "product": 0.25, "search": 0.10, "policy": 0.05},
    "buy": {"home": 0.45, "category": 0.05, "subcategory": 0.05, "brand": 0.05, "product": 0.25,
            "search": 0.05, "basket": 0.10},
}  # fmt: skip

TIME_ON_PAGE: dict[str, tuple[float, float]] = {
    "home": (10.0, 1.1),
    "search": (12.0, 1.0),
    "category": (15.0, 1.1),
    "subcategory": (18.0, 1.1),
    "brand": (20.0, 1.2),
    "product": (30.0, 1.2),
    "basket": (20.0, 1.0),
    "signin": (25.0, 0.9),
    "yourinfo": (70.0, 0.7),
    "payment": (50.0, 0.7),
    "revieworder": (30.0, 0.8),
    "ordercompleted": (40.0, 0.9),
    "policy": (45.0, 1.0),
}
"""Time on page per page type: (median seconds, log-sd) of a log-normal. The GA sample day has
a median of 17.5 s and a mean of 51 s over all page views."""

# The real store's catalogue (paths as in the GA360 sample), popularity weights in parentheses.
CATEGORIES: dict[str, tuple[str, float, tuple[str, ...]]] = {
    # slug: (content group, popularity, subcategories in order of popularity)
    "apparel": ("Apparel", 0.35, ("mens", "womens", "headgear", "kids")),
    "bags": (
        "Bags",
        0.16,
        ("backpacks", "water+bottles+and+tumblers", "shopping+and+totes", "more+bags"),
    ),
    "accessories": (
        "Accessories",
        0.12,
        ("fun", "stickers", "housewares", "pet", "sports++fitness"),
    ),
    "electronics": ("Electronics", 0.12, ("audio", "electronics+accessories", "flashlights")),
    "office": ("Office", 0.17, ("notebooks++journals", "writing+instruments", "office+other")),
    "drinkware": ("Drinkware", 0.08, ("mugs+and+cups", "bottles")),
}

BRANDS: dict[str, float] = {"youtube": 0.45, "google": 0.30, "android": 0.15, "waze": 0.10}

POLICIES: dict[str, tuple[str, float]] = {
    "frequently-asked-questions": ("Frequently Asked Questions", 0.60),
    "shipping-information": ("Shipping Information", 0.25),
    "return-policy": ("Return Policy", 0.15),
}

# Product name parts per subcategory: (audience word or "", nouns).
PRODUCT_NOUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mens": ("mens", ("tee", "hoodie", "pullover", "jacket", "polo", "long+sleeve+tee")),
    "womens": ("womens", ("tee", "hoodie", "pullover", "jacket", "tank+top", "vneck+tee")),
    "headgear": ("", ("cap", "beanie", "trucker+hat", "bucket+hat", "visor")),
    "kids": ("kids", ("tee", "hoodie", "onesie", "bib", "cap")),
    "backpacks": ("", ("backpack", "laptop+backpack", "rucksack", "daypack")),
    "water+bottles+and+tumblers": ("", ("water+bottle", "tumbler", "sport+bottle", "flask")),
    "shopping+and+totes": ("", ("tote", "shopper", "canvas+tote", "cooler+bag")),
    "more+bags": ("", ("duffel", "messenger+bag", "sling+bag", "pouch")),
    "fun": ("", ("yo-yo", "frisbee", "stress+ball", "puzzle", "kite")),
    "stickers": ("", ("sticker+sheet", "decal", "sticker+pack", "patch")),
    "housewares": ("", ("coaster", "blanket", "pillow", "umbrella")),
    "pet": ("", ("pet+bandana", "dog+frisbee", "pet+bowl", "leash")),
    "sports++fitness": ("", ("sports+towel", "yoga+mat", "jump+rope", "shaker")),
    "audio": ("", ("earbuds", "bluetooth+speaker", "headphones", "speaker+dock")),
    "electronics+accessories": ("", ("power+bank", "usb+cable", "phone+stand", "cam+cover")),
    "flashlights": ("", ("flashlight", "lantern", "headlamp", "keychain+light")),
    "notebooks++journals": ("", ("notebook", "journal", "spiral+notebook", "sticky+notes")),
    "writing+instruments": ("", ("pen", "pencil+set", "highlighter", "stylus+pen")),
    "office+other": ("", ("lanyard", "badge+holder", "mouse+pad", "desk+organizer")),
    "mugs+and+cups": ("", ("mug", "ceramic+mug", "travel+mug", "cup")),
    "bottles": ("", ("bottle", "glass+bottle", "insulated+bottle", "infuser+bottle")),
}
MODIFIERS = (
    "",
    "classic",
    "eco",
    "premium",
    "vintage",
    "sport",
    "lightweight",
    "limited",
    "heritage",
    "essential",
    "deluxe",
    "campus",
)
COLORS = (
    "blue",
    "black",
    "white",
    "red",
    "grey",
    "green",
    "navy",
    "charcoal",
    "yellow",
    "orange",
    "pink",
    "teal",
)

LIST_SIZE = 48  # products shown on a category / subcategory / brand page
SEARCH_SIZE = 100  # products a search can lead to
FEATURED_SIZE = 12  # products on the home page carousel
RELATED_SIZE = 24  # related products linked from a product page
MIN_PAGES, MAX_PAGES = 50, 10_000

ITEM_RELATED = 8
"""Related items (same category, fixed per item) an item page links to (``items`` mode)."""
ITEM_INTEREST_TOP = 30
"""Most popular items of the visitor's interest category she can go back to (``items`` mode)."""
ITEM_POPULAR = 10
"""Site-wide bestsellers every item page links to (``items`` mode)."""
ITEM_KIND_WEIGHTS: dict[str, dict[str, float]] = {
    # on an item of the interest category / of another category
    "in_interest": {"exit": 0.20, "related": 0.50, "interest": 0.22, "popular": 0.08},
    "away": {"exit": 0.22, "related": 0.25, "interest": 0.45, "popular": 0.08},
}
"""Where a visitor goes from an item page (``items`` mode), per whether the item is in her
interest category; rows are normalised over the kinds present."""
ITEM_ENTRY_INTEREST = 0.85
"""Share of sessions landing on an item of their interest category (else a bestseller)."""
ITEM_TIME_ON_PAGE = (30.0, 0.9)
"""Time on an item page: (median seconds, log-sd) of a log-normal."""


@dataclass
class SyntheticConfig:
    """Configuration of the synthetic store and of the sessions sampled from it.

    Attributes:
        n_pages: Number of pages P (50 to 10,000); pages beyond the fixed ones are products
            (``items`` mode: every page is an item).
        mode: ``intent`` (latent intent per session; history matters), ``markov``
            (first-order) or ``items`` (an item-level shop with a latent interest category
            per session; module docstring).
        n_sessions: Sessions :func:`load` samples.
        seed: Seed of the site (products, links, popularity) and, unless ``sample_seed`` is
            given, of the sessions :func:`load` samples.
        beta: True recommendation response β of the multinomial boost.
        intent_prior: Prior of the intents ``browse``, ``research``, ``buy`` (sums to 1).
        start_date: Start of the first simulated day (UTC).
        sessions_per_day: Mean sessions per simulated day (the GA sample day has 2,556).
        returning_rate: Share of sessions reusing an earlier session's visitor id.
        max_steps: Longest session, in page views; longer sessions are cut.
        reload_prob: Probability of viewing the same page again (a reload) on every page.
            0 keeps the true model unchanged when reloads are collapsed.
        product_zipf: Zipf exponent of product popularity.
        order_value_median: Median order value (USD) of a transaction.
        order_value_sigma: Log-sd of the order value.
        sample_seed: Seed of the sessions :func:`load` samples (default: ``seed + 1``).
        kind_weights: Visitor behaviour overrides, ``{intent: {page type: {kind: weight}}}``:
            each row given replaces that row of :data:`KIND_WEIGHTS` (kinds left out weigh 0;
            ``exit`` must stay > 0). The ``synthetic_intent`` experiment uses it for
            researchers who read the store policies before they buy.
        entry_weights: Landing overrides, ``{intent: {landing kind: weight}}``: each row given
            replaces that intent's row of :data:`ENTRY_WEIGHTS` (kinds of :data:`ENTRY_KINDS`).
        n_categories: ``items`` mode: item categories, one latent interest each (default
            ``n_pages // 250`` within [4, 20]).
    """

    n_pages: int = 200
    mode: str = "intent"
    n_sessions: int = 50_000
    seed: int = 0
    beta: float = 1.0
    intent_prior: tuple[float, ...] = (0.72, 0.23, 0.05)
    start_date: str = "2017-08-01"
    sessions_per_day: float = 2556.0
    returning_rate: float = 0.2
    max_steps: int = 200
    reload_prob: float = 0.0
    product_zipf: float = 1.0
    order_value_median: float = 55.0
    order_value_sigma: float = 1.6
    sample_seed: int | None = None
    kind_weights: dict[str, dict[str, dict[str, float]]] | None = None
    entry_weights: dict[str, dict[str, float]] | None = None
    n_categories: int | None = None

    def __post_init__(self) -> None:
        self.intent_prior = tuple(float(p) for p in self.intent_prior)
        self.kind_weights = _checked_kind_weights(self.kind_weights)
        self.entry_weights = _checked_entry_weights(self.entry_weights)
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (
                MIN_PAGES <= int(self.n_pages) <= MAX_PAGES,
                f"n_pages must be in [{MIN_PAGES}, {MAX_PAGES}], got {self.n_pages}",
            ),
            (int(self.n_sessions) >= 1, f"n_sessions must be >= 1, got {self.n_sessions}"),
            (np.isfinite(self.beta), f"beta must be finite, got {self.beta}"),
            (
                len(self.intent_prior) == len(INTENTS)
                and all(p >= 0 for p in self.intent_prior)
                and abs(sum(self.intent_prior) - 1) < 1e-9,
                f"intent_prior must be {len(INTENTS)} probabilities ({', '.join(INTENTS)}) "
                f"summing to 1, got {self.intent_prior}",
            ),
            (
                self.sessions_per_day > 0,
                f"sessions_per_day must be > 0, got {self.sessions_per_day}",
            ),
            (
                0 <= self.returning_rate < 1,
                f"returning_rate must be in [0, 1), got {self.returning_rate}",
            ),
            (int(self.max_steps) >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (0 <= self.reload_prob < 1, f"reload_prob must be in [0, 1), got {self.reload_prob}"),
            (self.product_zipf >= 0, f"product_zipf must be >= 0, got {self.product_zipf}"),
            (
                self.order_value_median > 0 and self.order_value_sigma >= 0,
                "order_value_median must be > 0 and order_value_sigma >= 0",
            ),
            (
                self.n_categories is None or 2 <= int(self.n_categories) <= int(self.n_pages) // 5,
                f"n_categories must be in [2, n_pages / 5], got {self.n_categories}",
            ),
            (
                self.mode == "items" or self.n_categories is None,
                "n_categories is an option of mode=items only",
            ),
            (
                self.mode != "items" or (self.kind_weights is None and self.entry_weights is None),
                "kind_weights and entry_weights shape the merchandise store (modes intent and "
                "markov); mode=items has its own: ITEM_KIND_WEIGHTS",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synthetic store: {message}")
        self.n_pages, self.n_sessions, self.max_steps = (
            int(self.n_pages),
            int(self.n_sessions),
            int(self.max_steps),
        )
        if self.n_categories is not None:
            self.n_categories = int(self.n_categories)
        pd.Timestamp(self.start_date)  # fails early on a bad date

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> SyntheticConfig:
        """Build from a plain mapping (a resolved Hydra node); unknown keys raise."""
        return from_options(cls, cfg, "synthetic store")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping of the fields."""
        out = dataclasses.asdict(self)
        out["intent_prior"] = list(self.intent_prior)
        return out

    def kind_table(self, intent: str) -> dict[str, dict[str, float]]:
        """Kind weights of ``intent`` per page type: :data:`KIND_WEIGHTS` with ``kind_weights``
        applied."""
        return {**KIND_WEIGHTS[intent], **(self.kind_weights or {}).get(intent, {})}

    def entry_table(self, intent: str) -> dict[str, float]:
        """Landing weights of ``intent``: :data:`ENTRY_WEIGHTS` with ``entry_weights`` applied."""
        return (self.entry_weights or {}).get(intent, ENTRY_WEIGHTS[intent])


def _weight_row(row: Any, known: Sequence[str], where: str) -> dict[str, float]:
    """One row of weights as ``{name: float}``; unknown names and bad weights raise."""
    if not isinstance(row, Mapping):
        raise ConfigError(f"synthetic store: {where} must be a mapping, got {row!r}")
    out: dict[str, float] = {}
    for name, weight in row.items():
        if name not in known:
            raise ConfigError(f"synthetic store: {where}: unknown {name!r}; known: {list(known)}")
        try:
            w = float(weight)
        except (TypeError, ValueError):
            w = float("nan")
        if not (np.isfinite(w) and w >= 0):
            raise ConfigError(
                f"synthetic store: {where}[{name}] must be a finite weight >= 0, got {weight!r}"
            )
        out[str(name)] = w
    if sum(out.values()) <= 0:
        raise ConfigError(f"synthetic store: {where} has no positive weight")
    return out


def _checked_kind_weights(value: Any) -> dict[str, dict[str, dict[str, float]]] | None:
    if value is None:
        return None
    table = _weight_table(value, "kind_weights")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for intent, rows in table.items():
        where = f"kind_weights[{intent}]"
        if not isinstance(rows, Mapping):
            raise ConfigError(f"synthetic store: {where} must be a mapping, got {rows!r}")
        out[intent] = {}
        for ptype, row in rows.items():
            if ptype not in PAGE_TYPES:
                raise ConfigError(
                    f"synthetic store: {where}: unknown page type {ptype!r}; "
                    f"known: {list(PAGE_TYPES)}"
                )
            out[intent][ptype] = _weight_row(row, KINDS, f"{where}[{ptype}]")
            if out[intent][ptype].get("exit", 0.0) <= 0:
                raise ConfigError(
                    f"synthetic store: {where}[{ptype}]: 'exit' must be > 0 "
                    "(visitors must be able to leave every page)"
                )
    return out


def _checked_entry_weights(value: Any) -> dict[str, dict[str, float]] | None:
    if value is None:
        return None
    table = _weight_table(value, "entry_weights")
    return {
        intent: _weight_row(row, ENTRY_KINDS, f"entry_weights[{intent}]")
        for intent, row in table.items()
    }


def _weight_table(value: Any, what: str) -> dict[str, Any]:
    """A mapping keyed by intent (a Hydra node becomes plain data); unknown intents raise."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping):
        raise ConfigError(f"synthetic store: {what} must be a mapping, got {value!r}")
    unknown = sorted(set(map(str, value)) - set(INTENTS))
    if unknown:
        raise ConfigError(
            f"synthetic store: {what}: unknown intent(s) {unknown}; known: {list(INTENTS)}"
        )
    return {str(k): v for k, v in value.items()}


@dataclass
class SimulatedSessions:
    """Sessions as page indices, before they become hits.

    Attributes:
        pages: Page index of every page view, sessions one after another, shape ``(N,)``.
        offsets: Start of each session in ``pages``, shape ``(S + 1,)`` (``offsets[-1] == N``).
        intents: Latent intent index of each session (0 in ``markov`` mode), shape ``(S,)``.
        truncated: Sessions cut at ``max_steps``, shape ``(S,)``.
    """

    pages: np.ndarray
    offsets: np.ndarray
    intents: np.ndarray
    truncated: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Page views per session, shape ``(S,)``."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def session(self, i: int) -> np.ndarray:
        """Page indices of session ``i``, shape ``(L_i,)``."""
        return self.pages[self.offsets[i] : self.offsets[i + 1]]

    def to_list(self) -> list[np.ndarray]:
        """Every session as its own page-index array."""
        return np.split(self.pages, self.offsets[1:-1])


@dataclass(eq=False)
class SyntheticStore:
    """A synthetic store: the site (pages, groups, types) and its true visitor model.

    Build with :func:`build_store`; all arrays are numpy, P = ``n_pages``, Z = number of
    intents (3 in ``intent`` mode, 1 in ``markov`` mode). ``EXIT`` is index P in every
    next-page distribution.

    Attributes:
        config: The configuration the store was built from.
        pages: Page paths, length P (index = page id of every array).
        page_titles: Page titles, length P.
        content_groups: GA-style content group per page (``None`` where GA has none).
        page_types: Page type per page (:data:`PAGE_TYPES`).
        page_groups: Page group per page (as ``configs/pages/merchandise_store.yaml`` names it).
        intents: Intent names, length Z (``("markov",)`` in ``markov`` mode).
        prior: Intent prior, shape ``(Z,)``.
        entry: Entry distribution per intent, shape ``(Z, P)``; rows sum to 1.
        indptr: CSR row pointers of the transitions, shape ``(Z * P + 1,)``; row ``z * P + i``
            is page i's next-page distribution under intent z.
        indices: CSR destinations (``P`` = EXIT), sorted within rows, shape ``(nnz,)``.
        probs: CSR probabilities (> 0), shape ``(nnz,)``; every row sums to 1.
        time_mu: Log-normal mean of time on page (log seconds), shape ``(P,)``.
        time_sigma: Log-normal sd of time on page, shape ``(P,)``.
        expected_revenue: Mean revenue of one view of each page (USD), shape ``(P,)``; non-zero
            on ``/ordercompleted.html`` only.
        beta: True recommendation response β.
    """

    config: SyntheticConfig
    pages: list[str]
    page_titles: list[str]
    content_groups: list[str | None]
    page_types: list[str]
    page_groups: list[str]
    intents: tuple[str, ...]
    prior: np.ndarray
    entry: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    probs: np.ndarray
    time_mu: np.ndarray
    time_sigma: np.ndarray
    expected_revenue: np.ndarray
    beta: float
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {p: i for i, p in enumerate(self.pages)}

    # ---- shape and lookup ---------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``intent`` or ``markov``."""
        return self.config.mode

    @property
    def n_pages(self) -> int:
        """P, the number of pages (EXIT excluded)."""
        return len(self.pages)

    @property
    def n_intents(self) -> int:
        """Z, the number of latent intents (1 in ``markov`` mode)."""
        return len(self.intents)

    @property
    def exit_index(self) -> int:
        """Index of ``EXIT`` in next-page distributions (= P)."""
        return self.n_pages

    @property
    def page_type_ids(self) -> np.ndarray:
        """Page type of each page as an index into :data:`PAGE_TYPES`, shape ``(P,)``."""
        return np.array([PAGE_TYPES.index(t) for t in self.page_types], dtype=np.int64)

    @property
    def order_page(self) -> int:
        """Index of ``/ordercompleted.html`` (``-1`` in ``items`` mode: no checkout)."""
        return self._index.get("/ordercompleted.html", -1)

    def page_index(self, page: int | str) -> int:
        """Index of a page given as its index or its path."""
        if isinstance(page, str):
            try:
                return self._index[page]
            except KeyError:
                raise DataError(f"page {page!r} is not a page of this store") from None
        i = int(page)
        if not 0 <= i < self.n_pages:
            raise DataError(f"page index {i} out of range [0, {self.n_pages})")
        return i

    @cached_property
    def transitions(self) -> np.ndarray:
        """Dense transition matrices, shape ``(Z, P, P + 1)``, last column EXIT.

        Costs ``Z · P · (P + 1) · 8`` bytes (1 MB at P = 200, 2.4 GB at P = 10,000).
        """
        z, p = self.n_intents, self.n_pages
        dense = np.zeros((z * p, p + 1))
        rows = np.repeat(np.arange(z * p), np.diff(self.indptr))
        dense[rows, self.indices] = self.probs
        return dense.reshape(z, p, p + 1)

    def transition_row(self, intent: int, page: int | str) -> np.ndarray:
        """Next-page distribution of ``page`` under intent ``intent``, shape ``(P + 1,)``."""
        r = int(intent) * self.n_pages + self.page_index(page)
        out = np.zeros(self.n_pages + 1)
        lo, hi = self.indptr[r], self.indptr[r + 1]
        out[self.indices[lo:hi]] = self.probs[lo:hi]
        return out

    def transition_prob(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """``T[z][src, dst]`` for every intent, vectorised.

        Args:
            src: Source pages, shape ``(N,)``.
            dst: Destinations (``P`` = EXIT), shape ``(N,)``.

        Returns:
            Probabilities, shape ``(N, Z)``.
        """
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        keys = self._flat_keys
        width = self.n_pages + 1
        q = (np.arange(self.n_intents)[None, :] * self.n_pages + src[:, None]) * width + dst[
            :, None
        ]
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where(keys[pos] == q, self.probs[pos], 0.0)

    @cached_property
    def _flat_keys(self) -> np.ndarray:
        rows = np.repeat(np.arange(self.n_intents * self.n_pages), np.diff(self.indptr))
        return rows * (self.n_pages + 1) + self.indices.astype(np.int64)

    @cached_property
    def _cum_keys(self) -> np.ndarray:
        """Row index + cumulative probability within the row, sorted, shape ``(nnz,)``.

        Sampling row r at uniform u is ``searchsorted(keys, r + u, "right")``: every row's keys
        lie in (r, r + 1] and the last one is exactly r + 1, so the draw never leaves its row.
        """
        return _cumulative_keys(self.indptr, self.probs)

    @cached_property
    def _entry_keys(self) -> np.ndarray:
        z, p = self.entry.shape
        return _cumulative_keys(np.arange(z + 1) * p, self.entry.ravel())

    # ---- the exact predictive distribution ----------------------------------------------

    def intent_posterior(self, history: Sequence[int | str]) -> np.ndarray:
        """``p(z | history)`` by forward filtering, shape ``(Z,)``.

        Raises:
            ClickstreamError: The history is empty or impossible under the true model.
        """
        h = np.array([self.page_index(p) for p in history], dtype=np.int64)
        if len(h) == 0:
            return self.prior.copy()
        with np.errstate(divide="ignore"):
            log_b = np.log(self.prior) + np.log(self.entry[:, h[0]])
            if len(h) > 1:
                log_b = log_b + np.log(self.transition_prob(h[:-1], h[1:])).sum(axis=0)
        if not np.isfinite(log_b).any():
            raise DataError(
                f"history {[self.pages[i] for i in h]} is impossible under the true model"
            )
        b = np.exp(log_b - log_b.max())
        return b / b.sum()

    def next_page_distribution(
        self,
        history: Sequence[int | str],
        recommendation: int | str | None = None,
        beta: float | None = None,
    ) -> np.ndarray:
        """Exact distribution of the next page (or EXIT) after ``history``, shape ``(P + 1,)``.

        ``p(next | h) = Σ_z p(z | h) T[z][h_last, next]``, then, if a page is recommended,
        the multinomial boost ``p'(j) ∝ p(j) · exp(β · [j = a])``.

        Args:
            history: Pages viewed so far (indices or paths), oldest first; not empty.
            recommendation: The recommended page (index or path), or ``None`` for the organic
                distribution.
            beta: Response strength; default the store's true ``beta``.
        """
        if len(history) == 0:
            raise DataError("history must hold at least one page view")
        post = self.intent_posterior(history)
        last = self.page_index(history[-1])
        rows = np.stack([self.transition_row(z, last) for z in range(self.n_intents)])
        p = post @ rows
        p /= p.sum()
        if recommendation is None:
            return p
        a = self.page_index(recommendation)
        return apply_recommendation(p, a, self.beta if beta is None else beta)

    def predictive_log_loss(
        self, sessions: pd.DataFrame | SimulatedSessions | Sequence[Sequence[int | str]]
    ) -> float:
        """Bayes-optimal log-loss: mean ``-ln p(next | history)`` per predicted step.

        A step is what follows each page view (the next page, or EXIT after the last one);
        entry pages are not predicted. This is the best any next-page predictor can do on
        these sessions (in expectation), the reference for learned models.

        Args:
            sessions: A hits table (rows contiguous per session in step order; pages are read
                from ``page_raw``, else ``page``), a :class:`SimulatedSessions`, or a sequence
                of sessions given as page indices or paths. Sessions must be unaltered samples
                (reloads not collapsed when ``reload_prob > 0``).

        Raises:
            ClickstreamError: A page is unknown, or a step is impossible under the true model.
        """
        flat, offsets = self._as_flat(sessions)
        total, steps = self._log_loss_sum(flat, offsets)
        return total / steps

    def _as_flat(
        self, sessions: pd.DataFrame | SimulatedSessions | Sequence[Sequence[int | str]]
    ) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(sessions, SimulatedSessions):
            return sessions.pages.astype(np.int64), sessions.offsets.astype(np.int64)
        if isinstance(sessions, pd.DataFrame):
            col = "page_raw" if "page_raw" in sessions.columns else "page"
            idx = pd.Index(self.pages).get_indexer(sessions[col].astype("str"))
            if (idx < 0).any():
                row = int(np.flatnonzero(idx < 0)[0])
                raise DataError(
                    f"page {sessions[col].iloc[row]!r} is not a page of this store",
                    row=row,
                    column=col,
                )
            starts = np.flatnonzero(session_boundaries(sessions))
            return idx.astype(np.int64), np.r_[starts, len(idx)].astype(np.int64)
        parts = [
            np.asarray(
                [self.page_index(p) for p in s] if len(s) and isinstance(s[0], str) else s,
                dtype=np.int64,
            )
            for s in sessions
        ]
        if any(len(p) == 0 for p in parts):
            raise DataError("a session holds no page views")
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if len(flat) and (flat.min() < 0 or flat.max() >= self.n_pages):
            raise DataError(f"page index out of range [0, {self.n_pages})")
        return flat, np.r_[0, np.cumsum(lengths)]

    def _log_loss_sum(self, flat: np.ndarray, offsets: np.ndarray) -> tuple[float, int]:
        """Sum of ``-ln p(next | h)`` over all steps, and the number of steps."""
        lengths = np.diff(offsets)
        if len(lengths) == 0:
            raise DataError("no sessions to score")
        # longest sessions first: the sessions still running at step t are a prefix
        order = np.argsort(-lengths, kind="stable")
        starts, lengths = offsets[:-1][order], lengths[order]
        with np.errstate(divide="ignore"):
            log_b = np.log(self.prior)[None, :] + np.log(self.entry[:, flat[starts]].T)
        log_b -= _logsumexp(log_b)[:, None]
        total = 0.0
        for t in range(int(lengths[0])):
            n = int(np.searchsorted(-lengths, -(t + 1), side="right"))  # sessions with L > t
            src = flat[starts[:n] + t]
            has_next = lengths[:n] > t + 1
            dst = np.full(n, self.exit_index, dtype=np.int64)
            dst[has_next] = flat[starts[:n][has_next] + t + 1]
            with np.errstate(divide="ignore"):
                joint = log_b[:n] + np.log(self.transition_prob(src, dst))
            lp = _logsumexp(joint)
            if not np.isfinite(lp).all():
                j = int(np.flatnonzero(~np.isfinite(lp))[0])
                to = EXIT if dst[j] == self.exit_index else self.pages[dst[j]]
                raise DataError(
                    f"session {int(order[j])} (0-based) takes a step impossible under the true "
                    f"model at step {t}: {self.pages[src[j]]} -> {to} (not sampled from this "
                    "store, or altered, e.g. reloads collapsed)"
                )
            total -= float(lp.sum())
            log_b[:n] = joint - lp[:, None]
        return total, int(lengths.sum())

    # ---- sampling -------------------------------------------------------------------------

    def simulate(self, n_sessions: int, seed: int) -> SimulatedSessions:
        """Sample ``n_sessions`` sessions as page indices (vectorised over sessions).

        All running sessions take one step at a time: a uniform draw per session is located in
        the cumulative probabilities of its row (inverse CDF by ``searchsorted``).
        """
        if n_sessions < 1:
            raise ConfigError(f"n_sessions must be >= 1, got {n_sessions}")
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        p = self.n_pages
        intents = np.searchsorted(
            np.cumsum(self.prior)[:-1], rng.random(n_sessions), side="right"
        ).astype(np.int64)
        e_pos = np.searchsorted(self._entry_keys, intents + rng.random(n_sessions), "right")
        cur = (e_pos - intents * p).astype(np.int64)
        alive = np.arange(n_sessions, dtype=np.int64)
        steps: list[tuple[np.ndarray, np.ndarray]] = [(alive, cur)]
        keys, indices = self._cum_keys, self.indices
        for _ in range(1, self.config.max_steps):
            rows = intents[alive] * p + cur
            nxt = indices[np.searchsorted(keys, rows + rng.random(len(alive)), "right")]
            go_on = nxt != p
            alive, cur = alive[go_on], nxt[go_on].astype(np.int64)
            if len(alive) == 0:
                break
            steps.append((alive, cur))
        lengths = np.zeros(n_sessions, dtype=np.int64)
        for a, _ in steps:
            lengths[a] += 1
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        flat = np.empty(int(offsets[-1]), dtype=np.int64)
        for t, (a, c) in enumerate(steps):
            flat[offsets[a] + t] = c
        truncated = np.zeros(n_sessions, dtype=bool)
        if len(steps) == self.config.max_steps:
            truncated[steps[-1][0]] = True
        return SimulatedSessions(flat, offsets, intents, truncated)

    def sample_sessions(self, n_sessions: int, seed: int, *, first_session: int = 1) -> LoadResult:
        """Sample sessions as raw hits (:data:`clickstream.schema.RAW_COLUMNS`).

        Same store and seed give byte-identical hits. Page paths come from :meth:`simulate`
        with the same seed, so ``simulate(n, seed)`` gives these sessions' page indices.

        Args:
            n_sessions: Number of sessions S.
            seed: Sampling seed.
            first_session: Number of the first session id (``syn-0000001`` by default).

        Returns:
            ``LoadResult(source="synthetic")``; ``info`` holds the store (``store``), the true
            intent of every session (``session_intents``: a DataFrame ``session_id``,
            ``intent``), and plain facts (mode, sizes, seeds, truncated sessions, intent
            counts).
        """
        cfg = self.config
        sim = self.simulate(n_sessions, seed)
        rng_arrival, rng_time, rng_revenue, rng_visitor = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)[1:]
        )
        lengths = sim.lengths
        n_views = len(sim.pages)
        session_of_view = np.repeat(np.arange(n_sessions), lengths)
        first = np.zeros(n_views, dtype=bool)
        first[sim.offsets[:-1]] = True
        last = np.zeros(n_views, dtype=bool)
        last[sim.offsets[1:] - 1] = True

        # session starts: exponential gaps in ms, so starts increase over simulated days
        gaps_ms = rng_arrival.exponential(86_400_000.0 / cfg.sessions_per_day, n_sessions)
        start_ms = np.cumsum(np.maximum(np.round(gaps_ms), 1).astype(np.int64))
        origin = pd.Timestamp(cfg.start_date, tz="UTC")

        # time on page in whole ms; the last page's time is unknown, as in GA
        z = rng_time.standard_normal(n_views)
        top_ms = np.round(
            np.exp(self.time_mu[sim.pages] + self.time_sigma[sim.pages] * z) * 1000.0
        ).astype(np.int64)
        top_ms[last] = 0
        csum = np.cumsum(top_ms)
        before = csum - top_ms  # time on site before this view, across sessions
        offset_ms = before - before[sim.offsets[:-1]][session_of_view]
        hit_ms = start_ms[session_of_view] + offset_ms
        time_on_page = np.where(last, np.nan, top_ms / 1000.0)

        is_tx = self.expected_revenue[sim.pages] > 0  # the order page (none in items mode)
        revenue = np.zeros(n_views)
        n_tx = int(is_tx.sum())
        mu, sigma = np.log(cfg.order_value_median), cfg.order_value_sigma
        revenue[is_tx] = np.maximum(
            np.round(np.exp(mu + sigma * rng_revenue.standard_normal(n_tx)), 2), 0.99
        )

        visitor = _visitor_numbers(n_sessions, cfg.returning_rate, rng_visitor)
        width = max(7, len(str(first_session + n_sessions)))
        sid = np.array(
            [f"syn-{i:0{width}d}" for i in range(first_session, first_session + n_sessions)],
            dtype=object,
        )
        vid = np.array([f"synv-{first_session + v:0{width}d}" for v in visitor], dtype=object)
        pages = np.array(self.pages, dtype=object)
        titles = np.array(self.page_titles, dtype=object)
        content = np.array(self.content_groups, dtype=object)
        hits = pd.DataFrame(
            {
                "session_id": pd.Series(sid[session_of_view], dtype="str"),
                "visitor_id": pd.Series(vid[session_of_view], dtype="str"),
                "session_start": origin + pd.to_timedelta(start_ms[session_of_view], unit="ms"),
                "step": np.arange(n_views) - sim.offsets[:-1][session_of_view],
                "page_raw": pd.Series(pages[sim.pages], dtype="str"),
                "page_title": pd.Series(titles[sim.pages], dtype="str"),
                "content_group": pd.Series(content[sim.pages], dtype="str"),
                "hit_time": origin + pd.to_timedelta(hit_ms, unit="ms"),
                "time_on_page_s": time_on_page,
                "revenue": revenue,
                "is_transaction": is_tx,
            }
        )
        hits = coerce_raw_hits(hits)
        counts = np.bincount(sim.intents, minlength=self.n_intents)
        info: dict[str, object] = {
            "dataset_name": f"synthetic_{self.mode}_{self.n_pages}p",
            "mode": self.mode,
            "n_pages": self.n_pages,
            "seed": cfg.seed,
            "sample_seed": int(seed),
            "max_steps": cfg.max_steps,
            "truncated_sessions": int(sim.truncated.sum()),
            "intent_counts": {name: int(c) for name, c in zip(self.intents, counts, strict=True)},
            "store": self,
            "session_intents": pd.DataFrame(
                {
                    "session_id": pd.Series(sid, dtype="str"),
                    "intent": pd.Categorical.from_codes(sim.intents, categories=self.intents),
                }
            ),
        }
        return LoadResult(
            hits=hits,
            source="synthetic",
            files=[],
            dropped={},
            info=info,
            extra_outputs=partial(self.write_true_model, session_intents=info["session_intents"]),
        )

    def write_true_model(
        self,
        out: Any,
        meta: dict[str, Any],
        hits: pd.DataFrame,
        session_intents: pd.DataFrame | None = None,
    ) -> None:
        """Write the true model next to a prepared dataset and score it on each split.

        Writes ``true_model.npz`` / ``true_model.json`` (:meth:`save`) and, when given,
        ``session_intents.parquet`` (the latent intent of every session: what an intent
        oracle may see, no deployable policy can). Adds ``meta["true_model"]`` with the
        Bayes-optimal log-loss per split: mean ``-ln p(next | history)`` per predicted step
        (the next page or EXIT after each page view; entry pages not counted).

        Args:
            out: The open :class:`clickstream.runfolder.StageWriter`.
            meta: The dataset's meta dict.
            hits: Canonical hits with their ``split``.
            session_intents: ``session_id``, ``intent`` of the sampled sessions.
        """
        npz, js = self.save(out.path("true_model"))
        record: dict[str, Any] = {
            "files": [npz.name, js.name],
            "mode": self.mode,
            "beta": self.beta,
            "n_pages": self.n_pages,
        }
        if session_intents is not None:
            out.write_parquet("session_intents.parquet", session_intents)
            record["files"].append("session_intents.parquet")
        collapsed = meta.get("repeats") == "collapse" and self.config.reload_prob > 0
        if collapsed:  # collapsed reloads are not samples of the true model any more
            record["bayes_log_loss"] = None
            record["bayes_log_loss_note"] = "not computed: reloads were collapsed"
        else:
            losses, steps = {}, {}
            for name in ("train", "valid", "test"):
                part = hits[hits["split"].to_numpy() == name]
                if len(part):
                    flat, offsets = self._as_flat(part)
                    total, n = self._log_loss_sum(flat, offsets)
                    losses[name], steps[name] = total / n, n
            record["bayes_log_loss"] = losses
            record["predicted_steps"] = steps
        meta["true_model"] = record

    # ---- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (config, pages, groups, types).

        Each file is written to a temporary name and renamed, so a crash leaves no half file.

        Returns:
            The two paths written.
        """
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "prior": self.prior,
            "entry": self.entry,
            "indptr": self.indptr,
            "indices": self.indices,
            "probs": self.probs,
            "time_mu": self.time_mu,
            "time_sigma": self.time_sigma,
            "expected_revenue": self.expected_revenue,
        }
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "nextpage.synthetic_store",
            "config": self.config.to_dict(),
            "mode": self.mode,
            "beta": self.beta,
            "intents": list(self.intents),
            "exit_token": EXIT,
            "exit_index": self.exit_index,
            "pages": self.pages,
            "page_titles": self.page_titles,
            "content_groups": self.content_groups,
            "page_types": self.page_types,
            "page_groups": self.page_groups,
        }
        npz, js = base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")
        with atomic_file(npz) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        with atomic_file(js) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)
            fh.write("\n")
        return npz, js

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SyntheticStore:
        """Read a store written by :meth:`save` (``path`` with or without extension)."""
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        npz, js = base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")
        for f in (npz, js):
            if not f.is_file():
                raise DataError("synthetic store file not found", file=str(f))
        try:
            with open(js, encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise RunFolderError(f"not valid JSON ({exc})", file=str(js)) from None
        if not isinstance(meta, dict) or meta.get("kind") != "nextpage.synthetic_store":
            raise DataError("not a synthetic store description", file=str(js))
        try:  # arrays only: an object array (a pickle) is refused, never unpickled
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise RunFolderError(
                f"not a readable array file ({type(exc).__name__}: {exc})", file=str(npz)
            ) from None
        try:
            return cls(
                config=SyntheticConfig.from_dict(meta["config"]),
                pages=list(meta["pages"]),
                page_titles=list(meta["page_titles"]),
                content_groups=list(meta["content_groups"]),
                page_types=list(meta["page_types"]),
                page_groups=list(meta["page_groups"]),
                intents=tuple(meta["intents"]),
                beta=float(meta["beta"]),
                **arrays,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RunFolderError(
                f"not a complete synthetic store ({type(exc).__name__}: {exc})", file=str(js)
            ) from None

    def group_rules(self) -> list[dict[str, str]]:
        """Page grouping rules (``clickstream.pages`` format) that give :attr:`page_groups`."""
        return [
            {"pattern": r"^/ordercompleted\.html", "group": "order_completed"},
            {"pattern": r"^/(yourinfo|payment|revieworder)\.html", "group": "checkout"},
            {"pattern": r"^/basket\.html", "group": "basket"},
            {"pattern": r"^/signin\.html", "group": "sign_in"},
            {"pattern": r"^/store-search", "group": "search"},
            {"pattern": r"^/store-policies", "group": "policies"},
            {"pattern": r"\.axd$", "group": "product"},
            {"pattern": r"^/google\+redesign/shop\+by\+brand", "group": "brands"},
            {"pattern": r"^/google\+redesign/([^/]+)", "group": r"category:\1"},
            {"pattern": r"^/home$", "group": "home"},
        ]


# ---- the recommendation response -----------------------------------------------------------


def apply_recommendation(p: np.ndarray, a: np.ndarray | int, beta: float) -> np.ndarray:
    """Multinomial boost ``p'(j) ∝ p(j) · exp(β · [j = a])`` (the true click model).

    Args:
        p: Next-page distributions, shape ``(..., P + 1)``.
        a: Recommended page per distribution, shape ``(...)`` (or a scalar); ``-1`` means no
            recommendation. EXIT cannot be recommended.
        beta: Response strength; ``0`` returns ``p``.

    Returns:
        Boosted distributions, same shape as ``p``; rows sum to 1.
    """
    p = np.asarray(p, dtype=np.float64)
    a = np.broadcast_to(np.asarray(a, dtype=np.int64), p.shape[:-1])
    if (a >= p.shape[-1] - 1).any():
        raise DataError("a recommendation must be a page, not EXIT")
    hit = np.arange(p.shape[-1]) == a[..., None]
    boosted = p * np.where(hit & (a[..., None] >= 0), np.exp(beta), 1.0)
    return boosted / boosted.sum(axis=-1, keepdims=True)


# ---- building the store -------------------------------------------------------------------


def build_store(cfg: SyntheticConfig | None = None, **overrides: Any) -> SyntheticStore:
    """Build the store described by ``cfg`` (deterministic from ``cfg.seed``).

    Args:
        cfg: Configuration; fields may also be given (or overridden) as keyword arguments.
    """
    if cfg is None:
        cfg = SyntheticConfig.from_dict(overrides)
    elif overrides:
        cfg = SyntheticConfig.from_dict({**cfg.to_dict(), **overrides})
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x5EED]))
    if cfg.mode == "items":
        return _build_item_store(cfg, rng)
    site = _Site(cfg, rng)
    p = len(site.pages)
    coo = site.destinations()
    mats = [site.transition_csr(intent, coo) for intent in INTENTS]
    entries = np.stack([site.entry(intent) for intent in INTENTS])
    prior = np.array(cfg.intent_prior, dtype=np.float64)
    if cfg.mode == "markov":
        indptr, indices, probs = _first_order_marginal(mats, entries, prior, p)
        entry = (prior @ entries)[None, :]
        prior, intents = np.ones(1), ("markov",)
    else:
        indptr, indices, probs = _stack_csr(mats, p)
        entry, intents = entries, INTENTS
    types = site.types
    median = np.array([TIME_ON_PAGE[t][0] for t in types])
    sigma = np.array([TIME_ON_PAGE[t][1] for t in types])
    order_mean = cfg.order_value_median * np.exp(cfg.order_value_sigma**2 / 2)
    expected_revenue = np.where(np.array(types) == "ordercompleted", order_mean, 0.0)
    return SyntheticStore(
        config=cfg,
        pages=site.pages,
        page_titles=site.titles,
        content_groups=site.content,
        page_types=types,
        page_groups=site.groups,
        intents=intents,
        prior=prior,
        entry=entry,
        indptr=indptr,
        indices=indices,
        probs=probs,
        time_mu=np.log(median),
        time_sigma=sigma,
        expected_revenue=expected_revenue,
        beta=float(cfg.beta),
    )


def _build_item_store(cfg: SyntheticConfig, rng: np.random.Generator) -> SyntheticStore:
    """The ``items`` mode store (module docstring): P items in C categories, one interest each."""
    p = cfg.n_pages
    c = cfg.n_categories if cfg.n_categories is not None else int(np.clip(p // 250, 4, 20))
    # category sizes mildly unequal; every category holds at least 5 items
    cat_w = 1.0 / np.arange(1, c + 1) ** 0.5
    owner = np.r_[np.repeat(np.arange(c), 5), rng.choice(c, p - 5 * c, p=cat_w / cat_w.sum())]
    owner = rng.permutation(owner)
    # Zipf popularity within each category, ranks shuffled
    pop = np.empty(p)
    for k in range(c):
        members = np.flatnonzero(owner == k)
        ranks = rng.permutation(len(members)) + 1
        pop[members] = cat_w[k] / ranks**cfg.product_zipf
    pop /= pop.sum()
    ids = rng.choice(np.arange(100_000, 1_000_000), size=p, replace=False)
    pages = [f"/{i}" for i in ids]
    members_of = [np.flatnonzero(owner == k) for k in range(c)]

    # related items: ITEM_RELATED of the same category, drawn by popularity, fixed per item
    rel_src, rel_dst = [], []
    for k in range(c):
        m = members_of[k]
        n_rel = min(ITEM_RELATED, len(m) - 1)
        w = pop[m] / pop[m].sum()
        for i in m:
            others = m != i
            picks = rng.choice(m[others], n_rel, replace=False, p=w[others] / w[others].sum())
            rel_src.append(np.full(n_rel, i))
            rel_dst.append(picks)
    rel_src, rel_dst = np.concatenate(rel_src), np.concatenate(rel_dst)
    rel_w = pop[rel_dst] / np.bincount(rel_src, weights=pop[rel_dst], minlength=p)[rel_src]
    top = [m[np.argsort(-pop[m], kind="stable")[:ITEM_INTEREST_TOP]] for m in members_of]
    popular = np.argsort(-pop, kind="stable")[:ITEM_POPULAR]
    pop_w = pop[popular] / pop[popular].sum()

    mats, entries = [], []
    items = np.arange(p)
    for z in range(c):
        kind = np.where(owner == z, 0, 1)  # 0: in the interest category, 1: away
        table = np.array(
            [
                [ITEM_KIND_WEIGHTS[n][k] for k in ("exit", "related", "interest", "popular")]
                for n in ("in_interest", "away")
            ]
        )[kind]  # (P, 4)
        t_w = pop[top[z]] / pop[top[z]].sum()
        src = np.concatenate(
            [items, rel_src, np.repeat(items, len(top[z])), np.repeat(items, ITEM_POPULAR)]
        )
        dst = np.concatenate([np.full(p, p), rel_dst, np.tile(top[z], p), np.tile(popular, p)])
        val = np.concatenate(
            [
                table[:, 0],
                table[rel_src, 1] * rel_w,
                table[:, 2].repeat(len(top[z])) * np.tile(t_w, p),
                table[:, 3].repeat(ITEM_POPULAR) * np.tile(pop_w, p),
            ]
        )
        self_link = src == dst
        val[self_link] = 0.0  # no page links to itself (a reload) unless reload_prob > 0
        if cfg.reload_prob > 0:
            keep = ~self_link
            src, dst, val = src[keep], dst[keep], val[keep]
            val = val / np.bincount(src, weights=val, minlength=p)[src] * (1 - cfg.reload_prob)
            src, dst = np.r_[src, items], np.r_[dst, items]
            val = np.r_[val, np.full(p, cfg.reload_prob)]
        mats.append(_coo_to_csr(src, dst, val, p, p + 1))
        e = np.zeros(p)
        e[members_of[z]] = ITEM_ENTRY_INTEREST * pop[members_of[z]] / pop[members_of[z]].sum()
        e[popular] += (1 - ITEM_ENTRY_INTEREST) * pop_w
        entries.append(e / e.sum())
    indptr, indices, probs = _stack_csr(mats, p)
    width = max(2, len(str(c)))
    cats = [f"category_{k + 1:0{width}d}" for k in range(c)]
    prior = np.array([pop[m].sum() for m in members_of])
    return SyntheticStore(
        config=cfg,
        pages=pages,
        page_titles=[f"Item {i} | {cats[k]}" for i, k in zip(ids, owner, strict=True)],
        content_groups=[cats[k] for k in owner],
        page_types=["product"] * p,
        page_groups=[cats[k] for k in owner],
        intents=tuple(f"interest_{k + 1:0{width}d}" for k in range(c)),
        prior=prior / prior.sum(),
        entry=np.stack(entries),
        indptr=indptr,
        indices=indices,
        probs=probs,
        time_mu=np.full(p, np.log(ITEM_TIME_ON_PAGE[0])),
        time_sigma=np.full(p, ITEM_TIME_ON_PAGE[1]),
        expected_revenue=np.zeros(p),
        beta=float(cfg.beta),
    )


class _Site:
    """Pages and their link candidates (the parts of the store independent of intent)."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.pages: list[str] = []
        self.titles: list[str] = []
        self.content: list[str | None] = []
        self.types: list[str] = []
        self.groups: list[str] = []
        store = "Google Merchandise Store"
        for path, title, ptype, group in (
            ("/home", "Home", "home", "home"),
            ("/store-search", "Store search results", "search", "search"),
            ("/basket.html", "Shopping Cart", "basket", "basket"),
            ("/signin.html", "The Google Merchandise Store - Log In", "signin", "sign_in"),
            ("/yourinfo.html", "Checkout Your Information", "yourinfo", "checkout"),
            ("/payment.html", "Payment Method", "payment", "checkout"),
            ("/revieworder.html", "Checkout Review", "revieworder", "checkout"),
            ("/ordercompleted.html", "Checkout Confirmation", "ordercompleted", "order_completed"),
        ):
            self._add(path, title, None, ptype, group)
        self.policies = []
        self.policy_w = []
        for slug, (title, w) in POLICIES.items():
            self.policies.append(
                self._add(f"/store-policies/{slug}", title, None, "policy", "policies")
            )
            self.policy_w.append(w)
        self.cats, self.cat_w, self.subs, self.sub_w, self.sub_cat = [], [], [], [], []
        fixed = len(self.pages) + len(CATEGORIES) + len(BRANDS)
        # small sites keep fewer subcategories so every one lists a few products
        n_sub = int(np.clip((cfg.n_pages - fixed) // 3, len(CATEGORIES), 21))
        keep = _round_robin_subcategories(n_sub)
        for c, (slug, (cgroup, w, subs)) in enumerate(CATEGORIES.items()):
            name = cgroup
            self.cats.append(
                self._add(
                    f"/google+redesign/{slug}",
                    f"{name} | {store}",
                    cgroup,
                    "category",
                    f"category:{slug}",
                )
            )
            self.cat_w.append(w)
            kept = [s for s in subs if (slug, s) in keep]
            for rank, sub in enumerate(kept):
                title = f"{_title(sub)} | {name} | {store}"
                self.subs.append(
                    self._add(
                        f"/google+redesign/{slug}/{sub}",
                        title,
                        cgroup,
                        "subcategory",
                        f"category:{slug}",
                    )
                )
                self.sub_w.append(w / (rank + 1) ** 0.7)
                self.sub_cat.append(c)
        self.brands, self.brand_w = [], []
        for slug, w in BRANDS.items():
            self.brands.append(
                self._add(
                    f"/google+redesign/shop+by+brand/{slug}",
                    f"{_title(slug)} | Shop by Brand | {store}",
                    "Brands",
                    "brand",
                    "brands",
                )
            )
            self.brand_w.append(w)
        n_products = cfg.n_pages - len(self.pages)
        if n_products < 2 * len(self.subs):
            raise ConfigError(f"synthetic store: n_pages={cfg.n_pages} is too small")
        self._add_products(n_products, rng)
        self.rng = rng

    def _add(self, path: str, title: str, content: str | None, ptype: str, group: str) -> int:
        self.pages.append(path)
        self.titles.append(title)
        self.content.append(content)
        self.types.append(ptype)
        self.groups.append(group)
        return len(self.pages) - 1

    def _add_products(self, n: int, rng: np.random.Generator) -> None:
        sub_w = np.array(self.sub_w) / np.sum(self.sub_w)
        # one product per subcategory first, the rest by subcategory popularity
        extra = rng.choice(len(self.subs), n - len(self.subs), p=sub_w)
        owner = np.r_[np.arange(len(self.subs)), extra]
        owner.sort(kind="stable")
        brand_w = np.array(self.brand_w) / np.sum(self.brand_w)
        brand_of = rng.choice(len(self.brands), n, p=brand_w)
        brand_slugs = list(BRANDS)
        cat_slugs = list(CATEGORIES)
        self.products = np.arange(len(self.pages), len(self.pages) + n)
        self.prod_sub = owner
        self.prod_cat = np.array(self.sub_cat)[owner]
        self.prod_brand = brand_of
        used: set[str] = set()
        for s in range(len(self.subs)):
            members = np.flatnonzero(owner == s)
            sub_slug = self.pages[self.subs[s]].rsplit("/", 1)[1]
            audience, nouns = PRODUCT_NOUNS[sub_slug]
            combos = [(m, nn, col) for m in MODIFIERS for nn in nouns for col in COLORS]
            order = rng.permutation(len(combos))
            k = 0
            for j in members:
                while True:
                    m, nn, col = combos[order[k % len(combos)]]
                    edition = k // len(combos)
                    k += 1
                    words = [brand_slugs[brand_of[j]], audience, m, nn, col]
                    slug = "+".join(w for w in words if w) + (
                        f"+ed{edition + 1}" if edition else ""
                    )
                    if slug not in used:
                        used.add(slug)
                        break
                cat = cat_slugs[self.sub_cat[s]]
                self._add(
                    f"/google+redesign/{cat}/{sub_slug}/{slug}.axd",
                    _title(slug),
                    CATEGORIES[cat][0],
                    "product",
                    "product",
                )
        # Zipf popularity over a random ranking of the products
        rank = rng.permutation(n)
        self.prod_pop = 1.0 / (rank + 1.0) ** self.cfg.product_zipf

    def destinations(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per kind: COO triplets ``(src, dst, weight)``, weights summing to 1 per source."""
        p = len(self.pages)
        rng = self.rng
        out: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {k: [] for k in KINDS}
        idx = {t: [i for i, tt in enumerate(self.types) if tt == t] for t in PAGE_TYPES}
        home, search, basket = idx["home"][0], idx["search"][0], idx["basket"][0]
        pop = self.prod_pop
        products = self.products
        top = products[np.argsort(-pop, kind="stable")]
        featured = top[:FEATURED_SIZE]
        cats, cat_w = np.array(self.cats), np.array(self.cat_w)
        subs, sub_w = np.array(self.subs), np.array(self.sub_w)
        sub_cat = np.array(self.sub_cat)
        brands, brand_w = np.array(self.brands), np.array(self.brand_w)
        policies, policy_w = np.array(self.policies), np.array(self.policy_w)
        prod_w = dict(zip(products.tolist(), pop.tolist(), strict=True))

        def listing(members: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
            w = pop[members - products[0]]
            keep = np.argsort(-w, kind="stable")[:size]
            return members[keep], w[keep]

        for i in range(p):
            t = self.types[i]
            add = {
                "exit": (np.array([p]), np.ones(1)),
                "home": (np.array([home]), np.ones(1)),
                "search": (np.array([search]), np.ones(1)),
                "category": (cats, cat_w),
                "featured": (featured, pop[featured - products[0]]),
                "brand": (brands, brand_w),
                "basket": (np.array([basket]), np.ones(1)),
                "policy": (policies, policy_w),
            }
            if t == "category":
                c = self.cats.index(i)
                add["sub"] = (subs[sub_cat == c], sub_w[sub_cat == c])
                add["list"] = listing(products[self.prod_cat == c], LIST_SIZE)
            elif t == "subcategory":
                s = self.subs.index(i)
                sib = (sub_cat == sub_cat[s]) & (subs != i)
                add["sub"] = (subs[sib], sub_w[sib])
                add["list"] = listing(products[self.prod_sub == s], LIST_SIZE)
            elif t == "brand":
                b = self.brands.index(i)
                add["list"] = listing(products[self.prod_brand == b], LIST_SIZE)
            elif t == "search":
                add["list"] = (top[:SEARCH_SIZE], pop[top[:SEARCH_SIZE] - products[0]])
            elif t == "product":
                j = i - products[0]
                add["sub"] = (np.array([subs[self.prod_sub[j]]]), np.ones(1))
                same = products[(self.prod_sub == self.prod_sub[j]) & (products != i)]
                if len(same) > RELATED_SIZE:
                    w = pop[same - products[0]]
                    same = np.sort(rng.choice(same, RELATED_SIZE, replace=False, p=w / w.sum()))
                add["list"] = (same, np.array([prod_w[int(k)] for k in same]))
            if t in FUNNEL[:-1]:
                add["next"] = (np.array([idx[FUNNEL[FUNNEL.index(t) + 1]][0]]), np.ones(1))
            for kind, (dst, w) in add.items():
                keep = dst != i  # no self-links: reloads are a separate, explicit option
                dst, w = dst[keep], np.asarray(w, dtype=np.float64)[keep]
                if len(dst) and w.sum() > 0:
                    out[kind].append((i, dst.astype(np.int64), w / w.sum()))
        return {
            kind: (
                np.concatenate([np.full(len(d), s, dtype=np.int64) for s, d, _ in rows]),
                np.concatenate([d for _, d, _ in rows]),
                np.concatenate([w for _, _, w in rows]),
            )
            if rows
            else (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
            for kind, rows in out.items()
        }

    def transition_csr(
        self, intent: str, coo: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Transition matrix of one intent as CSR ``(indptr (P+1,), indices, probs)``."""
        p = len(self.pages)
        type_id = np.array([PAGE_TYPES.index(t) for t in self.types])
        weights = self.cfg.kind_table(intent)
        table = np.array([[weights[t].get(k, 0.0) for k in KINDS] for t in PAGE_TYPES])
        avail = np.zeros((p, len(KINDS)), dtype=bool)
        for k, kind in enumerate(KINDS):
            avail[np.unique(coo[kind][0]), k] = True
        norm = (table[type_id] * avail).sum(axis=1)
        srcs, dsts, vals = [], [], []
        for k, kind in enumerate(KINDS):
            src, dst, w = coo[kind]
            v = table[type_id[src], k] * w / norm[src]
            srcs.append(src)
            dsts.append(dst)
            vals.append(v)
        src, dst, val = np.concatenate(srcs), np.concatenate(dsts), np.concatenate(vals)
        r = self.cfg.reload_prob
        if r > 0:
            val = val * (1 - r)
            src = np.r_[src, np.arange(p)]
            dst = np.r_[dst, np.arange(p)]
            val = np.r_[val, np.full(p, r)]
        return _coo_to_csr(src, dst, val, p, p + 1)

    def entry(self, intent: str) -> np.ndarray:
        """Entry distribution of one intent, shape ``(P,)``."""
        p = len(self.pages)
        w = self.cfg.entry_table(intent)
        first = {t: self.types.index(t) for t in ("home", "search", "basket")}
        parts = {
            "home": (np.array([first["home"]]), np.ones(1)),
            "search": (np.array([first["search"]]), np.ones(1)),
            "basket": (np.array([first["basket"]]), np.ones(1)),
            "category": (np.array(self.cats), np.array(self.cat_w)),
            "subcategory": (np.array(self.subs), np.array(self.sub_w)),
            "brand": (np.array(self.brands), np.array(self.brand_w)),
            "product": (self.products, self.prod_pop),
            "policy": (np.array(self.policies), np.array(self.policy_w)),
        }
        out = np.zeros(p)
        for kind in ENTRY_KINDS:
            dst, v = parts[kind]
            out[dst] += w.get(kind, 0.0) * v / v.sum()
        return out / out.sum()


def _round_robin_subcategories(n_sub: int) -> set[tuple[str, str]]:
    """The ``n_sub`` subcategories kept: each category's most popular first, round robin."""
    keep: set[tuple[str, str]] = set()
    depth = 0
    while len(keep) < n_sub:
        for slug, (_, _, subs) in CATEGORIES.items():
            if depth < len(subs) and len(keep) < n_sub:
                keep.add((slug, subs[depth]))
        depth += 1
    return keep


def _title(slug: str) -> str:
    words = {"mens": "Men's", "womens": "Women's", "kids": "Kids'", "youtube": "YouTube"}
    return " ".join(words.get(w, w.capitalize()) for w in slug.replace("++", "+&+").split("+"))


def _coo_to_csr(
    src: np.ndarray, dst: np.ndarray, val: np.ndarray, n_rows: int, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum duplicates, drop zeros, sort; rows renormalised to sum to 1 exactly-ish."""
    keys, inv = np.unique(src.astype(np.int64) * n_cols + dst, return_inverse=True)
    vals = np.bincount(inv, weights=val, minlength=len(keys))
    keep = vals > 0
    keys, vals = keys[keep], vals[keep]
    rows = keys // n_cols
    vals = vals / np.bincount(rows, weights=vals, minlength=n_rows)[rows]
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=n_rows))].astype(np.int64)
    return indptr, (keys % n_cols).astype(np.int32), vals


def _stack_csr(
    mats: list[tuple[np.ndarray, np.ndarray, np.ndarray]], p: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack per-intent CSR matrices into one with rows ``z * P + i``."""
    indptr = [mats[0][0]]
    for m in mats[1:]:
        indptr.append(m[0][1:] + indptr[-1][-1])
    return (
        np.concatenate(indptr).astype(np.int64),
        np.concatenate([m[1] for m in mats]),
        np.concatenate([m[2] for m in mats]),
    )


def _csr_left_matvec(
    v: np.ndarray, m: tuple[np.ndarray, np.ndarray, np.ndarray], n_cols: int
) -> np.ndarray:
    """``v @ M`` for a CSR matrix M, shape ``(n_cols,)``."""
    indptr, indices, probs = m
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return np.bincount(indices, weights=v[rows] * probs, minlength=n_cols)


def _expected_visits(
    m: tuple[np.ndarray, np.ndarray, np.ndarray], entry: np.ndarray, p: int
) -> np.ndarray:
    """Expected views of each page per session, ``entry · Σ_t T^t`` (absorbing in EXIT)."""
    total = entry.copy()
    v = entry.copy()
    for _ in range(10_000):
        v = _csr_left_matvec(v, m, p + 1)[:p]
        total += v
        if v.sum() < 1e-13:
            break
    return total


def _expected_visits_all(
    mats: list[tuple[np.ndarray, np.ndarray, np.ndarray]], entries: np.ndarray, p: int
) -> np.ndarray:
    return np.stack([_expected_visits(m, e, p) for m, e in zip(mats, entries, strict=True)])


def _first_order_marginal(
    mats: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    entries: np.ndarray,
    prior: np.ndarray,
    p: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first-order chain closest to the intent mixture: each row of page i mixes the
    intents' rows with weights ∝ prior_z · (expected visits of i under z)."""
    visits = _expected_visits_all(mats, entries, p) * prior[:, None]  # (Z, P)
    weight = visits / np.maximum(visits.sum(axis=0, keepdims=True), 1e-300)
    unseen = visits.sum(axis=0) <= 0
    weight[:, unseen] = prior[:, None]  # pages no one reaches: plain prior mix
    srcs, dsts, vals = [], [], []
    for z, (indptr, indices, probs) in enumerate(mats):
        rows = np.repeat(np.arange(p), np.diff(indptr))
        srcs.append(rows)
        dsts.append(indices.astype(np.int64))
        vals.append(probs * weight[z, rows])
    return _coo_to_csr(np.concatenate(srcs), np.concatenate(dsts), np.concatenate(vals), p, p + 1)


def _cumulative_keys(indptr: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``row + cumulative probability within row`` per entry, last of each row = row + 1."""
    n_rows = len(indptr) - 1
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(n_rows), counts)
    csum = np.cumsum(probs)
    before = np.r_[0.0, csum][indptr[:-1]]
    within = np.minimum(csum - before[rows], 1.0)
    nonempty = counts > 0
    within[indptr[1:][nonempty] - 1] = 1.0
    return rows + within


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp of ``x`` (N, Z), ``-inf`` where a row is all ``-inf``."""
    m = x.max(axis=1)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - safe[:, None]).sum(axis=1)) + safe


def _visitor_numbers(n: int, returning_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Visitor number per session: new visitors count up; returning ones reuse an earlier
    session's visitor (pointer jumping resolves chains of returns in O(log n) passes)."""
    returning = rng.random(n) < returning_rate
    returning[0] = False
    ptr = np.arange(n)
    earlier = np.floor(rng.random(n) * np.arange(n)).astype(np.int64)
    ptr[returning] = earlier[returning]
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            break
        ptr = nxt
    new_number = np.cumsum(~returning) - 1
    return new_number[ptr]


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


# ---- realism: the synthetic store next to the GA sample day -------------------------------


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
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    ga = Path(os.environ.get("NEXTPAGE_SHARED_DATA", default)) / "ga_sample_20170801.parquet"
    table = realism_table(ga)
    print(table.to_string(float_format=lambda v: f"{v:,.4f}"))


if __name__ == "__main__":  # pragma: no cover
    main()
