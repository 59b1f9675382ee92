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
from webapp.impact import (
    REWARD_NOTES,
    WORLD_NOTES,
    bar_chart,
    impact_rows,
    metrics_for,
    records_for,
    sessions_per_seed,
)

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
        k=ui_k(rec.n_recommendable),
        reward=run.reward,
        reward_name=REWARD_NAMES.get(run.reward, run.reward),
        page="network",
    )


UI_K = 3
"""Recommendations the network page asks each policy for."""

REWARD_NAMES = {
    "page_value": "page value",
    "revenue": "revenue",
    "engagement": "seconds on the page",
    "pageviews": "page views",
}
"""The reward of one page view, in words, by reward (``envs/rewards.py``)."""


def ui_k(n_recommendable: int) -> int:
    """The ``k`` the network page asks for: :data:`UI_K`, or fewer on a site with fewer
    actions that show a page (the API refuses a ``k`` above them); at least 1."""
    return max(1, min(UI_K, n_recommendable))


@views.get("/impact")
def impact_page() -> str:
    st, rec = _run(("run", "world"))
    run = rec.run
    worlds = run.worlds
    world = request.args.get("world") or (worlds[0] if worlds else None)
    if worlds and world not in worlds:
        abort(400, description=f"unknown world {world!r}; this run has {worlds}")
    records = records_for(run.results, world) if world else []
    env = ((run.results or {}).get("config") or {}).get("env") or {}
    reward = str(env.get("reward") or run.reward)  # what the evaluation paid
    settings = _settings(run.results, records, reward)
    metrics = metrics_for(reward)
    return render_template(
        "impact.html",
        runs=list(st.recommenders),
        run=run,
        worlds=worlds,
        world=world,
        world_notes=WORLD_NOTES,
        metrics=metrics,
        rows=impact_rows(records, metrics),
        charts=[bar_chart(records, m) for m in metrics],
        settings=settings,
        reward_note=REWARD_NOTES.get(reward),
        page="impact",
    )


def _settings(
    results: dict[str, Any] | None, records: list[dict[str, Any]], reward: str
) -> dict[str, Any] | None:
    """What the evaluation ran with, in words: reward, the sessions each seed played (from
    the world's ``records``, not the configured request), click model."""
    if not results:
        return None
    config = results.get("config") or {}
    env = config.get("env") or {}
    model = env.get("click_model", "?")
    params = env.get("click_params") or {}
    if isinstance(params.get(model), dict):  # per-model groups (configs/env/site.yaml)
        params = params[model]
    text = ", ".join(f"{k}={v}" for k, v in params.items() if not isinstance(v, dict))
    played = sessions_per_seed(records)
    return {
        "reward": reward,
        "sessions": " or ".join(f"{n:,}" for n in played) if played else "?",
        "click_model": f"{model} ({text})" if text else model,
    }
