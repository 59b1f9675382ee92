"""Evaluate every saved policy of a run folder in every world; write the report.

    python scripts/evaluate.py experiment=synthetic_markov
    python scripts/evaluate.py experiment=synthetic_markov n_sessions=20000 policies=[ppo,organic]

Reads ``<out_dir>/agents/<policy>/seed_<S>/`` (``scripts/train.py``), writes
``<eval_dir>/results.json`` (one record per policy and world: ``agents.evaluate.RECORD_FIELDS``),
``results.md`` and PNG bar charts with 95 % error bars (with ``manifest.json``, published with
one rename: ``clickstream/runfolder.py``), and prints the Markdown tables.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from agents.base import Policy, load_published_policy, policy_folders
from agents.evaluate import check_protocol, evaluate
from agents.report import write_report
from agents.site import Site, check_ground_truth
from clickstream.errors import RunFolderError
from clickstream.prepare import git_commit
from clickstream.runfolder import StageWriter, config_hash, manifest_digest, read_manifest
from envs.click_model import describe_click_model
from scripts import run_or_exit
from scripts.parallel import resolve_jobs, submit, worker_pool
from scripts.train import truncation

CONFIG_KEYS = ("env", "n_sessions", "world_sessions", "seeds", "n_visitors", "policies", "worlds")
"""Settings that change the report (their hash is in the manifest)."""


Selection = list[str] | dict[str, list[int] | None] | None
"""``policies``: every saved policy (``None``), those named, or those named with the training
seeds to take of each (what the pipeline passes: the agents and seeds of its run)."""


def saved_policies(agents_dir: Path, names: Selection = None) -> dict[str, dict[int, Policy]]:
    """Policies under ``agents_dir`` by name and training seed, each from a verified folder.

    Raises:
        RunFolderError: A policy or training seed asked for is not saved, or none is.
    """
    if not agents_dir.is_dir():
        raise RunFolderError(
            "no trained policies (train some with `python scripts/pipeline.py` or "
            "`python scripts/train.py`)",
            file=str(agents_dir),
        )
    out = {
        name: {seed: load_published_policy(folder) for seed, folder in seeds.items()}
        for name, seeds in policy_folders(agents_dir, names).items()
    }
    missing = sorted(set(names or []) - set(out))
    if missing:
        raise RunFolderError(f"no saved policy named {missing}", file=str(agents_dir))
    if isinstance(names, dict):
        absent = [
            f"{name}/seed_{seed}"
            for name, seeds in names.items()
            for seed in seeds or []
            if seed not in out[name]
        ]
        if absent:
            raise RunFolderError(f"no saved policy {absent}", file=str(agents_dir))
    if not out:
        raise RunFolderError("no saved policies", file=str(agents_dir))
    return out


def policy_digests(agents_dir: Path, names: Selection = None) -> dict[str, str | None]:
    """The manifest digest of each saved policy under ``agents_dir``, by
    ``<name>/seed_<S>``: a report is stale once any of them changes."""
    out: dict[str, str | None] = {}
    for name, seeds in policy_folders(agents_dir, names).items():
        for seed, folder in seeds.items():
            out[f"{name}/seed_{seed}"] = manifest_digest(folder)
    return out


def stage_inputs(cfg: dict[str, Any]) -> dict[str, str | None]:
    """The manifests a report is made from: data, simulators and every policy evaluated."""
    held_out = cfg.get("held_out_dir")
    inputs = {
        "data": manifest_digest(cfg["data_dir"]),
        "simulator": manifest_digest(Path(cfg["data_dir"]) / "simulator"),
        "held_out": manifest_digest(held_out) if held_out else None,
    }
    agents = policy_digests(Path(cfg["out_dir"]) / "agents", cfg.get("policies"))
    return {**inputs, **{f"agents/{k}": v for k, v in agents.items()}}


def training_info(agents_dir: Path, names: Selection = None) -> dict[str, dict[str, Any]]:
    """Per policy name: ``truncated`` (a time limit cut any of its training runs short) and
    ``training``, per training seed the ``steps`` reached, ``budget_steps`` and ``truncated``
    (policies that train in steps; ``[]`` for those built without training)."""
    out: dict[str, dict[str, Any]] = {}
    for name, seeds in policy_folders(agents_dir, names).items():
        runs = []
        for seed, folder in sorted(seeds.items()):
            record = _run_record(folder)
            fit = record.get("fit") or {}
            if "steps" not in fit:
                continue
            runs.append(
                {
                    "seed": seed,
                    "steps": fit.get("steps"),
                    "budget_steps": fit.get("budget_steps"),
                    "truncated": truncation(record) is not None,
                }
            )
        out[name] = {"truncated": any(r["truncated"] for r in runs), "training": runs}
    return out


MADE_FROM = ("data", "simulator")
"""Inputs a policy records (``scripts/train.py: stage_inputs``) that must be the evaluation's."""


