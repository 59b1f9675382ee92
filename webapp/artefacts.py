"""Read a pipeline run folder once: the page catalog, the page-group network, the policies and
the evaluation results.

A run folder is what ``python scripts/pipeline.py out_dir=<dir>`` writes::

    <run_dir>/data/                      prepared dataset (pages.parquet, groups.parquet, ...)
    <run_dir>/data/simulator/            the learned visitor models (model.pt: the GRU, ...)
    <run_dir>/agents/<name>/seed_<S>/    one saved policy per name and training seed
    <run_dir>/eval/results.json          the evaluation (optional: /impact says when missing)

The web app reads these artefacts only; it never trains or evaluates. Everything a request needs
is built here, at startup, so that no request reloads a model. Every folder read is verified once,
here, against its manifest (``clickstream/runfolder.py``) before any of its files is read, and
only files its manifest lists are read: regular files of the run folder's own, reached without a
symbolic link (one pointing outside the run folder, or anywhere, is refused), JSON size-capped. A
policy folder that does not verify (or whose ``run.json`` is not of its shape) is skipped with
the reason, any other one stops the app with an error naming the file; so does an
``eval/results.json`` that is not of the evaluation's shape (:func:`check_results`), while a run
without one (not evaluated) is served without results. The reasons the API shows name files
relative to the run folder (:func:`for_clients`); the server's log keeps the full paths.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.base import Policy, load_published_policy, policy_folders
from agents.site import Site
from clickstream import checks
from clickstream.errors import ClickstreamError, RunFolderError
from clickstream.pages import PageConfig
from clickstream.runfolder import (
    Manifest,
    inside,
    listed_file,
    manifest_digest,
    read_json,
    read_parquet,
    verify_folder,
)
from clickstream.schema import EXIT
from envs import visitors
from envs.sequences import Vocabulary
from envs.visitors import Visitors

log = logging.getLogger(__name__)

ACTION_KEYS = (
    "action_level",
    "allow_no_recommendation",
    "history_len",
    "observe_entry_page",
    "observe_position",
)
"""Env options that change what a policy's actions or observations mean: a policy trained with
other values than the run's is not served (it would be read against the wrong action table)."""


OBSERVE_OFF = {"observe_entry_page": False, "observe_position": False}
"""The observation options' values in a record written before they existed."""


def pipeline_hint(run_dir: Path) -> str:
    """The command that makes (or completes) a run folder."""
    return f"train one with `python scripts/pipeline.py out_dir={run_dir}`"


