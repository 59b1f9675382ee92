"""Hydra multirun jobs as Ray tasks: ``hydra/launcher=ray`` (``configs/hydra/launcher/ray.yaml``).

    python scripts/train.py -m agent=q_learning seed=0,1,2,3 hydra/launcher=ray \\
        hydra.launcher.address=ray://head:10001

Each job of a sweep is one Ray task that asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs, so
Ray places it on any node of the cluster with room for it. The job runs exactly as under the
basic or joblib launcher (Hydra's ``run_job``: the same config, the same seed, the same run
folder), so a sweep gives the same numbers on a cluster as on one machine.

Why not ``hydra-ray-launcher``: its current release (1.2.2) pins ``cloudpickle<3`` (for its
AWS mode), while ``joblib>=1.6``, which the joblib launcher brings, needs ``cloudpickle>=3``;
pip then keeps an older joblib and downgrades cloudpickle, and the plugin brings ``boto3`` and
``ray[default]``'s dashboard stack too. Its launch loop also waits on the jobs in order and
reports only the first failure. This launcher is plain Ray tasks (``ray`` only) and:

* a job that fails (an exception, ``sys.exit``, a worker that died) is reported with its
  overrides and node, and the other jobs go on and keep their results; Hydra then ends the
  sweep with the first failure's error (non-zero status), as its other launchers do;
* ``<sweep dir>/jobs.json`` lists every job: number, overrides, status, node id and address,
  seconds, the job's return value (when it is JSON) or its error.

Skipping jobs already done on a rerun is the job's own business (``scripts/train.py`` reuses
a policy folder whose manifest matches its config and inputs), so it works under every launcher.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """A sweep job that failed, as text: what it raised (type and message; the traceback is
    in ``jobs.json``), or why there is nothing to raise (the worker process died, the job
    called ``sys.exit``)."""


class RayLauncher(Launcher):
    """Runs each job of a Hydra sweep as a Ray task.

    Args:
        address: The cluster: ``ray://<head>:10001`` (Ray Client, from a machine outside the
            cluster), ``<head>:6379`` or ``auto`` (from a node of the cluster), or ``None``
            to start a local Ray instance for this sweep (``init`` options apply).
        num_cpus: CPUs each job asks for (Ray runs no more jobs on a node than it has CPUs
            for them).
        num_gpus: GPUs each job asks for (0: CPU jobs; 1 with ``device=cuda``).
        memory: Bytes of memory each job asks for (``None``: no request).
        max_retries: Times Ray reruns a job whose worker process died (a node lost, killed
            for memory); an exception raised by the job is never retried.
        runtime_env: Ray runtime environment of the jobs (e.g. ``{"working_dir": "."}`` to
            ship the code to nodes that do not have the project installed).
        init: Further ``ray.init`` options (e.g. ``num_cpus`` of a local instance).
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        memory: int | None = None,
        max_retries: int = 1,
        runtime_env: dict[str, Any] | None = None,
        init: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.memory = memory
        self.max_retries = max_retries
        self.runtime_env = runtime_env
        self.init = dict(init or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Submit every job, wait for all of them, write ``jobs.json``; returns one
        :class:`JobReturn` per job, in order (failed ones with their error)."""
        import ray

        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            options = {k: v for k, v in self.init.items() if v is not None}
            if self.runtime_env:
                options["runtime_env"] = dict(self.runtime_env)
            ray.init(address=self.address, **options)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log.info(
            f"Ray launcher: {len(job_overrides)} jobs on {len(nodes)} node(s) "
            f"({self.num_cpus} CPU, {self.num_gpus} GPU each), sweep output dir: {sweep_dir}"
        )
        remote = ray.remote(_run_job).options(
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            memory=self.memory,
            max_retries=self.max_retries,
        )
        pending: dict[Any, tuple[int, list[str]]] = {}
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_{idx}"
                sweep_config.hydra.job.num = idx
            ref = remote.remote(
                self.hydra_context, sweep_config, self.task_function, Singleton.get_state()
            )
            pending[ref] = (idx, list(overrides))

        results: dict[int, JobReturn] = {}
        records: dict[int, dict[str, Any]] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            idx, overrides = pending.pop(ref)
            try:
                ret, where = ray.get(ref)
            except Exception as exc:  # the worker died, or the result does not unpickle
                ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
                ret.return_value = JobFailed(f"{type(exc).__name__}: {exc}")
                where = {}
            results[idx] = ret
            records[idx] = _record(idx, overrides, ret, where)
            shown = " ".join(filter_overrides(overrides))
            if ret.status == JobStatus.COMPLETED:
                log.info(f"\t#{idx} done on node {where.get('node_id', '?')[:8]}: {shown}")
            else:
                log.error(
                    f"\t#{idx} FAILED on node {where.get('node_id', '?')[:8]} "
                    f"({where.get('node_ip', '?')}): {shown}: {records[idx]['error']}"
                )
        ordered = [records[k] for k in sorted(records)]
        _write_json(sweep_dir / "jobs.json", ordered)
        failed = [r for r in ordered if r["status"] != "completed"]
        if failed:
            log.error(
                f"{len(failed)} of {len(ordered)} jobs failed: "
                + "; ".join(f"#{r['num']} ({' '.join(r['overrides'])})" for r in failed)
                + f" (every job: {sweep_dir / 'jobs.json'})"
            )
        return [results[k] for k in sorted(results)]


def _run_job(
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> tuple[JobReturn, dict[str, Any]]:
    """One job, on a Ray worker: Hydra's ``run_job`` as every launcher calls it. Returns the
    job's result and where it ran; never raises (a failure is the result's status)."""
    import ray
    from hydra.core.hydra_config import HydraConfig

    context = ray.get_runtime_context()
    where = {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    start = time.perf_counter()
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    overrides = list(OmegaConf.to_container(sweep_config.hydra.overrides.task))
    try:
        ret = run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except BaseException as exc:  # sys.exit in the job: run_job catches Exception only
        ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        code = exc.code if isinstance(exc, SystemExit) else None
        ret.return_value = JobFailed(
            f"the job exited with status {code} (its message is in the job's log)"
            if isinstance(exc, SystemExit)
            else f"{type(exc).__name__}: {exc}"
        )
    where["seconds"] = round(time.perf_counter() - start, 3)
    if ret.status != JobStatus.COMPLETED:
        # the exception travels back as its text: the driver never unpickles what a job raised
        exc = ret._return_value
        where["traceback"] = "".join(traceback.format_exception(exc))
        if not isinstance(exc, JobFailed):
            ret.return_value = JobFailed(f"{type(exc).__name__}: {exc}")
    return ret, where


def _record(
    idx: int, overrides: list[str], ret: JobReturn, where: dict[str, Any]
) -> dict[str, Any]:
    """One job's line of ``jobs.json``."""
    ok = ret.status == JobStatus.COMPLETED
    value = ret._return_value
    return {
        "num": idx,
        "overrides": filter_overrides(overrides),
        "status": "completed" if ok else "failed",
        "node_id": where.get("node_id"),
        "node_ip": where.get("node_ip"),
        "seconds": where.get("seconds"),
        "output_dir": _output_dir(ret),
        "result": value if ok and _is_json(value) else None,
        "error": None if ok else f"{type(value).__name__}: {value}",
        "traceback": where.get("traceback"),
    }


def _output_dir(ret: JobReturn) -> str | None:
    """The job's Hydra output folder (its ``.hydra/`` config and log)."""
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except Exception:  # a job that failed before Hydra set it up
        return None


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _write_json(path: Path, data: Any) -> None:
    """Write ``path`` whole or not at all (a temp file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
