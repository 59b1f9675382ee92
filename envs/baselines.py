"""Count-based next-page baselines and the exact true model, all with the predictor interface.

Every class here is a :class:`envs.metrics.NextPagePredictor`: ``iter_log_probs`` yields
``(step_index, log_probs (n, P + 1))`` for every step of a
:class:`~envs.sequences.SessionSequences` (float64, rows normalised), so
:func:`envs.metrics.evaluate` scores them exactly like the GRU.

* :class:`Popularity`: ``p(next)`` = smoothed frequency of each outcome as a *target* in
  training (pages reached by a transition, and ``EXIT``); entry pages are not targets.
* :class:`FirstOrderMarkov`: ``p(next | current)``, Dirichlet-smoothed toward popularity.
* :class:`SecondOrderMarkov`: ``p(next | previous, current)``, interpolated back to the
  first-order model; the previous page of an entry page is a special ``ENTRY`` context.
* :class:`TrueModel`: the Bayes predictive of a :class:`clickstream.synthetic.SyntheticStore`,
  ``p(next | whole history)``, by vectorised forward filtering over the latent intents.

Smoothing defaults (chosen by validation log-loss on the synthetic intent store and on the GA
sample day, with reloads kept or collapsed; the study and its figures: docs/results.md,
"Baselines: smoothing strengths", ``scripts/study_baseline_smoothing.py``):

* popularity: additive ``alpha = 0.5`` per outcome (the Jeffreys / Krichevsky–Trofimov
  estimator, the standard log-loss-safe choice for a multinomial; 0.5 and 1 score alike, it
  only matters for outcomes rare in training, whose log-loss it keeps finite);
* first order: ``p1(n | c) = (c(c, n) + k1 · pop(n)) / (c(c) + k1)`` with ``k1 = 20``
  (best, or close to it, on every dataset above);
* second order: ``p2(n | a, b) = (c(a, b, n) + k2 · p1(n | b)) / (c(a, b) + k2)`` with
  ``k2 = 100`` (best on the GA day, close to best on the others; small values such as 2
  overfit badly and make second order worse than first order).

Rows never seen in training therefore fall back to popularity (first order) and to the
first-order row (second order), never to uniform; every row is a proper distribution with all
outcomes possible. ``fit(train, valid=...)`` instead picks ``k`` from :data:`K_GRID` by
log-loss on a validation split (first ``k1``, then ``k2``): the honest way to compare a tuned
GRU with baselines.

Counts are stored sparsely (sorted keys, CSR-like rows), so P = 10,000 pages costs memory
proportional to the distinct transitions, and only the ``n × (P + 1)`` rows of the scored batch
are ever dense.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from clickstream.errors import ClickstreamError, DataError, ModelError
from envs.sequences import EVAL_CELLS, SessionSequences

if TYPE_CHECKING:
    from clickstream.synthetic import SyntheticStore

K_GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
"""Prior strengths tried by ``fit(..., valid=...)``."""

DEFAULT_BATCH_SESSIONS = 256
"""Sessions per yielded batch: ~1,100 steps, i.e. ~90 MB of float64 rows at P = 10,000."""


# ---- helpers on flat session arrays ----------------------------------------------------------


def _session_starts(offsets: np.ndarray, n: int) -> np.ndarray:
    """True at the first page view of each session, shape ``(n,)``."""
    first = np.zeros(n, dtype=bool)
    first[offsets[:-1][np.diff(offsets) > 0]] = True
    return first


def _session_log_sums(inc: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-session running sums of ``inc`` ``(n, Z)`` (log-terms of every view), restarting at
    each session's first view: ``log p(z, h_0..h_i)`` when ``inc`` holds the log prior plus
    entry at first views and the log transition probabilities elsewhere.

    Terms of ``-inf`` (a view impossible for ``z``) are counted apart, since subtracting prefix
    sums would turn ``-inf - -inf`` into NaN; such a ``z`` stays ``-inf`` for the session's rest.
    """
    impossible = np.isneginf(inc)
    fin = np.cumsum(np.where(impossible, 0.0, inc), axis=0)
    imp = np.cumsum(impossible, axis=0)
    start = np.repeat(offsets[:-1], np.diff(offsets))  # first view of each view's session
    # prefix sums just before each session's first view (a zero row for the first session)
    prefix_fin = np.vstack([np.zeros((1, inc.shape[1])), fin])[start]
    prefix_imp = np.vstack([np.zeros((1, inc.shape[1]), dtype=imp.dtype), imp])[start]
    return np.where(imp - prefix_imp > 0, -np.inf, fin - prefix_fin)


