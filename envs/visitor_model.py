"""The GRU visitor model: where does a visitor go next (or do they leave)?

page (+ page group, + time-on-previous-page bucket) → embedding → GRU → logits over the P pages
and ``EXIT``. One network serves three callers:

* training and evaluation: :meth:`VisitorModel.log_prob_next` on padded ``(B, T)`` batches and
  :meth:`VisitorModel.iter_log_probs` over a whole :class:`~envs.sequences.SessionSequences`;
* the simulator: :meth:`VisitorModel.step` advances ``B`` visitors by one page view, with the
  hidden state kept by the caller as a ``(B, L·H)`` tensor (``L`` layers of size ``H``);
* people: :meth:`VisitorModel.predict_next` takes a history of page names.

Checkpoints (:meth:`VisitorModel.save`) hold the weights, the vocabulary, the model config and
the metrics, so a model file is all a later stage needs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clickstream import checks
from clickstream.errors import (
    ConfigError,
    DataError,
    ModelError,
    RunFolderError,
    from_options,
)
from clickstream.io import atomic_file, json_default
from envs.sequences import EVAL_CELLS, N_TIME_BUCKETS, SessionSequences, Vocabulary

CHECKPOINT_KIND = "nextpage.visitor_model"
DENSE_PRIOR_CELLS = 4_200_000
"""Inference caches the prior as a dense ``(P + 1) × (P + 1)`` table up to this many cells
(about 2,000 pages, 17 MB): one row lookup per simulator step. Larger sites add the sparse
prior per step."""
CHECKPOINT_VERSION = 2  # 2: the first-order prior stored sparsely (1: dense, still read)


@dataclass
class ModelConfig:
    """Architecture of the GRU visitor model (``configs/simulator/*.yaml``: ``model``).

    Attributes:
        embedding_dim: Size of the page embedding.
        hidden_size: GRU hidden size H.
        num_layers: Stacked GRU layers L.
        dropout: Dropout on the embeddings and the GRU output (and between GRU layers).
        use_groups: Add an embedding of the page's group to the input.
        group_dim: Size of the group embedding.
        use_time: Add an embedding of the time spent on the *previous* page (the time on the
            current page is only known once the visitor leaves it, and "unknown" would give
            away the exit). The simulator cannot simulate times, so its visitors always feed
            "unknown": the test log-loss, read with the real times, describes a slightly
            better model than the world simulates (GA day: 3.1694 with real times, 3.1716
            with every time unknown). Off by default.
        time_dim: Size of the time-bucket embedding.
        group_head: Add a score per *destination group* to the logits, shared by the pages of
            the group: what history says about "a product next" or "leaving" is learnt once
            for the group, not once per page.
        markov_prior: Add the log of a smoothed first-order transition table, counted on the
            training split, to the logits (``true``, ``false``, or ``auto``: on, unless
            ``max_prior_pages`` caps it). The GRU then learns how history moves a visitor away
            from the first-order model instead of relearning every link from scratch: a
            softmax over ``H`` hidden units cannot represent a sparse ``P × P`` link table
            exactly, and small sites do not have the data to learn it (measured in
            docs/results.md). The table is held sparsely (:class:`GRUNet`: a popularity term
            per outcome, a term per page and the observed transitions), so its memory and time
            grow with the distinct transitions seen, not with ``P²``.
        prior_smoothing: Pseudo-count of the prior, spread over outcomes by their popularity.
        prior_folds: Cross-fit the prior during training: a training session sees the table
            counted on the *other* folds, so the GRU learns to correct a prior as wrong as it
            will be on new sessions, not one that has already seen the session (2 or more;
            0 or 1: the full table throughout). Evaluation always uses the full table.
        max_prior_pages: Optional cap: ``auto`` gives no prior to sites of more pages
            (``None``: no cap; checkpoints of earlier versions, whose prior was dense, carry
            4,096).
    """

    embedding_dim: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.3
    use_groups: bool = True
    group_dim: int = 16
    use_time: bool = False
    time_dim: int = 8
    group_head: bool = True
    markov_prior: bool | str = "auto"
    prior_smoothing: float = 10.0
    prior_folds: int = 2
    max_prior_pages: int | None = None

    def uses_prior(self, n_pages: int) -> bool:
        """Whether a site of ``n_pages`` pages gets the first-order prior."""
        if self.markov_prior == "auto":
            return self.max_prior_pages is None or n_pages <= self.max_prior_pages
        return bool(self.markov_prior)

    def __post_init__(self) -> None:
        # messages name the key users set (simulator.model.<name>), checked before any work
        key = MODEL_KEY
        for name in ("embedding_dim", "hidden_size", "num_layers", "group_dim", "time_dim"):
            checks.whole(f"{key}.{name}", getattr(self, name), 1, floats=False)
        checks.whole(
            f"{key}.prior_folds",
            self.prior_folds,
            0,
            note="(0 or 1: no cross-fitting)",
            floats=False,
        )
        if self.max_prior_pages is not None:
            checks.whole(
                f"{key}.max_prior_pages", self.max_prior_pages, 1, note="or null", floats=False
            )
        if self.markov_prior not in (True, False, "auto"):
            raise ConfigError(
                f"{key}.markov_prior must be true, false or auto, got {self.markov_prior!r}"
            )
        if not (checks.is_finite(self.prior_smoothing) and self.prior_smoothing > 0):
            raise ConfigError(f"{key}.prior_smoothing must be > 0, got {self.prior_smoothing!r}")
        if not (checks.is_finite(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"{key}.dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> ModelConfig:
        """Build from a plain mapping (a resolved Hydra node); unknown keys raise."""
        return from_options(cls, cfg, MODEL_KEY)


MODEL_KEY = "simulator.model"
"""Where the settings of :class:`ModelConfig` are set: error messages name the key there."""


class GRUNet(nn.Module):
    """The network: embeddings → GRU → linear head over ``P + 1`` outcomes.

    Page id ``P`` (the ``EXIT`` id, never an input) is the padding id of the page embedding.

    **The first-order prior, sparse.** With ``k`` the smoothing, ``pop`` the outcome
    popularity, ``c(i, j)`` the transition counts and ``c(i)`` their row sums, the prior adds

        ``log p(j | i) = log(c(i, j) + k·pop(j)) - log(c(i) + k)
                       = log(k·pop(j))  -  log(c(i) + k)  +  log(1 + c(i, j) / (k·pop(j)))``

    to the logits: a term per outcome (``prior_base``, ``(P + 1,)``), a term per page
    (``prior_row``, ``(P + 1,)``) and a term that is 0 unless ``(i, j)`` was observed: a CSR
    table over the observed transitions (``prior_indptr`` ``(P + 2,)``, ``prior_keys`` =
    ``i · (P + 1) + j`` and ``prior_vals``, ``(nnz,)`` each, rows and keys sorted). At 10,000
    pages that is a few times the number of distinct transitions instead of 10⁸ cells. The
    training-only cross-fitted tables (``fold_prior_row`` ``(F, P + 1)``, ``fold_prior_vals``
    ``(F, nnz)``) share ``prior_base`` and the CSR structure: a fold's counts are the full
    counts minus its own, so it has no transition the full table lacks. The padding id's row
    term is 0 and it has no transitions (its positions are never scored for real).
    """

    def __init__(self, n_pages: int, page_group: np.ndarray, n_groups: int, cfg: ModelConfig):
        super().__init__()
        self.n_pages, self.cfg = n_pages, cfg
        self.page_embedding = nn.Embedding(n_pages + 1, cfg.embedding_dim, padding_idx=n_pages)
        in_dim = cfg.embedding_dim
        # group of each page id, the padding id in a group of its own
        self.register_buffer(
            "page_group", torch.as_tensor(np.r_[page_group, n_groups], dtype=torch.long)
        )
        if cfg.use_groups:
            self.group_embedding = nn.Embedding(n_groups + 1, cfg.group_dim)
            in_dim += cfg.group_dim
        if cfg.use_time:
            self.time_embedding = nn.Embedding(N_TIME_BUCKETS, cfg.time_dim)
            in_dim += cfg.time_dim
        self.dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(
            in_dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.head = nn.Linear(cfg.hidden_size, n_pages + 1)
        if cfg.group_head:
            # a score per destination group, shared by its pages (EXIT is a group of its own)
            self.group_head = nn.Linear(cfg.hidden_size, n_groups + 1)
            self.register_buffer(
                "outcome_group", torch.as_tensor(np.r_[page_group, n_groups], dtype=torch.long)
            )
        self.use_prior = cfg.uses_prior(n_pages)
        if self.use_prior:  # filled by set_prior (VisitorModel.fit_prior); empty: no effect
            n = n_pages + 1
            self.register_buffer("prior_base", torch.zeros(n))
            self.register_buffer("prior_row", torch.zeros(n))
            self.register_buffer("prior_indptr", torch.zeros(n + 1, dtype=torch.long))
            self.register_buffer("prior_keys", torch.zeros(0, dtype=torch.long))
            self.register_buffer("prior_vals", torch.zeros(0))
            # out-of-fold tables, for training only: not part of the checkpoint
            self.register_buffer("fold_prior_row", torch.zeros(0, n), persistent=False)
            self.register_buffer("fold_prior_vals", torch.zeros(0, 0), persistent=False)
            self.register_load_state_dict_pre_hook(_prior_state_pre_hook)

    @torch.no_grad()
    def set_prior(
        self,
        base: np.ndarray,
        row: np.ndarray,
        indptr: np.ndarray,
        keys: np.ndarray,
        vals: np.ndarray,
        fold_row: np.ndarray | None = None,
        fold_vals: np.ndarray | None = None,
    ) -> None:
        """Install the sparse prior (shapes in the class docstring; ``None``: no fold tables)."""
        n = self.n_pages + 1
        if base.shape != (n,) or row.shape != (n,) or indptr.shape != (n + 1,):
            raise ModelError(
                f"prior tables of the wrong shape for {self.n_pages} pages: base "
                f"{base.shape}, row {row.shape}, indptr {indptr.shape}"
            )
        dev = self.prior_base.device

        def put(name: str, value: np.ndarray, dtype: torch.dtype) -> None:
            setattr(self, name, torch.as_tensor(value, dtype=dtype).to(dev).contiguous())

        put("prior_base", base, torch.float32)
        put("prior_row", row, torch.float32)
        put("prior_indptr", indptr, torch.long)
        put("prior_keys", keys, torch.long)
        put("prior_vals", vals, torch.float32)
        put("fold_prior_row", np.zeros((0, n)) if fold_row is None else fold_row, torch.float32)
        put(
            "fold_prior_vals",
            np.zeros((0, len(keys))) if fold_vals is None else fold_vals,
            torch.float32,
        )

    def add_prior(
        self, logits: torch.Tensor, pages: torch.Tensor, prior_fold: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``logits (..., P + 1)`` plus the prior's rows of ``pages (...)`` (a new tensor).

        ``prior_fold`` (shape of ``pages``) picks each position's out-of-fold table while they
        are installed (training); otherwise the full table. Cost: ``O(N · (P + 1))`` for the
        dense terms plus the observed transitions of the ``N`` rows, never ``P²``.
        """
        n = self.n_pages + 1
        shape = logits.shape
        rows = pages.reshape(-1)
        use_folds = prior_fold is not None and self.fold_prior_vals.shape[0] > 0
        if use_folds:
            fold = prior_fold.reshape(-1)
            row_term = self.fold_prior_row[fold, rows]
        else:
            row_term = self.prior_row[rows]
        out = logits.reshape(-1, n) + self.prior_base + row_term[:, None].to(logits.dtype)
        owner, pos = _csr_entries(self.prior_indptr, rows)
        if owner.numel():
            vals = self.fold_prior_vals[fold[owner], pos] if use_folds else self.prior_vals[pos]
            flat = owner * n + self.prior_keys[pos] % n
            # (position, outcome) pairs are distinct: a plain indexed add; in place on a
            # tensor made just above, so autograd passes the gradient straight through
            out.view(-1).index_add_(0, flat, vals.to(out.dtype))
        return out.view(shape)

    def prior_at(
        self, pages: torch.Tensor, outcomes: torch.Tensor, prior_fold: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The prior's ``log p(outcome | page)`` at ``pages (B,)``, ``outcomes (B, M)``.

        ``prior_fold`` ``(B,)``: each row's out-of-fold table while installed (training).
        """
        n = self.n_pages + 1
        use_folds = prior_fold is not None and self.fold_prior_vals.shape[0] > 0
        row = self.fold_prior_row[prior_fold, pages] if use_folds else self.prior_row[pages]
        value = self.prior_base[outcomes] + row[:, None]
        keys = self.prior_keys
        if keys.numel():
            query = pages[:, None] * n + outcomes
            pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
            hit = keys[pos] == query
            vals = (
                self.fold_prior_vals[prior_fold[:, None], pos]
                if use_folds
                else self.prior_vals[pos]
            )
            value = value + torch.where(hit, vals, 0.0)
        return value

    def top_successors(self, k: int) -> torch.Tensor:
        """Each page's ``k`` most likely successors under the prior, ``(P + 1, k)`` outcome ids
        (observed transitions only, most likely first; ``-1`` pads rows with fewer)."""
        cache = self.__dict__.setdefault("_top_cache", {})
        key = (k, self.prior_keys.data_ptr(), self.prior_keys.numel())
        if key not in cache:
            n = self.n_pages + 1
            keys = self.prior_keys.cpu().numpy()
            score = self.prior_base.cpu().numpy()[keys % n] + self.prior_vals.cpu().numpy()
            rows = keys // n
            order = np.lexsort((-score, rows))  # by row, most likely first
            indptr = self.prior_indptr.cpu().numpy()
            rank = np.arange(len(order)) - indptr[rows[order]]
            keep = order[rank < k]
            top = np.full((n, k), -1, dtype=np.int64)
            top[rows[keep], rank[rank < k]] = keys[keep] % n
            cache.clear()
            cache[key] = torch.from_numpy(top).to(self.prior_keys.device)
        return cache[key]

    def sampled_nll(
        self,
        out: torch.Tensor,
        pages: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor,
        log_weight: torch.Tensor,
        prior_fold: torch.Tensor | None = None,
        exact: int = 32,
    ) -> torch.Tensor:
        """``-log p(target)`` at ``N`` positions, the softmax's normaliser partly sampled
        (:meth:`sampled_terms`, whose terms' log-sum-exp is the normaliser).

        Returns:
            The loss of each position, ``(N,)``.
        """
        z_t, terms, _ = self.sampled_terms(
            out, pages, targets, negatives, log_weight, prior_fold, exact
        )
        return torch.logsumexp(terms, dim=1) - z_t

    def sampled_terms(
        self,
        out: torch.Tensor,
        pages: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor,
        log_weight: torch.Tensor,
        prior_fold: torch.Tensor | None = None,
        exact: int = 32,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The target's logit and the terms of a partly sampled softmax normaliser.

        The normaliser ``Z_n = Σ_j exp(z_nj)`` is summed exactly over ``C_n``, the target and
        the ``exact`` most likely successors of the position's page under the prior (where
        most of the probability is, and the hard negatives), and estimated over the other
        outcomes by importance sampling: ``Σ_{s ∈ negatives, s ∉ C_n} w_s · exp(z_ns)``. With
        ``negatives`` every outcome once and ``log_weight`` 0 it is the exact cross-entropy of
        :meth:`scores`, at ``O(N · (M + exact))`` instead of ``O(N · (P + 1))``.

        Args:
            out: GRU outputs, ``(N, H)``.
            pages: The positions' pages, ``(N,)``.
            targets: Their next outcomes, ``(N,)``.
            negatives: Distinct sampled outcomes, ``(M,)``.
            log_weight: Their importance log-weights, ``(M,)``: ``log(count / (draws · q))``.
            prior_fold: Each position's fold, ``(N,)`` (cross-fitted priors in training).
            exact: Successors per page summed exactly (with a prior; 0: none).

        Returns:
            ``(z_t (N,), terms (N, C), outcome (N, C))``: the target's logit, the log-terms
            whose sum of exponentials is the normaliser (the target, the weighted negatives,
            the exact successors; ``-inf`` where a term is left out) and the outcome id of
            each term (so a caller can sum them by destination group).
        """
        n, m = self.n_pages + 1, len(negatives)
        dev = pages.device
        w_t, b_t = self.output_layer(targets)
        z_t = (out * w_t).sum(-1) + b_t
        w_n, b_n = self.output_layer(negatives)
        z_neg = nn.functional.linear(out, w_n, b_n) + log_weight
        excluded = negatives[None, :] == targets[:, None]
        z_top = None
        if self.use_prior:
            z_t = z_t + self.prior_at(pages, targets[:, None], prior_fold)[:, 0]
            z_neg = z_neg + self._prior_on(pages, negatives, prior_fold)
            if exact > 0 and self.prior_keys.numel():
                top = self.top_successors(exact)[pages]  # (N, K)
                used = (top >= 0) & (top != targets[:, None])
                cols = top.clamp(min=0)
                w_k, b_k = self.output_layer(cols.reshape(-1))
                z_top = torch.einsum("nh,nkh->nk", out, w_k.view(*cols.shape, -1))
                z_top = z_top + b_k.view(cols.shape) + self.prior_at(pages, cols, prior_fold)
                z_top = z_top.masked_fill(~used, -torch.inf)
                # the exact successors leave the sampled part
                slot = torch.full((n,), -1, dtype=torch.long, device=dev)
                slot[negatives] = torch.arange(m, device=dev)
                col = slot[cols]
                hit = used & (col >= 0)
                owner = torch.arange(len(pages), device=dev)[:, None].expand_as(cols)
                excluded.view(-1)[owner[hit] * m + col[hit]] = True
        z_neg = z_neg.masked_fill(excluded, -torch.inf)
        parts = [z_t[:, None], z_neg] + ([] if z_top is None else [z_top])
        ids = [targets[:, None], negatives[None, :].expand(len(pages), -1)]
        if z_top is not None:
            ids.append(cols)
        return z_t, torch.cat(parts, dim=1), torch.cat(ids, dim=1)

    def _prior_on(
        self, pages: torch.Tensor, outcomes: torch.Tensor, prior_fold: torch.Tensor | None
    ) -> torch.Tensor:
        """The prior at ``pages (N,)`` × distinct shared ``outcomes (M,)``, ``(N, M)``: the
        rows' observed transitions are put onto the outcomes' columns (``O(N · M)`` plus the
        rows' entries, no search)."""
        n, m = self.n_pages + 1, len(outcomes)
        use_folds = prior_fold is not None and self.fold_prior_vals.shape[0] > 0
        row = self.fold_prior_row[prior_fold, pages] if use_folds else self.prior_row[pages]
        value = self.prior_base[outcomes][None, :] + row[:, None]
        owner, pos = _csr_entries(self.prior_indptr, pages)
        if owner.numel():
            slot = torch.full((n,), -1, dtype=torch.long, device=pages.device)
            slot[outcomes] = torch.arange(m, device=pages.device)
            col = slot[self.prior_keys[pos] % n]
            keep = col >= 0
            owner, pos, col = owner[keep], pos[keep], col[keep]
            vals = (
                self.fold_prior_vals[prior_fold[owner], pos] if use_folds else self.prior_vals[pos]
            )
            value.view(-1).index_add_(0, owner * m + col, vals)
        return value

    def embed(self, pages: torch.Tensor, time_bucket: torch.Tensor | None) -> torch.Tensor:
        """Inputs of shape ``(B, T)`` → GRU inputs ``(B, T, D)``."""
        parts = [self.page_embedding(pages)]
        if self.cfg.use_groups:
            parts.append(self.group_embedding(self.page_group[pages]))
        if self.cfg.use_time:
            if time_bucket is None:
                time_bucket = torch.zeros_like(pages)
            parts.append(self.time_embedding(time_bucket))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return self.dropout(x)

    def forward(
        self,
        pages: torch.Tensor,
        time_bucket: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        prior_fold: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for every position.

        Args:
            pages: Page ids, shape ``(B, T)``; padding = ``P``.
            time_bucket: Time-on-previous-page buckets, shape ``(B, T)`` (used if configured).
            hidden: GRU state ``(L, B, H)`` to start from; zeros when ``None``.
            prior_fold: Training only: the fold of each sequence, shape ``(B,)``; its prior
                comes from the other folds' counts.

        Returns:
            ``(logits (B, T, P + 1), hidden (L, B, H))``.
        """
        out, hidden = self.encode(pages, time_bucket, hidden)
        fold = None if prior_fold is None else prior_fold[:, None].expand_as(pages)
        return self.scores(out, pages, fold), hidden

    def encode(
        self,
        pages: torch.Tensor,
        time_bucket: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRU's top-layer outputs ``(B, T, H)`` (after dropout) and final state.

        With ``lengths`` ``(B,)`` (CPU, int64) the padded positions are skipped (a packed
        sequence): on a batch of short sessions padded to the longest, most of the work.
        Their outputs are then zeros, and the returned state is meaningless.
        """
        x = self.embed(pages, time_bucket)
        if lengths is None:
            out, hidden = self.gru(x, hidden)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False
            )
            out, hidden = self.gru(packed, hidden)
            out, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=pages.shape[1]
            )
        return self.dropout(out), hidden

    def scores(
        self, out: torch.Tensor, pages: torch.Tensor, prior_fold: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits over the ``P + 1`` outcomes from outputs ``(..., H)`` at pages ``(...)``.

        Training can score the valid positions only (flattened, ``(N, H)`` and ``(N,)``);
        ``prior_fold`` has the shape of ``pages`` (the fold of each position's session).
        """
        weight, bias = self.output_layer()
        logits = nn.functional.linear(out, weight, bias)
        if self.use_prior:
            logits = self.add_prior(logits, pages, prior_fold)
        return logits

    def output_layer(
        self, outcomes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Output weights ``(M, H)`` and biases ``(M,)`` of ``outcomes`` (``(M,)``; all ``P + 1``
        when ``None``), the group head folded in.

        ``out · (w_j + g_group(j)) = out · w_j + out · g_group(j)``: one matrix product over
        the outcomes instead of a second over the groups and an ``(N, P + 1)`` gather (and
        its scatter in the backward pass), which dominated training time on large sites.
        """
        weight, bias = self.head.weight, self.head.bias
        # embedding lookups: their backward pass is a fast index-add, not an index-put
        if outcomes is not None:
            weight = nn.functional.embedding(outcomes, weight)
            bias = nn.functional.embedding(outcomes, bias[:, None])[..., 0]
        if self.cfg.group_head:
            groups = self.outcome_group if outcomes is None else self.outcome_group[outcomes]
            weight = weight + nn.functional.embedding(groups, self.group_head.weight)
            bias = bias + nn.functional.embedding(groups, self.group_head.bias[:, None])[..., 0]
        return weight, bias


def _csr_entries(indptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries of CSR rows ``rows (N,)``: ``(owner, pos)``, each ``(E,)``.

    ``owner`` is the index into ``rows`` an entry belongs to, ``pos`` its position in the
    CSR data arrays (``E`` = the rows' total length; no Python loop).
    """
    lo = indptr[rows]
    lens = indptr[rows + 1] - lo
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lens)
    starts = torch.cumsum(lens, 0) - lens
    pos = torch.arange(owner.numel(), device=rows.device) - starts[owner] + lo[owner]
    return owner, pos


_PRIOR_BUFFERS = ("prior_base", "prior_row", "prior_indptr", "prior_keys", "prior_vals")


def _prior_state_pre_hook(
    module: GRUNet, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Before loading weights: size the prior buffers like the incoming ones (their ``nnz``
    depends on the data), and read the dense ``log_prior`` of version-1 checkpoints.

    A dense table becomes an exact sparse one: no base or row terms and every cell an entry
    (as large as it was, which version 1 capped at 4,096 pages).
    """
    dense = state_dict.pop(prefix + "log_prior", None)
    if dense is not None:
        n = module.n_pages + 1
        if tuple(dense.shape) != (n, n):  # VisitorModel.load names the file
            raise ValueError(
                f"checkpoint prior has shape {tuple(dense.shape)}, the model {n} x {n}"
            )
        cells = n * (n - 1)  # every row but the padding row
        state_dict[prefix + "prior_base"] = torch.zeros(n)
        state_dict[prefix + "prior_row"] = torch.zeros(n)
        state_dict[prefix + "prior_indptr"] = torch.cat(
            [torch.arange(0, cells + 1, n), torch.full((1,), cells)]
        )
        state_dict[prefix + "prior_keys"] = torch.arange(cells)
        state_dict[prefix + "prior_vals"] = dense[:-1].reshape(-1).float()
    for name in _PRIOR_BUFFERS:
        incoming = state_dict.get(prefix + name)
        if incoming is not None and incoming.shape != getattr(module, name).shape:
            current = getattr(module, name)
            setattr(
                module, name, torch.empty_like(incoming, dtype=current.dtype).to(current.device)
            )


@dataclass
class NegativeSampler:
    """Negatives of a sampled softmax (:attr:`envs.training.TrainerConfig.sampled_softmax`).

    Attributes:
        log_q: Log-probabilities ``(P + 1,)`` of the proposal the negatives are drawn from.
        n_draws: Draws with replacement per batch from the torch generator (seeded, and saved
            with resumable checkpoints); a draw of outcome ``s`` ``c`` times weighs
            ``c / (n_draws · q(s))``.
        exact: Most likely successors of each page (under the prior) summed exactly.
    """

    log_q: torch.Tensor
    n_draws: int
    exact: int = 32

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(negatives (M,), log_weight (M,))``: distinct outcomes and their importance
        log-weights."""
        draws = torch.multinomial(self.log_q.exp(), self.n_draws, replacement=True)
        negatives, counts = torch.unique(draws, return_counts=True)
        log_weight = (
            torch.log(counts.to(self.log_q.dtype)) - math.log(self.n_draws) - self.log_q[negatives]
        )
        return negatives, log_weight


@dataclass
class TrainingBatch:
    """One padded batch of training windows (:func:`envs.training.train`).

    Attributes:
        pages: Page ids ``(B, T)``, padding ``P``.
        times: Time buckets of the previous page ``(B, T)``.
        targets: Next outcome ids ``(B, T)``, meaningless where not ``valid``.
        valid: Positions that hold a page view ``(B, T)``.
        lengths: Window lengths ``(B,)`` on the CPU (packed sequences), or ``None``.
        fold: Each window's prior fold ``(B,)`` (cross-fitted priors), or ``None``.
        first: Whether each window starts its session ``(B,)`` (its first page is an entry).
    """

    pages: torch.Tensor
    times: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    lengths: torch.Tensor | None
    fold: torch.Tensor | None
    first: torch.Tensor


class VisitorModel:
    """A trained (or training) GRU next-page model with its vocabulary.

    Args:
        vocab: Pages and groups; the model predicts over ``vocab.labels()``.
        cfg: Architecture.
        device: Torch device for the network.
    """

    name = "gru"
    checkpoint_kind = CHECKPOINT_KIND

    def __init__(
        self, vocab: Vocabulary, cfg: ModelConfig | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.vocab = vocab
        self.cfg = cfg or ModelConfig()
        self.device = torch.device(device)
        self.net = self._make_net().to(self.device)
        self.metrics: dict[str, Any] = {}
        self.train_state: dict[str, Any] = {}
        # when simulated visitors leave, fitted to the data (envs/exit_calibration.py):
        # {"edges": [...], "offsets": [...]}, or None
        self.exit_calibration: dict[str, list[Any]] | None = None
        # the shortest sessions it was trained on (simulator.min_session_length): where the
        # simulator's visitors enter is counted on those very sessions
        self.min_session_length = 1

    def _make_net(self) -> GRUNet:
        """The network (a subclass adds its own parameters)."""
        v = self.vocab
        return GRUNet(v.n_pages, v.page_group, v.n_groups, self.cfg)

    def fit_prior(self, train_seqs: SessionSequences) -> None:
        """Count the first-order prior on the training sessions (no-op without a prior).

        ``p(j | i) = (c(i, j) + k · pop(j)) / (c(i) + k)`` with ``pop`` the smoothed frequency
        of each outcome (pages and ``EXIT``) as a next step, ``k = prior_smoothing``, stored
        sparsely (:class:`GRUNet`). With ``prior_folds >= 2`` also the out-of-fold tables used
        while training (session ``s`` is in fold ``s mod prior_folds``; ``pop`` stays the
        full split's). Memory is ``O(P + distinct transitions)``: no ``P × P`` array is made.
        """
        if not self.net.use_prior:
            return
        tables = prior_tables(
            train_seqs,
            self.vocab.n_pages,
            self.cfg.prior_smoothing,
            self.cfg.prior_folds,
        )
        self.net.set_prior(**tables)

    # ---- shapes ----------------------------------------------------------------------------

    @property
    def n_outcomes(self) -> int:
        """``P + 1``: the pages and ``EXIT``."""
        return self.vocab.n_pages + 1

    @property
    def hidden_dim(self) -> int:
        """Width of the flat per-visitor state used by :meth:`step`: ``L · H``."""
        return self.cfg.num_layers * self.cfg.hidden_size

    def initial_hidden(self, batch: int) -> torch.Tensor:
        """State of ``batch`` visitors before their first page view, ``(B, L·H)`` zeros."""
        return torch.zeros(batch, self.hidden_dim, device=self.device)

    # ---- training ---------------------------------------------------------------------------

    def batch_loss(self, batch: TrainingBatch, sampler: NegativeSampler | None) -> torch.Tensor:
        """Mean ``-ln p(next)`` over the valid positions of a training batch (a scalar).

        The output layer (``P + 1`` scores each) runs only where there is a next page to
        predict; with ``batch.lengths`` the GRU skips the padded steps too (CPU). ``sampler``:
        the normaliser partly sampled (:meth:`GRUNet.sampled_nll`).
        """
        valid = batch.valid
        out, _ = self.net.encode(batch.pages, batch.times, lengths=batch.lengths)
        fold = None if batch.fold is None else batch.fold[:, None].expand_as(batch.pages)[valid]
        pages, targets = batch.pages[valid], batch.targets[valid]
        if sampler is not None:
            negatives, log_weight = sampler.draw()
            nll = self.net.sampled_nll(
                out[valid].float(), pages, targets, negatives, log_weight, fold, sampler.exact
            )
            return nll.mean()
        logits = self.net.scores(out[valid], pages, fold)
        return nn.functional.cross_entropy(logits.float(), targets)

    # ---- the simulator's API ---------------------------------------------------------------

    @torch.no_grad()
    def step(
        self, page: torch.Tensor, hidden: torch.Tensor, time_bucket: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance ``B`` visitors by one page view.

        Args:
            page: The page each visitor now views, shape ``(B,)`` (long).
            hidden: Their states before it, shape ``(B, L·H)`` (:meth:`initial_hidden` for new
                visitors).
            time_bucket: Time on their previous page, bucketed, shape ``(B,)``; optional.

        Returns:
            ``(logits (B, P + 1), hidden (B, L·H))``: unnormalised next-page scores (softmax
            gives the distribution) and the new states.
        """
        top, hidden = self.step_hidden(page, hidden, time_bucket)
        weight, base = self._output_tables()
        # = net.scores(top, page): one product with the group scores folded into the head
        rows = base.index_select(0, page) if base.shape[0] > 1 else base
        logits = torch.addmm(rows, top, weight.t())
        if base.shape[0] == 1 and self.net.use_prior:  # a large site: the sparse prior
            logits = self.net.add_prior(logits, page)
        return logits, hidden

    @torch.no_grad()
    def step_hidden(
        self, page: torch.Tensor, hidden: torch.Tensor, time_bucket: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`step`, without the output layer: ``(top-layer output (B, H), hidden)``.

        With :meth:`score_outcomes` it lets a simulator score only a few candidate pages
        instead of all ``P + 1`` (large sites).

        One GRU step written out (PyTorch's gate equations, same weights): the first layer's
        input projection depends on the page (and time bucket) only, so it is a table lookup
        (:meth:`_input_gates`) instead of an embedding and a matrix product per visitor, and
        a simulator step costs one ``(B, H) × (H, 3H)`` product per layer.
        """
        self.net.eval()
        gru, size = self.net.gru, self.cfg.hidden_size
        h = hidden.view(page.shape[0], self.cfg.num_layers, size)
        page_gates, time_gates = self._input_gates()
        x_gates = page_gates[page]
        if time_gates is not None:
            x_gates = x_gates + time_gates[0 if time_bucket is None else time_bucket]
        layers = []
        for layer in range(self.cfg.num_layers):
            if layer > 0:
                x_gates = torch.addmm(
                    getattr(gru, f"bias_ih_l{layer}"),
                    layers[-1],
                    getattr(gru, f"weight_ih_l{layer}").t(),
                )
            prev = h[:, layer]
            h_gates = torch.addmm(
                getattr(gru, f"bias_hh_l{layer}"), prev, getattr(gru, f"weight_hh_l{layer}").t()
            )
            xr, xz, xn = x_gates.chunk(3, dim=1)
            hr, hz, hn = h_gates.chunk(3, dim=1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            layers.append(n + z * (prev - n))  # (1 - z) * n + z * h
        return layers[-1], torch.cat(layers, dim=1)

    def _output_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer for inference: ``(weight (P + 1, H), base)``, where the group
        head is folded into the page head (a destination's score is ``w_page + w_group`` times
        the output) and ``base`` holds the biases plus the first-order prior, one row per
        current page, ``(P + 1, P + 1)``, on sites of up to :data:`DENSE_PRIOR_CELLS` cells
        (a lookup per step); else, or without a prior, the biases alone, ``(1, P + 1)`` (the
        sparse prior is then added per step)."""
        return self._cached("output", self._build_output_tables)

    def _build_output_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        weight, bias = net.output_layer()
        n = self.n_outcomes
        if net.use_prior and n * n <= DENSE_PRIOR_CELLS:
            base = net.add_prior(bias.expand(n, -1), torch.arange(n, device=bias.device))
        else:
            base = bias[None, :]
        return weight.detach().contiguous(), base.detach().contiguous()

    def _cached(self, name: str, build: Any) -> Any:
        """``build()``, cached until a weight or buffer changes (keyed on the tensors'
        storage and version counters, which every in-place update bumps)."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        cache = self.__dict__.setdefault("_inference_cache", {})
        if name not in cache or cache[name][0] != key:
            cache[name] = (key, build())
        return cache[name][1]

    def _input_gates(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first GRU layer's input projection ``W_ih x + b_ih`` of every page, ``(P + 1,
        3H)``, and of every time bucket (its share of ``x``), ``(N_TIME_BUCKETS, 3H)`` or
        ``None``. Cached until a weight changes."""
        return self._cached("input", self._build_input_gates)

    def _build_input_gates(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        net = self.net
        pages = torch.arange(self.vocab.n_pages + 1, device=self.device)
        parts = [net.page_embedding(pages)]
        if self.cfg.use_groups:
            parts.append(net.group_embedding(net.page_group[pages]))
        x = torch.cat(parts, dim=1)
        weight = net.gru.weight_ih_l0
        width = x.shape[1]
        page_gates = torch.addmm(net.gru.bias_ih_l0, x, weight[:, :width].t())
        time_gates = None
        if self.cfg.use_time:
            time_gates = net.time_embedding.weight @ weight[:, width:].t()
        return page_gates.detach(), None if time_gates is None else time_gates.detach()

    @torch.no_grad()
    def score_outcomes(
        self, output: torch.Tensor, page: torch.Tensor, outcomes: torch.Tensor
    ) -> torch.Tensor:
        """Logits of chosen outcomes only: ``(B, H)`` output, ``(B,)`` page, ``(B, M)`` ids.

        Equal to ``step(...)[0].gather(1, outcomes)`` at a cost of ``M`` instead of ``P + 1``
        outcomes per visitor.
        """
        net = self.net
        weight, bias = net.output_layer(outcomes.reshape(-1))
        m = outcomes.shape[1]
        logits = torch.einsum("bh,bmh->bm", output, weight.view(len(output), m, -1)) + bias.view(
            len(output), m
        )
        if net.use_prior:
            logits = logits + net.prior_at(page, outcomes)
        return logits

    # ---- batches and whole datasets ---------------------------------------------------------

    @torch.no_grad()
    def log_prob_next(
        self, pages: torch.Tensor | np.ndarray, time_bucket: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """Next-page log-probabilities after every prefix: ``(B, T)`` → ``(B, T, P + 1)``.

        Position ``t`` is the distribution of what follows ``pages[:, : t + 1]``. Pad with id
        ``P``; positions after the padding start are meaningless.
        """
        self.net.eval()
        pages = torch.as_tensor(pages, dtype=torch.long, device=self.device)
        tb = None if time_bucket is None else torch.as_tensor(time_bucket, device=self.device)
        logits, _ = self.net(pages, tb)
        return torch.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def iter_log_probs(
        self, seqs: SessionSequences, batch_sessions: int = 512, chunk_len: int = 256
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Log-probabilities of every step of ``seqs``, in batches of sessions of similar length.

        Long sessions are run in chunks of ``chunk_len`` positions with the state carried
        over, which gives the same numbers as one pass and bounds memory. A batch holds at most
        :data:`EVAL_CELLS` ``// (P + 1)`` padded positions (at least 64) whatever
        ``batch_sessions`` asks for, and each chunk's steps are yielded on their own, so the
        log-probabilities held at once stay near :data:`EVAL_CELLS` floats at any ``P``.

        Yields:
            ``(step_index (n,), log_probs (n, P + 1))``: flat step indices into ``seqs`` and
            their next-page log-probabilities (float32), each step once.
        """
        self.net.eval()
        max_tokens = max(64, EVAL_CELLS // (self.vocab.n_pages + 1))
        chunk_len = max(1, min(chunk_len, max_tokens))
        for rows, pages, times, mask in padded_batches(seqs, batch_sessions, max_tokens=max_tokens):
            hidden = None
            for t0 in range(0, pages.shape[1], chunk_len):
                t1 = t0 + chunk_len
                p = torch.as_tensor(pages[:, t0:t1], device=self.device)
                tb = torch.as_tensor(times[:, t0:t1], device=self.device)
                logits, hidden = self.net(p, tb, hidden)
                keep = torch.as_tensor(mask[:, t0:t1], device=self.device)
                logp = torch.log_softmax(logits[keep].float(), dim=-1).cpu().numpy()
                yield rows[:, t0:t1][mask[:, t0:t1]], logp

    def iter_calibrated_log_probs(
        self,
        seqs: SessionSequences,
        exit_offset: np.ndarray,
        converting: np.ndarray,
        conversion_offset: float,
        batch_sessions: int = 512,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`iter_log_probs` with an exit calibration (``envs/exit_calibration.py``)
        applied as the simulator applies it: ``exit_offset`` on ``EXIT``'s logit at each step
        and ``conversion_offset`` on the ``converting`` outcomes' (float64 log-probabilities).

        Args:
            seqs: The sessions scored.
            exit_offset: The offset at each step of ``seqs``, ``(n_steps,)``.
            converting: Which outcomes convert, boolean ``(P + 1,)`` (``EXIT`` never).
            conversion_offset: The offset on their logits (0: none).
        """
        for idx, logp in self.iter_log_probs(seqs, batch_sessions):
            yield (
                idx,
                calibrate_log_probs(
                    logp.astype(np.float64), exit_offset[idx], converting, conversion_offset
                ),
            )

    # ---- people's API ----------------------------------------------------------------------

    @torch.no_grad()
    def predict_next(
        self, history: Sequence[str], k: int = 5, *, include_exit: bool = True
    ) -> list[tuple[str, float]]:
        """The ``k`` most likely next pages after a history of page names, with probabilities.

        Args:
            history: Pages viewed so far, oldest first (names of the vocabulary); not empty.
            k: How many to return.
            include_exit: Whether ``EXIT`` may be among them.

        Raises:
            ClickstreamError: Empty history, an unknown page (named), or ``k < 1``.
        """
        if len(history) == 0:
            raise DataError("history must hold at least one page view")
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        ids = self.vocab.ids(history)
        logp = self.log_prob_next(ids[None, :])[0, -1]
        probs = logp.exp().cpu().numpy()
        if not include_exit:
            probs = probs[: self.vocab.n_pages] / probs[: self.vocab.n_pages].sum()
        order = np.argsort(-probs, kind="stable")[:k]
        labels = self.vocab.labels()
        return [(labels[i], float(probs[i])) for i in order]

    # ---- persistence -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write a checkpoint (weights, vocabulary, config, metrics) atomically.

        Everything but the weights is stored as plain JSON-able data, so that
        :meth:`load` reads the file with ``torch.load(weights_only=True)``.
        """
        path = Path(path)
        state = {
            "kind": self.checkpoint_kind,
            "version": CHECKPOINT_VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            **plain_data(
                {
                    **self._checkpoint_settings(),
                    "model_config": dataclasses.asdict(self.cfg),
                    "vocab": self.vocab.to_dict(),
                    "metrics": self.metrics,
                    "train_state": self.train_state,
                    "exit_calibration": self.exit_calibration,
                    "min_session_length": self.min_session_length,
                    **dict(extra or {}),
                }
            ),
        }
        with atomic_file(path) as tmp:
            torch.save(state, tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> VisitorModel:
        """Read a checkpoint written by :meth:`save` (tensors and plain data only: nothing
        in the file is run).

        Raises:
            RunFolderError: Not a readable visitor model checkpoint (missing, truncated, a
                pickle of objects, another kind of file, weights that do not fit, weights or
                buffers that are not finite, a malformed setting), naming it.
        """
        path = Path(path)
        state = load_weights_only(path, "visitor model checkpoint")
        if not isinstance(state, dict) or state.get("kind") != cls.checkpoint_kind:
            raise RunFolderError(
                f"not a NextPage visitor model checkpoint of kind {cls.name}", file=str(path)
            )
        try:
            model = cls._from_checkpoint(
                Vocabulary.from_dict(state["vocab"]),
                ModelConfig.from_dict(state["model_config"]),
                state,
                device,
            )
            model.net.load_state_dict(state["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RunFolderError(
                f"visitor model checkpoint does not fit its own config ({type(exc).__name__}: "
                f"{str(exc)[:300]})",
                file=str(path),
            ) from None
        _check_finite(model.net, path)
        model.metrics = dict(state.get("metrics") or {})
        model.train_state = dict(state.get("train_state") or {})
        model.exit_calibration = _checked_calibration(
            state.get("exit_calibration"), path, len(model.vocab.pages)
        )
        # files written before it was recorded hold none: every session (1)
        shortest = state.get("min_session_length", 1)
        if not checks.is_whole(shortest) or int(shortest) < 1:
            raise RunFolderError(
                "visitor model checkpoint has a malformed min_session_length (expected a "
                f"whole number >= 1, got {shortest!r})",
                file=str(path),
            )
        model.min_session_length = int(shortest)
        return model

    def _checkpoint_settings(self) -> dict[str, Any]:
        """Plain settings a subclass needs back to rebuild itself (:meth:`_from_checkpoint`)."""
        return {}

    @classmethod
    def _from_checkpoint(
        cls, vocab: Vocabulary, cfg: ModelConfig, state: Mapping[str, Any], device: Any
    ) -> VisitorModel:
        """An untrained model of a checkpoint's shape (its weights are loaded next)."""
        return cls(vocab, cfg, device=device)


def calibrate_log_probs(
    logp: np.ndarray, exit_offset: np.ndarray, converting: np.ndarray, conversion_offset: float
) -> np.ndarray:
    """Next-page log-probabilities ``(n, P + 1)`` with ``exit_offset`` ``(n,)`` added to
    ``EXIT``'s logit and ``conversion_offset`` to the ``converting`` outcomes' (boolean
    ``(P + 1,)``), normalised again: the rows :class:`envs.exit_calibration.
    ExitCalibratedDynamics` simulates."""
    mass = np.exp(logp[:, -1]) * np.expm1(exit_offset)
    if conversion_offset:
        mass = mass + np.exp(logp[:, converting]).sum(axis=1) * np.expm1(conversion_offset)
    out = logp.copy()
    out[:, -1] += exit_offset
    if conversion_offset:
        out[:, converting] += conversion_offset
    return out - np.log1p(mass)[:, None]


def _check_finite(net: torch.nn.Module, path: Path) -> None:
    """Refuse a network whose floating-point weights or buffers hold NaN or infinity (the
    simulator would turn NaN rows into exits without a word).

    Raises:
        RunFolderError: Naming the file and the first such tensor.
    """
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise RunFolderError(
                f"visitor model checkpoint holds {bad:,} values that are not finite (NaN or "
                f"infinite) in tensor {name!r}: a diverged or damaged model, refused",
                file=str(path),
            )


def _checked_calibration(value: Any, path: Path, n_pages: int) -> dict[str, Any] | None:
    """A checkpoint's exit calibration, checked: increasing integer ``edges`` from 1 and as
    many finite ``offsets``; when the conversion was fitted, ``converting`` page ids in
    ``0..n_pages-1`` and a finite ``conversion_offset`` (``None``: nothing was fitted).

    Raises:
        RunFolderError: Anything else, naming the file.
    """
    if value is None:
        return None
    out: dict[str, Any] = {}
    try:
        edges = [int(e) for e in value["edges"]]
        offsets = [float(o) for o in value["offsets"]]
        ok = (
            len(edges) == len(offsets) > 0
            and edges[0] == 1
            and bool(np.all(np.diff(edges) > 0))
            and all(math.isfinite(o) for o in offsets)
        )
        out = {"edges": edges, "offsets": offsets}
        if ok and ("converting" in value or "conversion_offset" in value):
            converting = [int(p) for p in value["converting"]]
            conversion_offset = float(value["conversion_offset"])
            ok = (
                len(converting) > 0
                and all(0 <= p < n_pages for p in converting)
                and math.isfinite(conversion_offset)
            )
            out |= {"converting": converting, "conversion_offset": conversion_offset}
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise RunFolderError(
            "visitor model checkpoint has a malformed exit_calibration (expected increasing "
            "integer edges from 1 and as many finite offsets; converting page ids of the "
            "model's vocabulary with a finite conversion_offset)",
            file=str(path),
        )
    return out


def plain_data(value: Any) -> Any:
    """``value`` as JSON-able plain data (numpy scalars to numbers, tuples to lists, paths to
    strings): what a ``weights_only`` checkpoint may hold besides tensors."""
    return json.loads(json.dumps(value, default=json_default))


def load_weights_only(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, so a file
    that holds anything else (a pickled object that would run code) is refused.

    Raises:
        RunFolderError: Missing, truncated or not a torch file, or one holding objects other
            than tensors and plain data; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{what} not found", file=str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RunFolderError(
            f"{what} holds more than tensors and plain data, refused unread (it could run "
            f"code): {first[:300]}",
            file=str(path),
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError) as exc:
        raise RunFolderError(
            f"{what} cannot be read: truncated or not a torch file ({type(exc).__name__}: "
            f"{str(exc).strip()[:200]})",
            file=str(path),
        ) from None


def prior_tables(
    seqs: SessionSequences, n_pages: int, smoothing: float, folds: int = 0
) -> dict[str, np.ndarray | None]:
    """The sparse first-order prior of :class:`GRUNet` counted on ``seqs``.

    Args:
        seqs: Training sessions.
        n_pages: P.
        smoothing: ``k``, the pseudo-count spread over outcomes by popularity.
        folds: Also the out-of-fold tables when ``>= 2`` (session ``s`` in fold ``s mod F``).

    Returns:
        Keyword arguments of :meth:`GRUNet.set_prior`: ``base`` ``(P + 1,)``, ``row``
        ``(P + 1,)``, ``indptr`` ``(P + 2,)``, ``keys`` and ``vals`` ``(nnz,)``, ``fold_row``
        ``(F, P + 1)`` and ``fold_vals`` ``(F, nnz)`` (``None`` without folds); float64.
    """
    n = n_pages + 1
    src, dst = seqs.pages, seqs.targets()
    keys, inverse, counts = np.unique(src * n + dst, return_inverse=True, return_counts=True)
    cols = keys % n
    kpop = smoothing * (np.bincount(dst, minlength=n) + 1.0) / (len(dst) + n)
    row_total = np.bincount(src, minlength=n).astype(np.float64)  # c(i); the padding row 0

    def terms(c_ij: np.ndarray, c_i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        row = -np.log(c_i + smoothing)
        row[n_pages] = 0.0  # the padding id
        return row, np.log1p(c_ij / kpop[cols])

    row, vals = terms(counts.astype(np.float64), row_total)
    out: dict[str, np.ndarray | None] = {
        "base": np.log(kpop),
        "row": row,
        "indptr": np.r_[0, np.cumsum(np.bincount(keys // n, minlength=n + 1))][: n + 1],
        "keys": keys,
        "vals": vals,
        "fold_row": None,
        "fold_vals": None,
    }
    if folds >= 2:
        fold_of_view = np.repeat(np.arange(len(seqs)) % folds, seqs.lengths)
        fold_rows, fold_vals = [], []
        for f in range(folds):
            own = fold_of_view == f
            c_ij = counts - np.bincount(inverse[own], minlength=len(keys))
            c_i = row_total - np.bincount(src[own], minlength=n)
            r, v = terms(c_ij.astype(np.float64), c_i)
            fold_rows.append(r)
            fold_vals.append(v)
        out["fold_row"], out["fold_vals"] = np.stack(fold_rows), np.stack(fold_vals)
    return out


def make_batches(
    lengths: np.ndarray,
    batch_sessions: int,
    max_tokens: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """Group sequences of similar length into batches (little padding).

    Args:
        lengths: Length of each sequence, shape ``(S,)``.
        batch_sessions: At most this many sequences per batch.
        max_tokens: Also cap ``B · T`` (padded positions) per batch, so that batches of short
            sequences hold many and batches of long ones few.
        rng: Break ties in length at random and shuffle the batch order (training); ``None``
            keeps a deterministic order.

    Returns:
        Sequence indices of each batch.
    """
    lengths = np.asarray(lengths)
    tiebreak = rng.random(len(lengths)) if rng is not None else np.arange(len(lengths))
    order = np.lexsort((tiebreak, lengths))
    batches = []
    i, n = 0, len(order)
    while i < n:
        j = min(i + batch_sessions, n)
        if max_tokens is not None:  # lengths ascend: the last sequence sets the width
            fit = max(1, max_tokens // int(lengths[order[j - 1]]))
            while j - i > fit:
                j = i + fit
                fit = max(1, max_tokens // int(lengths[order[j - 1]]))
        batches.append(order[i:j])
        i = j
    if rng is not None:
        rng.shuffle(batches)  # a list of arrays: shuffles the batch order only
    return batches


def pad_batch(
    starts: np.ndarray, lengths: np.ndarray, *flat: np.ndarray, pad: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Gather ``B`` sequences out of flat arrays into padded ``(B, T)`` arrays.

    Args:
        starts: Start of each sequence in the flat arrays, shape ``(B,)``.
        lengths: Their lengths, shape ``(B,)``.
        *flat: Flat per-position arrays to gather (pages, time buckets, targets, ...).
        pad: The padding value of each of them.

    Returns:
        ``(step_index (B, T), mask (B, T), [gathered (B, T) per flat array])``; padding has
        step index -1 and mask False.
    """
    width = int(lengths.max())
    pos = np.arange(width)
    mask = pos[None, :] < lengths[:, None]
    rows = np.where(mask, starts[:, None] + pos[None, :], -1)
    safe = np.where(mask, rows, 0)
    return rows, mask, [np.where(mask, a[safe], v) for a, v in zip(flat, pad, strict=True)]


def padded_batches(
    seqs: SessionSequences, batch_sessions: int, *, max_tokens: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Whole sessions as padded batches of similar length (for evaluation).

    Yields:
        ``(step_index (B, T), pages (B, T), time_bucket (B, T), mask (B, T))``; padding has
        page id ``P``, step index -1 and mask False.
    """
    lengths = seqs.lengths
    for idx in make_batches(lengths, batch_sessions, max_tokens):
        rows, mask, (pages, times) = pad_batch(
            seqs.offsets[idx], lengths[idx], seqs.pages, seqs.time_bucket, pad=(seqs.exit_id, 0)
        )
        yield rows, pages, times, mask
