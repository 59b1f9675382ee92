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
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clickstream.errors import ClickstreamError, RunFolderError, from_options
from clickstream.io import atomic_file, json_default
from envs.sequences import N_TIME_BUCKETS, SessionSequences, Vocabulary

CHECKPOINT_KIND = "nextpage.visitor_model"
CHECKPOINT_VERSION = 1


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
            away the exit).
        time_dim: Size of the time-bucket embedding.
        group_head: Add a score per *destination group* to the logits, shared by the pages of
            the group: what history says about "a product next" or "leaving" is learnt once
            for the group, not once per page.
        markov_prior: Add the log of a smoothed first-order transition table, counted on the
            training split, to the logits (``true``, ``false``, or ``auto``: when the site has
            at most ``max_prior_pages`` pages). The GRU then learns how history moves a
            visitor away from the first-order model instead of relearning every link from
            scratch: a softmax over ``H`` hidden units cannot represent a sparse ``P × P`` link
            table exactly, and small sites do not have the data to learn it (measured in
            docs/results.md).
        prior_smoothing: Pseudo-count of the prior, spread over outcomes by their popularity.
        prior_folds: Cross-fit the prior during training: a training session sees the table
            counted on the *other* folds, so the GRU learns to correct a prior as wrong as it
            will be on new sessions, not one that has already seen the session (2 or more;
            0 or 1: the full table throughout). Evaluation always uses the full table.
        max_prior_pages: Largest site that ``auto`` gives a prior (it is dense, ``P × (P+1)``).
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
    max_prior_pages: int = 4096

    def uses_prior(self, n_pages: int) -> bool:
        """Whether a site of ``n_pages`` pages gets the first-order prior."""
        if self.markov_prior == "auto":
            return n_pages <= self.max_prior_pages
        return bool(self.markov_prior)

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "hidden_size", "num_layers", "group_dim", "time_dim"):
            if int(getattr(self, name)) < 1:
                raise ClickstreamError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.markov_prior not in (True, False, "auto"):
            raise ClickstreamError(
                f"model.markov_prior must be true, false or auto, got {self.markov_prior!r}"
            )
        if self.prior_smoothing <= 0:
            raise ClickstreamError(f"model.prior_smoothing must be > 0, got {self.prior_smoothing}")
        if not 0.0 <= self.dropout < 1.0:
            raise ClickstreamError(f"model.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> ModelConfig:
        """Build from a plain mapping (a resolved Hydra node); unknown keys raise."""
        return from_options(cls, cfg, "model")


class GRUNet(nn.Module):
    """The network: embeddings → GRU → linear head over ``P + 1`` outcomes.

    Page id ``P`` (the ``EXIT`` id, never an input) is the padding id of the page embedding.
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
        if self.use_prior:  # filled by VisitorModel.fit_prior; the padding row stays 0
            self.register_buffer("log_prior", torch.zeros(n_pages + 1, n_pages + 1))
            # out-of-fold tables, for training only: not part of the checkpoint
            self.register_buffer("fold_log_prior", torch.zeros(0), persistent=False)

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
        logits = self.head(out)
        if self.cfg.group_head:
            logits = logits + self.group_head(out)[..., self.outcome_group]
        if self.use_prior:
            if prior_fold is not None and self.fold_log_prior.numel():
                logits = logits + self.fold_log_prior[prior_fold, pages]
            else:
                logits = logits + self.log_prior[pages]
        return logits


class VisitorModel:
    """A trained (or training) GRU next-page model with its vocabulary.

    Args:
        vocab: Pages and groups; the model predicts over ``vocab.labels()``.
        cfg: Architecture.
        device: Torch device for the network.
    """

    name = "gru"

    def __init__(
        self, vocab: Vocabulary, cfg: ModelConfig | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.vocab = vocab
        self.cfg = cfg or ModelConfig()
        self.device = torch.device(device)
        self.net = GRUNet(vocab.n_pages, vocab.page_group, vocab.n_groups, self.cfg).to(self.device)
        self.metrics: dict[str, Any] = {}
        self.train_state: dict[str, Any] = {}

    def fit_prior(self, train_seqs: SessionSequences) -> None:
        """Count the first-order prior on the training sessions (no-op without a prior).

        ``p(j | i) = (c(i, j) + k · pop(j)) / (c(i) + k)`` with ``pop`` the smoothed frequency
        of each outcome (pages and ``EXIT``) as a next step, ``k = prior_smoothing``. With
        ``prior_folds >= 2`` also the out-of-fold tables used while training (session ``s``
        is in fold ``s mod prior_folds``).
        """
        if not self.net.use_prior:
            return
        p = self.vocab.n_pages
        src, dst = train_seqs.pages, train_seqs.targets()
        pair = src * (p + 1) + dst
        counts = np.bincount(pair, minlength=p * (p + 1)).reshape(p, p + 1)
        pop = (np.bincount(dst, minlength=p + 1) + 1.0) / (len(dst) + p + 1.0)
        self.net.log_prior.copy_(self._log_table(counts, pop))
        folds = self.cfg.prior_folds
        if folds >= 2:
            fold_of_view = np.repeat(np.arange(len(train_seqs)) % folds, train_seqs.lengths)
            tables = []
            for f in range(folds):
                own = np.bincount(pair[fold_of_view == f], minlength=p * (p + 1))
                tables.append(self._log_table(counts - own.reshape(p, p + 1), pop))
            self.net.fold_log_prior = torch.stack(tables).to(self.device)

    def _log_table(self, counts: np.ndarray, pop: np.ndarray) -> torch.Tensor:
        """Smoothed log transition table with a zero padding row, ``(P + 1, P + 1)``."""
        k = self.cfg.prior_smoothing
        table = (counts + k * pop) / (counts.sum(axis=1, keepdims=True) + k)
        out = np.zeros((len(pop), len(pop)), dtype=np.float32)
        out[:-1] = np.log(table)
        return torch.from_numpy(out).to(self.device)

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
        return torch.addmm(rows, top, weight.t()), hidden

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
        current page, ``(P + 1, P + 1)`` (or ``(1, P + 1)`` without a prior)."""
        return self._cached("output", self._build_output_tables)

    def _build_output_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        weight, bias = net.head.weight, net.head.bias
        if self.cfg.group_head:
            weight = weight + net.group_head.weight[net.outcome_group]
            bias = bias + net.group_head.bias[net.outcome_group]
        base = net.log_prior + bias if net.use_prior else bias[None, :]
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
        logits = (
            torch.einsum("bh,bmh->bm", output, net.head.weight[outcomes]) + net.head.bias[outcomes]
        )
        if net.cfg.group_head:
            groups = net.outcome_group[outcomes]
            logits = (
                logits
                + torch.einsum("bh,bmh->bm", output, net.group_head.weight[groups])
                + net.group_head.bias[groups]
            )
        if net.use_prior:
            logits = logits + net.log_prior[page[:, None], outcomes]
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
        over, which gives the same numbers as one pass and bounds memory.

        Yields:
            ``(step_index (n,), log_probs (n, P + 1))``: flat step indices into ``seqs`` and
            their next-page log-probabilities (float32).
        """
        self.net.eval()
        for rows, pages, times, mask in padded_batches(seqs, batch_sessions):
            hidden = None
            outs = []
            for t0 in range(0, pages.shape[1], chunk_len):
                p = torch.as_tensor(pages[:, t0 : t0 + chunk_len], device=self.device)
                tb = torch.as_tensor(times[:, t0 : t0 + chunk_len], device=self.device)
                logits, hidden = self.net(p, tb, hidden)
                outs.append(torch.log_softmax(logits.float(), dim=-1).cpu())
            logp = torch.cat(outs, dim=1).numpy()
            yield rows[mask], logp[mask]

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
            raise ClickstreamError("history must hold at least one page view")
        if k < 1:
            raise ClickstreamError(f"k must be >= 1, got {k}")
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
            "kind": CHECKPOINT_KIND,
            "version": CHECKPOINT_VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            **plain_data(
                {
                    "model_config": dataclasses.asdict(self.cfg),
                    "vocab": self.vocab.to_dict(),
                    "metrics": self.metrics,
                    "train_state": self.train_state,
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
                pickle of objects, another kind of file, weights that do not fit), naming it.
        """
        path = Path(path)
        state = load_weights_only(path, "visitor model checkpoint")
        if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
            raise RunFolderError("not a NextPage visitor model checkpoint", file=str(path))
        try:
            model = cls(
                Vocabulary.from_dict(state["vocab"]),
                ModelConfig.from_dict(state["model_config"]),
                device=device,
            )
            model.net.load_state_dict(state["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RunFolderError(
                f"visitor model checkpoint does not fit its own config ({type(exc).__name__}: "
                f"{str(exc)[:300]})",
                file=str(path),
            ) from None
        model.metrics = dict(state.get("metrics") or {})
        model.train_state = dict(state.get("train_state") or {})
        return model


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
