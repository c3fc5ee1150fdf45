"""The live status read ``monitoring.circuitBreakerStatus`` through ``POST /rpc`` against a raw
aiohttp handler answering the same document, in the same run.

Run: ``.venv/bin/python bench/bench_breaker_status.py [seconds] [rounds]`` (``python -m bench``
runs it with the defaults, 10 s and 2 rounds). A real PostgreSQL and Redis come from
``tests.stack``, so the app has the breakers it has in production (the database's, the health
probes', the alert store's, Redis's). Each server runs in its own process on a free loopback
port:

- ``raw json``: an aiohttp handler that reads the body and returns the document infrawatch
  answered first (orjson, the same bytes every time);
- ``infrawatch``: the real app; every request is a live, uncached status read.

Load: ``wrk -t2 -c64 -d<seconds>s --latency`` POSTing the JSON-RPC request, after a 3 s warm-up
per server; rounds interleaved. Reported: requests per second, the ratio to ``raw json`` of the
same round, server CPU per request, p50/p99; then, in-process, µs per call of the procedure
through the router against building the answer as models (what it did before). Target
(issue 14): >= 0.5x raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: this checkout's server and tests

import orjson  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.bench_cached_rpc import CLK_TCK, START_TIMEOUT, WARMUP_SECONDS, machine  # noqa: E402
from bench.bench_cached_rpc import _latency_ms as latency_ms  # noqa: E402
from server.app import create_app  # noqa: E402
from server.appkeys import BREAKERS, ROUTER  # noqa: E402
from server.config import Settings  # noqa: E402
from server.resilience.models import BreakerStatusList  # noqa: E402
from server.rpc.router import Context  # noqa: E402
from tests.stack import (  # noqa: E402
    PostgresServer,
    RedisServer,
    free_port,
    make_workdir,
    remove_workdir,
)
from tests.stack.ports import HOST, is_listening  # noqa: E402

METHOD = "monitoring.circuitBreakerStatus"
REQUEST = orjson.dumps({"jsonrpc": "2.0", "method": METHOD, "id": 1}).decode()
SERVERS = ("raw json", "infrawatch")
TARGET = 0.5


def settings(dsn: str, redis_url: str) -> Settings:
    return Settings(database_url=dsn, redis_url=redis_url, log_level="WARNING")


def raw_app(document: Path) -> web.Application:
    body = document.read_bytes()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/rpc", handle)
    return app


def serve(kind: str, port: int, dsn: str, redis_url: str, document: str) -> None:
    app = raw_app(Path(document)) if kind == "raw json" else create_app(settings(dsn, redis_url))
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


@contextlib.contextmanager
def running(kind: str, dsn: str, redis_url: str, document: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    argv = [sys.executable, __file__, "serve", kind, str(port), dsn, redis_url, str(document)]
    process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not is_listening(port, timeout=0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.05)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def post(port: int) -> bytes:
    req = urllib.request.Request(
        f"http://{HOST}:{port}/rpc",
        data=REQUEST.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        body: bytes = resp.read()
    return body


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wrk(port: int, seconds: int, script: Path) -> str:
    url = f"http://{HOST}:{port}/rpc"
    argv = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    if "Non-2xx" in done.stdout or "Socket errors" in done.stdout:
        raise RuntimeError(f"wrk saw errors:\n{done.stdout}")
    return done.stdout


def measure(port: int, pid: int, seconds: int, script: Path) -> dict[str, float]:
    wrk(port, WARMUP_SECONDS, script)
    before = cpu_seconds(pid)
    output = wrk(port, seconds, script)
    cpu = cpu_seconds(pid) - before
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if total is None or rps is None:
        raise RuntimeError(f"unreadable wrk output:\n{output}")
    return {
        "rps": float(rps[1]),
        "cpu_us": cpu / int(total[1]) * 1e6,
        "p50_ms": latency_ms(output, "50"),
        "p99_ms": latency_ms(output, "99"),
    }


async def in_process(dsn: str, redis_url: str, calls: int = 20_000) -> list[tuple[str, float]]:
    """µs per call: the procedure through the router, and the same answer built as models."""
    app = create_app(settings(dsn, redis_url))
    router, breakers = app[ROUTER], app[BREAKERS]

    async def through_router() -> Any:
        return await router.call(METHOD, None, Context(protocol="jsonrpc"))

    async def as_models() -> Any:
        return BreakerStatusList(breakers=[b.snapshot() for b in breakers.all()]).model_dump(
            mode="json", by_alias=True
        )

    async def timed(fn: Any) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(calls):
                await fn()
            best = min(best, (time.perf_counter() - start) / calls * 1e6)
        return best

    return [
        (f"{METHOD} through the router ({len(breakers)} breakers)", await timed(through_router)),
        ("the same answer built as models and dumped (before)", await timed(as_models)),
    ]


def main(seconds: int, rounds: int) -> int:
    print(f"machine: {machine()}")
    print(f"wrk -t2 -c64 -d{seconds}s --latency, {WARMUP_SECONDS}s warm-up, {rounds} rounds")
    workdir = make_workdir()
    try:
        with (
            PostgresServer(workdir) as pg,
            RedisServer(workdir) as redis,
            tempfile.TemporaryDirectory() as tmp,
        ):
            dsn = pg.dsn()
            script = Path(tmp) / "post.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = [[{REQUEST}]]\n"
            )
            document = Path(tmp) / "document.json"
            with running("infrawatch", dsn, redis.url, document) as (port, _):
                post(port)
                document.write_bytes(post(port))
            print(f"answer: {len(document.read_bytes())} bytes")
            results: list[tuple[int, str, dict[str, float]]] = []
            for rnd in range(1, rounds + 1):
                for kind in SERVERS:
                    with running(kind, dsn, redis.url, document) as (port, pid):
                        result = measure(port, pid, seconds, script)
                    print(f"round {rnd}: {kind}: {result['rps']:,.0f} req/s", flush=True)
                    results.append((rnd, kind, result))
            ratios = report(results)
            print("\nin-process, µs per call:")
            for label, us in asyncio.run(in_process(dsn, redis.url)):
                print(f"  {label:<58} {us:7.2f}")
    finally:
        remove_workdir(workdir)
    mean = sum(ratios) / len(ratios)
    print(f"\nmean ratio {mean:.2f} (target >= {TARGET})")
    return 0 if mean >= TARGET else 1


def report(results: list[tuple[int, str, dict[str, float]]]) -> list[float]:
    base = {rnd: r["rps"] for rnd, kind, r in results if kind == "raw json"}
    print("\n| server | round | req/s | ÷ raw json | server CPU µs/req | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ratios = []
    for rnd, kind, r in results:
        ratio = r["rps"] / base[rnd]
        if kind == "infrawatch":
            ratios.append(ratio)
        print(
            f"| {kind} | {rnd} | {r['rps']:,.0f} | {ratio:.2f} | {r['cpu_us']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
        )
    return ratios


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        args = [int(a) for a in sys.argv[1:3]]
        raise SystemExit(main(*args) if args else main(10, 2))
