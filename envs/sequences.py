"""Prepared hits as integer session sequences: the input of every next-page model.

A prepared dataset (``scripts/prepare_data.py``) becomes a :class:`Vocabulary` (pages in
``page_id`` order, their groups, ``EXIT`` as id ``P``) and, per split, a
:class:`SessionSequences`: all sessions' page ids in one flat array with offsets, so that
millions of page views cost a few arrays, not millions of Python lists.

The *steps* of a session are what follows each of its page views: the next page, or ``EXIT``
after the last one. Entry pages are not predicted. Step ``i`` of the flat arrays belongs to page
view ``i`` and its target is :meth:`SessionSequences.targets` ``[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clickstream.errors import DataError
from clickstream.runfolder import Manifest, listed_file, read_json, read_parquet, verify_folder
from clickstream.schema import EXIT

TIME_BUCKET_EDGES_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)
"""Upper edges (seconds) of the time-on-page buckets; bucket 0 means unknown / none."""

N_TIME_BUCKETS = len(TIME_BUCKET_EDGES_S) + 2  # unknown, the edges, and "longer"
EVAL_CELLS = 1 << 23
"""Probabilities a scorer holds at once when scoring whole sessions (32 MB of float32): the
GRU, the latent-type GRU and the count baselines bound their batches by it, whatever
``batch_sessions`` asks for."""


@dataclass(frozen=True)
class Vocabulary:
    """Pages (ids ``0..P-1`` in ``page_id`` order) plus ``EXIT`` (id ``P``) and page groups.

    Attributes:
        pages: Page names, length P.
        groups: Page group names, length G.
        page_group: Group id of each page, shape ``(P,)``.
    """

    pages: tuple[str, ...]
    groups: tuple[str, ...]
    page_group: np.ndarray

    @property
    def n_pages(self) -> int:
        """P, the number of pages (``EXIT`` not included)."""
        return len(self.pages)

    @property
    def exit_id(self) -> int:
        """Id of ``EXIT`` in every next-page distribution (``P``)."""
        return len(self.pages)

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def labels(self) -> list[str]:
        """Names of the ``P + 1`` outcomes of a next-page distribution."""
        return [*self.pages, EXIT]

    def ids(self, pages: Sequence[str], *, unknown: str = "raise") -> np.ndarray:
        """Page ids of page names, shape ``(len(pages),)``.

        Args:
            pages: Page names.
            unknown: ``raise`` on a page not in the vocabulary, or ``skip`` it.
        """
        index = self._index
        out = []
        for i, page in enumerate(pages):
            pid = index.get(page)
            if pid is None:
                if unknown == "skip":
                    continue
                raise DataError(
                    f"unknown page {page!r} at position {i} of the history; "
                    f"the vocabulary has {self.n_pages} pages"
                )
            out.append(pid)
        return np.asarray(out, dtype=np.int64)

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {p: i for i, p in enumerate(self.pages)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    @classmethod
    def from_catalog(cls, pages: pd.DataFrame) -> Vocabulary:
        """Build from a page catalog (``pages.parquet``: ``page_id``, ``page``, ``page_group``)."""
        pages = pages.sort_values("page_id")
        if not np.array_equal(pages["page_id"].to_numpy(), np.arange(len(pages))):
            raise DataError("page_id must run 0..P-1 in the page catalog")
        group_codes, groups = pd.factorize(pages["page_group"], sort=True)
        return cls(
            pages=tuple(pages["page"].astype(str)),
            groups=tuple(str(g) for g in groups),
            page_group=group_codes.astype(np.int64),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "pages": list(self.pages),
            "groups": list(self.groups),
            "page_group": self.page_group.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Vocabulary:
        return cls(
            pages=tuple(d["pages"]),  # type: ignore[arg-type]
            groups=tuple(d["groups"]),  # type: ignore[arg-type]
            page_group=np.asarray(d["page_group"], dtype=np.int64),
        )


@dataclass
class SessionSequences:
    """Sessions as flat arrays.

    Attributes:
        pages: Page id of every page view, shape ``(N,)``, sessions contiguous in step order.
        offsets: Start of each session in ``pages`` plus the end, shape ``(S + 1,)``.
        time_bucket: Time-on-page bucket of the *previous* page view (what is known on arrival
            at this page; 0 on entry pages and where unknown), shape ``(N,)``.
        session_ids: Session id of each session, shape ``(S,)``.
        exit_id: Id of ``EXIT`` (the vocabulary's P).
    """

    pages: np.ndarray
    offsets: np.ndarray
    time_bucket: np.ndarray
    session_ids: np.ndarray
    exit_id: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_steps(self) -> int:
        """Predicted steps: one per page view."""
        return len(self.pages)

    @property
    def lengths(self) -> np.ndarray:
        """Page views per session, shape ``(S,)``."""
        return np.diff(self.offsets)

    def targets(self) -> np.ndarray:
        """What follows each page view: the next page id, or ``EXIT`` after the last, ``(N,)``."""
        out = np.empty_like(self.pages)
        out[:-1] = self.pages[1:]
        out[self.offsets[1:] - 1] = self.exit_id
        return out

    def session(self, i: int) -> np.ndarray:
        return self.pages[self.offsets[i] : self.offsets[i + 1]]

    def select(self, mask: np.ndarray) -> SessionSequences:
        """The sessions where ``mask`` (shape ``(S,)``) is True, in order."""
        lengths = self.lengths
        keep_view = np.repeat(mask, lengths)
        return SessionSequences(
            pages=self.pages[keep_view],
            offsets=np.r_[0, np.cumsum(lengths[mask])].astype(np.int64),
            time_bucket=self.time_bucket[keep_view],
            session_ids=self.session_ids[mask],
            exit_id=self.exit_id,
        )

    def min_length(self, k: int) -> SessionSequences:
        """Only the sessions with at least ``k`` page views."""
        return self.select(self.lengths >= k) if k > 1 else self

    @classmethod
    def from_lists(
        cls,
        sessions: Sequence[Sequence[int]],
        exit_id: int,
        session_ids: Sequence[str] | None = None,
    ) -> SessionSequences:
        """Build from lists of page ids (tests, toy data); no time information."""
        if any(len(s) == 0 for s in sessions):
            raise DataError("a session holds no page views")
        lengths = np.array([len(s) for s in sessions], dtype=np.int64)
        pages = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions])
            if len(sessions)
            else np.zeros(0, dtype=np.int64)
        )
        if len(pages) and (pages.min() < 0 or pages.max() >= exit_id):
            raise DataError(f"page ids must lie in [0, {exit_id})")
        ids = np.asarray(
            session_ids if session_ids is not None else [f"s{i}" for i in range(len(sessions))],
            dtype=object,
        )
        return cls(
            pages=pages,
            offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
            time_bucket=np.zeros(len(pages), dtype=np.int64),
            session_ids=ids,
            exit_id=exit_id,
        )


def time_buckets(seconds: np.ndarray) -> np.ndarray:
    """Bucket of each time on page, shape like ``seconds``: 0 unknown, then 1.. by edges."""
    seconds = np.asarray(seconds, dtype=np.float64)
    out = np.searchsorted(np.asarray(TIME_BUCKET_EDGES_S), seconds, side="left") + 1
    return np.where(np.isnan(seconds), 0, out).astype(np.int64)


def sequences_from_hits(hits: pd.DataFrame, vocab: Vocabulary) -> SessionSequences:
    """Canonical hits (rows contiguous per session, in step order) → :class:`SessionSequences`.

    Raises:
        ClickstreamError: A page is not in the vocabulary (naming it and its row).
    """
    if len(hits) == 0:
        raise DataError("no page views to turn into sequences")
    idx = pd.Index(vocab.pages).get_indexer(hits["page"].astype("str"))
    if (idx < 0).any():
        row = int(np.flatnonzero(idx < 0)[0])
        raise DataError(
            f"page {hits['page'].iloc[row]!r} is not in the vocabulary", row=row, column="page"
        )
    step = hits["step"].to_numpy(np.int64)
    starts = np.flatnonzero(step == 0)
    if len(starts) == 0 or starts[0] != 0:
        raise DataError("hits must start with a session's first page view (step 0)")
    top = hits["time_on_page_s"].to_numpy(np.float64)
    previous = np.r_[np.nan, top[:-1]]
    previous[starts] = np.nan  # the previous page view belongs to another session
    return SessionSequences(
        pages=idx.astype(np.int64),
        offsets=np.r_[starts, len(idx)].astype(np.int64),
        time_bucket=time_buckets(previous),
        session_ids=hits["session_id"].to_numpy(dtype=object)[starts],
        exit_id=vocab.exit_id,
    )


@dataclass
class PreparedData:
    """A prepared dataset folder read for next-page modelling.

    Attributes:
        manifest: The folder's verified manifest (``clickstream/runfolder.py``): its
            ``digest`` is what the stages made from these data record.
    """

    data_dir: Path
    vocab: Vocabulary
    splits: dict[str, SessionSequences]
    meta: dict[str, object]
    manifest: Manifest | None = None

    def catalog(self) -> pd.DataFrame:
        """The page catalog (``pages.parquet``: page, group, value, revenue, ...)."""
        return read_parquet(self.data_dir / "pages.parquet")

    @property
    def true_model_path(self) -> Path | None:
        """``true_model`` base path of a synthetic dataset, else ``None``.

        Raises:
            RunFolderError: A ``true_model.npz`` the verified manifest does not list.
        """
        base = self.data_dir / "true_model"
        if self.manifest is not None and self.manifest.folder == self.data_dir:
            found = listed_file(self.manifest, "true_model.npz", required=False)
            return base if found is not None else None
        return base if (self.data_dir / "true_model.npz").is_file() else None


def load_prepared(
    data_dir: str | Path, splits: Sequence[str] = ("train", "valid", "test")
) -> PreparedData:
    """Read ``hits.parquet``, ``pages.parquet`` and ``meta.json`` of a prepared dataset,
    after verifying the folder's manifest (every file as it was published).

    Raises:
        ClickstreamError: The folder is not a complete prepared dataset (naming the missing
            file and the command that makes one).
        RunFolderError: Its manifest is missing or does not verify, or a file cannot be read
            (naming the file).
    """
    data_dir = Path(data_dir)
    for name in ("meta.json", "hits.parquet", "pages.parquet"):
        if not (data_dir / name).is_file():
            raise DataError(
                f"not a prepared dataset: {name} is missing (make one with "
                f"`python scripts/prepare_data.py out_dir={data_dir}`)",
                file=str(data_dir),
            )
    manifest = verify_folder(data_dir, "prepare_data")
    # files the manifest lists only: one added to the folder after it was published is not read
    meta = read_json(listed_file(manifest, "meta.json"), "the dataset's meta.json")
    vocab = Vocabulary.from_catalog(read_parquet(listed_file(manifest, "pages.parquet")))
    columns = ["session_id", "step", "page", "time_on_page_s", "split"]
    hits = read_parquet(listed_file(manifest, "hits.parquet"), columns=columns)
    split_col = hits["split"].to_numpy(dtype=object)
    out = {}
    for name in splits:
        part = hits[split_col == name]
        if len(part) == 0:
            raise DataError(f"split {name!r} holds no sessions", file=str(data_dir))
        out[name] = sequences_from_hits(part.reset_index(drop=True), vocab)
    return PreparedData(data_dir=data_dir, vocab=vocab, splits=out, meta=meta, manifest=manifest)
