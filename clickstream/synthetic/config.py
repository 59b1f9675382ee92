"""The synthetic store's configuration and the behaviour tables it starts from.

:class:`SyntheticConfig` (validated on construction: a bad value raises
:class:`clickstream.errors.ConfigError` naming it), the intents, page types and link kinds,
and the tables of how each intent moves (:data:`KIND_WEIGHTS`) and lands
(:data:`ENTRY_WEIGHTS`). The package docstring (:mod:`clickstream.synthetic`) describes the
store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clickstream.errors import ConfigError, from_options

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
# kinds a page has). Tuned so that sessions look like the GA sample day in length, bounces and
# conversion: `python -m clickstream.synthetic` compares them (docs/results.md, "Synthetic
# store: does it look like the real store?").
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

MIN_PAGES, MAX_PAGES = 50, 10_000


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
            (self.mode in MODES, f"data.mode must be one of {MODES}, got {self.mode!r}"),
            (
                MIN_PAGES <= int(self.n_pages) <= MAX_PAGES,
                f"data.n_pages must be in [{MIN_PAGES}, {MAX_PAGES}], got {self.n_pages}",
            ),
            (int(self.n_sessions) >= 1, f"data.n_sessions must be >= 1, got {self.n_sessions}"),
            (np.isfinite(self.beta), f"data.beta must be finite, got {self.beta}"),
            (
                len(self.intent_prior) == len(INTENTS)
                and all(p >= 0 for p in self.intent_prior)
                and abs(sum(self.intent_prior) - 1) < 1e-9,
                f"data.loader.intent_prior must be {len(INTENTS)} probabilities "
                f"({', '.join(INTENTS)}) summing to 1, got {self.intent_prior}",
            ),
            (
                self.sessions_per_day > 0,
                f"data.loader.sessions_per_day must be > 0, got {self.sessions_per_day}",
            ),
            (
                0 <= self.returning_rate < 1,
                f"data.loader.returning_rate must be in [0, 1), got {self.returning_rate}",
            ),
            (int(self.max_steps) >= 1, f"data.loader.max_steps must be >= 1, got {self.max_steps}"),
            (
                0 <= self.reload_prob < 1,
                f"data.loader.reload_prob must be in [0, 1), got {self.reload_prob}",
            ),
            (
                self.product_zipf >= 0,
                f"data.loader.product_zipf must be >= 0, got {self.product_zipf}",
            ),
            (
                self.order_value_median > 0 and self.order_value_sigma >= 0,
                "data.loader.order_value_median must be > 0 and data.loader.order_value_sigma >= 0",
            ),
            (
                self.n_categories is None or 2 <= int(self.n_categories) <= int(self.n_pages) // 5,
                f"data.n_categories must be in [2, data.n_pages / 5], got {self.n_categories}",
            ),
            (
                self.mode == "items" or self.n_categories is None,
                "data.n_categories is an option of data.mode=items only",
            ),
            (
                self.mode != "items" or (self.kind_weights is None and self.entry_weights is None),
                "data.kind_weights and data.entry_weights shape the merchandise store (data.mode "
                "intent and markov); data.mode=items has its own: ITEM_KIND_WEIGHTS",
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
    table = _weight_table(value, "data.kind_weights")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for intent, rows in table.items():
        where = f"data.kind_weights[{intent}]"
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
    table = _weight_table(value, "data.entry_weights")
    return {
        intent: _weight_row(row, ENTRY_KINDS, f"data.entry_weights[{intent}]")
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
