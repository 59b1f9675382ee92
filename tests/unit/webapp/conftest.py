"""Fixtures of the web app's tests: the app over a tiny but complete pipeline run
(``webapp_run_dir``, built once per session), its test client, the loaded run, the app with
first-order next-page rows, and those rows as tables for answers computed by hand. Each test
module gets its own app (module scope)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from webapp import create_app
from webapp.app import state
from webapp.artefacts import RunArtefacts


@pytest.fixture(scope="module")
def app(webapp_run_dir: Path) -> Flask:
    return create_app(webapp_run_dir)


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def run(app: Flask) -> RunArtefacts:
    return next(iter(state(app).recommenders.values())).run


@pytest.fixture(scope="module")
def markov(webapp_run_dir: Path) -> FlaskClient:
    """The app with first-order next-page rows: answers computable by hand from the tables."""
    return create_app(webapp_run_dir, visitor_model="markov").test_client()


@pytest.fixture(scope="module")
def tables(run: RunArtefacts) -> dict[str, np.ndarray]:
    """The first-order rows ``(P, P + 1)``, the reward ``(P + 1,)`` and ``e^β``."""
    beta = run.results["config"]["env"]["click_params"]["boost"]["beta"]
    rows = run.site.markov.transitions.double().numpy()
    return {
        # the float32 table's rows renormalised in float64, as the visitor model reads them
        "T": rows / rows.sum(axis=1, keepdims=True),
        "r": np.r_[run.catalog["page_value"].to_numpy(np.float64), 0.0],
        "boost": math.exp(beta),
    }