@dataclass(frozen=True)
class ServedPolicy:
    """One policy instance the app serves.

    Attributes:
        name: Policy name (the ``agents/<name>`` folder).
        seed: Training seed of the instance served (the lowest one saved).
        seeds: Every training seed saved for the name.
        cls: The policy's class (``module.Class``).
        policy: The loaded policy.
        trained_env: The env options it was trained with (``run.json``), or ``{}``.
    """

    name: str
    seed: int
    seeds: tuple[int, ...]
    cls: str
    policy: Policy
    trained_env: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupNetwork:
    """Page groups as a network, counted on the train split.

    Attributes:
        groups: Group names, length G (the vocabulary's order).
        views: Page views of each group in the train split, ``(G,)``.
        page_value: GA page value of each group (``groups.parquet``; else the views-weighted
            mean of its pages' values), ``(G,)``.
        n_pages: Pages in each group, ``(G,)``.
        top_page: Page id of each group's most viewed page (train split, then catalog order),
            ``(G,)``.
        counts: Transitions from each group to each group, ``EXIT`` last, ``(G, G + 1)``.
        probs: ``counts`` row-normalised, ``(G, G + 1)``; a row sums to 1, except the rows of
            groups never viewed in the train split (all 0).
    """

    groups: tuple[str, ...]
    views: np.ndarray
    page_value: np.ndarray
    n_pages: np.ndarray
    top_page: np.ndarray
    counts: np.ndarray
    probs: np.ndarray

    @classmethod
    def from_train(
        cls,
        vocab: Vocabulary,
        pages: np.ndarray,
        offsets: np.ndarray,
        catalog: pd.DataFrame,
        groups_table: pd.DataFrame | None,
    ) -> GroupNetwork:
        """Count the network from the train split's flat page ids ``(N,)`` and session
        offsets ``(S + 1,)`` (:class:`~envs.sequences.SessionSequences`)."""
        g = vocab.n_groups
        page_group = vocab.page_group
        src = page_group[pages]
        dst = np.empty_like(src)
        dst[:-1] = src[1:]
        dst[offsets[1:] - 1] = g  # the last page view of a session leads to EXIT
        counts = np.bincount(src * (g + 1) + dst, minlength=g * (g + 1)).reshape(g, g + 1)
        totals = counts.sum(axis=1, keepdims=True)
        probs = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        page_views = np.bincount(pages, minlength=vocab.n_pages).astype(np.int64)
        views = np.bincount(page_group, weights=page_views, minlength=g).astype(np.int64)
        n_pages = np.bincount(page_group, minlength=g).astype(np.int64)
        # most viewed page per group; ties (and groups unseen in training) by page id, which
        # the catalog sorts by traffic
        order = np.lexsort((np.arange(vocab.n_pages), -page_views, page_group))
        first = np.searchsorted(page_group[order], np.arange(g))
        top_page = order[first]
        value = _group_values(vocab, catalog, groups_table)
        return cls(vocab.groups, views, value, n_pages, top_page, counts, probs)

    def to_json(self, vocab: Vocabulary) -> dict[str, Any]:
        """Nodes and edges (group to another group, probability > 0) for the drawing."""
        g = len(self.groups)
        nodes = [
            {
                "id": i,
                "name": self.groups[i],
                "views": int(self.views[i]),
                "page_value": _num(self.page_value[i]),
                "n_pages": int(self.n_pages[i]),
                "top_page": vocab.pages[int(self.top_page[i])],
                "stay_probability": _num(self.probs[i, i]),
                "exit_probability": _num(self.probs[i, g]),
            }
            for i in range(g)
        ]
        src, dst = np.nonzero(self.counts[:, :g])
        edges = [
            {
                "source": int(s),
                "target": int(t),
                "probability": _num(self.probs[s, t]),
                "count": int(self.counts[s, t]),
            }
            for s, t in zip(src, dst, strict=True)
            if s != t  # staying in a group is a node property, not an edge
        ]
        return {"nodes": nodes, "edges": edges, "exit": EXIT}


def _group_values(
    vocab: Vocabulary, catalog: pd.DataFrame, groups_table: pd.DataFrame | None
) -> np.ndarray:
    """GA page value per group, in the vocabulary's group order, ``(G,)``."""
    if groups_table is not None and {"page_group", "page_value"} <= set(groups_table.columns):
        by_name = dict(
            zip(
                groups_table["page_group"].astype(str),
                groups_table["page_value"].astype(float),
                strict=True,
            )
        )
        if all(name in by_name for name in vocab.groups):
            return np.array([by_name[name] for name in vocab.groups], dtype=np.float64)
    # older datasets without groups.parquet: the views-weighted mean of the pages' values
    # (not GA's group value, which counts a session once per group; close enough to colour by)
    views = catalog["pageviews"].to_numpy(np.float64)
    value = catalog["page_value"].fillna(0.0).to_numpy(np.float64)
    num = np.bincount(vocab.page_group, weights=views * value, minlength=vocab.n_groups)
    den = np.bincount(vocab.page_group, weights=views, minlength=vocab.n_groups)
    return np.divide(num, den, out=np.zeros(vocab.n_groups), where=den > 0)


def _num(x: float) -> float | None:
    """A float for JSON (NaN and infinities have no JSON form: ``None``)."""
    x = float(x)
    return x if np.isfinite(x) else None


