"""The two pages: ``/`` (the page-group network) and ``/impact`` (policies against organic).

Both take ``?run=<name>`` (default: the first run). The network page draws itself in the
browser from the JSON API (``static/network.js``, plain SVG, no library); the impact page is
rendered here, charts included (SVG from :mod:`webapp.impact`), so it needs no JavaScript.
Every script and stylesheet is served from ``webapp/static``: no CDN.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template, request

from clickstream.errors import ClickstreamError
from webapp.app import state
from webapp.impact import METRICS, WORLD_NOTES, bar_chart, impact_rows, records_for

# templates and static files are the app's own (webapp/templates, webapp/static)
views = Blueprint("views", __name__)


def _run(names: tuple[str, ...] = ("run",)) -> Any:
    """The app's state and the run ``?run=`` names; query parameters other than ``names``, or
    one given twice, are a 400 naming it (not ignored)."""
    for name in request.args:
        if name not in names:
            abort(400, description=f"unknown query parameter {name!r}; known: {list(names)}")
        if len(request.args.getlist(name)) > 1:
            abort(400, description=f"query parameter {name!r} given more than once")
    st = state(current_app)
    try:
        return st, st.recommender(request.args.get("run"))
    except ClickstreamError as exc:
        abort(400, description=str(exc))


@views.get("/")
def network_page() -> str:
    st, rec = _run()
    run = rec.run
    return render_template(
        "network.html",
        runs=list(st.recommenders),
        run=run,
        default_policy=run.default_policy,
        page="network",
    )


@views.get("/impact")
def impact_page() -> str:
    st, rec = _run(("run", "world"))
    run = rec.run
    worlds = run.worlds
    world = request.args.get("world") or (worlds[0] if worlds else None)
    if worlds and world not in worlds:
        abort(400, description=f"unknown world {world!r}; this run has {worlds}")
    records = records_for(run.results, world) if world else []
    return render_template(
        "impact.html",
        runs=list(st.recommenders),
        run=run,
        worlds=worlds,
        world=world,
        world_notes=WORLD_NOTES,
        metrics=METRICS,
        rows=impact_rows(records),
        charts=[bar_chart(records, m) for m in METRICS],
        settings=_settings(run.results),
        page="impact",
    )


def _settings(results: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the evaluation ran with, in words: reward, sessions per seed, click model."""
    if not results:
        return None
    config = results.get("config") or {}
    env = config.get("env") or {}
    model = env.get("click_model", "?")
    params = env.get("click_params") or {}
    if isinstance(params.get(model), dict):  # per-model groups (configs/env/site.yaml)
        params = params[model]
    text = ", ".join(f"{k}={v}" for k, v in params.items() if not isinstance(v, dict))
    return {
        "reward": env.get("reward", "?"),
        "sessions": config.get("n_sessions", "?"),
        "click_model": f"{model} ({text})" if text else model,
    }