def check_made_from(agents_dir: Path, names: Selection, inputs: dict[str, str | None]) -> None:
    """Refuse policy folders made from other data or another visitor model than the
    evaluation's ``inputs`` (:func:`stage_inputs`): a folder left from an earlier run of the
    run folder (another ``seed``, another simulator) would otherwise be scored beside the new
    ones, its seeds pooled into the same row.

    Raises:
        RunFolderError: Naming each such folder and what it was made from, and what to do.
    """
    stale = []
    for name, seeds in policy_folders(agents_dir, names).items():
        for seed, folder in seeds.items():
            made = read_manifest(folder, "train").inputs
            other = [k for k in MADE_FROM if k in made and made[k] != inputs.get(k)]
            if other:
                stale.append(f"{name}/seed_{seed} (other {' and '.join(other)})")
    if stale:
        raise RunFolderError(
            f"saved policies made from other data or another visitor model than this "
            f"evaluation's (left from an earlier run): {', '.join(stale)}; retrain them "
            "(`python scripts/pipeline.py` retrains what its settings name) or leave them out "
            "with policies=[...]",
            file=str(agents_dir),
        )


def _run_record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def dataset_title(data_dir: Path, fallback: object) -> str:
    """The name of the data the run actually loaded (``meta.json``'s ``dataset``, e.g.
    ``ga_sample_20170801`` or ``synthetic_intent_200p``), not the experiment's name, which a
    run on other data keeps; ``fallback`` for datasets prepared before it was recorded."""
    try:
        meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    name = meta.get("dataset") if isinstance(meta, dict) else None
    return str(name) if name else str(fallback)