@dataclass
class RunArtefacts:
    """Everything the app serves from one run folder (see :func:`load_run`).

    Attributes:
        name: The run's name in the app (the folder's name).
        run_dir: The run folder.
        site: The dataset and the run's env options (``Site.template`` gives the actions,
            rewards and click model the policies were trained with).
        catalog: ``pages.parquet`` sorted by ``page_id``.
        network: The page-group network.
        policies: Served policies by name, sorted by name.
        skipped: Policies found but not served, with the reason.
        results: ``eval/results.json``, or ``None`` when the run was not evaluated.
        stale: What changed in the run folder since the evaluation, by folder relative to it
            (``data``, ``data/simulator``, ``agents/greedy/seed_0``), with how: the results of
            a remade folder describe what it was (:func:`stale_inputs`). Empty when nothing
            changed or nothing was evaluated.
        page_config: How the dataset normalised and grouped pages (``meta.json``), for
            mapping unknown pages; ``None`` when not recorded.
        dynamics: The visitor kind behind follow probabilities and expected values
            (:mod:`envs.visitors`: the learned world's, or ``markov``).
        visitor_model: That kind's model, loaded (its ``next_distribution``).
    """

    name: str
    run_dir: Path
    site: Site
    catalog: pd.DataFrame
    network: GroupNetwork
    policies: dict[str, ServedPolicy]
    skipped: dict[str, str]
    results: dict[str, Any] | None
    page_config: PageConfig | None
    dynamics: str
    visitor_model: Visitors
    stale: dict[str, str] = field(default_factory=dict)

    @property
    def vocab(self) -> Vocabulary:
        return self.site.data.vocab

    def results_stale(self, policy: str) -> bool:
        """Whether ``policy``'s results describe other folders than those served now: its own
        folders or the data or visitor models every policy was evaluated in were remade."""
        prefix = f"agents/{policy}/"
        return any(not key.startswith("agents/") or key.startswith(prefix) for key in self.stale)

    @cached_property
    def worlds(self) -> list[str]:
        """Worlds with results, in the order the app prefers them (most trustworthy first)."""
        if not self.results:
            return []
        have = {r.get("world") for r in self.results.get("records", [])}
        return [w for w in ("ground_truth", "held_out", "learned") if w in have]

    @property
    def reward(self) -> str:
        """The reward the served policies were trained for (``envs/rewards.py``:
        ``page_value``, ``revenue``, ``engagement`` or ``pageviews``)."""
        return str(self.site.env.get("reward", "page_value"))

    @cached_property
    def default_policy(self) -> str:
        """The policy the app shows first: the best mean return in the most trustworthy world
        of the results (organic and random aside), policies with fresh results before those
        whose results are stale (:meth:`results_stale`), else the first name."""
        names = list(self.policies)
        worlds = self.worlds
        if worlds:
            best = [
                (not self.results_stale(r["policy"]), r["mean_return"], r["policy"])
                for r in self.results["records"]  # type: ignore[index]
                if r.get("world") == worlds[0]
                and r.get("policy") in self.policies
                and r.get("policy") not in ("organic", "random")
                and r.get("mean_return") is not None
            ]
            if best:
                return max(best)[2]
        for name in names:
            if name not in ("organic", "random"):
                return name
        return names[0]


