"""The server's limits under attack: idle connections, a 100 MB body, deep JSON, a killed parent.

    python scripts/bench_server_limits.py --run-dir runs/default
    python scripts/bench_server_limits.py --run-dir runs/default --idle 300 --body-mb 100

Starts ``scripts/serve.py`` (waitress, the ``configs/serve.yaml`` limits) on 127.0.0.1 in a
child process (loopback only: nothing else is contacted) and measures, each against a
baseline taken in the same run:

1. **Idle connections.** ``--idle`` connections that send nothing, then as many that send half
   a request's headers and stop (slowloris); then a normal client's ``POST /api/recommend``:
   the time to its (checked) answer, against the same request on a quiet server. Once with the
   default limits, once with ``connection_limit`` below the number of idle connections (the
   server must close its longest-idle ones to let the client in), and, unless ``--no-contrast``,
   against plain waitress with ``main``'s settings before this change (200 connections,
   waitress's default timeouts), where the client waits until an idle connection times out
   (and which reads the whole large body of 2. before the app refuses it).
2. **A large body.** ``POST /api/recommend`` announcing ``--body-mb`` MB and sending it as fast
   as the socket takes it (and once chunked, with no length announced): the status, the bytes
   the client got into the socket before the server closed it, the time to the answer, and the
   server's peak resident memory while it happened (sampled every 2 ms from ``/proc``) against
   its idle resident memory just before.
3. **Deep JSON.** A body of 10,000 nested arrays, unclosed (10 KB, under the body limit) and
   closed (20 KB, over it): the status and error.
4. **Headers.** The security headers on ``/``, ``/impact``, a static file, the API, a 404, a
   400 and waitress's own 413.
5. **A killed parent.** ``workers=2``: SIGKILL the parent, then how long until no worker is
   left, and whether the port still answers.

Linux only (``/proc``). Bounded: about a minute plus three server start-ups. Exit status 1 if
a check fails (a wrong answer, a body read, a 5xx, a missing header, a surviving worker).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the repository's packages
    sys.path.insert(0, str(ROOT))

from scripts.bench_webapp import HOST, free_port, machine, start_server  # noqa: E402

SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy")
# waitress with main's settings before this change (scripts/serve.py's create_server call)
PLAIN_WAITRESS = """
import sys, waitress
from webapp import create_app
app = create_app(sys.argv[1])
print("ready", flush=True)
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[2]), threads=4, connection_limit=200)
"""


# ---- probes (tests/integration/test_server_limits.py uses them too) ----------------------------


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes, float]:
    """One request on a new connection: status, headers, body and seconds to the answer."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        return answer.status, dict(answer.getheaders()), data, time.perf_counter() - start
    finally:
        conn.close()


def first_page(port: int) -> str:
    """The path of the run's first page (``GET /api/pages``)."""
    return json.loads(request(port, "GET", "/api/pages")[2])["pages"][0]["page"]


def recommend(port: int, page: str, timeout: float = 30.0) -> tuple[dict[str, Any], float]:
    """A normal client's ``POST /api/recommend`` after ``page``: its JSON answer and the
    seconds from connecting to the answer.

    Raises:
        AssertionError: The answer is not a 200 with 3 recommendations.
    """
    body = json.dumps({"history": [page], "k": 3}).encode()
    status, _, data, seconds = request(port, "POST", "/api/recommend", body, timeout=timeout)
    answer = json.loads(data)
    assert status == 200 and len(answer["recommendations"]) == 3, (status, answer)
    return answer, seconds


@contextmanager
def idle_connections(port: int, n: int, partial: bool) -> Iterator[list[socket.socket]]:
    """``n`` open connections that send nothing (``partial``: the first half of a request's
    headers, then nothing), closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.create_connection((HOST, port), timeout=10)
            if partial:
                sock.sendall(b"POST /api/recommend HTTP/1.1\r\nHost: x\r\nContent-Ty")
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def open_count(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has not closed (no EOF or reset waiting on them)."""
    poller = select.poll()  # select() refuses descriptors >= 1024
    for sock in socks:
        poller.register(sock, select.POLLIN)
    ready = {fd for fd, _ in poller.poll(0)}
    closed = 0
    for sock in (s for s in socks if s.fileno() in ready):
        try:
            closed += sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            closed += 1
    return len(socks) - closed


