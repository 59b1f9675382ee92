"""Serving the web app: waitress over HTTP, body limits before the app, limits naming their
keys, port sharing between workers, ``scripts/serve.py`` (dry run, exit status 2), and one
thread at a time in a policy."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from clickstream.errors import ClickstreamError
from tests.hydra_configs import compose_cfg
from tests.webapp_support import POLICIES, REPO
from webapp.server import BackgroundServer, Limits, listen

# ---- serving ---------------------------------------------------------------------------------


def test_waitress_serves_the_api_over_http(app: Flask):
    with BackgroundServer(app) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "api/health", timeout=10) as answer:
            assert answer.status == 200 and json.load(answer)["status"] == "ok"
        request = urllib.request.Request(
            server.url + "api/recommend",
            data=b'{"history": ["/home"], "k": 2}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert len(json.load(answer)["recommendations"]) == 2


def test_waitress_refuses_a_large_body_before_the_app_as_json(app: Flask):
    with BackgroundServer(app, limits=Limits(max_body_bytes=1024)) as server:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 1025\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, body = answer.decode().split("\r\n\r\n", 1)
        assert head.startswith("HTTP/1.1 413 Request Entity Too Large\r\n")
        assert json.loads(body) == {"error": "request body too large: at most 1024 bytes"}
        for name, value in (("X-Content-Type-Options", "nosniff"), ("Connection", "close")):
            assert f"\r\n{name}: {value}" in head
        # exactly the limit is read, and the app answers
        request = urllib.request.Request(
            server.url + "api/recommend",
            data=b'{"history": ["/home"]}'.ljust(1024),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as ok:
            assert ok.status == 200


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("connection_limit", 0, "connection_limit must be an integer >= 1, got 0"),
        ("connection_limit", 4, "connection_limit must be >= 8"),
        ("channel_timeout", 2.5, "channel_timeout must be an integer >= 1, got 2.5"),
        ("request_timeout", "10", "request_timeout must be an integer >= 1, got '10'"),
        ("max_body_bytes", -1, "max_body_bytes must be an integer >= 1"),
    ],
)
def test_bad_limits_name_their_key(key: str, value, message: str):
    with pytest.raises(ClickstreamError, match=re.escape(message)):
        Limits(**{key: value})


def test_serve_yaml_limits_are_the_defaults():
    from scripts.serve import server_limits

    assert server_limits(compose_cfg("serve", [])) == Limits()
    assert server_limits(compose_cfg("serve", ["request_timeout=3"])).request_timeout == 3


def test_listen_shares_a_port_between_workers_and_refuses_a_taken_one():
    first, second = listen("127.0.0.1", 0, 2)
    try:
        port = first.getsockname()[1]
        assert second.getsockname()[1] == port
        with pytest.raises(ClickstreamError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port, 1)
    finally:
        first.close()
        second.close()


def test_serve_dry_run_loads_and_reports(webapp_run_dir: Path):
    from scripts.serve import run

    info = run(compose_cfg("serve", [f"run_dir={webapp_run_dir}", "dry_run=true", "port=8123"]))
    assert info["url"] == "http://127.0.0.1:8123/"
    assert info["runs"][webapp_run_dir.name]["policies"] == POLICIES
    with pytest.raises(ClickstreamError, match="nothing trained yet"):
        run(compose_cfg("serve", [f"run_dir={webapp_run_dir / 'data'}", "dry_run=true"]))


def test_serve_exits_2_naming_the_command_when_nothing_is_trained(tmp_path: Path):
    empty = tmp_path / "run"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "scripts/serve.py", f"run_dir={empty}", f"hydra.run.dir={tmp_path}/h"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        f"nothing trained yet: data/meta.json is missing; train one with "
        f"`python scripts/pipeline.py out_dir={empty}`" in done.stderr
    )


def test_a_policy_is_called_by_one_thread_at_a_time():
    # SB3 policies keep each call's logits in one shared distribution object: two threads in
    # action_scores at once can read each other's
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from agents.base import Policy
    from webapp.recommend import Recommender

    class Slow(Policy):
        inside, most = 0, 0
        guard = threading.Lock()

        def action_scores(self, obs):
            with self.guard:
                Slow.inside += 1
                Slow.most = max(Slow.most, Slow.inside)
            time.sleep(0.01)
            with self.guard:
                Slow.inside -= 1
            return np.asarray(obs, dtype=np.float64)

    for cache in (False, True):
        score = Recommender._scorer(Slow(), cache)
        with ThreadPoolExecutor(8) as pool:
            out = list(pool.map(score, [(i, 1, 2, 3) for i in range(32)]))
        assert [o[0] for o in out] == list(range(32))
    assert Slow.most == 1