def load_run(
    run_dir: str | Path,
    *,
    policies: Sequence[str] | None = None,
    seed: int | None = None,
    name: str | None = None,
    visitor_model: str = "auto",
) -> RunArtefacts:
    """Load a run folder for the app.

    Args:
        run_dir: The folder ``python scripts/pipeline.py out_dir=<dir>`` wrote.
        policies: Names to serve (default: every policy saved).
        seed: Training seed of the instance served per name (default: the lowest saved).
        name: The run's name in the app (default: the folder's name).
        visitor_model: What gives the organic next-page distribution behind follow
            probabilities and expected values: a visitor kind of :mod:`envs.visitors` by name
            (``gru``: the trained GRU, over the whole history; ``latent_class``: the visitor
            types' posterior given the history, a recommendation acting on each type's row;
            ``markov``: first-order rows counted on the train split, the tables the
            heuristics and value iteration use; ``true``: a synthetic store's own model; ...)
            or ``auto``: the learned world's kind when it is a trained one, else ``markov``.

    Raises:
        ClickstreamError: The folder has nothing trained yet (no prepared data, no visitor
            model, no saved policy), naming the command that makes it; or a policy asked for
            is not there.
    """
    if visitor_model != "auto":
        visitors.get(visitor_model, key="visitor_model")  # a kind's name, or "auto"
    run_dir = Path(run_dir).expanduser().resolve()
    hint = pipeline_hint(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder not found; {hint}", file=str(run_dir))
    data_dir = run_dir / "data"
    for required in ("meta.json", "pages.parquet", "hits.parquet"):
        if not (data_dir / required).is_file():
            raise RunFolderError(
                f"nothing trained yet: data/{required} is missing; {hint}", file=str(run_dir)
            )
    saved = _saved_policies(run_dir / "agents", hint)
    if policies:
        missing = sorted(set(policies) - set(saved))
        if missing:
            raise RunFolderError(
                f"no saved policy named {missing}; saved: {sorted(saved)}",
                file=str(run_dir / "agents"),
            )
        saved = {k: v for k, v in saved.items() if k in policies}
    results, evaluated = _results(run_dir)
    env = _run_env(results, saved, run_dir)
    env.pop("model_path", None)  # recorded paths point where the run was made; this is here
    kind = _visitor_kind(visitor_model, env)
    for file in kind.files:
        if not (data_dir / "simulator" / file).is_file():
            raise RunFolderError(
                f"nothing trained yet: the visitor model data/simulator/{file} is missing; {hint}",
                file=str(run_dir),
            )
    # the data and the visitor models are read from the run folder itself, never through a link
    inside(data_dir / "simulator", run_dir)
    site = Site(data_dir=data_dir, env=env, device="cpu")
    template = site.template
    vocab = site.data.vocab
    catalog = site.catalog.sort_values("page_id").reset_index(drop=True)
    if tuple(catalog["page"].astype(str)) != vocab.pages:
        raise RunFolderError(
            "pages.parquet does not match the dataset's vocabulary",
            file=str(data_dir / "pages.parquet"),
        )
    data = site.data.manifest
    groups_path = listed_file(data, "groups.parquet", required=False) if data else None
    groups_table = read_parquet(groups_path) if groups_path is not None else None
    train = site.data.splits["train"]
    network = GroupNetwork.from_train(vocab, train.pages, train.offsets, catalog, groups_table)

    served: dict[str, ServedPolicy] = {}
    skipped: dict[str, str] = {}
    probe = template.observe_pages([0])[None, :]
    for policy_name, folders in sorted(saved.items()):
        seeds = tuple(sorted(folders))
        chosen = seed if seed is not None else seeds[0]
        if chosen not in folders:
            skipped[policy_name] = f"no training seed {chosen} (saved: {list(seeds)})"
            continue
        folder = folders[chosen]
        try:  # a folder that does not verify, or not data we read, is skipped, not served
            trained_env = _trained_env(folder, run_dir)
            reason = _env_mismatch(env, trained_env)
            if reason is None:
                policy = load_published_policy(folder, root=run_dir)
                reason = _unservable(policy, probe, template.n_actions)
        except RunFolderError as exc:
            reason = str(exc)
        if reason is not None:
            log.warning("not serving policy %r: %s", policy_name, reason)  # full paths: ours
            skipped[policy_name] = for_clients(reason, run_dir)
            continue
        served[policy_name] = ServedPolicy(
            policy_name,
            chosen,
            seeds,
            f"{type(policy).__module__}.{type(policy).__qualname__}",
            policy,
            trained_env,
        )
    if not served:
        raise RunFolderError(
            f"no policy can be served ({'; '.join(f'{k}: {v}' for k, v in skipped.items())}); "
            f"{hint}",
            file=str(run_dir / "agents"),
        )
    # published, verified, made from these data, of this vocabulary
    model = kind.load(site.data, device="cpu")
    return RunArtefacts(
        name=name or run_dir.name,
        run_dir=run_dir,
        site=site,
        catalog=catalog,
        network=network,
        policies=served,
        skipped=skipped,
        results=results,
        page_config=_page_config(site.data.meta),
        dynamics=kind.name,
        visitor_model=model,
        stale=stale_inputs(evaluated, run_dir, served) if results is not None else {},
    )


def _visitor_kind(visitor_model: str, env: dict[str, Any]) -> visitors.VisitorKind:
    """The kind the app answers with: the one asked for, or (``auto``) the learned world's
    when it is trained, else the first-order tables."""
    if visitor_model != "auto":
        return visitors.get(visitor_model, key="visitor_model")
    named = env.get("dynamics")
    learned = visitors.default_kind() if named is None else visitors.get(named)
    return learned if learned.learned else visitors.first_order()


def _results(run_dir: Path) -> tuple[dict[str, Any] | None, Manifest | None]:
    """``eval/results.json`` of a verified ``eval/`` folder, its shape checked, and that folder's
    manifest; ``None`` for the results when the run was not evaluated (no ``eval/``, or one that
    lists and holds no ``results.json``).

    Raises:
        RunFolderError: ``eval/`` does not verify or is not the run folder's own (a symbolic
            link), or its ``results.json`` is not listed, not JSON or not of the evaluation's
            shape (:func:`check_results`); naming the file.
    """
    eval_dir = run_dir / "eval"
    if not os.path.lexists(eval_dir):
        return None, None
    manifest = verify_folder(eval_dir, "evaluate", root=run_dir)
    file = listed_file(manifest, "results.json", required=False)
    if file is None:
        return None, manifest
    results = read_json(file, "results.json")
    check_results(results, file)
    return results, manifest


STAGE_FOLDERS = {"data": "data", "simulator": "data/simulator"}
"""Inputs an evaluation records (``scripts/evaluate.py: stage_inputs``) that the app checks,
by the folder they are in a run folder; the policies' are ``agents/<name>/seed_<S>`` both.
(``held_out`` is left out: its folder is the evaluation's setting, not the app's.)"""


def stale_inputs(
    evaluated: Manifest | None, run_dir: Path, served: Mapping[str, ServedPolicy] | None = None
) -> dict[str, str]:
    """The folders of ``run_dir`` the evaluation's manifest names as its inputs that are now
    other folders (remade after it: another manifest) or gone, by path relative to the run
    folder, with what happened in words. A policy trained after the evaluation has no results,
    so it is not listed; a ``served`` instance the evaluation did not play while it played the
    policy's other training seeds is (its results are theirs).

    The pipeline evaluates again when any input changed (``scripts/pipeline.py``); a folder
    retrained by hand (``scripts/train.py``) and not evaluated since would otherwise be shown
    with the results of the policy it replaced.
    """
    if evaluated is None:
        return {}
    out: dict[str, str] = {}
    # a served instance the evaluation did not play, beside results of the policy's other
    # training seeds (a run whose seeds changed): those results are not this instance's
    for name, policy in (served or {}).items():
        key = f"agents/{name}/seed_{policy.seed}"
        others = sorted(k for k in evaluated.inputs if k.startswith(f"agents/{name}/seed_"))
        if others and key not in evaluated.inputs:
            seeds = ", ".join(k.rsplit("seed_", 1)[1] for k in others)
            out[key] = f"not in the evaluation: the results shown are of training seed(s) {seeds}"
    for key, recorded in sorted(evaluated.inputs.items()):
        relative = STAGE_FOLDERS.get(key, key if key.startswith("agents/") else None)
        if relative is None:
            continue
        now = manifest_digest(run_dir / relative)
        if now == recorded:
            continue
        out[relative] = (
            "gone since the evaluation"
            if now is None
            else "remade after the evaluation: its results describe the folder it replaced"
        )
    return out


RESULT_NUMBERS = (
    "mean_return",
    "ci95",
    "time_on_page_s",
    "bounce_rate",
    "bounce_ci95",
    "conversion_rate",
    "conversion_ci95",
    "uplift_pct",
    "uplift_ci95",
    "n_sessions",
)
"""The fields of a results record the app reads as numbers (:mod:`webapp.impact`)."""


def check_results(results: Any, file: Path) -> None:
    """Refuse an ``eval/results.json`` the app cannot read (``agents/evaluate.py`` writes it):
    an object whose ``records`` is a list of objects with string ``policy`` and ``world`` and
    numbers (or null) in :data:`RESULT_NUMBERS`, and whose ``config.env`` (the env options the
    run is served with) is an object. Fields the app does not read are not checked.

    Raises:
        RunFolderError: The first field that is not of that shape, naming the file and the key.
    """

    def bad(key: str, must: str, value: Any) -> RunFolderError:
        return RunFolderError(f"{key} must be {must}, got {_json_text(value)}", file=str(file))

    if not isinstance(results, dict):
        raise bad("the file", "a JSON object (the evaluation's results)", results)
    records = results.get("records", [])
    if not isinstance(records, list):
        raise bad("records", "a list of objects", records)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise bad(f"records[{i}]", "an object", record)
        for key in ("policy", "world"):
            if not isinstance(record.get(key, ""), str):
                raise bad(f"records[{i}].{key}", "a string", record[key])
        for key in RESULT_NUMBERS:
            value = record.get(key)
            if value is not None and not checks.is_number(value):
                raise bad(f"records[{i}].{key}", "a number or null", value)
    config = _object(results.get("config"), file, "config")
    _env_options(config.get("env"), file, "config.env")


def _json_text(value: Any) -> str:
    """A value read from JSON, as a message shows it (long ones cut)."""
    if isinstance(value, dict | list):
        kind = "an object" if isinstance(value, dict) else "a list"
        text = repr(value)
        return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(value: Any, file: Path, key: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, ``{}`` for null or absent.

    Raises:
        RunFolderError: Anything else, naming the file and ``key``.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunFolderError(
            f"{key} must be a JSON object, got {_json_text(value)}", file=str(file)
        )
    return value


def _env_options(value: Any, file: Path, key: str) -> dict[str, Any]:
    """Env options recorded in ``file`` (``config.env``): an object, whose click model is named
    by a string and whose ``click_params`` is an object (the app reads both).

    Raises:
        RunFolderError: Not of that shape, naming the file and the key.
    """
    env = _object(value, file, key)
    model = env.get("click_model")
    if model is not None and not isinstance(model, str):
        raise RunFolderError(
            f"{key}.click_model must be a string, got {_json_text(model)}", file=str(file)
        )
    _object(env.get("click_params"), file, f"{key}.click_params")
    return dict(env)


def _trained_env(folder: Path, run_dir: Path) -> dict[str, Any]:
    """The env options a policy folder's ``run.json`` records (``{}`` without one), read once
    the folder verifies (:func:`~clickstream.runfolder.verify_folder`, inside ``run_dir``).

    Raises:
        RunFolderError: The folder does not verify, or its ``run.json`` is not listed in its
            manifest, not JSON, or not of the shape ``{"config": {"env": {...}}}``.
    """
    manifest = verify_folder(folder, "train", root=run_dir)
    file = listed_file(manifest, "run.json", required=False)
    if file is None:
        return {}
    record = _object(read_json(file, "run.json"), file, "the file")
    config = _object(record.get("config"), file, "config")
    return _env_options(config.get("env"), file, "config.env")


def for_clients(text: str, run_dir: Path) -> str:
    """``text`` (a reason) as an API answer may show it: a leading path in the run folder made
    relative to it (``agents/greedy/seed_0/scores.npy: ...``), any other mention of the folder
    written ``<run_dir>``. No answer names a path of the server's machine."""
    root = str(run_dir)
    if text.startswith(root + os.sep):
        text = text[len(root) + 1 :]
    # the folder itself, not a longer name that starts with it (``run`` in ``run2``)
    return re.sub(re.escape(root) + r"(?![^\s/`'\"),;:])", "<run_dir>", text)


def _saved_policies(agents_dir: Path, hint: str) -> dict[str, dict[int, Path]]:
    """Policy folders under ``agents/`` by name and training seed."""
    out = policy_folders(agents_dir)
    if not out:
        raise RunFolderError(
            f"nothing trained yet: no saved policy in agents/; {hint}", file=str(agents_dir.parent)
        )
    return out


def _run_env(
    results: dict[str, Any] | None, saved: dict[str, dict[int, Path]], run_dir: Path
) -> dict[str, Any]:
    """The run's env options: the evaluation's (what the results were measured in), else
    those the first policy that verifies was trained with."""
    env = ((results or {}).get("config") or {}).get("env")  # shape checked: check_results
    if env:
        return dict(env)
    for folders in saved.values():
        for folder in folders.values():
            try:
                env = _trained_env(folder, run_dir)
            except RunFolderError:
                continue  # not served either: load_run says why
            if env:
                return env
    return {}


def _env_mismatch(env: dict[str, Any], trained: dict[str, Any]) -> str | None:
    if not trained:
        return None  # no record: the probe of the action count still guards the shape
    # options added later default to off in a record that predates them
    env, trained = {**OBSERVE_OFF, **env}, {**OBSERVE_OFF, **trained}
    diff = [k for k in ACTION_KEYS if k in env and k in trained and env[k] != trained[k]]
    if diff:
        return "trained with other env options than the run's: " + ", ".join(
            f"{k}={trained[k]!r} (run: {env[k]!r})" for k in diff
        )
    return None


def _unservable(policy: Policy, probe: np.ndarray, n_actions: int) -> str | None:
    if policy.needs_latent_state:
        return "needs the visitor's latent intent (known in the ground-truth simulator only)"
    try:
        shape = np.shape(policy.action_scores(probe))
    except (ClickstreamError, ValueError, RuntimeError) as exc:
        return f"cannot score an observation ({exc})"
    if shape != (1, n_actions):
        return f"scores {shape[-1] if shape else 0} actions, the run's env has {n_actions}"
    return None


def _page_config(meta: Any) -> PageConfig | None:
    """The page rules the dataset's ``meta.json`` (read, verified, by ``load_prepared``)
    records, or ``None``."""
    config = meta.get("config") if isinstance(meta, dict) else None
    data = config.get("data") if isinstance(config, dict) else None
    options = data.get("pages") if isinstance(data, dict) else None
    if not options:
        return None
    try:
        return PageConfig.from_dict(options)
    except (ClickstreamError, TypeError, AttributeError) as exc:
        log.warning(
            "page rules in meta.json not usable (%s): unknown pages match exactly only", exc
        )
        return None
