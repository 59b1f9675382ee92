"""Serving the app with waitress, in one process or several.

Waitress is one process: its worker threads share Python's GIL, so one process uses about one
core however many threads it has. ``workers > 1`` forks that many processes after the run
folders are loaded (they share the loaded artefacts copy-on-write), each with its own listening
socket on the same address (``SO_REUSEPORT``: the kernel spreads new connections over them).
That needs ``fork`` and ``SO_REUSEPORT`` (Linux, the BSDs, macOS).

Measured on the project's 2-core machine (docs/benchmarks.md): with 50 concurrent clients,
extra threads in one process mostly add GIL contention, while a second process doubles the
throughput.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from clickstream.errors import ClickstreamError

log = logging.getLogger(__name__)


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets on one address (``port`` 0: a free port, shared).

    Raises:
        ClickstreamError: The address cannot be bound (taken, or not an address here), or
            several sockets are asked for where ``SO_REUSEPORT`` does not exist.
    """
    if count > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise ClickstreamError("workers > 1 needs SO_REUSEPORT (Linux, BSD, macOS); use workers=1")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ClickstreamError(f"cannot listen on {host}:{port} ({exc})") from None
    family, kind, proto, _, address = infos[0]
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(1024)
            address = sock.getsockname()  # port 0: the others take the port the first got
    except OSError as exc:
        for sock in out:
            sock.close()
        raise ClickstreamError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return out


def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 4,
    workers: int = 1,
    connection_limit: int = 200,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM.

    Args:
        app: A WSGI application.
        host: Address to listen on.
        port: Port (0: a free one; ``ready`` gets the URL).
        threads: Waitress worker threads per process.
        workers: Processes (forked after loading; see the module docstring).
        connection_limit: Open connections per process, at most.
        ready: Called with the URL once every socket listens.

    Raises:
        ClickstreamError: Bad settings or an address that cannot be bound.
    """
    from waitress import create_server

    if threads < 1 or workers < 1 or connection_limit < 1:
        raise ClickstreamError("threads, workers and connection_limit must be >= 1")
    main_thread = threading.current_thread() is threading.main_thread()
    if workers > 1 and not (hasattr(os, "fork") and main_thread):
        raise ClickstreamError("workers > 1 needs fork (POSIX) from the main thread; use workers=1")
    # at saturation waitress warns once per queued request: the load test's normal state,
    # and thousands of log lines a second cost the CPU the requests need
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # everything loaded so far (torch, pandas, SB3, the artefacts: hundreds of thousands of
    # objects) lives as long as the server: out of the collector's sight, its full passes
    # stop walking them mid-request, and forked workers stop copying the pages they sit on
    gc.collect()
    gc.freeze()
    sockets = listen(host, port, workers)
    name = sockets[0].getsockname()
    url = f"http://{name[0] if ':' not in name[0] else f'[{name[0]}]'}:{name[1]}/"
    children: list[int] = []
    mine = sockets[0]
    for sock in sockets[1:]:
        pid = os.fork()
        if pid == 0:  # a worker: serve its own socket until terminated
            for other in sockets:
                if other is not sock:
                    other.close()
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the group: the
            # parent stops the workers itself, in order
            try:
                create_server(
                    app, sockets=[sock], threads=threads, connection_limit=connection_limit
                ).run()
            finally:
                os._exit(0)
        children.append(pid)
    for sock in sockets[1:]:
        sock.close()

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    # SIGTERM (what service managers send) ends the loop like Ctrl+C, so workers are reaped;
    # signal handlers can only be set from the main thread (tests serve from another one)
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    server = create_server(app, sockets=[mine], threads=threads, connection_limit=connection_limit)
    try:
        if ready is not None:
            ready(url)
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        sys.stdout.flush()


class BackgroundServer:
    """Waitress serving ``app`` from a daemon thread of this process (tests, notebooks).

        with BackgroundServer(app) as server:
            urllib.request.urlopen(server.url + "api/health")

    Args:
        app: A WSGI application.
        host: Address (loopback by default).
        port: Port (0: a free one).
        threads: Waitress worker threads.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 4):
        self.app, self.host, self.port, self.threads = app, host, port, threads
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port/`` of the running server."""
        if self._server is None:
            raise ClickstreamError("the server is not running")
        return f"http://{self.host}:{self._server.effective_port}/"

    def __enter__(self) -> BackgroundServer:
        from waitress import create_server

        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._server = create_server(self.app, host=self.host, port=self.port, threads=self.threads)
        self._thread = threading.Thread(target=self._server.run, name="waitress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from waitress import wasyncore

        server = self._server
        server.close()  # the listening socket: the loop ends once open connections are gone
        server.task_dispatcher.shutdown()
        wasyncore.close_all(server._map)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
