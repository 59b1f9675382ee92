"""Serving the app with waitress, in one process or several, with limits that hold.

Waitress is one process: its worker threads share Python's GIL, so one process uses about one
core however many threads it has. ``workers > 1`` forks that many processes after the run
folders are loaded (they share the loaded artefacts copy-on-write), each with its own listening
socket on the same address (``SO_REUSEPORT``: the kernel spreads new connections over them).
That needs ``fork`` and ``SO_REUSEPORT`` (Linux, the BSDs, macOS). A worker dies with its
parent, even one killed with SIGKILL: ``PR_SET_PDEATHSIG`` on Linux, and everywhere a watchdog
thread that ends the worker once its parent process is gone.

Limits (:class:`Limits`, ``configs/serve.yaml``), each enforced by waitress's event loop before
the app sees a byte:

- ``max_body_bytes``: a request whose ``Content-Length`` is larger is answered 413 as soon as
  its headers are in, its body never read (a chunked body: once it passes the limit).
- ``channel_timeout``: a connection with no request in progress is closed after this idle time.
- ``request_timeout``: a client that has begun a request has this long to send all of it (a
  "slowloris" client dripping a header byte at a time keeps a connection otherwise).
- ``connection_limit``: open connections per process. Waitress alone stops accepting at the
  limit until the timeouts free a slot, so idle connections lock everyone out for up to
  ``channel_timeout``; here the server then closes its longest-idle connections (none with a
  request being answered) so new clients still get in.

Measured on the project's 2-core machine (docs/benchmarks.md): with 50 concurrent clients,
extra threads in one process mostly add GIL contention, while a second process doubles the
throughput; docs/security.md has the limits' figures.
"""

from __future__ import annotations

import ctypes
import gc
import heapq
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clickstream.errors import ConfigError

log = logging.getLogger(__name__)

