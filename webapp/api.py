"""The JSON API.

=========================  =====================================================================
``GET /api/health``        status, the runs served, their policies and sizes
``GET /api/policies``      the run's policies (``?run=``) with their page value per session in
                           the most trustworthy world evaluated, the default, those not served
``GET /api/pages``         the run's pages (``?run=``, ``?group=``) and page groups
``GET /api/network``       the page-group network (``?run=``): nodes and edges
``POST /api/recommend``    ``{"history": [...], "k": 3, "policy": "ppo"}``: the top-k next pages
``POST /api/path``         ``{"history": [...], "policy": "ppo", "steps": 5}``: the likeliest path
=========================  =====================================================================

Rewards: ``reward`` names the run's reward (``page_value``, ``revenue``, ``engagement``: expected
seconds on the page, or ``pageviews``); every ``expected_value``, a path step's ``reward`` and a
path's ``reward_sum`` are in its unit, while a page's ``page_value`` is always its GA page value.
A path's ``value`` is the same number as ``reward_sum`` (kept for older clients; the sum of the
rewards of the steps' next pages, whatever the reward).

Optional request fields: ``run`` (default: the first run), ``unknown`` (``map``, ``drop`` or
``error``: what to do with pages the run does not know, see :mod:`webapp.recommend`). Every
bad request gets a 4xx answer ``{"error": "..."}`` that says what is wrong: 400 for a field
(unknown policy or run, ``k`` or ``steps`` out of range, malformed or unknown pages, unknown
fields, invalid JSON, arrays and objects nested deeper than ``max_json_depth``), 413 for a
body over ``MAX_CONTENT_LENGTH`` (from the server, :mod:`webapp.server`, before the body is
read), 415 for a content type other than ``application/json``, 404 and 405 for wrong URLs and
methods. No answer names a path of the server's machine: runs go by their folder's name.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from clickstream.errors import ClickstreamError
from webapp.app import AppState, state
from webapp.recommend import UNKNOWN_MODES, Recommender, ResolvedPage, json_type

api = Blueprint("api", __name__, url_prefix="/api")


class ApiError(Exception):
    """A bad request: its HTTP status and what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@api.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Any:
    return jsonify(error=exc.message), exc.status


@api.errorhandler(ClickstreamError)
def _bad_input(exc: ClickstreamError) -> Any:
    return jsonify(error=str(exc)), 400


def _state() -> AppState:
    return state(current_app)


# ---- GET -----------------------------------------------------------------------------------------


@api.get("/health")
def health() -> Any:
    _query(())
    st = _state()
    runs = []
    for name, rec in st.recommenders.items():
        run = rec.run
        runs.append(
            {
                "name": name,  # the folder's name: no path of this machine leaves it
                "pages": run.vocab.n_pages,
                "page_groups": run.vocab.n_groups,
                "actions": len(rec.action_pages),
                "policies": list(run.policies),
                "skipped": run.skipped,
                "visitor_model": run.dynamics,
                "evaluated": run.results is not None,
                "results_stale": run.stale,
            }
        )
    return jsonify(
        status="ok",
        default_run=st.default_run,
        runs=runs,
        uptime_s=round(time.time() - st.started, 1),
    )


@api.get("/policies")
def policies() -> Any:
    rec = _state().recommender(_query(("run",)).get("run"))
    run = rec.run
    world = run.worlds[0] if run.worlds else None
    value = {
        r.get("policy"): _num(r["mean_return"])
        for r in (run.results or {}).get("records", [])
        if r.get("world") == world and r.get("mean_return") is not None
    }
    return jsonify(
        run=run.name,
        default=run.default_policy,
        reward=run.reward,
        world=world,
        actions={
            "level": "group" if rec.group_level else "page",
            "count": len(rec.action_pages),
            "show_nothing": rec.nothing is not None,
            "history_len": rec.history_len,
            "observation_extras": list(rec.template.extras),
        },
        policies=[
            {
                "name": p.name,
                "class": p.cls,
                "seed": p.seed,
                "seeds": list(p.seeds),
                "baseline": p.name == "organic",
                "mean_return": value.get(p.name),
                "results_stale": p.name in value and run.results_stale(p.name),
            }
            for p in run.policies.values()
        ],
        skipped=run.skipped,
    )


