"""The real server (``scripts/serve.py``, waitress, in a child process on a free loopback port)
under attack: idle and slow connections, a 100 MB body, 10,000-deep JSON, a SIGKILLed parent,
and the security headers on what it answers. Figures (times, memory) are in docs/security.md
(``scripts/bench_server_limits.py``); here only behaviour, with bounds far from the timing.

Linux only (``/proc``, ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.bench_server_limits import (
    alive,
    children,
    deep_json,
    first_page,
    idle_connections,
    kill_parent,
    open_count,
    recommend,
    request,
    send_body,
)
from scripts.bench_webapp import free_port, start_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (/proc)"),
]

CONNECTION_LIMIT = 100
CHANNEL_TIMEOUT = 60  # longer than any wait here: what frees a slot is the server's eviction
REQUEST_TIMEOUT = 2
MAX_BODY = 65536  # 10,000 closed brackets (20 KB) fit: the JSON depth limit must refuse them
SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Server:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc, self.port = proc, port


def _start(run_dir: Path, tmp: Path, workers: int, *overrides: str) -> Server:
    port = free_port()
    proc = start_server(run_dir, port, 2, workers, True, tmp / "serve.log", overrides)
    return Server(proc, port)


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(webapp_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = _start(
        webapp_run_dir,
        tmp_path_factory.mktemp("serve"),
        1,
        f"connection_limit={CONNECTION_LIMIT}",
        f"channel_timeout={CHANNEL_TIMEOUT}",
        f"request_timeout={REQUEST_TIMEOUT}",
        "cleanup_interval=1",
        f"max_body_bytes={MAX_BODY}",
    )
    try:
        yield started
    finally:
        _stop(started)


def test_300_idle_connections_do_not_lock_a_client_out(server: Server):
    page = first_page(server.port)
    quiet, _ = recommend(server.port, page)
    for partial in (False, True):  # silent, then half-sent headers (slowloris)
        with idle_connections(server.port, 300, partial) as socks:
            time.sleep(0.5)
            # plain waitress would stop accepting at the limit until channel_timeout (60 s)
            # freed a slot: an answer well within it comes from closing the longest-idle
            answer, _ = recommend(server.port, page, timeout=CHANNEL_TIMEOUT / 3)
            assert answer == quiet
            left = open_count(socks)
            assert CONNECTION_LIMIT // 2 < left < CONNECTION_LIMIT, left


def test_a_request_must_be_sent_within_request_timeout(server: Server):
    with (
        idle_connections(server.port, 3, partial=True) as slow,
        idle_connections(server.port, 3, partial=False) as silent,
    ):
        drip = slow[0]  # a byte every 0.25 s: alive, never done
        deadline = time.monotonic() + REQUEST_TIMEOUT + 8
        while time.monotonic() < deadline and open_count(slow):
            with contextlib.suppress(OSError):  # closed by the server meanwhile
                drip.send(b"x")
            time.sleep(0.25)
        assert open_count(slow) == 0  # closed: each began a request it did not finish
        assert open_count(silent) == 3  # no request begun: only channel_timeout (60 s) ends them
    assert recommend(server.port, first_page(server.port))[0]["recommendations"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_body_is_refused_before_it_is_read(server: Server, chunked: bool):
    size = 100 << 20
    result = send_body(server.port, size, chunked=chunked, pid=server.proc.pid)
    assert result["status"] == 413
    assert result["error"] == f"request body too large: at most {MAX_BODY} bytes"
    # what the client got into the socket before the answer: the kernel's buffers (a few MB
    # on loopback), never the 100 MB a server reading the body would take
    assert result["sent"] < size // 8
    assert result["peak_kb"] - result["idle_kb"] < 50 * 1024  # the body was not buffered
    assert recommend(server.port, first_page(server.port))[0]["recommendations"]


@pytest.mark.parametrize("closed", [False, True], ids=["unclosed", "closed"])
def test_10000_deep_json_gets_400(server: Server, closed: bool):
    body = deep_json(10_000, closed)
    assert len(body) < MAX_BODY
    status, headers, data, _ = request(server.port, "POST", "/api/recommend", body)
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(data) == {
        "error": "invalid JSON: arrays and objects nested deeper than 16 levels"
    }


def test_security_headers_and_no_paths_on_every_answer(server: Server, webapp_run_dir: Path):
    answers = {
        "/": request(server.port, "GET", "/"),
        "/impact": request(server.port, "GET", "/impact"),
        "/?run=nope": request(server.port, "GET", "/?run=nope"),
        "/static/network.js": request(server.port, "GET", "/static/network.js"),
        "/static/style.css": request(server.port, "GET", "/static/style.css"),
        "/api/health": request(server.port, "GET", "/api/health"),
        "/api/policies": request(server.port, "GET", "/api/policies"),
        "/api/nope": request(server.port, "GET", "/api/nope"),
        "POST /api/recommend {}": request(server.port, "POST", "/api/recommend", b"{}"),
        "POST /api/path text/plain": request(
            server.port, "POST", "/api/path", b"x", content_type="text/plain"
        ),
    }
    statuses = {name: a[0] for name, a in answers.items()}
    assert statuses == {
        "/": 200,
        "/impact": 200,
        "/?run=nope": 400,
        "/static/network.js": 200,
        "/static/style.css": 200,
        "/api/health": 200,
        "/api/policies": 200,
        "/api/nope": 404,
        "POST /api/recommend {}": 400,
        "POST /api/path text/plain": 415,
    }
    root = str(webapp_run_dir.resolve().parent)
    for name, (_, headers, body, _) in answers.items():
        for header, value in SECURITY.items():
            assert headers.get(header) == value, (name, header)
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp, name
        assert "frame-ancestors 'none'" in csp and headers["X-Frame-Options"] == "DENY", name
        assert root not in body.decode(), name  # no path of this machine
    health = json.loads(answers["/api/health"][2])
    assert [r["name"] for r in health["runs"]] == [webapp_run_dir.name]
    # waitress's own refusal, before the app: JSON, with the headers too
    refused = send_body(server.port, MAX_BODY + 1, chunked=False)
    assert refused["status"] == 413
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /api/path HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head and (chunk := sock.recv(65536)):
            head += chunk
    head = head.decode()
    assert head.startswith("HTTP/1.1 413 ")
    for header, value in SECURITY.items():
        assert f"{header}: {value}\r\n" in head
    assert "Content-Type: application/json\r\n" in head


def test_workers_die_with_their_parent(webapp_run_dir: Path, tmp_path: Path):
    server = _start(webapp_run_dir, tmp_path, 2)
    workers: list[int] = []
    try:
        assert recommend(server.port, first_page(server.port))[0]["recommendations"]
        workers = children(server.proc.pid)
        assert len(workers) == 1 and alive(workers[0])
        result = kill_parent(server.proc.pid, server.port, wait_s=10)
        assert result["workers"] == workers
        assert result["survivors"] == [] and not result["port_answers"]
        with pytest.raises(OSError):
            request(server.port, "GET", "/api/health", timeout=2)
    finally:
        server.proc.kill()
        server.proc.wait(timeout=30)
        for pid in workers:  # none expected: never leave one serving
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
