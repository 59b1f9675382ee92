"""The website an agent learns in and is judged in: simulator worlds, data, logging.

A :class:`Site` ties one prepared dataset to the simulator settings of ``configs/env/`` and
names the **worlds** a policy can run in (DESIGN.md, issue "Agents and experiments"):

* ``learned``: the visitor model ``dynamics`` of the env config names (a kind of
  :mod:`envs.visitors`: ``gru``, ``latent_class`` visitor types fitted on the data, ...): where
  agents train;
* ``held_out``: another visitor model of the same kind (another seed or other data), so that a
  policy that exploits one model's errors is not taken for skill (a GRU when the learned kind
  is not trained, or is a model of counts that another seed would not change);
* ``ground_truth``: the synthetic store's own visitor model (synthetic datasets only; the env's
  ``top_k``, an approximation of the learned worlds, does not apply).

Every world pays the same reward table (the env config's, from the dataset's page catalog) and
applies the same click model: worlds differ only in how visitors move.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clickstream.errors import ConfigError
from clickstream.runfolder import read_parquet, verified_file
from envs import visitors
from envs.core import SiteCore
from envs.dynamics import MarkovDynamics, check_truth_size
from envs.rewards import reward_from_catalog, reward_from_store
from envs.sequences import PreparedData, load_prepared
from envs.site_env import build_core
from envs.visitors import VisitorKind

WORLDS = ("learned", "held_out", "ground_truth")


def check_ground_truth(data_dir: str | Path) -> None:
    """Refuse, before any work, a synthetic dataset whose ground truth is too large to hold
    (``Z × P × (P + 1)`` over its vocabulary's ``P`` pages above
    :data:`envs.dynamics.TRUTH_MAX_CELLS`: intent mode from about 4,470 seen pages, items mode
    from about 2,500): the error names the setting that leaves the world out. Cheap: it reads
    the page catalog and the store's intents only. Nothing for a dataset without a truth.

    Raises:
        ModelError: The ground truth would not fit.
    """
    data_dir = Path(data_dir)
    if not (data_dir / "true_model.npz").is_file():
        return
    n_pages = len(read_parquet(data_dir / "pages.parquet", columns=["page"]))
    record = json.loads((data_dir / "true_model.json").read_text(encoding="utf-8"))
    check_truth_size(len(record["intents"]), n_pages)


@dataclass
class Site:
    """One dataset and its simulator settings.

    Args:
        data_dir: A prepared dataset (``scripts/prepare_data.py``).
        env: :func:`envs.site_env.build_core` options (``configs/env/site.yaml``) of the
            ``learned`` world, without ``n_visitors`` and ``data_dir``.
        held_out_dir: The ``held_out`` world's simulator folder (``scripts/train_simulator.py``
            with another seed; ``None``: no such world).
        seed: Seed of training.
        device: Torch device of the simulator and of the networks.
        log_dir: Where TensorBoard events and run records go (``None``: nowhere).
    """

    data_dir: Path
    env: dict[str, Any] = field(default_factory=dict)
    held_out_dir: Path | None = None
    seed: int = 0
    device: str = "cpu"
    log_dir: Path | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.env = dict(self.env)
        for key in ("n_visitors", "data_dir", "store"):
            self.env.pop(key, None)
        # the kind's own name (YAML reads an unquoted `true` as a boolean); default: the GRU
        named = self.env.get("dynamics")
        kind = visitors.default_kind() if named is None else visitors.get(named)
        self.env["dynamics"] = kind.name
        self.env["device"] = self.device
        if self.held_out_dir is not None:
            self.held_out_dir = Path(self.held_out_dir)
        self._writer = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], log_dir: str | Path | None = None) -> Site:
        """From a run config (``configs/train.yaml``): ``data_dir``, ``env``,
        ``held_out_dir``, ``seed``, ``device``."""
        held_out = cfg.get("held_out_dir")
        return cls(
            data_dir=Path(cfg["data_dir"]),
            env=plain(cfg.get("env") or {}),
            held_out_dir=Path(held_out) if held_out else None,
            seed=int(cfg.get("seed", 0)),
            device=str(cfg.get("device", "cpu")),
            log_dir=Path(log_dir) if log_dir is not None else None,
        )

    # ---- worlds --------------------------------------------------------------------------

    @property
    def is_synthetic(self) -> bool:
        return (self.data_dir / "true_model.npz").is_file()

    def worlds(self) -> list[str]:
        """The worlds this site can simulate, in :data:`WORLDS` order."""
        out = ["learned"]
        if self.held_out_dir is not None and self._held_out_file().is_file():
            out.append("held_out")
        if self.is_synthetic:
            out.append("ground_truth")
        return out

    def world_options(self, world: str) -> dict[str, Any]:
        """:func:`envs.site_env.build_core` options of a world."""
        opts = dict(self.env)
        if world == "learned":
            return opts
        if world == "held_out":
            if self.held_out_dir is None:
                raise ConfigError("this site has no held-out visitor model")
            verified_file(self._held_out_file(), "train_simulator")  # a published folder only
            return {
                **opts,
                "dynamics": self._held_out_kind.name,
                "model_path": str(self._held_out_file()),
            }
        if world == "ground_truth":
            if not self.is_synthetic:
                raise ConfigError(
                    "the ground truth is known for synthetic datasets only", file=str(self.data_dir)
                )
            # the store's own links, not the successors the learned world is limited to
            truth = visitors.ground_truth().name
            return {**opts, "dynamics": truth, "model_path": None, "top_k": None}
        raise ConfigError(f"world must be one of {WORLDS}, got {world!r}")

    @property
    def learned_kind(self) -> VisitorKind:
        """The learned world's visitor kind (``env.dynamics``)."""
        return visitors.get(self.env["dynamics"])

    @property
    def _held_out_kind(self) -> VisitorKind:
        """The held-out world's visitor model: the learned world's kind when it is trained
        and another seed makes another model of it, else the default kind (a Markov learned
        world is checked against a GRU)."""
        kind = self.learned_kind
        return kind if kind.learned and kind.seeded else visitors.default_kind()

    def _held_out_file(self) -> Path:
        """That model's file in the held-out folder."""
        assert self.held_out_dir is not None
        return self.held_out_dir / self._held_out_kind.files[0]

    def core(self, n_visitors: int, world: str = "learned", **overrides: Any) -> SiteCore:
        """A simulator core of ``n_visitors`` visitors in ``world``."""
        return build_core(
            n_visitors, data_dir=self.data_dir, **{**self.world_options(world), **overrides}
        )

    # ---- data and models -----------------------------------------------------------------

    @cached_property
    def data(self) -> PreparedData:
        return load_prepared(self.data_dir, splits=("train",))

    @cached_property
    def catalog(self) -> pd.DataFrame:
        return read_parquet(self.data_dir / "pages.parquet")

    @cached_property
    def template(self) -> SiteCore:
        """A one-visitor core of the learned world, for its actions, rewards and click model
        (built with first-order dynamics, so no network is loaded)."""
        return self.core(1, dynamics=visitors.first_order().name, top_k=None, device="cpu")

    @cached_property
    def markov(self) -> MarkovDynamics:
        """The first-order model counted on the train split (smoothed)."""
        return MarkovDynamics.fit(self.data.splits["train"], self.data.vocab.pages)

    def markov_mdp(self):
        """The first-order MDP estimated from the train split, with the env's click model,
        rewards and actions: what value iteration solves."""
        from agents.tabular import SiteMDP

        return SiteMDP.from_core(self.template, self.markov.transitions, self.markov.entry)

    def true_mdp(self):
        """The synthetic store's true MDP (one per latent intent)."""
        return self.kind_mdp(visitors.ground_truth().name)

    def kind_mdp(self, kind: str):
        """The MDP of the visitor kind ``kind`` (one whose dynamics are first-order chains:
        ``markov``, ``latent_class``, ``true``; one MDP per visitor type), with the env's
        click model, rewards and actions; in its own world (the ground truth for the true
        model, else the learned world's settings), without ``top_k``.

        Raises:
            ClickstreamError: An unknown kind, or one without tables (a GRU).
        """
        from agents.tabular import SiteMDP

        chosen = visitors.get(kind, key="model")
        world = "ground_truth" if chosen.ground_truth else "learned"
        core = self.core(1, world, dynamics=chosen.name, model_path=None, top_k=None, device="cpu")
        return SiteMDP.from_core(core)

    def page_traffic(self) -> np.ndarray:
        """Views of each page in the train split, ``(P,)``."""
        train = self.data.splits["train"]
        return np.bincount(train.pages, minlength=self.data.vocab.n_pages).astype(np.float64)

    def side_tables(self, world: str) -> dict[str, torch.Tensor]:
        """Per-state tables the evaluation reads besides the reward, ``(P + 1,)`` each:
        ``revenue`` (expected transaction revenue of a view) and ``time_on_page_s``; the
        store's true values in the ground truth, the catalog's estimates elsewhere."""
        cache = self.__dict__.setdefault("_side_tables_cache", {})
        if world not in cache:
            cache[world] = self._side_tables(world)
        return cache[world]

    def _side_tables(self, world: str) -> dict[str, torch.Tensor]:
        pages = self.data.vocab.pages
        if world == "ground_truth":
            from clickstream.synthetic import SyntheticStore

            store = SyntheticStore.load(self.data_dir / "true_model")
            revenue = reward_from_store("revenue", store, pages)
            time = reward_from_store("engagement", store, pages)
        else:
            revenue = reward_from_catalog("revenue", self.catalog, pages)
            time = reward_from_catalog("engagement", self.catalog, pages)
        return {
            "revenue": revenue.per_page.double().cpu(),
            "time_on_page_s": time.per_page.double().cpu(),
        }

    # ---- logging -------------------------------------------------------------------------

    @property
    def writer(self):
        """A TensorBoard ``SummaryWriter`` in ``log_dir`` (``None`` without one)."""
        if self._writer is None and self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Write ``scalars`` (names like ``eval/mean_return``) at ``step`` to TensorBoard."""
        if self.writer is None:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(name, float(value), int(step))
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def plain(cfg: Any) -> Any:
    """Hydra's DictConfig / ListConfig as plain dicts and lists (SB3 checks list types)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, dict) else cfg