def _ragged_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entries of CSR rows ``rows`` (m,), without a Python loop.

    Returns:
        ``(owner, pos)``: for every selected entry, the index into ``rows`` it belongs to and
        its position in the CSR data arrays.
    """
    lo = indptr[rows]
    lens = indptr[rows + 1] - lo
    owner = np.repeat(np.arange(len(rows)), lens)
    pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + lo[owner]
    return owner, pos


class _SparseCounts:
    """Counts ``c(row, col)`` of (row key, outcome) pairs: sorted row keys and CSR entries.

    Attributes:
        keys: Distinct row keys, sorted, shape ``(R,)``.
        indptr: CSR row pointers, shape ``(R + 1,)``.
        cols: Outcome of each entry, shape ``(nnz,)``.
        counts: Count of each entry (> 0), shape ``(nnz,)``.
        totals: Row sums, shape ``(R,)``.
    """

    def __init__(self, row_keys: np.ndarray, cols: np.ndarray, n_cols: int) -> None:
        pair, count = np.unique(row_keys * n_cols + cols, return_counts=True)
        rows = pair // n_cols
        self.keys, first = np.unique(rows, return_index=True)
        self.indptr = np.r_[first, len(pair)].astype(np.int64)
        self.cols = pair % n_cols
        self.counts = count.astype(np.float64)
        self.totals = np.add.reduceat(self.counts, first) if len(first) else np.zeros(0)

    def lookup(self, row_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row index of each key (-1 if never seen) and its total count (0 if unseen)."""
        if len(self.keys) == 0:
            return np.full(len(row_keys), -1), np.zeros(len(row_keys))
        pos = np.minimum(np.searchsorted(self.keys, row_keys), len(self.keys) - 1)
        found = self.keys[pos] == row_keys
        return np.where(found, pos, -1), np.where(found, self.totals[pos], 0.0)

    def add_rows_to(self, out: np.ndarray, rows: np.ndarray, scale: np.ndarray) -> None:
        """``out[i, col] += scale[i] · c(rows[i], col)`` for rows found (``rows[i] >= 0``)."""
        sel = np.flatnonzero(rows >= 0)
        owner, pos = _ragged_rows(self.indptr, rows[sel])
        step = sel[owner]
        # (step, col) pairs are distinct, so plain fancy-index addition is exact
        out[step, self.cols[pos]] += scale[step] * self.counts[pos]


# ---- the shared predictor plumbing ----------------------------------------------------------


