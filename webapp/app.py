"""The Flask application factory.

    from webapp import create_app
    app = create_app(["runs/default"])        # one or more pipeline run folders
    app.run()                                   # development only; production: scripts/serve.py

Each run folder is loaded once, here (:func:`webapp.artefacts.load_run`): the catalog, the
page-group network, one instance per policy, the visitor model and the results. Requests only
read them (every cache is bounded and thread-safe), so one app serves many threads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from clickstream.errors import ConfigError, DataError
from webapp.artefacts import RunArtefacts, load_run
from webapp.recommend import Recommender

EXTENSION = "nextpage"
# on every answer of the app (pages, static files, JSON). The pages load their scripts and
# stylesheets from /static only, draw with inline SVG (markup, not style attributes) and
# fetch from the same origin: no 'unsafe-inline', no other origin. The favicon is an empty
# data: URL (no request for /favicon.ico).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",  # a JSON or text answer is never run as a script
    "Referrer-Policy": "no-referrer",  # the visitor's page paths stay here
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
}


@dataclass
class AppState:
    """What every request reads (``app.extensions["nextpage"]``).

    Attributes:
        recommenders: One per run, by run name, in the order given (the first is the default).
        k_max: Largest ``k`` a recommendation request may ask for.
        max_history: Most history entries a request may send.
        max_path_steps: Most steps of a path.
        max_json_depth: Deepest nesting of a request's JSON body.
        started: ``time.time()`` at start.
    """

    recommenders: dict[str, Recommender]
    k_max: int
    max_history: int
    max_path_steps: int
    max_json_depth: int
    started: float

    @property
    def default_run(self) -> str:
        return next(iter(self.recommenders))

    def recommender(self, run: Any) -> Recommender:
        """The run's recommender (``None``: the default run).

        Raises:
            ClickstreamError: ``run`` is not a name of a loaded run.
        """
        if run is None:
            return self.recommenders[self.default_run]
        if not isinstance(run, str) or run not in self.recommenders:
            raise DataError(f"unknown run {run!r}; this server has: {sorted(self.recommenders)}")
        return self.recommenders[run]


def create_app(
    runs: str | Path | RunArtefacts | Sequence[str | Path | RunArtefacts],
    *,
    policies: Sequence[str] | None = None,
    seed: int | None = None,
    k_max: int = 20,
    max_history: int = 100,
    max_path_steps: int = 10,
    max_body_bytes: int = 16 * 1024,
    max_json_depth: int = 16,
    cache: bool = True,
    visitor_model: str = "auto",
) -> Flask:
    """Build the app over one or more run folders.

    Args:
        runs: Run folders (``python scripts/pipeline.py out_dir=<dir>``) or loaded runs; the
            first is the default. Names (the folders' names) must differ.
        policies: Policy names to serve (default: every policy of each run).
        seed: Training seed of the policy instances (default: each name's lowest).
        k_max: Largest ``k`` of ``POST /api/recommend``.
        max_history: Most entries of a request's history (the visitor model reads the last
            ``max_steps`` of the env at most: the simulator's longest session).
        max_path_steps: Most steps of ``POST /api/path``.
        max_body_bytes: Largest request body (``MAX_CONTENT_LENGTH``); bigger ones get 413.
            The server (:func:`webapp.server.serve`) refuses them before reading them.
        max_json_depth: Deepest nesting of arrays and objects in a request body; deeper ones
            get 400 before they are parsed (the parser recurses: 10,000 levels would raise
            ``RecursionError``). The API's bodies are 2 deep.
        cache: Cache the visitor model's distributions and the network policies' scores per
            history (:class:`~webapp.recommend.Recommender`).
        visitor_model: ``auto`` or a visitor kind (:mod:`envs.visitors`: ``gru``,
            ``latent_class``, ``markov``, ...): the next-page model behind follow
            probabilities and expected values (:func:`~webapp.artefacts.load_run`).

    Raises:
        ClickstreamError: A run folder has nothing trained yet (the message names the
            command to run), or two runs share a name.
    """
    items = [runs] if isinstance(runs, str | Path | RunArtefacts) else list(runs)
    if not items:
        raise ConfigError("no run folder given (run_dir=<a pipeline output folder>)")
    if k_max < 1 or max_history < 1 or max_path_steps < 1 or max_body_bytes < 64:
        raise ConfigError(
            "k_max, max_history and max_path_steps must be >= 1 and max_body_bytes >= 64"
        )
    if not 2 <= max_json_depth <= 100:
        raise ConfigError(f"max_json_depth must be in [2, 100], got {max_json_depth}")
    loaded = [
        r
        if isinstance(r, RunArtefacts)
        else load_run(r, policies=policies, seed=seed, visitor_model=visitor_model)
        for r in items
    ]
    recommenders: dict[str, Recommender] = {}
    for run in loaded:
        if run.name in recommenders:
            raise ConfigError(
                f"two runs are named {run.name!r} (folder names must differ)", file=str(run.run_dir)
            )
        recommenders[run.name] = Recommender(run, cache=cache)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_body_bytes)
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # keep the documented field order in answers
    app.extensions[EXTENSION] = AppState(
        recommenders,
        int(k_max),
        int(max_history),
        int(max_path_steps),
        int(max_json_depth),
        time.time(),
    )

    from webapp.api import api
    from webapp.views import views

    app.register_blueprint(api)
    app.register_blueprint(views)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        # the API answers JSON whatever went wrong; pages keep Werkzeug's HTML
        if request.path != "/api" and not request.path.startswith("/api/"):
            return exc
        message = {
            404: f"no such endpoint: {request.path} (see GET /api/health)",
            405: f"{request.method} is not allowed on {request.path}; use "
            f"{', '.join(sorted(exc.valid_methods or []))}"
            if getattr(exc, "valid_methods", None)
            else exc.description,
            413: f"request body too large: at most {app.config['MAX_CONTENT_LENGTH']} bytes",
        }.get(exc.code or 500, exc.description)
        response = jsonify(error=message)
        response.status_code = exc.code or 500
        return response

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app


def state(app: Flask) -> AppState:
    """The app's :class:`AppState`."""
    return app.extensions[EXTENSION]
