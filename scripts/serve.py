"""Serve the web app over a pipeline run folder with waitress (a production WSGI server).

    python scripts/serve.py run_dir=runs/default host=127.0.0.1 port=8000
    python scripts/serve.py run_dir=runs/default 'more_runs=[runs/msnbc]' workers=2 threads=2
    python scripts/serve.py run_dir=runs/default dry_run=true        # load, check, exit

Loads every artefact once (:func:`webapp.create_app`), then serves ``/``, ``/impact`` and the
JSON API until interrupted. A run folder with nothing trained yet ends the process with status
2 and a message naming the command that trains it. See ``configs/serve.yaml``; the server's
limits (connections, timeouts, body size, JSON depth) and headers are in docs/security.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import hydra
import torch
from flask import Flask
from omegaconf import DictConfig, OmegaConf

from envs import visitors
from scripts import run_or_exit
from webapp import create_app
from webapp.app import state
from webapp.server import Limits, check_port, serve


def build_app(cfg: DictConfig | dict[str, Any]) -> Flask:
    """The app of ``configs/serve.yaml`` settings (every run folder loaded)."""
    torch.set_num_threads(int(cfg["torch_threads"]))
    policies = cfg.get("policies")
    return create_app(
        [cfg["run_dir"], *(cfg.get("more_runs") or [])],
        policies=list(policies) if policies else None,
        seed=cfg.get("seed"),
        k_max=int(cfg["k_max"]),
        max_history=int(cfg["max_history"]),
        max_path_steps=int(cfg["max_path_steps"]),
        max_body_bytes=int(cfg["max_body_bytes"]),
        max_json_depth=int(cfg["max_json_depth"]),
        cache=bool(cfg.get("cache", True)),
        visitor_model=visitor_model_name(cfg.get("visitor_model", "auto")),
    )


def visitor_model_name(value: Any) -> str:
    """``auto`` or the visitor kind ``value`` names (YAML and Hydra read the documented
    ``visitor_model=true`` as a boolean: it names the kind ``true``).

    Raises:
        ClickstreamError: Not a kind's name, naming ``visitor_model`` and the kinds.
    """
    if value == "auto":
        return "auto"
    return visitors.get(value, key="visitor_model").name


def server_limits(cfg: DictConfig | dict[str, Any]) -> Limits:
    """The server's limits of ``configs/serve.yaml`` settings.

    Raises:
        ClickstreamError: A limit that is not a positive integer (the message names its key).
    """
    return Limits(**{f.name: cfg[f.name] for f in dataclasses.fields(Limits)})


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load the runs and serve them until interrupted (``dry_run``: load only).

    Returns:
        ``url`` (the address served, or that would be), and per run its folder, policies
        and the policies not served with the reason.

    Raises:
        ClickstreamError: A run folder has nothing trained yet, or the address is taken.
    """
    resolved = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    assert isinstance(resolved, dict)
    limits = server_limits(resolved)  # bad limits fail before minutes of loading
    host, port = str(resolved["host"]), check_port(resolved["port"])
    app = build_app(resolved)
    info: dict[str, Any] = {
        "runs": {
            name: {
                "run_dir": str(rec.run.run_dir),
                "policies": list(rec.run.policies),
                "skipped": rec.run.skipped,
            }
            for name, rec in state(app).recommenders.items()
        },
    }
    info["url"] = f"http://{host}:{port}/"
    if resolved.get("dry_run"):
        return info

    def ready(url: str) -> None:
        info["url"] = url
        print(
            f"serving {', '.join(info['runs'])} on {url} (waitress, {resolved['workers']} "
            f"process(es) x {resolved['threads']} threads); Ctrl+C stops",
            flush=True,
        )

    serve(
        app,
        host=host,
        port=port,
        threads=int(resolved["threads"]),
        workers=int(resolved["workers"]),
        limits=limits,
        ready=ready,
    )
    return info


@hydra.main(version_base="1.3", config_path="../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    info = run_or_exit(run, cfg)
    if cfg.dry_run:
        for name, r in info["runs"].items():
            print(f"{name}: {r['run_dir']}: serves {', '.join(r['policies'])}")
            for policy, why in r["skipped"].items():
                print(f"  not served: {policy}: {why}")
        print(f"would serve on {info['url']}")


if __name__ == "__main__":
    main()