@api.get("/pages")
def pages() -> Any:
    args = _query(("run", "group"))
    rec = _state().recommender(args.get("run"))
    run = rec.run
    vocab = run.vocab
    group = args.get("group")
    rows = range(vocab.n_pages)
    if group is not None:
        if group not in vocab.groups:
            raise ApiError(400, f"unknown page group {group!r}; groups: {list(vocab.groups)}")
        gid = vocab.groups.index(group)
        rows = [i for i in rows if vocab.page_group[i] == gid]
    views = run.catalog["pageviews"].to_numpy()
    return jsonify(
        run=run.name,
        n_pages=vocab.n_pages,
        groups=list(vocab.groups),
        pages=[{**_page(rec, i), "pageviews": int(views[i])} for i in rows],
    )


@api.get("/network")
def network() -> Any:
    rec = _state().recommender(_query(("run",)).get("run"))
    return jsonify(run=rec.run.name, **rec.run.network.to_json(rec.run.vocab))


# ---- POST ----------------------------------------------------------------------------------------

RECOMMEND_FIELDS = ("history", "k", "policy", "run", "unknown")
PATH_FIELDS = ("history", "policy", "steps", "run", "unknown")


@api.post("/recommend")
def recommend() -> Any:
    st = _state()
    body = _json_body(RECOMMEND_FIELDS)
    rec = st.recommender(body.get("run"))
    policy = _policy(rec, body)
    k_max = min(st.k_max, rec.n_recommendable)
    k = _integer(body, "k", 3, 1, k_max)
    resolved, ids = _history(st, rec, body)
    outcome = rec.recommend(policy, ids, k)
    warnings = _warnings(rec, resolved)
    if not outcome.recommendations and outcome.prefers_nothing:
        warnings.append(f"{policy!r} shows nothing here and ranks no page above another")
    elif len(outcome.recommendations) < k:
        warnings.append(
            f"only {len(outcome.recommendations)} action(s) can be recommended here "
            f"by {policy!r} (k={k})"
        )
    return jsonify(
        run=rec.run.name,
        policy=policy,
        reward=rec.run.reward,
        k=k,
        history=[_resolved(rec, r) for r in resolved],
        current_page=_page(rec, ids[-1]),
        observation=list(outcome.observation),
        warnings=warnings,
        prefers_nothing=outcome.prefers_nothing,
        organic={
            "expected_value": outcome.organic_expected_value,
            "exit_probability": outcome.exit_probability,
        },
        recommendations=[
            {
                "rank": r.rank,
                "action": r.action,
                **(_page(rec, r.page_id) if r.page_id is not None else _group(rec, r.group_id)),
                "score": _num(r.score),
                "organic_probability": r.organic_probability,
                "follow_probability": r.follow_probability,
                "expected_value": r.expected_value,
                "slate_follow_probability": r.slate_follow_probability,
            }
            for r in outcome.recommendations
        ],
        slate_expected_value=outcome.slate_expected_value,
    )


@api.post("/path")
def path() -> Any:
    st = _state()
    body = _json_body(PATH_FIELDS)
    rec = st.recommender(body.get("run"))
    policy = _policy(rec, body)
    steps = _integer(body, "steps", 5, 1, st.max_path_steps)
    resolved, ids = _history(st, rec, body)
    walk = rec.path(policy, ids, steps)
    probability = math.prod(s.probability for s in walk)
    reward_sum = sum(s.page_value for s in walk)
    return jsonify(
        run=rec.run.name,
        policy=policy,
        reward=rec.run.reward,
        start=_page(rec, ids[-1]),
        warnings=_warnings(rec, resolved),
        steps=[
            {
                "page": _page(rec, s.page_id),
                "recommended": (
                    _page(rec, s.recommended_page)
                    if s.recommended_page is not None
                    else _group(rec, s.recommended_group)
                    if s.recommended_group is not None
                    else None
                ),
                "follow_probability": s.follow_probability,
                "next_page": _page(rec, s.next_page_id),
                "probability": s.probability,
                "exit_probability": s.exit_probability,
                "expected_value": s.expected_value,
                "reward": s.page_value,
                "loop": s.loop,
                "exit_likelier": s.exit_likelier,
            }
            for s in walk
        ],
        probability=probability,
        reward_sum=reward_sum,
        value=reward_sum,  # the same number, under its older name
    )


# ---- request reading -----------------------------------------------------------------------------


def _query(names: tuple[str, ...]) -> dict[str, str]:
    """The request's query parameters, each one of ``names`` and given once: a misspelt or
    repeated one (``?run=a&run=b``: which?) is refused rather than ignored.

    Raises:
        ApiError: 400 naming the parameter.
    """
    for name in request.args:
        if name not in names:
            known = f"known: {list(names)}" if names else "this request takes none"
            raise ApiError(400, f"unknown query parameter {name!r}; {known}")
        if len(request.args.getlist(name)) > 1:
            raise ApiError(400, f"query parameter {name!r} given more than once")
    return dict(request.args)


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: an object naming a key twice is refused (the
    last one would silently win, and which one the client meant is unknowable)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ApiError(400, f"invalid JSON: the field {key!r} is given more than once")
        out[key] = value
    return out


