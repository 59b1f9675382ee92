"""What a visitor-model kind is, what a loaded visitor model offers, and the registry of kinds.

A *kind* (:class:`VisitorKind`) says once, for one way of modelling visitors:

* its **files** in a simulator run folder (``scripts/train_simulator.py`` writes them) and, with
  :attr:`VisitorKind.config_key`, **how it trains** from ``simulator.<config_key>``;
* **how it loads** (:meth:`VisitorKind.load`): from a verified simulator folder made from the
  very data being simulated, checking the run's page vocabulary;
* its **capabilities**, as class attributes (:attr:`~VisitorKind.ground_truth`,
  :attr:`~VisitorKind.latent_state`, :attr:`~VisitorKind.tables`, ...), read directly: callers
  never probe a model with ``hasattr`` or compare kind names.

A loaded model (:class:`Visitors`) gives the simulator its :class:`~envs.dynamics.Dynamics`
(:meth:`Visitors.dynamics`) and people (the web app) the next-page distribution after a history
(:meth:`Visitors.next_distribution`, a :class:`NextPage`: one row, or one row per visitor type
with the types' posterior weights, so a recommendation can act on each type's row apart).

Kinds register themselves with :func:`register` when their module is imported; the package
imports every module of ``envs/visitors/`` the first time a kind is looked up
(:mod:`envs.visitors`), so a new kind is one module there plus one config under
``configs/simulator/`` (docs/visitor_models.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from clickstream import checks
from clickstream.errors import ConfigError, DataError, ModelError, RunFolderError
from clickstream.runfolder import MANIFEST, Manifest, read_manifest, verified_file

if TYPE_CHECKING:
    import torch

    from clickstream.synthetic import SyntheticStore
    from envs.dynamics import Dynamics
    from envs.metrics import NextPagePredictor
    from envs.sequences import PreparedData, SessionSequences
    from envs.training import TrainerConfig

KINDS: dict[str, type[VisitorKind]] = {}
"""Every registered kind by name (filled by :func:`register`; :func:`envs.visitors.kinds`
imports the kind modules first)."""


@dataclass(frozen=True)
class NextPage:
    """Where a visitor goes after a history: a mixture of visitor types (one type: a plain
    distribution).

    Attributes:
        weights: ``p(type | history)``, ``(Z,)`` float64, sums to 1.
        rows: The next-page distribution of each type, ``(Z, P + 1)`` float64 (``EXIT``
            last); each row sums to 1.
    """

    weights: np.ndarray
    rows: np.ndarray

    @classmethod
    def single(cls, probs: np.ndarray) -> NextPage:
        """One distribution ``(P + 1,)`` (a model without visitor types)."""
        probs = np.asarray(probs, dtype=np.float64)
        return cls(np.ones(1), probs[None, :])

    @property
    def n_types(self) -> int:
        return len(self.weights)

    @property
    def probs(self) -> np.ndarray:
        """The organic next-page distribution, ``(P + 1,)``: the types' rows mixed by their
        weights (with one type, its row itself)."""
        if self.n_types == 1:
            return self.rows[0]
        return self.weights @ self.rows


def mixture_next_page(
    prior: np.ndarray,
    entry: np.ndarray,
    transitions: np.ndarray,
    history: Sequence[int],
    what: str = "visitor model",
) -> NextPage:
    """The next page of visitor types, each a first-order chain, given a history: the types'
    posterior (exact forward filtering) and each type's row at the last page.

    Args:
        prior: Type probabilities, ``(Z,)``.
        entry: Entry distribution of each type, ``(Z, P)``.
        transitions: Next-page rows of each type, ``(Z, P, P + 1)``.
        history: Page ids, oldest first (not empty).
        what: The model's name in the error.

    Raises:
        ClickstreamError: No type can produce the history (naming the page).
    """
    ids = np.asarray(history, dtype=np.int64)
    with np.errstate(divide="ignore"):
        start = np.log(prior) + np.log(entry[:, ids[0]])  # (Z,)
        steps = np.log(transitions[:, ids[:-1], ids[1:]])  # (Z, T - 1)
        path = np.concatenate([start[:, None], start[:, None] + np.cumsum(steps, axis=1)], axis=1)
    log_w = path[:, -1]
    top = log_w.max()
    if not np.isfinite(top):
        at = int(np.argmin(np.isfinite(path).any(axis=0)))  # the first step no type can take
        where = f"enters at page id {ids[0]}" if at == 0 else f"goes from page id {ids[at - 1]}"
        raise DataError(
            f"the history is impossible under the {what}: no visitor type {where}"
            + (f" to page id {ids[at]} (step {at})" if at else "")
        )
    w = np.exp(log_w - top)
    return NextPage(w / w.sum(), transitions[:, ids[-1]])


class Visitors(ABC):
    """A loaded visitor model of one kind, for one page vocabulary.

    Attributes:
        kind: The kind it is (its capabilities are the kind's attributes).
        pages: Page names in vocabulary order, length P.
    """

    kind: VisitorKind
    pages: tuple[str, ...]

    @property
    def n_pages(self) -> int:
        return len(self.pages)

    @abstractmethod
    def dynamics(self, top_k: int | None = None) -> Dynamics:
        """The simulator's dynamics (:class:`envs.core.SiteCore`).

        Args:
            top_k: The simulator scores only each page's ``top_k`` successors (large sites);
                a model that can score a few outcomes cheaply does so then.
        """

    def next_distribution(self, history: Sequence[int]) -> NextPage:
        """Next-page distribution after ``history`` (page ids, oldest first, not empty).

        Raises:
            DataError: An empty history, or one holding anything but page ids of the
                vocabulary (whole numbers in ``0 .. P - 1``: not negative, not the padding or
                ``EXIT`` id ``P``), naming the first bad entry; the same for every kind.
        """
        return self._next_distribution(self.checked_history(history))

    def checked_history(self, history: Sequence[int]) -> np.ndarray:
        """``history`` as page ids, ``(T,)`` int64, checked as :meth:`next_distribution` says."""
        p = self.n_pages
        values = list(history) if not isinstance(history, np.ndarray) else history.tolist()
        if isinstance(history, np.ndarray) and history.ndim != 1:
            raise DataError(f"history must be one list of page ids, got shape {history.shape}")
        if not values:
            raise DataError("history must hold at least one page view")
        for position, value in enumerate(values):
            if not checks.is_whole(value):
                raise DataError(
                    f"history[{position}] must be a page id (a whole number), got {value!r}"
                )
            if not 0 <= value < p:
                raise DataError(
                    f"history[{position}] = {value} is not a page id of this model's "
                    f"vocabulary (0 .. {p - 1})"
                )
        return np.asarray(values, dtype=np.int64)

    @abstractmethod
    def _next_distribution(self, ids: np.ndarray) -> NextPage:
        """:meth:`next_distribution` for a checked history (page ids ``(T,)``, ``T >= 1``)."""


@dataclass
class TrainContext:
    """What a kind's training gets from ``scripts/train_simulator.py``.

    Attributes:
        data: The prepared dataset (vocabulary, manifest).
        splits: ``train``, ``valid`` and ``test`` sessions (``min_session_length`` applied).
        trainer: The run's trainer settings (``simulator.trainer``): seed, device, ...
        settings: The whole ``simulator`` config (resolved, plain).
        work: The stage's work folder (checkpoints go here; it becomes the run folder).
        resume: Continue from a checkpoint in ``work`` when there is one.
        writer: A TensorBoard ``SummaryWriter``, or ``None``.
        label: Which run this is (``main``, ``held-out``) in progress lines, or ``None``.
        data_dir: The data folder as the config named it (recorded in checkpoints).
    """

    data: PreparedData
    splits: dict[str, SessionSequences]
    trainer: TrainerConfig
    settings: dict[str, Any]
    work: Path
    resume: bool = False
    writer: Any = None
    label: str | None = None
    data_dir: str = ""

    @property
    def min_session_length(self) -> int:
        """``simulator.min_session_length``: the shortest sessions ``splits`` hold (1: all).
        A kind records it in its files, so that what it counts when loaded (where visitors
        enter) comes from the sessions it was trained on (:meth:`VisitorKind.train_split`)."""
        return int(self.settings.get("min_session_length", 1))


@dataclass
class Trained:
    """A kind's model right after training.

    Attributes:
        predictor: Scored on the test split beside the baselines (its ``name`` is the row).
        record: The kind's entry in ``metrics.json`` (how it was trained).
        summary: One line the script prints at the end.
        write: Writes the kind's files: called with a function giving the path of a file
            name in the run folder being written, and ``{"test": metrics by model,
            "report": variant}`` (the scores of every model on the test split).
    """

    predictor: NextPagePredictor
    record: dict[str, Any]
    summary: str
    write: Callable[[Callable[[str], Path], dict[str, Any]], None] = field(repr=False)


class VisitorKind(ABC):
    """One kind of visitor model (see the module docstring). Subclasses set the class
    attributes and implement :meth:`load` (and :meth:`train` when ``config_key`` is set).

    Attributes:
        name: What configs call it (``env.dynamics``, ``visitor_model`` of the web app).
        title: Its name for people (progress headers).
        files: Its files in a simulator run folder, the model file first (what an explicit
            ``model_path`` names); none for kinds that need no training.
        checkpoints: Files in the work folder a resumed training continues from (copied from
            the published run by ``resume=true``).
        config_key: ``simulator.<config_key>`` set (not null) trains it; ``None``: nothing
            to train.
        ground_truth: The synthetic store's own visitors (synthetic datasets only).
        latent_state: Its visitors carry a hidden type, kept for the session; a
            recommendation acts on each type's row (:class:`NextPage` has several rows).
        tables: Its dynamics are first-order chains (:meth:`envs.dynamics.Dynamics.chains`),
            so the exact MDP of :mod:`agents.tabular` can be built from it: always, or (the
            latent-type GRU) when the trained model is first-order; the planners accept the
            kind and refuse, when they plan, a model whose dynamics give no chains.
        default: The kind a run uses unless told otherwise (the learned world, and the
            held-out world's model when the learned world's kind needs no training).
        first_order: The first-order model counted on the train split, which needs no
            training (the tables of the heuristics and value iteration).
        seeded: Training it with another seed gives another model (a GRU's initial weights,
            a latent-class fit's random starts), so a held-out world of the same kind is a
            second opinion; a model of counts is the same model, and the held-out world uses
            the default kind instead.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    files: ClassVar[tuple[str, ...]] = ()
    checkpoints: ClassVar[tuple[str, ...]] = ()
    config_key: ClassVar[str | None] = None
    ground_truth: ClassVar[bool] = False
    latent_state: ClassVar[bool] = False
    tables: ClassVar[bool] = False
    default: ClassVar[bool] = False
    first_order: ClassVar[bool] = False
    seeded: ClassVar[bool] = True

    @property
    def learned(self) -> bool:
        """Trained by ``scripts/train_simulator.py`` (it has files in a simulator folder)."""
        return bool(self.files)

    def trains_with(self, settings: Mapping[str, Any]) -> bool:
        """Whether a ``simulator`` config trains this kind (its ``config_key`` is set)."""
        return self.config_key is not None and settings.get(self.config_key) is not None

    def check(self, options: Mapping[str, Any]) -> None:
        """Refuse bad ``simulator.<config_key>`` settings (a ``ConfigError`` naming the key)
        before the data are read or anything is written; :meth:`train` may still find
        settings that do not fit the data. Checks nothing by default."""
        return None

    def train(self, options: Mapping[str, Any], ctx: TrainContext) -> Trained:
        """Train on ``ctx.splits`` with ``simulator.<config_key>`` = ``options``."""
        raise ModelError(f"visitor model {self.name!r} is not trained")

    @abstractmethod
    def load(
        self,
        data: PreparedData,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> Visitors:
        """The model for the prepared ``data`` (its ``train`` split loaded).

        Args:
            data: The dataset simulated (its vocabulary must be the model's).
            model_path: The model file (default: ``<data_dir>/simulator/`` and
                ``files[0]``); see :meth:`model_file`.
            device: Torch device of its tensors.

        Raises:
            ClickstreamError: The model cannot be used for these data (another vocabulary,
                not trained, not a synthetic dataset ...), naming the file and the fix.
        """

    def from_store(self, store: SyntheticStore) -> Visitors:
        """The model for a synthetic store held in memory (no prepared dataset)."""
        raise ConfigError(f"dynamics={self.name!r} needs a prepared data_dir")

    # ---- helpers for subclasses --------------------------------------------------------

    def model_file(self, data: PreparedData, model_path: str | Path | None = None) -> Path:
        """The kind's model file for ``data``, verified.

        By default ``<data_dir>/simulator/<files[0]>``: a published run folder, whose manifest
        must verify and say it was made from these very data (the manifest digest of
        ``data``). An explicit ``model_path`` in a published folder is checked the same way;
        one elsewhere (a file saved by hand) is read as it is, still as data only.

        Raises:
            RunFolderError: The simulator folder is not published, does not verify, or was
                made from other data (another dataset, or these data prepared again since: the
                message says which), naming it and the command that remakes it.
        """
        if model_path is not None:
            path = Path(model_path)
            if not (path.parent / MANIFEST).is_file():
                return path
        else:
            path = data.data_dir / "simulator" / self.files[0]
            if not path.parent.is_dir():
                raise RunFolderError(
                    f"no trained visitor model here: make one with `python "
                    f"scripts/train_simulator.py data_dir={data.data_dir}`",
                    file=str(path.parent),
                )
        verified_file(path, "train_simulator")
        manifest = read_manifest(path.parent)
        made_from = manifest.inputs.get("data")
        if data.manifest is not None and made_from != data.manifest.digest:
            raise RunFolderError(
                f"made from other data than {data.data_dir} holds: "
                + _data_difference(manifest.data_fingerprint, made_from, data.manifest)
                + f"; retrain it with `python scripts/train_simulator.py "
                f"data_dir={data.data_dir} out_dir={path.parent}` (or `python "
                "scripts/pipeline.py`)",
                file=str(path.parent),
            )
        return path

    @staticmethod
    def train_split(data: PreparedData, min_session_length: Any, path: Path) -> SessionSequences:
        """The training sessions a model was fitted on: ``data``'s train split without the
        sessions shorter than the ``min_session_length`` its file records.

        Raises:
            RunFolderError: A recorded value that is not a whole number >= 1, or one that
                leaves no training session, naming the file.
        """
        if not checks.is_whole(min_session_length) or min_session_length < 1:
            raise RunFolderError(
                f"the model records a malformed min_session_length {min_session_length!r} "
                "(expected a whole number >= 1)",
                file=str(path),
            )
        train = data.splits["train"].min_length(int(min_session_length))
        if len(train) == 0:
            raise RunFolderError(
                f"the model was trained on sessions of {min_session_length} page views or "
                f"more, and the train split of {data.data_dir} holds none",
                file=str(path),
            )
        return train

    @staticmethod
    def check_pages(pages: Sequence[str], data: PreparedData, path: Path, what: str) -> None:
        """Refuse a model of another page vocabulary than ``data``'s."""
        if tuple(pages) != data.vocab.pages:
            raise RunFolderError(
                f"the {what} was trained on another page vocabulary", file=str(path)
            )


def _data_difference(fingerprint: str | None, digest: str | None, data: Manifest) -> str:
    """How the data a simulator folder was made from differ from ``data``: other files
    (another dataset, or these data prepared from other inputs or settings), or the same
    files prepared again (a new manifest)."""
    if fingerprint is not None and fingerprint == data.data_fingerprint:
        return (
            "the same data files, prepared again since (data manifest "
            f"{_short(digest)} in the model's manifest, {_short(data.digest)} now)"
        )
    return (
        f"other data files (data fingerprint {_short(fingerprint)} in the model's manifest, "
        f"{_short(data.data_fingerprint)} for these data): another dataset, or these data "
        "prepared from other inputs or settings"
    )


def _short(digest: str | None) -> str:
    """A digest as people compare them: ``sha256:`` and the first 12 hex digits."""
    return "none recorded" if digest is None else digest[:19]


def register(cls: type[VisitorKind]) -> type[VisitorKind]:
    """Add a kind to :data:`KINDS` under its ``name`` (a class decorator).

    Raises:
        ClickstreamError: No name, or the name is taken by another class.
    """
    if not cls.name:
        raise ModelError(f"visitor kind {cls.__qualname__} needs a `name`")
    other = KINDS.get(cls.name)
    if other is not None and (other.__module__, other.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ModelError(
            f"visitor kind name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}"
        )
    KINDS[cls.name] = cls
    return cls