def run(cfg: DictConfig, pool: Executor | None = None) -> dict[str, Any]:
    """Evaluate and write the report; returns ``{"records": [...], "paths": {...}}``.

    Each world is evaluated on its own (:func:`world_records`): side by side in ``pool``'s
    worker processes when one is given (the pipeline's), else one after another here."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    # refused before any work: no session would write NaN means, an empty seed list nothing
    check_protocol(
        resolved["n_sessions"],
        resolved["seeds"],
        resolved["n_visitors"],
        resolved.get("world_sessions") or {},
    )
    site = Site.from_config(resolved)
    agents_dir = Path(resolved["out_dir"]) / "agents"
    # read before loading: a policy retrained meanwhile then makes this report stale
    inputs = stage_inputs(resolved)
    trained = training_info(agents_dir, resolved.get("policies"))
    saved_policies(agents_dir, resolved.get("policies"))  # bad folders refused before any work
    check_made_from(agents_dir, resolved.get("policies"), inputs)
    worlds = resolved.get("worlds") or site.worlds()
    if "ground_truth" in worlds:  # refused here, not after the other worlds are evaluated
        check_ground_truth(site.data_dir)
    quiet = {**resolved, "show_progress": False}  # parallel bars would overwrite each other
    futures = [
        submit(pool, world_records, quiet if pool is not None else resolved, world)
        for world in worlds
    ]
    records = [record for future in futures for record in future.result()]
    for record in records:  # cut short by a time limit: said in every record of the policy
        record.update(trained.get(record["policy"], {"truncated": False, "training": []}))
    dataset = dataset_title(Path(resolved["data_dir"]), resolved.get("experiment_name"))
    context = {
        "experiment": resolved.get("experiment_name"),
        "dataset": dataset,
        "data": str(resolved["data_dir"]),
        "reward": site.env.get("reward", "page_value"),
        "click model": describe_click_model(
            site.env.get("click_model", "boost"), site.env.get("click_params")
        ),
        "worlds": ", ".join(worlds),
        **_truth_context(Path(resolved["data_dir"]), worlds),
        "sessions per seed asked": _sessions_asked(resolved, worlds),
        "git commit": git_commit(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    eval_dir = Path(resolved["eval_dir"])
    stage = StageWriter(
        eval_dir,
        "evaluate",
        config_hash=config_hash(resolved, CONFIG_KEYS),
        inputs=inputs,
        data_fingerprint=site.data.manifest.data_fingerprint if site.data.manifest else None,
    )
    with stage as out:
        written = write_report(
            records,
            out.dir,
            title=f"Results: {dataset}",
            context=context,
            extra={"config": resolved},
        )
    paths = {k: str(eval_dir / Path(v).name) for k, v in written.items()}
    return {"records": records, "paths": paths}


def world_records(resolved: dict[str, Any], world: str) -> list[dict[str, Any]]:
    """One world's records: every saved policy (the intent oracle only where intents exist)
    over ``n_sessions`` sessions per seed. A module-level function of plain data, so that a
    worker process can run it."""
    site = Site.from_config(resolved)
    show_progress = bool(resolved.get("show_progress", True))
    policies = saved_policies(Path(resolved["out_dir"]) / "agents", resolved.get("policies"))
    chosen = {
        n: p
        for n, p in policies.items()
        if world == "ground_truth" or not next(iter(p.values())).needs_latent_state
    }
    return evaluate(
        chosen,
        site,
        worlds=[world],
        n_sessions=int(resolved["n_sessions"]),
        seeds=resolved["seeds"],
        n_visitors=int(resolved["n_visitors"]),
        world_sessions=resolved.get("world_sessions") or {},
        progress=show_progress,
        announce=None if show_progress else _announce,
    )


def _announce(line: str) -> None:
    """A finished (policy, world) on stderr, flushed: a worker process shows no bars."""
    print(line, file=sys.stderr, flush=True)


def _truth_context(data_dir: Path, worlds: list[str]) -> dict[str, str]:
    """The report's line on a ground truth restricted to the pages the data saw
    (``meta.json``'s ``true_model``: ``envs.dynamics.store_tables``); none otherwise."""
    if "ground_truth" not in worlds:
        return {}
    try:
        record = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))["true_model"]
        unseen, store = int(record["unseen_pages"]), int(record["n_pages"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not unseen:
        return {}
    return {
        "ground truth": f"the store restricted to the {store - unseen:,} of its {store:,} pages "
        "the data saw, rows renormalised (meta.json: true_model)"
    }


def _sessions_asked(resolved: dict[str, Any], worlds: list[str]) -> str:
    """``n_sessions`` per seed and world, with the per-world overrides that apply."""
    base = int(resolved["n_sessions"])
    other = {w: int(n) for w, n in (resolved.get("world_sessions") or {}).items() if w in worlds}
    if not other:
        return f"{base:,}"
    rest = [w for w in worlds if w not in other]
    parts = [f"{n:,} ({w})" for w, n in other.items()]
    if rest:
        parts.append(f"{base:,} ({', '.join(rest)})")
    return ", ".join(parts)


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with worker_pool(resolve_jobs(cfg.jobs)) as pool:
        result = run_or_exit(lambda c: run(c, pool=pool), cfg)
    print(Path(result["paths"]["results.md"]).read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
