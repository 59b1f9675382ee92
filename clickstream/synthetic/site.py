"""Generating a synthetic store's site: pages, links and the true tables built on them.

:func:`build_store` makes the Merchandise-Store-like site (``intent`` and ``markov`` modes:
fixed pages, categories, brands, products and their link candidates, then one transition
matrix per intent weighted by :data:`clickstream.synthetic.config.KIND_WEIGHTS`) or the
item-level shop (``items`` mode), deterministic from the config's seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clickstream.errors import ConfigError
from clickstream.synthetic.config import (
    ENTRY_KINDS,
    FUNNEL,
    INTENTS,
    KINDS,
    PAGE_TYPES,
    SyntheticConfig,
)
from clickstream.synthetic.truth import SyntheticStore

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
            raise ConfigError(f"synthetic store: data.n_pages={cfg.n_pages} is too small")
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
