"""Load test of ``POST /api/recommend``: throughput and p50/p99 latency at 1, 10 and 50 clients.

    python scripts/bench_webapp.py --run-dir runs/default
    python scripts/bench_webapp.py --run-dir runs/default --workers 2 --threads 2 --repeat 3
    python scripts/bench_webapp.py --run-dir runs/default --no-cache --requests 2000

Starts ``scripts/serve.py`` (waitress) on 127.0.0.1 in a child process (loopback only: nothing
else is contacted), then for each number of clients runs that many closed-loop clients (each
sends a request on its keep-alive connection, waits for the whole answer, sends the next) in
one asyncio loop in this process, until ``--requests`` answers or ``--max-seconds``, whichever
comes first. Latency is from the first byte sent to the last byte received.

The requests are real visitors' histories: prefixes (1 to 6 pages) of the test split's
sessions, spread over every served policy but ``random`` (its answers are draws), ``k = 3``.
Every answer is checked: status 200, and the same JSON (to 1e-9 relative) as the app gives in
this process for the same request; recommendations sorted by score, probabilities in [0, 1].
Before timing, every request of the pool is sent once (warm-up, by as many clients as the
largest level, so the server has met that many connections), so with the server's caches
on (the default) the timed requests find their history cached, as repeated histories do in
production; ``--no-cache`` serves every request afresh (GRU and policy network each time).

Printed per run and level: requests, wrong answers, throughput, p50/p90/p99/max latency, the
CPU the server (all its processes) and the clients spent per request, and the machine's load
average (other jobs share it); then the median over ``--repeat`` runs. Bounded: at most
``--repeat`` × levels × ``--max-seconds`` of load, plus start-up. Exit status 1 if any answer
was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TARGET_P99_MS = 50.0
TARGET_CLIENTS = 50


def request_pool(run_dir: Path, n: int, seed: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """``n`` request bodies from test-split sessions, and the answers the app gives to each."""
    import torch

    from envs.sequences import load_prepared
    from webapp import create_app
    from webapp.app import state

    torch.set_num_threads(1)
    app = create_app(run_dir, cache=False)
    rec = next(iter(state(app).recommenders.values()))
    policies = [p for p in rec.run.policies if p != "random"]
    data = load_prepared(run_dir / "data", splits=("test",))
    test, pages = data.splits["test"], data.vocab.pages
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(n):
        s = test.session(i % len(test))
        length = int(rng.integers(1, min(len(s), 6) + 1))
        bodies.append(
            {
                "history": [pages[p] for p in s[:length]],
                "k": 3,
                "policy": policies[i % len(policies)],
            }
        )
    client = app.test_client()
    expected = []
    for body in bodies:
        answer = client.post("/api/recommend", json=body)
        if answer.status_code != 200:
            raise SystemExit(f"the app refused a pool request ({answer.status_code}): {body}")
        expected.append(answer.get_json())
    return bodies, expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(
    run_dir: Path,
    port: int,
    threads: int,
    workers: int,
    cache: bool,
    log: Path,
    overrides: tuple[str, ...] = (),
) -> subprocess.Popen:
    """``scripts/serve.py`` on ``HOST:port`` in a child process, once it answers
    ``/api/health``; ``overrides``: more ``key=value`` settings of ``configs/serve.yaml``."""
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "serve.py"),
        f"run_dir={run_dir}",
        f"host={HOST}",
        f"port={port}",
        f"threads={threads}",
        f"workers={workers}",
        f"cache={str(cache).lower()}",
        f"hydra.run.dir={log.parent}",
        "hydra.output_subdir=null",
        *overrides,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not answer /api/health within 180 s")


async def run_clients(
    port: int, payloads: list[bytes], order: list[int], clients: int, max_seconds: float
) -> tuple[list[tuple[int, int, bytes]], list[float], float]:
    """Closed-loop clients over ``order`` (indices into ``payloads``); returns the answers
    ``(index, status, body)``, latencies (s) and the elapsed time."""
    answers: list[tuple[int, int, bytes]] = []
    latencies: list[float] = []
    position = iter(range(len(order)))
    start = time.perf_counter()
    deadline = start + max_seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            for i in position:
                if time.perf_counter() > deadline:
                    break
                j = order[i]
                t0 = time.perf_counter()
                writer.write(payloads[j])
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length = next(
                    int(v)
                    for k, _, v in (ln.partition(":") for ln in lines[1:])
                    if k.lower() == "content-length"
                )
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                answers.append((j, status, body))
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return answers, latencies, time.perf_counter() - start


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def check(answers: list[tuple[int, int, bytes]], expected: list[Any]) -> int:
    """Answers that are wrong: not 200, not the expected JSON, or breaking an invariant."""
    wrong = 0
    for j, status, body in answers:
        ok = status == 200
        if ok:
            got = json.loads(body)
            recs = got["recommendations"]
            scores = [r["score"] for r in recs]
            ok = (
                same(got, expected[j])
                and scores == sorted(scores, reverse=True)
                and all(0.0 <= r["follow_probability"] <= 1.0 for r in recs)
            )
        wrong += not ok
    return wrong


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children (the server's workers),
    from Linux ``/proc`` (NaN elsewhere)."""
    total, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself, or its child
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found = True
    return total if found else math.nan


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a pipeline run folder")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per level")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per level")
    parser.add_argument("--pool", type=int, default=2000, help="distinct requests")
    parser.add_argument("--threads", type=int, default=4, help="waitress threads per process")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--no-cache", action="store_true", help="serve without caches")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every level")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (
        0 < args.repeat <= 10
        and args.requests > 0
        and args.pool > 0
        and 0 < args.max_seconds <= 300
        and all(0 < c <= 200 for c in args.clients)
    ):
        parser.error(
            "repeat must be in [1, 10], requests and pool > 0, max-seconds in (0, 300], "
            "clients in [1, 200]"
        )
    run_dir = args.run_dir.resolve()

    t0 = time.perf_counter()
    bodies, expected = request_pool(run_dir, args.pool, args.seed)
    gc.collect()
    gc.freeze()  # the app loaded for the expected answers: ~350k objects a full pass would walk
    print(
        f"pool: {len(bodies)} requests, answers computed in-process in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    port = free_port()
    head = (
        f"POST /api/recommend HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    )
    payloads = []
    for body in bodies:
        data = json.dumps(body).encode()
        payloads.append(head.format(len(data)).encode() + data)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        server = start_server(run_dir, port, args.threads, args.workers, not args.no_cache, log)
        try:
            warm, _, _ = asyncio.run(
                run_clients(port, payloads, list(range(len(payloads))), max(args.clients), 300.0)
            )
            wrong = check(warm, expected)
            rows = []
            rng = np.random.default_rng(args.seed + 1)
            for rep in range(1, args.repeat + 1):
                for clients in args.clients:
                    order = rng.integers(0, len(payloads), size=args.requests).tolist()
                    load = os.getloadavg()[0]
                    server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
                    gc.disable()  # the clients' own collector must not stop the clock
                    try:
                        answers, lat, elapsed = asyncio.run(
                            run_clients(port, payloads, order, clients, args.max_seconds)
                        )
                    finally:
                        gc.enable()
                    server_cpu = cpu_seconds(server.pid) - server_cpu
                    client_cpu = time.process_time() - client_cpu
                    bad = check(answers, expected)
                    wrong += bad
                    ms = np.asarray(lat) * 1e3
                    n = max(len(answers), 1)
                    rows.append(
                        (
                            rep,
                            clients,
                            len(answers),
                            bad,
                            len(answers) / elapsed,
                            *np.percentile(ms, [50, 90, 99]),
                            ms.max(),
                            1e3 * server_cpu / n,
                            1e3 * client_cpu / n,
                            load,
                        )
                    )
                    print(f"run {rep}: {clients} clients done", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    load_after = os.getloadavg()

    print(f"\nmachine: {machine()}")
    print(f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(
        f"server: waitress, {args.workers} process(es) x {args.threads} threads, caches "
        f"{'off' if args.no_cache else 'on'}; "
        f"run {run_dir.name}; pool {len(bodies)} requests, warm-up {len(warm)} answers\n"
    )
    print(
        "| run | clients | requests | wrong | throughput (req/s) | p50 (ms) | p90 (ms) "
        "| p99 (ms) | max (ms) | server CPU / req (ms) | client CPU / req (ms) | load (1 min) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rep, c, n, bad, rps, p50, p90, p99, mx, scpu, ccpu, load in rows:
        print(
            f"| {rep} | {c} | {n:,} | {bad} | {rps:,.0f} | {p50:.1f} | {p90:.1f} | {p99:.1f} "
            f"| {mx:.1f} | {scpu:.2f} | {ccpu:.2f} | {load:.2f} |"
        )
    print(f"\nmedian over {args.repeat} run(s):\n")
    print("| clients | throughput (req/s) | p50 (ms) | p99 (ms) | worst p99 (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for clients in args.clients:
        mine = [r for r in rows if r[1] == clients]
        rps, p50, p99 = (float(np.median([r[i] for r in mine])) for i in (4, 5, 7))
        worst = max(r[7] for r in mine)
        print(f"| {clients} | {rps:,.0f} | {p50:.1f} | {p99:.1f} | {worst:.1f} |")
    at_target = [r[7] for r in rows if r[1] == TARGET_CLIENTS]
    if at_target:
        p99 = float(np.median(at_target))
        verdict = "meets" if p99 < TARGET_P99_MS else "misses"
        print(
            f"\np99 at {TARGET_CLIENTS} clients (median of {len(at_target)} run(s)): {p99:.1f} ms: "
            f"{verdict} the {TARGET_P99_MS:.0f} ms target; runs under it: "
            f"{sum(p < TARGET_P99_MS for p in at_target)} of {len(at_target)}"
        )
    if wrong:
        print(f"\n{wrong} wrong answers")
        sys.exit(1)
    print("every answer correct")


if __name__ == "__main__":
    main()
