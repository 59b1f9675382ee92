"""The true visitor model of a synthetic store: :class:`SyntheticStore`.

The store's arrays (intent prior, entry distributions, sparse transitions), page lookup, the
exact predictive distribution ``p(next | history)`` by forward filtering, the Bayes-optimal
log-loss, and the true recommendation response (:func:`apply_recommendation`). Sampling
(:mod:`.sampling`) and the store's files (:mod:`.store`) are mixed into the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from clickstream.errors import DataError
from clickstream.schema import EXIT, session_boundaries
from clickstream.synthetic.config import PAGE_TYPES, SyntheticConfig
from clickstream.synthetic.sampling import Sampling, SimulatedSessions
from clickstream.synthetic.store import StoreFiles


@dataclass(eq=False)
class SyntheticStore(Sampling, StoreFiles):
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

    def dense_transitions(self, idx: np.ndarray) -> np.ndarray:
        """The transitions among pages ``idx`` only: ``(Z, n, n + 1)``, last column EXIT.

        Equal to ``transitions[:, idx][:, :, np.r_[idx, P]]`` (the same numbers, not
        renormalised) but built from the sparse rows, so that it costs ``Z · n · (n + 1)``
        floats, not the whole store's.

        Args:
            idx: Distinct page indices, shape ``(n,)``.
        """
        idx = np.asarray(idx, dtype=np.int64)
        z, p, n = self.n_intents, self.n_pages, len(idx)
        if len(np.unique(idx)) != n:
            raise DataError("the page order repeats a page of the store")
        column = np.full(p + 1, -1, dtype=np.int64)
        column[idx] = np.arange(n)
        column[p] = n
        rows = (np.arange(z)[:, None] * p + idx[None, :]).ravel()
        starts, counts = self.indptr[rows], np.diff(self.indptr)[rows]
        out_row = np.repeat(np.arange(z * n), counts)
        pos = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(
            int(counts.sum())
        )
        dst = column[self.indices[pos]]
        keep = dst >= 0
        dense = np.zeros((z * n, n + 1))
        dense[out_row[keep], dst[keep]] = self.probs[pos[keep]]
        return dense.reshape(z, n, n + 1)

    def restriction(self, pages: Sequence[str]) -> dict[str, int | float]:
        """What restricting the store to ``pages`` (a dataset's vocabulary) drops.

        Returns:
            ``store_pages``, ``pages`` and ``unseen_pages`` (store pages not in ``pages``);
            ``max_row_mass_moved``: the largest probability, over intents and kept pages, of
            moving to an unseen page (renormalising moves it onto the kept pages and EXIT);
            ``max_entry_mass_moved``: the same for an intent's entry distribution.
        """
        idx = np.array([self.page_index(q) for q in pages], dtype=np.int64)
        kept = np.zeros(self.n_pages + 1, dtype=bool)
        kept[idx] = True
        kept[self.n_pages] = True
        out: dict[str, int | float] = {
            "store_pages": self.n_pages,
            "pages": len(idx),
            "unseen_pages": self.n_pages - len(np.unique(idx)),
            "max_row_mass_moved": 0.0,
            "max_entry_mass_moved": 0.0,
        }
        if out["unseen_pages"]:
            lost = np.where(kept[self.indices], 0.0, self.probs)
            rows = np.repeat(np.arange(self.n_intents * self.n_pages), np.diff(self.indptr))
            per_row = np.bincount(rows, weights=lost, minlength=self.n_intents * self.n_pages)
            per_row = per_row.reshape(self.n_intents, self.n_pages)
            out["max_row_mass_moved"] = float(per_row[:, idx].max())
            out["max_entry_mass_moved"] = float(
                (self.entry.sum(1) - self.entry[:, idx].sum(1)).max()
            )
        return out

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