# on waitress's own error answers (413, 400, 431, ...): the app's JSON errors carry the app's
# headers (webapp.app.SECURITY_HEADERS); these bodies are plain data, never a document
ERROR_HEADERS = (
    ("Content-Type", "application/json"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
)
# file descriptors a process needs beside its connections (listening socket, trigger pipe,
# logs, the libraries' own files)
SPARE_FDS = 64
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class Limits:
    """What a client may hold of a server process (see the module docstring).

    Attributes:
        connection_limit: Open connections per process; at the limit the longest-idle ones
            are closed to let new ones in.
        channel_timeout: Seconds a connection may sit with no request in progress.
        request_timeout: Seconds a client has to send a whole request (headers and body)
            once its first byte came.
        cleanup_interval: Seconds between checks of the two timeouts.
        max_body_bytes: Largest request body; a larger one gets 413 before it is read.
    """

    connection_limit: int = 1000
    channel_timeout: int = 20
    request_timeout: int = 10
    cleanup_interval: int = 1
    max_body_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        for name in (
            "connection_limit",
            "channel_timeout",
            "request_timeout",
            "cleanup_interval",
            "max_body_bytes",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(
                    f"{name} must be an integer >= 1, got {value!r} (configs/serve.yaml)"
                )
        if self.connection_limit < 8:
            raise ConfigError(
                f"connection_limit must be >= 8 (got {self.connection_limit}): a browser "
                "alone opens 6 connections"
            )


def _hardened_classes() -> tuple[type, type]:
    """The waitress server and channel classes with the request deadline, idle-connection
    eviction and JSON error answers (imported lazily, like waitress itself)."""
    from waitress.channel import HTTPChannel
    from waitress.server import TcpWSGIServer
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        """Waitress's own refusals (a body over the limit, malformed HTTP) as ``{"error"}``
        JSON with the security headers, like the app's errors."""

        def execute(self) -> None:
            error = self.request.error
            if error.code == 413:
                limit = self.channel.server.adj.max_request_body_size - 1
                message = f"request body too large: at most {limit} bytes"
            else:
                message = f"{error.reason.lower()}: {error.body}"
            body = json.dumps({"error": message}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.extend(ERROR_HEADERS)
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class Channel(HTTPChannel):
        """A connection that remembers when its current, partial request began."""

        error_task_class = JsonErrorTask
        request_began: float | None = None

        def received(self, data: bytes) -> bool:
            # runs on the event-loop thread only, like the server's maintenance
            began = self.request_began if self.request is not None else time.time()
            done = super().received(data)
            self.request_began = began if self.request is not None else None
            return done

    class Server(TcpWSGIServer):
        """Waitress's TCP server with a request deadline and idle-connection eviction."""

        channel_class = Channel
        _evicted = 0
        _evicted_logged = 0.0

        def maintenance(self, now: float) -> None:
            super().maintenance(now)  # idle for channel_timeout: closed
            cutoff = now - self.adj.request_timeout
            for channel in self.active_channels.values():
                began = channel.request_began
                if not channel.requests and began is not None and began < cutoff:
                    channel.will_close = True  # a request begun and not finished in time

        def readable(self) -> bool:
            now = time.time()
            if now >= self.next_channel_cleanup:
                self.next_channel_cleanup = now + self.adj.cleanup_interval
                self.maintenance(now)
            if not self.accepting:
                return False
            if len(self._map) < self.adj.connection_limit:
                return True
            self._evict(now)
            return False  # the evicted close in this loop pass; accept in the next

        def _evict(self, now: float) -> None:
            # idle: no request being answered, nothing left to send; oldest first, where a
            # partial request counts from its first byte (a slow-drip client's age)
            idle = [
                c
                for c in self.active_channels.values()
                if not (c.requests or c.total_outbufs_len or c.will_close or c.close_when_flushed)
            ]
            # a tenth of the limit at once: one sort per batch, not one per new connection
            batch = max(1, self.adj.connection_limit // 10)
            oldest = heapq.nsmallest(batch, idle, key=lambda c: c.request_began or c.last_activity)
            for channel in oldest:
                channel.will_close = True
            self._evicted += len(oldest)
            if oldest and now - self._evicted_logged > 60:  # a flood must not flood the log
                log.warning(
                    "connection limit (%d) reached: closed %d idle connection(s) so far",
                    self.adj.connection_limit,
                    self._evicted,
                )
                self._evicted_logged = now

    return Server, Channel


def make_server(app: Any, sock: socket.socket, threads: int, limits: Limits) -> Any:
    """A waitress server (not yet running) for ``app`` on the listening socket ``sock``.

    Raises:
        ClickstreamError: ``threads < 1``, or this process may not open ``connection_limit``
            files.
    """
    from waitress.adjustments import Adjustments
    from waitress.task import ThreadedTaskDispatcher

    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    _allow_files(limits.connection_limit + SPARE_FDS)
    adj = Adjustments(
        sockets=[sock],
        threads=threads,
        connection_limit=limits.connection_limit,
        channel_timeout=limits.channel_timeout,
        cleanup_interval=limits.cleanup_interval,
        # waitress refuses a body of this size or more: the app's limit + 1 lets the limit in
        max_request_body_size=limits.max_body_bytes + 1,
        # poll(): select() fails on descriptors >= 1024, which a few hundred connections reach
        asyncore_use_poll=True,
    )
    adj.request_timeout = limits.request_timeout  # read by Server.maintenance
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    server_class, _ = _hardened_classes()
    # what waitress.create_server does for a socket given, with the hardened classes
    return server_class(
        app,
        map={},
        _sock=sock,
        dispatcher=dispatcher,
        adj=adj,
        bind_socket=False,
        sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
    )


def _allow_files(needed: int) -> None:
    """Raise this process's open-file limit to ``needed`` if it is lower (up to the hard limit).

    Raises:
        ClickstreamError: The hard limit is lower: ``connection_limit`` cannot be honoured.
    """
    try:
        import resource
    except ImportError:  # not POSIX: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"connection_limit needs {needed} open files per process, but this process may "
            f"open at most {hard} (ulimit -Hn); lower connection_limit or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def check_port(port: Any) -> int:
    """``port`` when it is a TCP port (an integer in [0, 65535]; 0: any free one).

    Raises:
        ClickstreamError: Anything else, naming ``port`` (the OS would take a larger number
            modulo 65536 and serve elsewhere, silently).
    """
    if type(port) is not int or not 0 <= port <= 65535:
        raise ConfigError(
            f"port must be an integer in [0, 65535] (0: any free port), got {port!r} "
            "(configs/serve.yaml)"
        )
    return port


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets on one address (``port`` 0: a free port, shared).

    Raises:
        ClickstreamError: ``port`` is not in [0, 65535], the address cannot be bound (taken,
            or not an address here), or several sockets are asked for where ``SO_REUSEPORT``
            does not exist.
    """
    check_port(port)
    if count > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("workers > 1 needs SO_REUSEPORT (Linux, BSD, macOS); use workers=1")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc})") from None
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
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return out


def die_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """End this (forked) process when process ``parent`` ends, however it ends.

    On Linux the kernel sends SIGKILL the moment the parent dies (``PR_SET_PDEATHSIG``);
    everywhere a daemon thread checks every ``poll_s`` seconds that the parent is still this
    process's parent (an orphan is adopted by another) and ends the process otherwise. Both,
    because a worker serving on without its parent holds the port while nothing manages it.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            log.warning("prctl(PR_SET_PDEATHSIG) unavailable (%s)", exc)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error("the server's parent process %d is gone: worker %d stops", parent, os.getpid())
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 4,
    workers: int = 1,
    limits: Limits | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM.

    Args:
        app: A WSGI application.
        host: Address to listen on.
        port: Port (0: a free one; ``ready`` gets the URL).
        threads: Waitress worker threads per process.
        workers: Processes (forked after loading; see the module docstring).
        limits: Connection, time and size limits per process (default: :class:`Limits`).
        ready: Called with the URL once every socket listens.

    Raises:
        ClickstreamError: Bad settings or an address that cannot be bound.
    """
    limits = limits or Limits()
    if threads < 1 or workers < 1:
        raise ConfigError("threads and workers must be >= 1")
    main_thread = threading.current_thread() is threading.main_thread()
    if workers > 1 and not (hasattr(os, "fork") and main_thread):
        raise ConfigError("workers > 1 needs fork (POSIX) from the main thread; use workers=1")
    # at saturation waitress warns once per queued request: the load test's normal state,
    # and thousands of log lines a second cost the CPU the requests need
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # everything loaded so far (torch, pandas, SB3, the artefacts: hundreds of thousands of
    # objects) lives as long as the server: out of the collector's sight, its full passes
    # stop walking them mid-request, and forked workers stop copying the pages they sit on
    gc.collect()
    gc.freeze()
    _allow_files(limits.connection_limit + SPARE_FDS)  # before forking: workers inherit it
    sockets = listen(host, port, workers)
    name = sockets[0].getsockname()
    url = f"http://{name[0] if ':' not in name[0] else f'[{name[0]}]'}:{name[1]}/"
    children: list[int] = []
    mine = sockets[0]
    parent = os.getpid()
    for sock in sockets[1:]:
        pid = os.fork()
        if pid == 0:  # a worker: serve its own socket until terminated or orphaned
            try:
                die_with_parent(parent)
                for other in sockets:
                    if other is not sock:
                        other.close()
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the group: the
                # parent stops the workers itself, in order
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                make_server(app, sock, threads, limits).run()
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
    server = None
    try:
        server = make_server(app, mine, threads, limits)
        if ready is not None:
            ready(url)
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if server is not None:
            server.task_dispatcher.shutdown()
            server.close()
        mine.close()
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
    """The hardened waitress server of :func:`serve` on a daemon thread of this process
    (tests, notebooks).

        with BackgroundServer(app) as server:
            urllib.request.urlopen(server.url + "api/health")

    Args:
        app: A WSGI application.
        host: Address (loopback by default).
        port: Port (0: a free one).
        threads: Waitress worker threads.
        limits: As in :func:`serve`.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 4,
        limits: Limits | None = None,
    ):
        self.app, self.host, self.port, self.threads = app, host, port, threads
        self.limits = limits or Limits()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port/`` of the running server."""
        if self._server is None:
            raise ConfigError("the server is not running")
        return f"http://{self.host}:{self._server.effective_port}/"

    def __enter__(self) -> BackgroundServer:
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        sock = listen(self.host, self.port, 1)[0]
        try:
            self._server = make_server(self.app, sock, self.threads, self.limits)
        except BaseException:
            sock.close()
            raise
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
