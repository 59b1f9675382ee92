"""Helpers shared by the web app's tests (``tests/unit/webapp/``); fixtures are in its
``conftest.py``."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient

REPO = Path(__file__).resolve().parents[1]
POLICIES = ["greedy", "organic", "ppo", "value_iteration"]


def post(client: FlaskClient, url: str, body: dict) -> dict:
    answer = client.post(url, json=body)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()