def rss_kb(pid: int) -> int:
    """Resident memory of a process now (kB, ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for process {pid}")


def send_body(port: int, size: int, chunked: bool, pid: int | None = None) -> dict[str, Any]:
    """``POST /api/recommend`` with a ``size``-byte body sent as fast as the socket takes it.

    Returns:
        ``status`` (None: no answer came), ``error`` (the answer's JSON error), ``sent`` (bytes
        of body the client got into the socket before the server closed it or answered),
        ``seconds`` (to the answer) and, with ``pid``, ``idle_kb``/``peak_kb``: the process's
        resident memory before and its peak while this ran (sampled every 2 ms).
    """
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(pid))  # type: ignore[arg-type]
            time.sleep(0.002)

    idle = rss_kb(pid) if pid else None
    sampler = threading.Thread(target=sample, daemon=True) if pid else None
    if sampler:
        sampler.start()
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (
        f"POST /api/recommend HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"{length}\r\n\r\n"
    ).encode()
    block = b"[" * (1 << 20)
    if chunked:
        block = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    sock = socket.create_connection((HOST, port), timeout=30)
    start = time.perf_counter()
    sent, answer, view, offset = 0, b"", memoryview(block), 0
    try:
        sock.sendall(head)
        sock.setblocking(False)
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLOUT)
        while sent < size:
            events = poller.poll(30_000)
            if not events:
                raise TimeoutError("the server neither read nor answered within 30 s")
            if events[0][1] & (select.POLLIN | select.POLLHUP | select.POLLERR):
                break  # the server answered (or closed) before the body was all sent
            try:
                n = sock.send(view[offset:])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
            offset = (offset + n) % len(block)
        sock.setblocking(True)
        sock.settimeout(30)
        try:  # the answer: its head, then Content-Length bytes (or to the end)
            while not _complete(answer) and (chunk := sock.recv(65536)):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    finally:
        seconds = time.perf_counter() - start
        sock.close()
        stop.set()
        if sampler:
            sampler.join()
    status, error = None, None
    if answer.startswith(b"HTTP/1."):
        status = int(answer.split(b" ", 2)[1])
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1] or b"{}").get("error")
    out = {"status": status, "error": error, "sent": sent, "seconds": seconds}
    if pid:
        out.update(idle_kb=idle, peak_kb=max(peak[0], idle or 0))
    return out


def _complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def deep_json(depth: int, closed: bool) -> bytes:
    """A request body with ``depth`` nested arrays as its history (``closed``: balanced)."""
    return b'{"history": ' + b"[" * depth + (b"]" * depth + b"}" if closed else b"")


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``, from ``/proc``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if fields[1] == str(pid) and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2):
            return True
    except OSError:
        return False


def kill_parent(parent: int, port: int, wait_s: float = 10.0) -> dict[str, Any]:
    """SIGKILL the server's parent process; then its former workers and whether the port
    still takes connections.

    Returns:
        ``workers`` (pids before), ``survivors`` (still alive after ``wait_s`` or once all
        died), ``seconds`` (until the last died), ``closed_after`` (seconds until the port
        refused connections: the kernel tears a dead process's sockets down a few ms after
        it) and ``port_answers`` (the port still took connections after ``wait_s``).
    """
    workers = children(parent)
    os.kill(parent, signal.SIGKILL)
    start = time.perf_counter()
    while any(alive(w) for w in workers) and time.perf_counter() - start < wait_s:
        time.sleep(0.001)
    seconds = time.perf_counter() - start
    while (accepting := _accepts(port)) and time.perf_counter() - start < wait_s:
        time.sleep(0.001)
    return {
        "workers": workers,
        "survivors": [w for w in workers if alive(w)],
        "seconds": seconds,
        "closed_after": time.perf_counter() - start,
        "port_answers": accepting,
    }


# ---- the benchmark -------------------------------------------------------------------------------


def _stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def idle_rows(port: int, n: int, label: str) -> list[tuple[str, str, float, int]]:
    """A normal client's time to answer with ``n`` idle connections of each kind open."""
    page, rows = first_page(port), []
    for partial in (False, True):
        kind = "half-sent headers (slowloris)" if partial else "silent"
        with idle_connections(port, n, partial) as socks:
            time.sleep(0.5)  # let the server accept what it will
            try:
                _, seconds = recommend(port, page, timeout=30)
            except (TimeoutError, OSError) as exc:
                seconds = float("nan")
                print(f"  {label}, {kind}: no answer ({exc})")
            rows.append((label, kind, seconds, open_count(socks)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a pipeline run folder")
    parser.add_argument("--idle", type=int, default=300, help="idle connections of each kind")
    parser.add_argument("--body-mb", type=int, default=100, help="size of the large body (MB)")
    parser.add_argument("--no-contrast", action="store_true", help="skip plain waitress")
    args = parser.parse_args()
    if not (1 <= args.idle <= 2000 and 1 <= args.body_mb <= 1000):
        parser.error("idle must be in [1, 2000] and body-mb in [1, 1000]")
    if not Path("/proc/self/status").exists():
        parser.error("needs Linux (/proc)")
    run_dir = args.run_dir.resolve()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        # 1. idle connections: defaults, a limit below the idle count, plain waitress
        port = free_port()
        server = start_server(run_dir, port, 4, 1, True, Path(tmp) / "a.log")
        try:
            page = first_page(port)
            quiet = min(recommend(port, page)[1] for _ in range(5))
            idle = idle_rows(port, args.idle, "defaults (connection_limit=1000)")
            # 2. a large body, announced and chunked
            size = args.body_mb << 20
            bodies = {
                "Content-Length": send_body(port, size, chunked=False, pid=server.pid),
                "chunked": send_body(port, size, chunked=True, pid=server.pid),
            }
            # 3. deep JSON; 4. headers
            deep = {
                closed: request(port, "POST", "/api/recommend", deep_json(10_000, closed))
                for closed in (False, True)
            }
            probes = {
                "/": request(port, "GET", "/"),
                "/impact": request(port, "GET", "/impact"),
                "/static/network.js": request(port, "GET", "/static/network.js"),
                "/api/health": request(port, "GET", "/api/health"),
                "/api/nope (404)": request(port, "GET", "/api/nope"),
                "/api/recommend {} (400)": request(port, "POST", "/api/recommend", b"{}"),
                "deep JSON (400)": deep[False],
            }
            health = probes["/api/health"][2].decode()
        finally:
            _stop(server)
        port = free_port()
        limit = max(8, args.idle // 3)
        server = start_server(
            run_dir, port, 4, 1, True, Path(tmp) / "b.log", (f"connection_limit={limit}",)
        )
        try:
            idle += idle_rows(port, args.idle, f"connection_limit={limit}")
        finally:
            _stop(server)
        if not args.no_contrast:
            import subprocess

            port = free_port()
            plain = subprocess.Popen(
                [sys.executable, "-c", PLAIN_WAITRESS, str(run_dir), str(port)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                assert plain.stdout is not None and plain.stdout.readline().strip() == "ready"
                time.sleep(1.0)
                page = first_page(port)
                with idle_connections(port, args.idle, partial=False):
                    time.sleep(0.5)
                    try:
                        _, seconds = recommend(port, page, timeout=10)
                    except (TimeoutError, OSError):
                        seconds = float("inf")
                idle.append(("plain waitress, main's settings", "silent", seconds, -1))
                time.sleep(1.0)  # the idle connections' close reaches the server
                bodies["Content-Length, plain waitress (main's settings)"] = send_body(
                    port, size, chunked=False, pid=plain.pid
                )
            finally:
                _stop(plain)
        # 5. a killed parent
        port = free_port()
        server = start_server(run_dir, port, 2, 2, True, Path(tmp) / "c.log")
        try:
            killed = kill_parent(server.pid, port)
        finally:
            server.wait(timeout=30)
            for pid in killed["survivors"]:
                os.kill(pid, signal.SIGKILL)  # this run's own stray worker, by its pid

    print(f"\nmachine: {machine()}")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}; run {run_dir.name}\n")
    print(f"normal client (POST /api/recommend), quiet server: {1e3 * quiet:.1f} ms\n")
    print(f"| server | {args.idle} idle connections | answered in | idle connections left open |")
    print("|---|---|---:|---:|")
    for label, kind, seconds, left in idle:
        when = "no answer in 10 s" if seconds == float("inf") else f"{1e3 * seconds:.1f} ms"
        print(f"| {label} | {kind} | {when} | {left if left >= 0 else '–'} |")
        if not seconds < 1.0 and not label.startswith("plain"):
            failures.append(f"{label}, {kind}: answered in {seconds:.2f} s")
    print(
        f"\n| {args.body_mb} MB body | status | body bytes sent | answered in | server RSS idle → peak |"
    )
    print("|---|---:|---:|---:|---:|")
    for how, r in bodies.items():
        print(
            f"| {how} | {r['status']} | {r['sent']:,} | {1e3 * r['seconds']:.1f} ms "
            f"| {r['idle_kb'] / 1024:.1f} → {r['peak_kb'] / 1024:.1f} MB (+{(r['peak_kb'] - r['idle_kb']) / 1024:.1f}) |"
        )
        if not how.endswith("settings)") and (r["status"] != 413 or r["sent"] >= size // 2):
            failures.append(f"{how} body: status {r['status']}, {r['sent']:,} bytes sent")
    print("\n| 10,000-deep JSON | status | error |\n|---|---:|---|")
    for closed, (status, _, data, _) in deep.items():
        what = "closed (20 KB)" if closed else "unclosed (10 KB)"
        print(f"| {what} | {status} | {json.loads(data)['error']} |")
        if not 400 <= status < 500:
            failures.append(f"deep JSON {what}: {status}")
    print("\n| answer | status | " + " | ".join(SECURITY_HEADERS) + " |")
    print("|---|---:|" + "---|" * len(SECURITY_HEADERS))
    for name, (status, headers, _, _) in probes.items():
        cells = ["yes" if h in headers else "**missing**" for h in SECURITY_HEADERS]
        print(f"| {name} | {status} | " + " | ".join(cells) + " |")
        if "**missing**" in cells:
            failures.append(f"{name}: a header is missing")
    if str(run_dir) in health:
        failures.append("/api/health shows the run folder's path")
    print(
        f"\nworkers=2 (the parent and {len(killed['workers'])} forked worker), parent "
        f"SIGKILLed: worker(s) gone after "
        f"{1e3 * killed['seconds']:.1f} ms, port refusing connections after "
        f"{1e3 * killed['closed_after']:.1f} ms; workers surviving: "
        f"{len(killed['survivors'])}; port still taking connections after 10 s: "
        f"{'yes' if killed['port_answers'] else 'no'}"
    )
    if killed["survivors"] or killed["port_answers"] or len(killed["workers"]) != 1:
        failures.append(f"after the parent's SIGKILL: {killed}")
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print("\nevery check passed")


if __name__ == "__main__":
    main()