class _Predictor:
    """Batching and the (B, T) interface on top of ``_probs(pages, offsets)``."""

    name = "baseline"
    _n_pages: int | None = None

    @property
    def n_pages(self) -> int:
        """P, the number of pages (``EXIT`` is id P)."""
        if self._n_pages is None:
            raise ModelError(f"{self.name}: call fit(train_sequences) first")
        return self._n_pages

    @property
    def n_outcomes(self) -> int:
        """``P + 1``: the pages and ``EXIT``."""
        return self.n_pages + 1

    def _probs(self, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Next-outcome probabilities after every view of whole sessions.

        Args:
            pages: Page ids of whole sessions, flat, shape ``(n,)``.
            offsets: Session starts plus the end, shape ``(S + 1,)``, ``offsets[0] == 0``.

        Returns:
            Probabilities, shape ``(n, P + 1)``, float64, rows sum to 1.
        """
        raise NotImplementedError

    def _check(self, exit_id: int) -> None:
        if exit_id != self.n_pages:
            raise ModelError(
                f"{self.name} was fitted with P = {self.n_pages} pages but the sequences have "
                f"P = {exit_id}: use the same vocabulary"
            )

    def iter_log_probs(
        self, seqs: SessionSequences, batch_sessions: int = DEFAULT_BATCH_SESSIONS
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Log-probabilities of every step of ``seqs``, sessions in order, in batches.

        Args:
            seqs: Sessions (same vocabulary as in ``fit``).
            batch_sessions: Sessions per batch; fewer where their steps would hold more than
                :data:`EVAL_CELLS` probabilities.

        Yields:
            ``(step_index (n,) int64, log_probs (n, P + 1) float64)`` over consecutive
            sessions; ``-inf`` only where the model gives probability 0.
        """
        self._check(seqs.exit_id)
        if batch_sessions < 1:
            raise ValueError(f"batch_sessions must be >= 1, got {batch_sessions}")
        offsets = seqs.offsets
        max_steps = max(1, EVAL_CELLS // self.n_outcomes)
        i = 0
        while i < len(seqs):
            j = min(i + batch_sessions, len(seqs))
            fit = int(np.searchsorted(offsets, offsets[i] + max_steps, side="right")) - 1
            j = max(i + 1, min(j, fit))
            lo, hi = int(offsets[i]), int(offsets[j])
            starts, i = offsets[i : j + 1] - lo, j
            if hi == lo:
                continue
            probs = self._probs(seqs.pages[lo:hi], starts)
            with np.errstate(divide="ignore"):
                yield np.arange(lo, hi, dtype=np.int64), np.log(probs)

    def log_prob_next(self, pages: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Next-page log-probabilities after every prefix: ``(B, T)`` → ``(B, T, P + 1)``.

        Args:
            pages: Page ids, one session prefix per row, padded on the right, shape ``(B, T)``.
            lengths: Valid positions per row, shape ``(B,)``; default: up to the first pad id
                ``P`` (or ``T``).

        Returns:
            Log-probabilities, shape ``(B, T, P + 1)``; NaN at padded positions.
        """
        pages = np.asarray(pages, dtype=np.int64)
        if pages.ndim != 2:
            raise ValueError(f"pages must be (B, T), got shape {pages.shape}")
        b, t = pages.shape
        p = self.n_pages
        if lengths is None:
            is_pad = pages >= p
            lengths = np.where(is_pad.any(axis=1), is_pad.argmax(axis=1), t)
        lengths = np.asarray(lengths, dtype=np.int64)
        mask = np.arange(t)[None, :] < lengths[:, None]
        flat = pages[mask]
        if len(flat) and (flat.min() < 0 or flat.max() >= p):
            raise DataError(f"page ids must lie in [0, {p})")
        out = np.full((b, t, p + 1), np.nan)
        if len(flat):
            offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
            with np.errstate(divide="ignore"):
                out[mask] = np.log(self._probs(flat, offsets))
        return out


def mean_log_loss(model: _Predictor, seqs: SessionSequences, batch_sessions: int = 1024) -> float:
    """Mean ``-ln p(target)`` of ``model`` over every step of ``seqs`` (``EXIT`` included)."""
    targets = seqs.targets()
    total = 0.0
    for rows, logp in model.iter_log_probs(seqs, batch_sessions):
        total -= float(logp[np.arange(len(rows)), targets[rows]].sum())
    return total / max(1, seqs.n_steps)


def _tune_k(
    model: _Predictor, valid: SessionSequences, grid: Sequence[float]
) -> dict[float, float]:
    """Set ``model.k`` to the grid value of least validation log-loss; all scores by k."""
    scores = {}
    for k in grid:
        model.k = float(k)
        scores[float(k)] = mean_log_loss(model, valid)
    model.k = min(scores, key=scores.__getitem__)
    return scores


# ---- popularity ------------------------------------------------------------------------------


class Popularity(_Predictor):
    """History-free baseline: ``p(next)`` = smoothed training frequency of each outcome.

    Args:
        alpha: Additive pseudo-count per outcome (0.5: Jeffreys prior; keeps every outcome,
            seen or not, at a finite log-loss).
        name: Name in result tables.

    Attributes:
        probs: ``p(next)`` over the ``P + 1`` outcomes, shape ``(P + 1,)`` (after ``fit``).
        counts: Training target counts, shape ``(P + 1,)``.
    """

    name = "popularity"

    def __init__(self, alpha: float = 0.5, name: str | None = None) -> None:
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        if name is not None:
            self.name = name
        self.counts: np.ndarray | None = None
        self.probs: np.ndarray | None = None

    def fit(self, seqs: SessionSequences) -> Popularity:
        """Count the targets of every step of ``seqs`` (next pages and ``EXIT``)."""
        if seqs.n_steps == 0:
            raise DataError("cannot fit on sequences without page views")
        n_out = seqs.exit_id + 1
        self.counts = np.bincount(seqs.targets(), minlength=n_out).astype(np.float64)
        total = self.counts + self.alpha
        self.probs = total / total.sum()
        self._n_pages = seqs.exit_id
        return self

    def _probs(self, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.probs, (len(pages), self.n_outcomes)).copy()


# ---- first order -----------------------------------------------------------------------------


class FirstOrderMarkov(_Predictor):
    """``p(next | current page)`` from transition counts, smoothed toward popularity.

    ``p1(n | c) = (c(c, n) + k · pop(n)) / (c(c) + k)``: a Dirichlet prior of strength ``k``
    pseudo-steps centred on :class:`Popularity`. Well-visited pages keep their counts, rare ones
    lean on popularity and unseen ones *are* popularity.

    Args:
        k: Prior strength, in pseudo-steps per page (default 20: see the module docstring).
        alpha: Additive smoothing of the popularity it backs off to.
        name: Name in result tables.

    Attributes:
        popularity: The fitted :class:`Popularity` back-off.
        tuning: Validation log-loss per ``k`` tried by ``fit(..., valid=...)`` (else empty).
    """

    name = "markov1"

    def __init__(self, k: float = 20.0, alpha: float = 0.5, name: str | None = None) -> None:
        if not k > 0:
            raise ValueError(f"k must be > 0, got {k}")
        self.k = float(k)
        self.alpha = float(alpha)
        if name is not None:
            self.name = name
        self.popularity = Popularity(alpha)
        self._counts: _SparseCounts | None = None
        self.tuning: dict[float, float] = {}

    def fit(
        self,
        seqs: SessionSequences,
        valid: SessionSequences | None = None,
        grid: Sequence[float] = K_GRID,
    ) -> FirstOrderMarkov:
        """Count transitions ``page → next page or EXIT`` inside the sessions of ``seqs``.

        Args:
            seqs: Training sessions.
            valid: If given, ``k`` is chosen from ``grid`` by log-loss on these sessions.
            grid: Values of ``k`` to try.
        """
        self.popularity.fit(seqs)
        self._counts = _SparseCounts(seqs.pages, seqs.targets(), seqs.exit_id + 1)
        self._n_pages = seqs.exit_id
        if valid is not None:
            self.tuning = _tune_k(self, valid, grid)
        return self

    def next_distribution(self, current: np.ndarray) -> np.ndarray:
        """``p1(· | current)`` for each given page, shape ``(n, P + 1)``.

        Args:
            current: Current page ids, shape ``(n,)``.
        """
        current = np.asarray(current, dtype=np.int64)
        rows, tot = self._counts.lookup(current)
        denom = tot + self.k
        out = (self.k / denom)[:, None] * self.popularity.probs[None, :]
        self._counts.add_rows_to(out, rows, 1.0 / denom)
        return out

    def transition_counts(self, current: np.ndarray) -> np.ndarray:
        """Raw training counts ``c(current, ·)``, shape ``(n, P + 1)``."""
        current = np.asarray(current, dtype=np.int64)
        out = np.zeros((len(current), self.n_outcomes))
        self._counts.add_rows_to(out, self._counts.lookup(current)[0], np.ones(len(current)))
        return out

    def _probs(self, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return self.next_distribution(pages)


# ---- second order ----------------------------------------------------------------------------


class SecondOrderMarkov(_Predictor):
    """``p(next | previous page, current page)``, interpolated with the first-order model.

    ``p2(n | a, b) = (c(a, b, n) + k · p1(n | b)) / (c(a, b) + k)`` where ``a`` is the
    previous page or ``ENTRY`` (id P) when ``b`` is the entry page, and ``p1`` is a
    :class:`FirstOrderMarkov`. Unseen contexts get exactly ``p1(· | b)``. Contexts are stored
    as sorted int64 keys ``a · (P + 1) + b`` with their counts in CSR rows; a batch looks them
    up with ``searchsorted`` and builds only its own ``n × (P + 1)`` rows.

    Args:
        k: Strength of the back-off to first order, in pseudo-steps per context (default 100:
            see the module docstring).
        k1: ``k`` of the first-order model.
        alpha: Popularity smoothing of the first-order model.
        name: Name in result tables.
    """

    name = "markov2"

    def __init__(
        self, k: float = 100.0, k1: float = 20.0, alpha: float = 0.5, name: str | None = None
    ) -> None:
        if not k > 0:
            raise ValueError(f"k must be > 0, got {k}")
        self.k = float(k)
        if name is not None:
            self.name = name
        self.first_order = FirstOrderMarkov(k=k1, alpha=alpha)
        self._counts: _SparseCounts | None = None
        self.tuning: dict[float, float] = {}

    @property
    def entry_context(self) -> int:
        """The ``ENTRY`` id used as the previous page of an entry page (P)."""
        return self.n_pages

    def _context_keys(self, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        p = self.n_pages
        prev = np.empty_like(pages)
        prev[1:] = pages[:-1]
        prev[_session_starts(offsets, len(pages))] = p
        return prev * (p + 1) + pages

    def fit(
        self,
        seqs: SessionSequences,
        valid: SessionSequences | None = None,
        grid: Sequence[float] = K_GRID,
    ) -> SecondOrderMarkov:
        """Count ``(previous, current) → next`` inside the sessions of ``seqs``.

        Args:
            seqs: Training sessions.
            valid: If given, the first-order ``k1`` and then ``k`` are chosen from ``grid`` by
                log-loss on these sessions.
            grid: Values to try.
        """
        self.first_order.fit(seqs, valid, grid)
        self._n_pages = seqs.exit_id
        ctx = self._context_keys(seqs.pages, seqs.offsets)
        self._counts = _SparseCounts(ctx, seqs.targets(), seqs.exit_id + 1)
        if valid is not None:
            self.tuning = _tune_k(self, valid, grid)
        return self

    @property
    def n_contexts(self) -> int:
        """Distinct ``(previous, current)`` contexts seen in training."""
        return len(self._counts.keys)

    def next_distribution(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """``p2(· | previous, current)``, shape ``(n, P + 1)``.

        Args:
            previous: Previous page ids, ``P`` for ``ENTRY``, shape ``(n,)``.
            current: Current page ids, shape ``(n,)``.
        """
        previous = np.asarray(previous, dtype=np.int64)
        current = np.asarray(current, dtype=np.int64)
        return self._mix(previous * (self.n_pages + 1) + current, current)

    def _mix(self, ctx: np.ndarray, current: np.ndarray) -> np.ndarray:
        rows, tot = self._counts.lookup(ctx)
        denom = tot + self.k
        out = self.first_order.next_distribution(current)
        out *= (self.k / denom)[:, None]
        self._counts.add_rows_to(out, rows, 1.0 / denom)
        return out

    def _probs(self, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return self._mix(self._context_keys(pages, offsets), pages)


# ---- the true model of a synthetic store -----------------------------------------------------


class TrueModel(_Predictor):
    """Exact Bayes predictive of a synthetic store, for sequences in a dataset's vocabulary.

    ``p(next | h) = Σ_z p(z | h) T[z, h_last, next]`` with the forward filter
    ``log b(z) = log prior(z) + log entry(z, h_0) + Σ_s log T[z, h_s, h_{s+1}]``, computed for
    all steps of a batch at once by per-session cumulative sums over the flat arrays.

    Page ids of the sequences are the prepared vocabulary's (``pages.parquet`` order, by
    traffic), not the store's: ``vocab_pages`` maps them. If the vocabulary lacks some store
    pages (never visited in the data), each distribution is renormalised over the vocabulary's
    pages and ``EXIT`` (the predictive given that the next outcome is one the data can hold);
    with the full vocabulary it is the store's predictive exactly.

    Args:
        store: The synthetic store the sessions were sampled from.
        vocab_pages: Page names in vocabulary id order (``Vocabulary.pages``), length P.
        name: Name in result tables.

    Raises:
        ClickstreamError: A vocabulary page is not a store page, or is listed twice.
    """

    name = "true_model"

    def __init__(
        self, store: SyntheticStore, vocab_pages: Sequence[str], name: str | None = None
    ) -> None:
        self.store = store
        if name is not None:
            self.name = name
        idx = []
        for i, page in enumerate(vocab_pages):
            try:
                idx.append(store.page_index(str(page)))
            except ClickstreamError:
                raise DataError(
                    f"vocabulary page {page!r} (id {i}) is not a page of the synthetic store: "
                    "the data were not sampled from this store"
                ) from None
        self.store_index = np.asarray(idx, dtype=np.int64)
        """Store index of each vocabulary page, shape ``(P,)``."""
        if len(np.unique(self.store_index)) != len(self.store_index):
            raise DataError("the vocabulary lists a store page twice")
        self._n_pages = len(self.store_index)
        ps = store.n_pages
        # column of each store outcome in the vocabulary's order; -1 = not in the vocabulary
        self._column = np.full(ps + 1, -1, dtype=np.int64)
        self._column[self.store_index] = np.arange(self._n_pages)
        self._column[ps] = self._n_pages
        with np.errstate(divide="ignore"):
            self._log_prior = np.log(store.prior)
            self._log_entry = np.log(store.entry)  # (Z, Ps)

    def fit(self, seqs: SessionSequences | None = None) -> TrueModel:
        """Nothing to learn; checks the vocabulary size if ``seqs`` is given."""
        if seqs is not None:
            self._check(seqs.exit_id)
        return self

    def _log_belief(self, sp: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Unnormalised ``log p(z, h_0..h_i)`` after every view ``i``, shape ``(n, Z)``."""
        store, n = self.store, len(sp)
        first = _session_starts(offsets, n)
        inc = np.empty((n, store.n_intents))
        inc[first] = self._log_prior[None, :] + self._log_entry[:, sp[first]].T
        rest = np.flatnonzero(~first)
        with np.errstate(divide="ignore"):
            inc[rest] = np.log(store.transition_prob(sp[rest - 1], sp[rest]))
        return _session_log_sums(inc, offsets)

    def _probs(self, pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        store = self.store
        ps, z, n = store.n_pages, store.n_intents, len(pages)
        sp = self.store_index[pages]
        log_b = self._log_belief(sp, offsets)
        top = log_b.max(axis=1)
        if not np.isfinite(top).all():
            i = int(np.flatnonzero(~np.isfinite(top))[0])
            s = int(np.searchsorted(offsets, i, side="right") - 1)
            raise DataError(
                f"a session's history is impossible under the true model at view "
                f"{i - offsets[s]} ({store.pages[sp[i]]}): not sampled from this store, or "
                "altered (e.g. reloads collapsed)"
            )
        w = np.exp(log_b - top[:, None])
        w /= w.sum(axis=1, keepdims=True)  # p(z | h), (n, Z)
        # Σ_z w[i, z] T[z, sp[i], :] as a scatter of the Z sparse rows of every step
        rows = (np.arange(z)[None, :] * ps + sp[:, None]).ravel()  # step-major, (n·Z,)
        owner, pos = _ragged_rows(store.indptr, rows)
        step = owner // z
        col = self._column[store.indices[pos]]
        keep = col >= 0
        weight = w.ravel()[owner] * store.probs[pos]
        out = np.bincount(
            step[keep] * (self._n_pages + 1) + col[keep],
            weights=weight[keep],
            minlength=n * (self._n_pages + 1),
        ).reshape(n, self._n_pages + 1)
        out /= out.sum(axis=1, keepdims=True)
        return out
