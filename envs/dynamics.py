"""Visitor dynamics for the simulator: where a batch of visitors goes next if left alone.

Interchangeable models behind one batched torch interface (:class:`Dynamics`):

* :class:`GRUDynamics`: the learned GRU visitor model (``envs/visitor_model.py``); its state
  is the GRU hidden state plus the logits it gave after the current page.
* :class:`MarkovDynamics`: a tabular first-order model counted on the training split.
* :class:`MixtureDynamics`: visitors of latent types, each type a first-order chain; a visitor
  draws her type when she arrives, keeps it, and the agent never sees it. The latent-class
  model fitted on data (:mod:`envs.latent_class`) runs as one.
* :class:`TrueDynamics`: the synthetic store's true model (ground truth), a mixture over the
  store's latent intents.

A visitor's *state* is a float tensor row of fixed width (``state_dim``), so the core keeps one
``(B, S)`` tensor for all visitors whatever the model. Page ids follow the vocabulary the
dynamics was built on; ``EXIT`` is id ``P``, last in every distribution.

What a dynamics can do besides moving visitors is said by the protocol, never probed:
:meth:`Dynamics.chains` gives its tables when it is first-order chains (for the exact MDP of
:mod:`agents.tabular`), and :attr:`Dynamics.latent_state` says whether a visitor carries a
hidden type (:meth:`Dynamics.intent` reads it, for the intent oracle). Which dynamics a run
uses is a visitor kind's business (:mod:`envs.visitors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch

from clickstream.errors import ConfigError, ModelError
from envs.sequences import SessionSequences
from envs.visitor_model import VisitorModel


@dataclass(frozen=True)
class Chains:
    """Visitor dynamics that are first-order chains, one per latent type (one type: Markov).

    Attributes:
        prior: Type probabilities, ``(Z,)``.
        entry: Entry distribution of each type, ``(Z, P)``.
        transitions: Next-page rows of each type, ``(Z, P, P + 1)`` (``EXIT`` last).
    """

    prior: torch.Tensor
    entry: torch.Tensor
    transitions: torch.Tensor

    @property
    def n_types(self) -> int:
        return len(self.prior)


class Dynamics(Protocol):
    """What the simulator core needs from a visitor model.

    Attributes:
        n_pages: P.
        state_dim: S, the width of a visitor's state row.
        pages: Page names, length P.
        latent_state: A visitor carries a hidden type, drawn at arrival and kept
            (:meth:`intent` reads it); the agent never sees it.
    """

    n_pages: int
    state_dim: int
    pages: tuple[str, ...]
    latent_state: ClassVar[bool] = False

    def chains(self) -> Chains | None:
        """The tables when the visitors are first-order chains (per type), else ``None``."""
        return None

    def intent(self, state: torch.Tensor) -> torch.Tensor:
        """Latent type index per visitor, ``(B,)``, from states ``(B, S)`` (what an intent
        oracle may read).

        Raises:
            ClickstreamError: The visitors of this dynamics carry no latent type.
        """
        raise ModelError(f"{type(self).__name__}: visitors carry no latent type")

    def start(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` arriving visitors: entry pages ``(n,)`` and states ``(n, S)`` after them."""
        ...

    def next_probs(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Organic next-page distributions ``(B, P + 1)`` of visitors on ``pages`` ``(B,)``."""
        ...

    def advance(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """States ``(B, S)`` after the visitors view ``pages`` ``(B,)`` (never ``EXIT``)."""
        ...

    def log_scores(
        self, pages: torch.Tensor, state: torch.Tensor, outcomes: torch.Tensor
    ) -> torch.Tensor:
        """Unnormalised log-probabilities of the outcome ids ``(B, M)`` (valid ids only)."""
        ...

    def to(self, device: torch.device | str) -> Dynamics: ...


def sample_categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of ``probs`` ``(B, K)`` (rows sum to 1), shape ``(B,)``.

    Inverse-CDF sampling: one uniform per row located in the row's cumulative sums (several
    times faster than ``torch.multinomial`` on CPU for the row sizes of a site). The uniform is
    scaled by the row total, so rounding can never pick an outcome of probability 0.
    """
    cdf = probs.cumsum(dim=1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True)[:, 0].clamp_(max=probs.shape[1] - 1)


CANDIDATE_FILLS = ("none", "group")
"""How :func:`top_successors` fills a page's row when it has fewer than ``k`` observed
successors: ``none`` (pad with -1) or ``group`` (then its page group's most frequent successors,
then the site's most frequent next pages)."""


def check_candidate_fill(fill: str) -> None:
    """Refuse a ``fill`` that is not one of :data:`CANDIDATE_FILLS`, naming the setting."""
    if fill not in CANDIDATE_FILLS:
        raise ConfigError(f"env.candidate_fill must be one of {CANDIDATE_FILLS}, got {fill!r}")


def top_successors(
    train: SessionSequences,
    k: int,
    fill: str = "none",
    page_groups: np.ndarray | None = None,
) -> np.ndarray:
    """The ``k`` most frequent next pages of each page in training, ``(P, k)``, -1 padded.

    ``EXIT`` is not among them (the simulator always keeps it as an outcome). Ties are broken
    by page id, so the table is deterministic.

    On a large site most pages are seen a few times (2,000 pages from 50,000 sessions: a
    median of 2 observed successors), so their rows hold a handful of pages and never, say, the
    basket. ``fill="group"`` completes each row as a candidate generator does: the page's own
    successors first, then the most frequent successors of every page of its group (the
    product pages' basket and policies), then the site's most frequent next pages, each page
    once and never the page itself.

    Args:
        train: Training sessions.
        k: Row width.
        fill: One of :data:`CANDIDATE_FILLS`.
        page_groups: Group id per page, ``(P,)``; needed by ``fill="group"``.
    """
    check_candidate_fill(fill)
    p = train.exit_id
    src, dst = train.pages, train.targets()
    keep = dst < p
    table = _ranked_rows(src[keep], dst[keep], p, p, k)
    if fill == "none":
        return table
    if page_groups is None or len(page_groups) != p:
        raise ConfigError("env.candidate_fill='group' needs the page group of each of the pages")
    groups = np.asarray(page_groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1 if p else 0
    by_group = _ranked_rows(groups[src[keep]], dst[keep], n_groups, p, k + 1)[groups]  # (P, k+1)
    site = np.bincount(dst[keep], minlength=p)
    # by count, then id; k + 1 of them fill any row, the page itself left out
    popular = np.lexsort((np.arange(p), -site))[: k + 1]
    popular = popular[site[popular] > 0]
    pool = np.concatenate([table, by_group, np.broadcast_to(popular, (p, len(popular)))], axis=1)
    filled = np.full((p, k), -1, dtype=np.int64)
    for page in range(p):  # first occurrences in order, not the page itself
        row = pool[page]
        row = row[(row >= 0) & (row != page)]
        _, first = np.unique(row, return_index=True)
        chosen = row[np.sort(first)][:k]
        filled[page, : len(chosen)] = chosen
    return filled


def _ranked_rows(keys: np.ndarray, dst: np.ndarray, n_keys: int, p: int, k: int) -> np.ndarray:
    """For each key, its ``k`` most frequent ``dst`` (ties by page id), ``(n_keys, k)``, -1 padded."""
    pair, count = np.unique(keys * p + dst, return_counts=True)
    s, d = pair // p, pair % p
    order = np.lexsort((d, -count, s))  # by key, then most frequent, then id
    s, d = s[order], d[order]
    rank = np.arange(len(s)) - np.searchsorted(s, s)  # position within the key's run
    table = np.full((n_keys, k), -1, dtype=np.int64)
    sel = rank < k
    table[s[sel], rank[sel]] = d[sel]
    return table


def entry_distribution(seqs: SessionSequences, alpha: float = 0.01) -> np.ndarray:
    """Smoothed frequency of each page as a session's first page, shape ``(P,)``.

    The pseudo-count is small on purpose: with hundreds of pages and a few thousand sessions a
    larger one (0.5) sends several percent of simulated visitors in through pages nobody
    enters by, which shows up as extra bounces in the fidelity report.
    """
    counts = np.bincount(seqs.pages[seqs.offsets[:-1]], minlength=seqs.exit_id)
    smoothed = counts + alpha
    return smoothed / smoothed.sum()


def first_order_table(seqs: SessionSequences, k: float = 20.0) -> np.ndarray:
    """Dense first-order rows counted on ``seqs``, ``(P, P + 1)`` float64, ``EXIT`` last.

    ``p(j | i) = (c(i, j) + k · pop(j)) / (c(i) + k)``, ``pop`` the add-½ frequency of each
    outcome as a target (rows never seen: popularity), so every outcome stays possible.
    """
    p = seqs.exit_id
    src, dst = seqs.pages, seqs.targets()
    counts = np.bincount(src * (p + 1) + dst, minlength=p * (p + 1)).reshape(p, p + 1)
    pop = (np.bincount(dst, minlength=p + 1) + 0.5) / (len(dst) + 0.5 * (p + 1))
    return (counts + k * pop) / (counts.sum(1, keepdims=True) + k)


class MarkovDynamics(Dynamics):
    """First-order transitions and entry distribution as dense tables.

    Args:
        entry: Entry distribution, shape ``(P,)``.
        transitions: Next-page distributions, shape ``(P, P + 1)``; rows sum to 1.
        pages: Page names, length P.
    """

    state_dim = 0

    def __init__(self, entry: np.ndarray, transitions: np.ndarray, pages: tuple[str, ...]):
        entry = np.asarray(entry, dtype=np.float64)
        transitions = np.asarray(transitions, dtype=np.float64)
        p = len(entry)
        if transitions.shape != (p, p + 1) or len(pages) != p:
            raise ModelError(
                f"Markov dynamics needs entry (P,), transitions (P, P + 1) and P page names; "
                f"got {entry.shape}, {transitions.shape}, {len(pages)}"
            )
        if not np.allclose(transitions.sum(1), 1.0) or not np.isclose(entry.sum(), 1.0):
            raise ModelError("Markov dynamics: every row must sum to 1")
        self.n_pages, self.pages = p, tuple(pages)
        self.entry = torch.as_tensor(entry, dtype=torch.float32)
        self.transitions = torch.as_tensor(transitions, dtype=torch.float32)

    @classmethod
    def fit(
        cls, train: SessionSequences, pages: tuple[str, ...], k: float = 20.0
    ) -> MarkovDynamics:
        """Count on training sessions, smoothed toward the popularity of each outcome
        (:func:`first_order_table`)."""
        return cls(entry_distribution(train), first_order_table(train, k), pages)

    def to(self, device: torch.device | str) -> MarkovDynamics:
        self.entry, self.transitions = self.entry.to(device), self.transitions.to(device)
        return self

    def start(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pages = sample_categorical(self.entry.expand(n, -1), generator)
        return pages, torch.zeros(n, 0, device=self.entry.device)

    def chains(self) -> Chains:
        one = torch.ones(1, device=self.entry.device)
        return Chains(one, self.entry[None], self.transitions[None])

    def next_probs(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.transitions[pages]

    def log_scores(
        self, pages: torch.Tensor, state: torch.Tensor, outcomes: torch.Tensor
    ) -> torch.Tensor:
        return torch.log(self.transitions[pages[:, None], outcomes])

    def advance(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return state


class GRUDynamics(Dynamics):
    """The learned GRU visitor model as simulator dynamics.

    Args:
        model: A trained :class:`~envs.visitor_model.VisitorModel`.
        entry: Entry distribution over its pages, shape ``(P,)`` (the GRU does not model
            where sessions start; :func:`entry_distribution` of the training split).
    """

    def __init__(self, model: VisitorModel, entry: np.ndarray, *, full_logits: bool = True):
        self.model = model
        self.n_pages = model.vocab.n_pages
        self.pages = model.vocab.pages
        self.hidden_dim = model.hidden_dim
        # state: hidden | what scores the next page: all P + 1 logits, or (candidate mode,
        # large sites) the top-layer output, from which only the candidates are scored
        self.full_logits = full_logits
        width = self.n_pages + 1 if full_logits else model.cfg.hidden_size
        self.state_dim = self.hidden_dim + width
        if len(entry) != self.n_pages:
            raise ModelError(f"entry distribution has {len(entry)} pages, model {self.n_pages}")
        self.entry = torch.as_tensor(entry, dtype=torch.float32, device=model.device)

    def to(self, device: torch.device | str) -> GRUDynamics:
        self.model.device = torch.device(device)
        self.model.net.to(device)
        self.entry = self.entry.to(device)
        return self

    def start(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pages = sample_categorical(self.entry.expand(n, -1), generator)
        empty = torch.zeros(n, self.state_dim, device=self.entry.device)
        return pages, self.advance(pages, empty)

    def next_probs(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        if not self.full_logits:
            every = torch.arange(self.n_pages + 1, device=pages.device).expand(len(pages), -1)
            return torch.softmax(self.log_scores(pages, state, every), dim=-1)
        return torch.softmax(state[:, self.hidden_dim :].float(), dim=-1)

    def log_scores(
        self, pages: torch.Tensor, state: torch.Tensor, outcomes: torch.Tensor
    ) -> torch.Tensor:
        if self.full_logits:
            return state[:, self.hidden_dim :].gather(1, outcomes)
        return self.model.score_outcomes(state[:, self.hidden_dim :], pages, outcomes)

    @torch.no_grad()
    def advance(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        hidden = state[:, : self.hidden_dim].contiguous()
        if self.full_logits:
            scores, hidden = self.model.step(pages, hidden)
        else:
            scores, hidden = self.model.step_hidden(pages, hidden)
        return torch.cat([hidden, scores.float()], dim=1)


class MixtureDynamics(Dynamics):
    """Visitors of ``Z`` latent types, each a first-order chain; a visitor keeps her type.

    A type is drawn from ``prior`` when the visitor arrives and stays hidden from the agent
    (it is the visitor's state). A recommendation acts on the row of the visitor's own type,
    so what the click model does to a visitor depends on who she is, not on the mix of
    visitors seen on her page. Used for the synthetic store's truth (:class:`TrueDynamics`)
    and for the latent-class visitor model fitted on data (:mod:`envs.latent_class`).

    Args:
        prior: Type probabilities, ``(Z,)``.
        entry: Entry distribution of each type, ``(Z, P)``.
        transitions: Next-page rows of each type, ``(Z, P, P + 1)``; rows sum to 1.
        pages: Page names, length P.
    """

    latent_state = True

    def __init__(self, prior, entry, transitions, pages: tuple[str, ...]) -> None:
        prior = torch.as_tensor(np.asarray(prior), dtype=torch.float32)
        entry = torch.as_tensor(np.asarray(entry), dtype=torch.float32)
        transitions = torch.as_tensor(np.asarray(transitions), dtype=torch.float32)
        z, p = entry.shape if entry.ndim == 2 else (0, 0)
        if prior.shape != (z,) or transitions.shape != (z, p, p + 1) or len(pages) != p:
            raise ModelError(
                "mixture dynamics needs prior (Z,), entry (Z, P), transitions (Z, P, P + 1) and "
                f"P page names; got {tuple(prior.shape)}, {tuple(entry.shape)}, "
                f"{tuple(transitions.shape)}, {len(pages)}"
            )
        self.pages, self.n_pages = tuple(pages), p
        self.state_dim = 1  # the type index, stored as a float
        self.prior, self.entry, self.transitions = prior, entry, transitions

    def to(self, device: torch.device | str) -> MixtureDynamics:
        self.prior = self.prior.to(device)
        self.entry, self.transitions = self.entry.to(device), self.transitions.to(device)
        return self

    def start(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        intent = sample_categorical(self.prior.expand(n, -1), generator)
        pages = sample_categorical(self.entry[intent], generator)
        return pages, intent[:, None].float()

    def chains(self) -> Chains:
        return Chains(self.prior, self.entry, self.transitions)

    def intent(self, state: torch.Tensor) -> torch.Tensor:
        """Latent type index per visitor, ``(B,)`` (what an intent oracle may read)."""
        return state[:, 0].long()

    def next_probs(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.transitions[self.intent(state), pages]

    def log_scores(
        self, pages: torch.Tensor, state: torch.Tensor, outcomes: torch.Tensor
    ) -> torch.Tensor:
        return torch.log(self.transitions[self.intent(state)[:, None], pages[:, None], outcomes])

    def advance(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return state


TRUTH_MAX_CELLS = 60_000_000
"""Largest ground truth held densely: ``Z × P × (P + 1)`` floats over the dataset's pages
(float32 in the simulator: 240 MB)."""
TRUTH_WAY_OUT = (
    "leave the ground_truth world out (scripts/evaluate.py and scripts/pipeline.py: "
    "worlds=[learned,held_out], or worlds=[learned] without a held-out model) and agents or "
    "references that plan in it (true_optimum, intent_oracle)"
)
_said_restricted: set[tuple[int, int, int]] = set()


def truth_cells(n_intents: int, n_pages: int) -> int:
    """Floats of a dense ground truth of ``n_intents`` intents over ``n_pages`` pages."""
    return int(n_intents) * int(n_pages) * (int(n_pages) + 1)


def check_truth_size(n_intents: int, n_pages: int, max_cells: int | None = None) -> None:
    """Refuse a ground truth too large to hold densely, naming the way out.

    Args:
        n_intents: ``Z``.
        n_pages: ``P``, the pages of the dataset's vocabulary.
        max_cells: The limit (default: :data:`TRUTH_MAX_CELLS`).

    Raises:
        ModelError: ``Z · P · (P + 1) > max_cells``.
    """
    max_cells = TRUTH_MAX_CELLS if max_cells is None else int(max_cells)
    cells = truth_cells(n_intents, n_pages)
    if cells > max_cells:
        raise ModelError(
            f"true dynamics of {n_pages:,} pages and {n_intents} intents is too large to hold "
            f"densely ({cells:,} cells; at most {max_cells:,}): {TRUTH_WAY_OUT}"
        )


def store_tables(
    store, pages: tuple[str, ...] | None = None, max_cells: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """A synthetic store's true model as dense tables in a page order, float64.

    Args:
        store: A :class:`clickstream.synthetic.SyntheticStore`.
        pages: Page order (default: the store's own). Every page must be a store page; a
            vocabulary without some store pages (pages the prepared data never saw) gets the
            store restricted to it: those pages are dropped and every row renormalised over
            the pages that remain and ``EXIT`` (a visitor who would have gone to an unseen
            page goes to a seen one or leaves). A ``note:`` says so once per process, and
            ``prepare_data`` records it in ``meta.json``'s ``true_model`` (``unseen_pages``).
        max_cells: Largest ``Z × P × (P + 1)`` table built, ``P`` the pages of ``pages``
            (default: :data:`TRUTH_MAX_CELLS`).

    Returns:
        ``(prior (Z,), entry (Z, P), transitions (Z, P, P + 1), pages)``, ``EXIT`` last.

    Raises:
        ModelError: The tables would pass ``max_cells`` (:func:`check_truth_size`).
    """
    pages = tuple(store.pages) if pages is None else tuple(pages)
    idx = np.array([store.page_index(p) for p in pages], dtype=np.int64)
    z, p = store.n_intents, store.n_pages
    check_truth_size(z, len(idx), max_cells)
    dense = store.dense_transitions(idx)  # the store's rows among these pages only
    entry = store.entry[:, idx]
    if len(idx) < p:  # a vocabulary without some store pages: renormalise over it
        _say_restricted(store, pages)
        dense = dense / dense.sum(-1, keepdims=True)
        entry = entry / entry.sum(-1, keepdims=True)
    return store.prior, entry, dense, pages


def _say_restricted(store, pages: tuple[str, ...]) -> None:
    """The ``note:`` of a ground truth restricted to a vocabulary, once per process."""
    key = (store.n_pages, len(pages), store.n_intents)
    if key in _said_restricted:
        return
    _said_restricted.add(key)
    from clickstream.io import notice

    r = store.restriction(pages)
    notice(
        f"ground truth: the store's {r['store_pages']:,} pages restricted to the "
        f"{r['pages']:,} the prepared data saw ({r['unseen_pages']:,} unseen pages dropped, "
        "each row renormalised over the rest and EXIT: up to "
        f"{r['max_row_mass_moved']:.2%} of a row's probability and "
        f"{r['max_entry_mass_moved']:.2%} of an intent's entries moved), so 'exact', "
        "'true_optimum' and oracle values are of that restricted store (prepare more "
        "sessions to see every page)"
    )


class TrueDynamics(MixtureDynamics):
    """The synthetic store's true visitor model: a latent intent per visitor.

    Args:
        store: A :class:`clickstream.synthetic.SyntheticStore`.
        pages: Page order of the simulator (default: the store's own order). Every page must
            be a store page; ``EXIT`` stays last.
    """

    max_dense_cells = TRUTH_MAX_CELLS  # (Z, P, P + 1) float32: 240 MB

    def __init__(self, store, pages: tuple[str, ...] | None = None):
        self.store = store
        super().__init__(*store_tables(store, pages, self.max_dense_cells))
