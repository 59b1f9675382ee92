"""The latent-type GRU visitor model: a GRU whose visitors carry a type a recommendation cannot
change.

A plain GRU gives the *mix* of the visitors seen after a history. In a simulator a
recommendation then boosts the mix, and a visitor pushed to the basket is treated like those who
went there on their own (mostly buyers): the GRU world over-rates interventions that move
visitors to where the valuable ones go (docs/results.md, the intent study). Here every visitor
has one of ``K`` latent types ``z``, drawn when she arrives and kept; the GRU reads her history
and gives each type's next page:

    log p(next = j | history, z) = s(j | history) + m_z[group(page), group(j)] + b_z(j) - log Z_z

with ``s`` the GRU's logits (shared trunk: embeddings, GRU, the output head with its group head
and first-order prior, exactly :class:`~envs.visitor_model.GRUNet`), ``m_z`` a type's
preference for moving from one page group to another (``K × (G + 1) × (G + 1)`` numbers) and
``b_z`` its preference for each outcome (``K × (P + 1)``: pages of one group that a type
treats differently, such as the featured products against the rest of a listing). A
type also has its own entry distribution (a shared page term plus a type × group term) and a
prior ``p(z)``. Training maximises the exact marginal likelihood of every session,
``log Σ_z p(z) p(x_1 | z) Π_t p(x_{t+1} | x_{1:t}, z)`` (a log-sum-exp over ``z`` of the
per-type log-likelihoods); ``K`` is chosen on the validation split. Predicting for people (and
for the test-split metrics) filters exactly: the types' posterior after the history mixes the
types' rows. In the simulator a visitor's type is part of her state, and the click model's
boost acts on her own type's row.

A type adds ``O(P)`` per position with the full softmax; with a sampled softmax (large sites)
its terms are added to the same sampled terms as the plain GRU's
(:meth:`~envs.visitor_model.GRUNet.sampled_terms`), and in the simulator's candidate mode to
the candidates' scores only. Nothing of size ``P × P`` is made.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clickstream import checks
from clickstream.errors import ConfigError, DataError, from_options
from envs.dynamics import Chains, GRUDynamics, entry_distribution, sample_categorical
from envs.latent_class import MAX_DENSE_CELLS
from envs.sequences import EVAL_CELLS, SessionSequences, Vocabulary
from envs.training import TrainerConfig, TrainingDiverged, mean_log_loss, train
from envs.visitor_model import (
    GRUNet,
    ModelConfig,
    NegativeSampler,
    TrainingBatch,
    VisitorModel,
    padded_batches,
)

CHECKPOINT_KIND = "nextpage.latent_gru"
TRUNKS = ("learned", "counted")
ONE_TYPE = ("one_stage", "two_stages")
TABLE_FITS = ("minibatch", "full_batch")


@dataclass
class LatentTypesConfig:
    """The latent types of the model (``simulator.latent_gru``).

    Attributes:
        types: ``K``, or ``auto``: each of ``candidates`` is trained and the validation
            split's log-loss picks one.
        candidates: The ``K`` tried by ``auto``.
        min_gain: ``auto`` takes more types only when they lower the validation log-loss by
            at least this much (nats per page view) over the best with fewer.
        init_scale: Standard deviation of the random initial type preferences (they break
            the symmetry between types).
        max_len: Training windows of this many page views: a type is a property of a whole
            session, so windows should hold whole sessions (longer ones are cut, and their
            later windows count as sessions of their own, without an entry page).
        memory_lr: The second stage's learning rate, a fraction of the trainer's (it starts
            from a trained model: at the full rate the GRU overfits within an epoch).
        restarts: The first (first-order) stage is trained this many times from different
            random starts and the one of the lowest validation log-loss is kept, as the
            latent-class fit does: a single start can miss the visitor types (one did on the
            intent store: prior 0.36 / 0.38 / 0.26 against the truth's 0.72 / 0.23 / 0.05).
        page_preferences: Give each type its own preference for each outcome (``b_z``,
            ``K × (P + 1)``); ``false``: types differ only by group moves and entries, as in
            the latent-class model.
        trunk: The first stage's shared part: ``learned`` (the GRU trunk on the current page)
            or ``counted`` (the trunk's first-order prior, the table counted on the training
            split, with the output layer's biases only, as the latent-class model takes its
            counted table; the output weights start from zero in the memory stage, so that
            stage adds only what history says beyond the types).
        table_lr: With ``trunk: counted``, the first stage's learning rate, without weight
            decay: it trains a table's parameters (the types', the entry's, the output
            biases), as the latent-class fit does, not a network's (at the trainer's 0.002
            with weight decay it had not converged in 30 epochs on the intent store, and the
            decay pulled the types' rarely seen moves toward the mix).
        table_fit: With ``trunk: counted``, how the first stage is fitted: ``minibatch``
            (Adam on the trainer's windows at ``table_lr``, early-stopped on the validation
            split, against the cross-fitted tables the GRU is trained on) or ``full_batch``
            (as the latent-class model is fitted: the exact likelihood of whole training
            sessions against the counted table the simulator uses, maximised by L-BFGS in
            float64 to convergence; :func:`fit_counted_full_batch`). On the intent store the
            minibatch fit credited buyers with 64 more product-to-basket moves than they made
            (researchers 5.2 % fewer); the full-batch fit without page preferences 24 more
            (researchers 1.5 % fewer; docs/results.md).
        table_biases: With ``trunk: counted``, the first stage also trains the output
            layer's biases, one preference per outcome shared by every type on top of the
            counted table; ``false`` keeps them at zero there, so the types re-weight the
            counted table by group moves and entries alone: the latent-class model's
            parametrisation. On the intent store the full-batch fit with them credited
            buyers with 24 product-to-basket moves more than they made, without them 3
            (docs/results.md).
        one_type: How a model of one type is trained (the kept model of ``auto`` when it
            picks one type, or ``types: 1``): ``one_stage`` (as the plain GRU is, in one
            stage, with its type terms starting from zero: one type has nothing to warm-start,
            and the first-order stage only costs; on the GA day it ended 0.007 to 0.04 behind
            the plain GRU on validation) or ``two_stages`` (as the models of more types). The
            candidates ``auto`` compares are all trained in two stages either way, so the
            number of types is chosen like against like.
        memory_min_gain: The memory stage is kept only when it lowers the validation
            log-loss by more than this below the first-order stage's (as more types must earn
            their keep by ``min_gain``); 0 (the default) keeps it whenever it is lower at
            all. On the intent store, whose visitors are first-order given their intent, the
            memory stage gains 0.00001 to 0.0003 on validation; 0.001 drops it there, which
            left the ranking of policies as it was (tau 1.0) and did not help PPO trained in
            the world (docs/results.md).
    """

    types: int | str = "auto"
    candidates: tuple[int, ...] = (1, 2, 3, 4)
    min_gain: float = 0.001
    init_scale: float = 0.5
    max_len: int = 64
    memory_lr: float = 0.25
    restarts: int = 1
    page_preferences: bool = True
    trunk: str = "learned"
    table_lr: float = 0.01
    table_fit: str = "minibatch"
    table_biases: bool = True
    one_type: str = "one_stage"
    memory_min_gain: float = 0.0

    def __post_init__(self) -> None:
        self.candidates = tuple(int(k) for k in self.candidates)
        if self.types != "auto" and (isinstance(self.types, bool) or int(self.types) < 1):
            raise ConfigError(f"latent_gru.types must be >= 1 or auto, got {self.types!r}")
        if not self.candidates or min(self.candidates) < 1:
            raise ConfigError(
                f"latent_gru.candidates must be type counts >= 1, got {self.candidates}"
            )
        if int(self.max_len) < 2:
            raise ConfigError(f"latent_gru.max_len must be >= 2, got {self.max_len}")
        if isinstance(self.restarts, bool) or int(self.restarts) < 1:
            raise ConfigError(f"latent_gru.restarts must be >= 1, got {self.restarts!r}")
        self.restarts = int(self.restarts)
        if self.trunk not in TRUNKS:
            raise ConfigError(f"latent_gru.trunk must be one of {TRUNKS}, got {self.trunk!r}")
        if self.table_fit not in TABLE_FITS:
            raise ConfigError(
                f"latent_gru.table_fit must be one of {TABLE_FITS}, got {self.table_fit!r}"
            )
        if self.table_fit == "full_batch" and self.trunk != "counted":
            raise ConfigError(
                "latent_gru.table_fit=full_batch fits the counted first stage: "
                f"it needs latent_gru.trunk=counted, got {self.trunk!r}"
            )
        if not self.table_biases and self.trunk != "counted":
            raise ConfigError(
                "latent_gru.table_biases=false concerns the counted first stage: "
                f"it needs latent_gru.trunk=counted, got {self.trunk!r}"
            )
        if self.one_type not in ONE_TYPE:
            raise ConfigError(
                f"latent_gru.one_type must be one of {ONE_TYPE}, got {self.one_type!r}"
            )
        if not float(self.table_lr) > 0:
            raise ConfigError(f"latent_gru.table_lr must be > 0, got {self.table_lr!r}")
        if not float(self.memory_min_gain) >= 0:
            raise ConfigError(
                f"latent_gru.memory_min_gain must be >= 0, got {self.memory_min_gain!r}"
            )

    @property
    def tried(self) -> tuple[int, ...]:
        """The type counts to train: ``candidates`` for ``auto``, else ``(types,)``."""
        return tuple(sorted(set(self.candidates))) if self.types == "auto" else (int(self.types),)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> LatentTypesConfig:
        """Build from a plain mapping (a resolved Hydra node); unknown keys raise."""
        return from_options(cls, cfg, "simulator.latent_gru")


class LatentGRUNet(GRUNet):
    """:class:`~envs.visitor_model.GRUNet` (the shared trunk) plus the types' parameters.

    Args:
        n_pages, page_group, n_groups, cfg: As for :class:`GRUNet`.
        n_types: ``K``.
        init_scale: Standard deviation of the random initial type preferences.
        page_preferences: Train ``type_page`` (else it stays zero).

    Attributes:
        type_logit: ``(K,)``, the prior ``p(z)`` after a softmax.
        type_move: ``(K, G + 1, G + 1)``: type ``z``'s preference for going from a page of
            group ``a`` to an outcome of group ``b`` (``EXIT`` is group ``G``; the source row
            ``G`` is the padding id's, unused).
        entry_page: ``(P,)``: the entry logits every type shares.
        entry_type: ``(K, G)``: each type's preference for entering by a page of a group.
        type_page: ``(K, P + 1)``: each type's preference for each outcome.
    """

    def __init__(
        self,
        n_pages: int,
        page_group: np.ndarray,
        n_groups: int,
        cfg: ModelConfig,
        n_types: int,
        init_scale: float = 0.5,
        page_preferences: bool = True,
    ) -> None:
        super().__init__(n_pages, page_group, n_groups, cfg)
        self.n_types, self.n_groups = int(n_types), int(n_groups)
        if not cfg.group_head:  # the outcome groups are needed by the types either way
            self.register_buffer(
                "outcome_group", torch.as_tensor(np.r_[page_group, n_groups], dtype=torch.long)
            )
        g = n_groups + 1
        self.type_logit = nn.Parameter(torch.zeros(self.n_types))
        self.type_move = nn.Parameter(torch.randn(self.n_types, g, g) * init_scale)
        self.entry_page = nn.Parameter(torch.zeros(n_pages))
        self.entry_type = nn.Parameter(torch.randn(self.n_types, n_groups) * init_scale)
        type_page = torch.zeros(self.n_types, n_pages + 1)
        if page_preferences:
            self.type_page = nn.Parameter(type_page)
        else:  # the same zeros, never trained
            self.register_buffer("type_page", type_page)
        self.memory = True  # False: every position from an empty state (the warm start)

    def encode(
        self,
        pages: torch.Tensor,
        time_bucket: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`GRUNet.encode`; without ``memory`` every position is encoded from an empty
        state (the trunk then sees the current page only: the warm start's first-order
        trunk, under which the types, not the GRU, take up what the visit says)."""
        if self.memory:
            return super().encode(pages, time_bucket, hidden, lengths)
        if self.cfg.use_time:  # the time bucket is an input too: every position on its own
            b, t = pages.shape
            flat_time = None if time_bucket is None else time_bucket.reshape(-1, 1)
            out, last = super().encode(pages.reshape(-1, 1), flat_time)
            return out.reshape(b, t, -1), last
        # the output depends on the page only: encode each page once and look it up
        every = torch.arange(self.n_pages + 1, device=pages.device)[:, None]
        table, last = super().encode(every)
        return table[:, 0][pages], last

    def log_type_prior(self) -> torch.Tensor:
        """``log p(z)``, ``(K,)``."""
        return torch.log_softmax(self.type_logit, dim=0)

    def entry_log_probs(self) -> torch.Tensor:
        """``log p(first page | z)``, ``(K, P)``."""
        groups = self.page_group[: self.n_pages]
        return torch.log_softmax(self.entry_page[None, :] + self.entry_type[:, groups], dim=1)

    def moves(self, pages: torch.Tensor) -> torch.Tensor:
        """Each type's group preferences from ``pages`` ``(...)``: ``(K, ..., G + 1)``."""
        return self.type_move[:, self.page_group[pages]]

    def type_log_probs(
        self,
        out: torch.Tensor,
        pages: torch.Tensor,
        targets: torch.Tensor,
        prior_fold: torch.Tensor | None = None,
        sampler: NegativeSampler | None = None,
    ) -> torch.Tensor:
        """``log p(target | history, z)`` of every type at ``N`` positions, ``(K, N)``.

        Args:
            out: GRU outputs ``(N, H)``.
            pages, targets, prior_fold: ``(N,)`` each (``prior_fold``: cross-fitted priors).
            sampler: Estimate the trunk's per-group sums from sampled terms (large sites);
                ``None``: exact over all ``P + 1`` outcomes.
        """
        if sampler is None:
            base = self.scores(out, pages, prior_fold)  # (N, P + 1)
            z_t = base.gather(1, targets[:, None])[:, 0]
            terms, ids = base, None
        else:
            negatives, log_weight = sampler.draw()
            z_t, terms, ids = self.sampled_terms(
                out, pages, targets, negatives, log_weight, prior_fold, sampler.exact
            )
        normaliser = torch.logsumexp(self.type_terms(pages, ids) + terms[None], dim=2)
        return z_t[None] + self.type_terms(pages, targets[:, None])[..., 0] - normaliser

    def type_terms(self, pages: torch.Tensor, outcomes: torch.Tensor | None) -> torch.Tensor:
        """What each type adds to the trunk's logits: ``(K, N, M)`` at pages ``(N,)`` for
        outcomes ``(N, M)`` (``None``: all ``P + 1``)."""
        move = self.moves(pages)  # (K, N, G + 1)
        if outcomes is None:
            return move[..., self.outcome_group] + self.type_page[:, None, :]
        groups = self.outcome_group[outcomes][None].expand(self.n_types, -1, -1)
        return move.gather(2, groups) + self.type_page[:, outcomes]

    def type_rows(self, out: torch.Tensor, pages: torch.Tensor) -> torch.Tensor:
        """Every type's whole next-page log-distribution: ``(..., H)``, ``(...)`` →
        ``(K, ..., P + 1)``."""
        base = self.scores(out, pages)
        flat = pages.reshape(-1)
        extra = self.type_terms(flat, None).view(self.n_types, *pages.shape, -1)
        return torch.log_softmax(base[None] + extra, dim=-1)


class LatentGRUModel(VisitorModel):
    """A (trained or training) latent-type GRU with its vocabulary.

    Args:
        vocab: Pages and groups.
        cfg: The trunk's architecture (``simulator.model``).
        device: Torch device.
        n_types: ``K``.
        init_scale: Standard deviation of the random initial type preferences.
        page_preferences: Each type has its own preference for each outcome.
    """

    name = "latent_gru"
    checkpoint_kind = CHECKPOINT_KIND

    def __init__(
        self,
        vocab: Vocabulary,
        cfg: ModelConfig | None = None,
        device: str | torch.device = "cpu",
        *,
        n_types: int = 3,
        init_scale: float = 0.5,
        page_preferences: bool = True,
    ) -> None:
        self.n_types, self.init_scale = int(n_types), float(init_scale)
        self.page_preferences = bool(page_preferences)
        super().__init__(vocab, cfg, device)

    def _make_net(self) -> GRUNet:
        v = self.vocab
        return LatentGRUNet(
            v.n_pages,
            v.page_group,
            v.n_groups,
            self.cfg,
            self.n_types,
            self.init_scale,
            self.page_preferences,
        )

    @property
    def latent(self) -> LatentGRUNet:
        net = self.net
        assert isinstance(net, LatentGRUNet)
        return net

    def start_entry(self, train_seqs: SessionSequences) -> None:
        """Start the shared entry logits at the training split's entry frequencies.

        A fresh model's starting point, apart from :meth:`fit_prior` (which every stage's
        :func:`~envs.training.train` calls to count the trunk's prior): the memory stage must
        start from the entry logits its first stage fitted, not from the frequencies again.
        """
        with torch.no_grad():
            entry = torch.as_tensor(np.log(entry_distribution(train_seqs)), dtype=torch.float32)
            self.latent.entry_page.copy_(entry.to(self.device))

    # ---- training --------------------------------------------------------------------------

    def batch_loss(self, batch: TrainingBatch, sampler: NegativeSampler | None) -> torch.Tensor:
        """``-log`` marginal likelihood of the batch's windows, per predicted page view.

        Each window's log-likelihood under each type (its entry page when it starts a
        session, plus every next step) is summed, the prior added and the types summed out
        (log-sum-exp over ``z``): the exact marginal likelihood of the window.
        """
        net, valid = self.latent, batch.valid
        out, _ = net.encode(batch.pages, batch.times, lengths=batch.lengths)
        fold = None if batch.fold is None else batch.fold[:, None].expand_as(batch.pages)[valid]
        step_ll = net.type_log_probs(
            out[valid].float(), batch.pages[valid], batch.targets[valid], fold, sampler
        )  # (K, N)
        b = batch.pages.shape[0]
        owner = torch.arange(b, device=valid.device)[:, None].expand_as(valid)[valid]
        per_window = step_ll.new_zeros(self.n_types, b).index_add_(1, owner, step_ll)
        entry = net.entry_log_probs()[:, batch.pages[:, 0]] * batch.first[None, :]
        total = net.log_type_prior()[:, None] + entry + per_window
        return -torch.logsumexp(total, dim=0).sum() / valid.sum()

    # ---- scoring whole sessions -------------------------------------------------------------

    def _filtered(
        self,
        pages: torch.Tensor,
        times: torch.Tensor | None,
        targets: torch.Tensor,
        valid: torch.Tensor,
        chunk_len: int,
        calibration: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    ) -> torch.Tensor:
        """Filtered next-page log-probabilities of a padded batch, ``(B, T, P + 1)`` (CPU).

        After each prefix the types' posterior (prior × entry × the steps so far) mixes their
        rows: exact forward filtering over the types. ``targets`` ``(B, T)``: the next outcome
        of each valid position (what the posterior conditions on after it).

        ``calibration``: ``(exit_offset (B, T), converting (P + 1,) bool, conversion_offset)``
        applied to each type's row, as the simulator applies them to a visitor's own type,
        before the filter (float64 then).
        """
        net, k = self.latent, self.n_types
        weight = net.log_type_prior()[:, None] + net.entry_log_probs()[:, pages[:, 0]]  # (K, B)
        if calibration is not None:
            weight = weight.double()
        hidden, outs = None, []
        for t0 in range(0, pages.shape[1], chunk_len):
            t1 = t0 + chunk_len
            tb = None if times is None else times[:, t0:t1]
            out, hidden = net.encode(pages[:, t0:t1], tb, hidden)
            rows = net.type_rows(out, pages[:, t0:t1])  # (K, B, t, P + 1)
            if calibration is not None:
                exit_offset, converting, c = calibration
                rows = _calibrated_rows(rows.double(), exit_offset[None, :, t0:t1], converting, c)
            step = rows.gather(3, targets[None, :, t0:t1, None].expand(k, -1, -1, 1))[..., 0]
            step = step.masked_fill(~valid[None, :, t0:t1], 0.0)
            # the posterior before each position: the steps before it within the chunk
            post = torch.log_softmax(weight[:, :, None] + step.cumsum(dim=2) - step, dim=0)
            outs.append(torch.logsumexp(post[..., None] + rows, dim=0).cpu())
            weight = weight + step.sum(dim=2)
        return torch.cat(outs, dim=1)

    @torch.no_grad()
    def iter_log_probs(
        self, seqs: SessionSequences, batch_sessions: int = 512, chunk_len: int = 256
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Next-page log-probabilities of every step, the types filtered exactly
        (:meth:`_filtered`).

        Yields:
            ``(step_index (n,), log_probs (n, P + 1))`` as :meth:`VisitorModel.iter_log_probs`.
        """
        self.net.eval()
        targets = seqs.targets()
        max_tokens = max(64, EVAL_CELLS // (self.n_types * self.n_outcomes))
        for rows, pages, times, mask in padded_batches(seqs, batch_sessions, max_tokens=max_tokens):
            logp = self._filtered(
                torch.as_tensor(pages, device=self.device),
                torch.as_tensor(times, device=self.device),
                torch.as_tensor(
                    np.where(mask, targets[np.maximum(rows, 0)], 0), device=self.device
                ),
                torch.as_tensor(mask, device=self.device),
                max(1, min(chunk_len, max_tokens)),
            ).numpy()
            yield rows[mask], logp[mask]

    @torch.no_grad()
    def iter_calibrated_log_probs(
        self,
        seqs: SessionSequences,
        exit_offset: np.ndarray,
        converting: np.ndarray,
        conversion_offset: float,
        batch_sessions: int = 512,
        chunk_len: int = 256,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`iter_log_probs` with an exit calibration applied as the simulator applies
        it: the offsets on each type's row at each step (``exit_offset`` ``(n_steps,)`` on
        ``EXIT``, ``conversion_offset`` on the ``converting`` outcomes), then the types
        filtered with those rows (float64)."""
        self.net.eval()
        targets = seqs.targets()
        offsets = np.asarray(exit_offset, dtype=np.float64)
        conv = torch.as_tensor(np.asarray(converting, dtype=bool), device=self.device)
        max_tokens = max(64, EVAL_CELLS // (self.n_types * self.n_outcomes))
        for rows, pages, times, mask in padded_batches(seqs, batch_sessions, max_tokens=max_tokens):
            at = np.maximum(rows, 0)
            logp = self._filtered(
                torch.as_tensor(pages, device=self.device),
                torch.as_tensor(times, device=self.device),
                torch.as_tensor(np.where(mask, targets[at], 0), device=self.device),
                torch.as_tensor(mask, device=self.device),
                max(1, min(chunk_len, max_tokens)),
                calibration=(
                    torch.as_tensor(np.where(mask, offsets[at], 0.0), device=self.device),
                    conv,
                    float(conversion_offset),
                ),
            ).numpy()
            yield rows[mask], logp[mask]

    @torch.no_grad()
    def log_prob_next(
        self, pages: torch.Tensor | np.ndarray, time_bucket: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """Filtered next-page log-probabilities after every prefix, ``(B, T, P + 1)``
        (padding: id ``P``, as :meth:`VisitorModel.log_prob_next`)."""
        self.net.eval()
        pages = torch.as_tensor(pages, dtype=torch.long, device=self.device)
        p = self.vocab.n_pages
        valid = pages < p
        # what follows each position: the next page, or EXIT after the last
        nxt = torch.cat([pages[:, 1:], torch.full_like(pages[:, :1], p)], dim=1)
        tb = None if time_bucket is None else torch.as_tensor(time_bucket, device=self.device)
        return self._filtered(pages, tb, nxt, valid, 256)

    @torch.no_grad()
    def next_types(self, history: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """After a history of page ids: the types' posterior ``(K,)`` and each type's next-page
        distribution ``(K, P + 1)``, float64.

        Raises:
            ClickstreamError: An empty history or an id outside the vocabulary.
        """
        ids = np.asarray(history, dtype=np.int64)
        if ids.size == 0:
            raise DataError("history must hold at least one page view")
        if ids.min() < 0 or ids.max() >= self.vocab.n_pages:
            raise DataError(f"history holds page ids outside 0..{self.vocab.n_pages - 1}")
        net = self.latent
        net.eval()
        pages = torch.as_tensor(ids, device=self.device)[None, :]
        out, _ = net.encode(pages)
        rows = net.type_rows(out, pages)[:, 0].double()  # (K, T, P + 1)
        log_w = net.log_type_prior().double() + net.entry_log_probs()[:, ids[0]].double()
        if len(ids) > 1:
            nxt = torch.as_tensor(ids[1:], device=self.device)[None, :, None]
            log_w = log_w + rows[:, :-1].gather(2, nxt.expand(len(rows), -1, 1))[..., 0].sum(1)
        weights = torch.softmax(log_w, dim=0).cpu().numpy()
        last = rows[:, -1].exp()
        return weights, (last / last.sum(1, keepdim=True)).cpu().numpy()

    # ---- persistence -----------------------------------------------------------------------

    def _checkpoint_settings(self) -> dict[str, Any]:
        return {
            "latent_types": {
                "n_types": self.n_types,
                "init_scale": self.init_scale,
                "page_preferences": self.page_preferences,
                "memory": self.latent.memory,
            }
        }

    @classmethod
    def _from_checkpoint(
        cls, vocab: Vocabulary, cfg: ModelConfig, state: Mapping[str, Any], device: Any
    ) -> LatentGRUModel:
        types = state["latent_types"]
        # plain data read back as written: bool("false") is True, int(2.7) is 2
        n_types, scale = types["n_types"], types["init_scale"]
        preferences, memory = types.get("page_preferences", True), types.get("memory", True)
        if not (
            checks.is_whole(n_types)
            and n_types >= 1
            and checks.is_finite(scale)
            and isinstance(preferences, bool)
            and isinstance(memory, bool)
        ):
            raise ValueError(
                "latent_types must hold a whole n_types >= 1, a finite init_scale and true or "
                f"false page_preferences and memory; got n_types={n_types!r}, "
                f"init_scale={scale!r}, page_preferences={preferences!r}, memory={memory!r}"
            )
        model = cls(
            vocab,
            cfg,
            device,
            n_types=int(n_types),
            init_scale=float(scale),
            page_preferences=preferences,
        )
        model.latent.memory = memory
        return model


def _calibrated_rows(
    rows: torch.Tensor, exit_offset: torch.Tensor, converting: torch.Tensor, c: float
) -> torch.Tensor:
    """Log-probability rows ``(..., P + 1)`` with ``exit_offset`` (broadcast over the rows'
    leading dimensions) on ``EXIT``'s logit and ``c`` on the ``converting`` outcomes',
    normalised again (:func:`envs.visitor_model.calibrate_log_probs` in torch)."""
    mass = rows[..., -1].exp() * torch.expm1(exit_offset)
    out = rows.clone()
    out[..., -1] += exit_offset
    if c:
        mass = mass + rows[..., converting].exp().sum(-1) * math.expm1(c)
        out[..., converting] += c
    return out - torch.log1p(mass)[..., None]


class LatentGRUDynamics(GRUDynamics):
    """The latent-type GRU as simulator dynamics: a visitor draws her type at arrival (from
    the prior, then her entry page from her type's entry distribution) and keeps it; her next
    page follows her own type's row, which is what the click model boosts.

    State: the GRU hidden state | the type index | the trunk's scores (all ``P + 1`` logits,
    or in candidate mode the top-layer output).
    """

    latent_state = True

    def __init__(self, model: LatentGRUModel, *, full_logits: bool = True) -> None:
        net = model.latent
        with torch.no_grad():
            entry = net.entry_log_probs().exp()
        super().__init__(model, entry[0].cpu().numpy(), full_logits=full_logits)
        self.state_dim += 1
        self.type_entry = entry.detach()
        self.type_prior = net.log_type_prior().detach().exp()

    def to(self, device: torch.device | str) -> LatentGRUDynamics:
        super().to(device)
        self.type_entry, self.type_prior = self.type_entry.to(device), self.type_prior.to(device)
        return self

    def intent(self, state: torch.Tensor) -> torch.Tensor:
        """Type index per visitor, ``(B,)``."""
        return state[:, self.hidden_dim].long()

    @torch.no_grad()
    def chains(self) -> Chains | None:
        """Each type's first-order table, when the trunk is first-order (the memory stage was
        not kept, so a page's row does not depend on the pages before it): what the planners
        over visitor types (value iteration, belief value iteration) and exact evaluation read.

        ``None`` with memory, in candidate mode, or when the dense ``K × P × (P + 1)`` tables
        would exceed :data:`~envs.latent_class.MAX_DENSE_CELLS` (large sites). The rows are
        the simulator's own (:meth:`advance` from an empty state, then :meth:`next_probs`).
        """
        k, p = self.model.n_types, self.n_pages
        if self.model.net.memory or not self.full_logits or k * p * (p + 1) > MAX_DENSE_CELLS:
            return None
        pages = torch.arange(p, device=self.type_prior.device)
        rows = []
        for z in range(k):
            empty = torch.zeros(p, self.state_dim, device=pages.device)
            empty[:, self.hidden_dim] = z
            rows.append(self.next_probs(pages, self.advance(pages, empty)))
        return Chains(self.type_prior, self.type_entry, torch.stack(rows))

    def _scores(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, self.hidden_dim + 1 :]

    def _extra(
        self, pages: torch.Tensor, state: torch.Tensor, outcomes: torch.Tensor | None
    ) -> torch.Tensor:
        """What each visitor's own type adds to the trunk's logits of ``outcomes`` ``(B, M)``
        (``None``: all ``P + 1``) from her page, ``(B, M)``."""
        net = self.model.net
        types = self.intent(state)
        move = net.type_move.detach()[types, net.page_group[pages]]  # (B, G + 1)
        page = net.type_page.detach()[types]  # (B, P + 1)
        if outcomes is None:
            return move[:, net.outcome_group] + page
        return move.gather(1, net.outcome_group[outcomes]) + page.gather(1, outcomes)

    def start(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        types = sample_categorical(self.type_prior.expand(n, -1), generator)
        pages = sample_categorical(self.type_entry[types], generator)
        empty = torch.zeros(n, self.state_dim, device=self.type_prior.device)
        empty[:, self.hidden_dim] = types.float()
        return pages, self.advance(pages, empty)

    def next_probs(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        if not self.full_logits:
            every = torch.arange(self.n_pages + 1, device=pages.device).expand(len(pages), -1)
            return torch.softmax(self.log_scores(pages, state, every), dim=-1)
        return torch.softmax(self._scores(state).float() + self._extra(pages, state, None), dim=-1)

    def log_scores(
        self, pages: torch.Tensor, state: torch.Tensor, outcomes: torch.Tensor
    ) -> torch.Tensor:
        move = self._extra(pages, state, outcomes)
        scores = self._scores(state)
        if self.full_logits:
            return scores.gather(1, outcomes) + move
        return self.model.score_outcomes(scores, pages, outcomes) + move

    @torch.no_grad()
    def advance(self, pages: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        hidden = state[:, : self.hidden_dim].contiguous()
        if not self.model.net.memory:  # a first-order trunk: every page from an empty state
            hidden = torch.zeros_like(hidden)
        if self.full_logits:
            scores, hidden = self.model.step(pages, hidden)
        else:
            scores, hidden = self.model.step_hidden(pages, hidden)
        types = state[:, self.hidden_dim : self.hidden_dim + 1]
        return torch.cat([hidden, types, scores.float()], dim=1)


OUTPUT_WEIGHTS = frozenset({"head.weight", "group_head.weight"})
OUTPUT_BIASES = frozenset({"head.bias", "group_head.bias"})


TABLE_PARAMETERS = frozenset(
    {
        "type_logit",
        "type_move",
        "entry_page",
        "entry_type",
        "type_page",
        *OUTPUT_BIASES,
    }
)
"""What a counted first stage trains: the types', the entry's and the output biases (the rest
is the GRU trunk's)."""


def counted_trunk(net: LatentGRUNet, on: bool, biases: bool = True) -> None:
    """Make the trunk's logits its first-order prior plus the output biases (``on``): the
    output weights are set to zero and, with everything else of the trunk, frozen, so only
    the biases and the types' parameters train (without ``biases`` the biases are set to
    zero and frozen too). ``on=False`` unfreezes every parameter (the weights keep their
    values: zero after a counted stage, so the memory stage starts from its model
    exactly)."""
    trained = TABLE_PARAMETERS if biases else TABLE_PARAMETERS - OUTPUT_BIASES
    with torch.no_grad():
        for name, param in net.named_parameters():
            if on and (name in OUTPUT_WEIGHTS or name in OUTPUT_BIASES - trained):
                param.zero_()
            param.requires_grad_(not on or name in trained)


FULL_BATCH_ROUNDS = 30
"""Most L-BFGS runs of :func:`fit_counted_full_batch` (each up to ``FULL_BATCH_ITERS`` steps;
a run ends early when a step changes the loss by under its tolerance)."""
FULL_BATCH_ITERS = 500
FULL_BATCH_TOLERANCE = 1e-9
"""A round that lowers the loss per event by less than this ends the fit: converged."""


def fit_counted_full_batch(
    model: LatentGRUModel,
    train_seqs: SessionSequences,
    valid_seqs: SessionSequences,
    *,
    label: str = "latent-type GRU, first-order (full batch)",
    show_progress: bool = False,
    biases: bool = True,
) -> dict[str, Any]:
    """Fit the counted first stage in place as the latent-class model is fitted.

    The model's trunk is its counted first-order table (:func:`counted_trunk`), so the stage
    has a table's parameters only (:data:`TABLE_PARAMETERS`). They maximise the exact marginal
    likelihood of the whole training sessions (not the trainer's windows), against the table
    counted on the whole training split, which is the one the simulator and the metrics use
    (the cross-fitted fold tables are for the GRU of the memory stage, which could otherwise
    learn the split's own counts). L-BFGS with a strong-Wolfe line search, in float64, in
    rounds until a round gains less than :data:`FULL_BATCH_TOLERANCE` per event: converged,
    so the fit does not depend on when an early stop came (a minibatch fit stopped early
    under-counts rare moves: docs/results.md).

    Each type's rows are held densely while fitting (``K × P × (P + 1)``). Without
    ``biases`` the output biases stay at zero (:func:`counted_trunk`).

    Returns:
        A history shaped like :func:`envs.training.train`'s (one record): the final training
        loss per event (entries and steps), the validation log-loss, the L-BFGS rounds and
        likelihood evaluations (events per second counts every evaluation's events).

    Raises:
        ConfigError: The rows would exceed ``MAX_DENSE_CELLS`` cells.
    """
    net, p = model.latent, model.vocab.n_pages
    cells = model.n_types * p * (p + 1)
    if cells > MAX_DENSE_CELLS:
        raise ConfigError(
            f"latent_gru.table_fit=full_batch holds {model.n_types} x {p} x {p + 1} = "
            f"{cells:,} cells (at most {MAX_DENSE_CELLS:,}); use table_fit=minibatch"
        )
    start = time.perf_counter()
    model.fit_prior(train_seqs)
    model.start_entry(train_seqs)
    net.memory = False
    counted_trunk(net, True, biases)
    device = model.device
    src = torch.as_tensor(train_seqs.pages, device=device)
    dst = torch.as_tensor(train_seqs.targets(), device=device)
    session = torch.as_tensor(
        np.repeat(np.arange(len(train_seqs)), train_seqs.lengths), device=device
    )
    first = torch.as_tensor(train_seqs.pages[train_seqs.offsets[:-1]], device=device)
    every_page = torch.arange(p, device=device)
    n_events = float(len(src) + len(first))  # the entries and the steps
    types = torch.arange(model.n_types, device=device)[:, None]
    net.double()
    params = [q for q in net.parameters() if q.requires_grad]

    def nll() -> torch.Tensor:
        out, _ = net.encode(every_page[None])
        rows = net.type_rows(out[0], every_page)  # (K, P, P + 1): the counted trunk's rows
        per_type = net.log_type_prior()[:, None] + net.entry_log_probs()[:, first]
        per_type = per_type.index_add(1, session, rows[types, src[None], dst[None]])
        return -torch.logsumexp(per_type, dim=0).sum() / n_events

    optimiser = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=FULL_BATCH_ITERS,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-13,
    )

    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimiser.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    net.train()
    with torch.no_grad():
        loss = float(nll())
    rounds, gain = 0, math.inf
    while rounds < FULL_BATCH_ROUNDS and gain >= FULL_BATCH_TOLERANCE:
        optimiser.step(closure)
        rounds += 1
        with torch.no_grad():
            new = float(nll())
        gain, loss = loss - new, new
    net.float()
    counted_trunk(net, False)
    seconds = time.perf_counter() - start
    valid = mean_log_loss(model, valid_seqs)
    if show_progress:
        print(f"{label}: train {loss:.6f}, valid {valid:.6f} ({rounds} rounds, {seconds:.0f} s)")
    record = {
        "epoch": 1,
        "train_loss": loss,
        "valid_log_loss": valid,
        "train_seconds": seconds,
        "events": int(n_events),
        "events_per_sec": n_events * evaluations / seconds if seconds else None,
        "lbfgs_rounds": rounds,
        "lbfgs_evaluations": evaluations,
        "converged": gain < FULL_BATCH_TOLERANCE,
    }
    return {
        "epochs": [record],
        "best_epoch": 1,
        "best_valid_log_loss": valid,
        "train_events_per_sec": record["events_per_sec"],
        "fit": "full_batch",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }


RESTART_SEED_STRIDE = 7919
"""Restart ``r`` of the first stage draws its initial weights and batch order from seed
``trainer.seed + r * RESTART_SEED_STRIDE`` (restart 0 is the plain run, so ``restarts: 1``
replays the figures measured before restarts existed)."""


def train_in_stages(
    model: LatentGRUModel,
    train_seqs: SessionSequences,
    valid_seqs: SessionSequences,
    cfg: TrainerConfig,
    *,
    checkpoints: Path | None = None,
    resume: bool = False,
    writer: Any = None,
    label: str = "latent-type GRU",
    identity: Mapping[str, Any] | None = None,
    memory_lr: float = 0.25,
    restarts: int = 1,
    trunk: str = "learned",
    table_lr: float = 0.01,
    memory_min_gain: float = 0.0,
    table_fit: str = "minibatch",
    table_biases: bool = True,
) -> dict[str, dict[str, Any]]:
    """Train ``model`` in place in two stages, each early-stopped on the validation split.

    1. ``first_order``: the trunk sees the current page only (no memory), so what the visit
       says about the visitor can only go into the types: a latent-class model whose shared
       part is learnt. Trained ``restarts`` times from fresh random weights (restart 0: the
       model as given); the start of the lowest validation log-loss is kept.
    2. ``memory``: the whole GRU, from there (at ``memory_lr`` times the learning rate);
       history now adds what the types leave.

    With ``trunk="counted"`` the first stage's shared part is the counted first-order prior
    alone (:func:`counted_trunk`): the latent-class model's parametrisation, trained at
    ``table_lr`` without weight decay, with the GRU unused until the memory stage, whose
    output weights start from zero. ``table_fit="full_batch"`` fits that stage as the
    latent-class model is fitted instead (:func:`fit_counted_full_batch`); without
    ``table_biases`` the output biases stay at zero in that stage.

    A plain GRU trained on its own would learn to read the visitor's type from the history
    (the mix seen after it), which is what a recommendation must not move; the warm start
    leaves it little of that to learn. The model ends with the memory stage when its
    validation log-loss is lower than the first stage's by more than ``memory_min_gain``, else
    with the first stage (``model.latent.memory`` says which).

    Returns:
        Each stage's training history (:func:`envs.training.train`); the first stage's is
        the kept restart's, with ``restarts`` (every start's best validation log-loss) and
        ``kept_restart`` added.
    """
    if int(restarts) < 1:
        raise ConfigError(f"latent_gru.restarts must be >= 1, got {restarts!r}")
    if trunk not in TRUNKS:
        raise ConfigError(f"latent_gru.trunk must be one of {TRUNKS}, got {trunk!r}")
    if trunk == "counted" and not model.latent.use_prior:
        raise ConfigError(
            "latent_gru.trunk=counted needs the trunk's first-order prior "
            "(simulator.model.markov_prior: true, or auto with at most 4,096 pages)"
        )
    if table_fit not in TABLE_FITS:
        raise ConfigError(f"latent_gru.table_fit must be one of {TABLE_FITS}, got {table_fit!r}")
    if table_fit == "full_batch" and trunk != "counted":
        raise ConfigError("latent_gru.table_fit=full_batch needs latent_gru.trunk=counted")
    if not table_biases and trunk != "counted":
        raise ConfigError("latent_gru.table_biases=false needs latent_gru.trunk=counted")

    def stage_identity(name: str, restart: int = 0) -> dict[str, Any] | None:
        if identity is None:
            return None
        stage = {"stage": name} if restart == 0 else {"stage": name, "restart": restart}
        return {**identity, "config": {**identity["config"], **stage}}

    def checkpoint(name: str, restart: int = 0) -> Path | None:
        if checkpoints is None:
            return None
        suffix = "" if restart == 0 else f"_r{restart}"
        return checkpoints / f"{model.name}_k{model.n_types}_{name}{suffix}.pt"

    # 1. the first-order stage, from each random start
    first_cfg = cfg
    if trunk == "counted":  # a table's parameters: a table's learning rate, no decay
        first_cfg = dataclasses.replace(cfg, lr=float(table_lr), weight_decay=0.0)
    starts: list[tuple[dict[str, Any], dict[str, torch.Tensor]]] = []
    diverged: TrainingDiverged | None = None
    for restart in range(int(restarts)):
        stage_cfg = first_cfg
        if restart > 0:
            seed = cfg.seed + restart * RESTART_SEED_STRIDE
            torch.manual_seed(seed)
            model.net = model._make_net().to(model.device)
            stage_cfg = dataclasses.replace(first_cfg, seed=seed)
        model.latent.memory = False
        if trunk == "counted":
            counted_trunk(model.latent, True, table_biases)
        tag = "" if restarts == 1 else f" (start {restart + 1} of {restarts})"
        if table_fit == "full_batch":
            history = fit_counted_full_batch(
                model,
                train_seqs,
                valid_seqs,
                label=f"{label}, first-order, full batch{tag}",
                show_progress=cfg.show_progress,
                biases=table_biases,
            )
        else:
            model.start_entry(train_seqs)
            try:
                history = train(
                    model,
                    train_seqs,
                    valid_seqs,
                    stage_cfg,
                    checkpoint=checkpoint("first_order", restart),
                    resume=resume,
                    writer=writer,
                    label=f"{label}, first-order{tag}",
                    identity=stage_identity("first_order", restart),
                )
            except TrainingDiverged as exc:
                if restarts == 1:
                    raise
                diverged = exc  # another start may do: its log-loss stays inf, never kept
                history = exc.history
        starts.append((history, copy.deepcopy(model.net.state_dict())))
    if diverged is not None and all(h["best_epoch"] is None for h, _ in starts):
        raise diverged  # every random start diverged
    best = min(range(len(starts)), key=lambda r: starts[r][0]["best_valid_log_loss"])
    first, first_state = starts[best]
    first = {
        **first,
        "restarts": [h["best_valid_log_loss"] for h, _ in starts],
        "kept_restart": best,
    }
    model.net.load_state_dict(first_state)

    # 2. the memory stage, from the kept start
    counted_trunk(model.latent, False)
    model.latent.memory = True
    try:
        memory = train(
            model,
            train_seqs,
            valid_seqs,
            dataclasses.replace(cfg, lr=cfg.lr * memory_lr),
            checkpoint=checkpoint("memory"),
            resume=resume,
            writer=writer,
            label=f"{label}, memory",
            identity=stage_identity("memory"),
        )
    except TrainingDiverged as exc:  # the first-order stage is kept (its gain is -inf)
        memory = exc.history
    stages = {"first_order": first, "memory": memory}
    states = {"first_order": first_state, "memory": copy.deepcopy(model.net.state_dict())}
    gain = first["best_valid_log_loss"] - memory["best_valid_log_loss"]
    keep = "memory" if gain > float(memory_min_gain) else "first_order"
    model.latent.memory = keep == "memory"
    model.net.load_state_dict(states[keep])
    model.train_state["history"] = stages
    return stages


def train_one_stage(
    model: LatentGRUModel,
    train_seqs: SessionSequences,
    valid_seqs: SessionSequences,
    cfg: TrainerConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    writer: Any = None,
    label: str = "latent-type GRU, 1 type",
    identity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model of one type in place as the plain GRU is trained: one stage, with memory,
    at the trainer's own learning rate, early-stopped on the validation split.

    Its type terms (the group moves and the entry's group term) start from zero: with one type
    they are extra biases of the trunk, and random starting values (which break the symmetry
    between several types) would only be noise to unlearn.

    Returns:
        The stage's training history (:func:`envs.training.train`), also kept in
        ``model.train_state["history"]`` as ``{"one_stage": history}``.
    """
    if model.n_types != 1:
        raise ConfigError(f"one-stage training is for one type, the model has {model.n_types}")
    with torch.no_grad():
        model.latent.type_move.zero_()
        model.latent.entry_type.zero_()
    model.start_entry(train_seqs)
    counted_trunk(model.latent, False)
    model.latent.memory = True
    if identity is not None:
        identity = {**identity, "config": {**identity["config"], "stage": "one_stage"}}
    history = train(
        model,
        train_seqs,
        valid_seqs,
        cfg,
        checkpoint=checkpoint,
        resume=resume,
        writer=writer,
        label=f"{label}, one stage",
        identity=identity,
    )
    model.train_state["history"] = {"one_stage": history}
    return history