def _json_body(fields: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object, its fields checked against ``fields``; the request takes its
    settings from the body only (a query parameter is refused, not ignored)."""
    if request.args:
        raise ApiError(
            400,
            f"query parameter(s) {list(request.args)} not read: {request.path} takes its "
            f"settings in the JSON body (fields {list(fields)})",
        )
    if request.mimetype != "application/json":
        got = request.content_type or "none"
        raise ApiError(415, f"Content-Type must be application/json, got {got!r}")
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 before reading it
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object")
    try:
        text = raw.decode(json.detect_encoding(raw))  # what json.loads does with bytes
    except (UnicodeDecodeError, LookupError) as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    limit = _state().max_json_depth
    if json_depth(text, limit) > limit:
        raise ApiError(400, f"invalid JSON: arrays and objects nested deeper than {limit} levels")
    try:
        body = json.loads(text, object_pairs_hook=_no_repeated_keys)
    except ValueError as exc:  # JSONDecodeError
        raise ApiError(400, f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got {json_type(body)}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(400, f"unknown field(s) {unknown}; known: {list(fields)}")
    return body


# a JSON string (escapes included), and one bracket
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str, stop: int | None = None) -> int:
    """How deep arrays and objects nest in the JSON ``text`` (0: a scalar), counted without
    parsing it, in linear time and constant stack.

    Brackets inside strings do not count; brackets that do not balance are counted as they
    come (the parser refuses such text anyway). Stops counting past ``stop``.
    """
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop is not None and deepest > stop:
                    break
        else:
            depth -= 1
    return deepest


def _integer(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if type(value) is not int:  # bool is an int subclass, and 3.0 is not a count
        raise ApiError(400, f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _policy(rec: Recommender, body: dict[str, Any]) -> str:
    run = rec.run
    name = body.get("policy", run.default_policy)
    if not isinstance(name, str):
        raise ApiError(400, f"policy must be a policy name (a string), got {name!r}")
    if name not in run.policies:
        if name in run.skipped:
            raise ApiError(400, f"policy {name!r} is not served: {run.skipped[name]}")
        raise ApiError(
            400, f"unknown policy {name!r}; run {run.name!r} serves: {list(run.policies)}"
        )
    return name


def _history(
    st: AppState, rec: Recommender, body: dict[str, Any]
) -> tuple[list[ResolvedPage], tuple[int, ...]]:
    if "history" not in body:
        raise ApiError(400, "missing field 'history': the pages viewed, oldest first")
    history = body["history"]
    if not isinstance(history, list):
        raise ApiError(400, f"history must be a list of page paths, got {history!r:.80}")
    if not 1 <= len(history) <= st.max_history:
        raise ApiError(400, f"history must hold 1 to {st.max_history} pages, got {len(history)}")
    unknown = body.get("unknown", "map")
    if unknown not in UNKNOWN_MODES:
        raise ApiError(400, f"unknown must be one of {list(UNKNOWN_MODES)}, got {unknown!r}")
    return rec.resolve(history, unknown)


def _warnings(rec: Recommender, resolved: list[ResolvedPage]) -> list[str]:
    out = []
    pages = rec.run.vocab.pages
    for i, r in enumerate(resolved):
        if r.how == "dropped":
            out.append(f"history[{i}]: unknown page {r.input!r} dropped ({r.why})")
        elif r.how in ("folded", "group", "other"):
            target = pages[r.page_id]  # type: ignore[index]
            via = {
                "folded": f"the folded page of its group {r.group!r}",
                "group": f"the most viewed page of its group {r.group!r}",
                "other": f"the 'other' group (its group {r.group!r} is not in this run)",
            }
            out.append(f"history[{i}]: unknown page {r.input!r} read as {target!r} ({via[r.how]})")
    return out


# ---- answer pieces -------------------------------------------------------------------------------


def _page(rec: Recommender, page_id: int) -> dict[str, Any]:
    return rec.page_info(page_id)


def _group(rec: Recommender, group_id: int) -> dict[str, Any]:
    return rec.group_info(group_id)


def _resolved(rec: Recommender, r: ResolvedPage) -> dict[str, Any]:
    page = rec.run.vocab.pages[r.page_id] if r.page_id is not None else None
    return {"input": r.input, "page": page, "page_id": r.page_id, "how": r.how}


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
