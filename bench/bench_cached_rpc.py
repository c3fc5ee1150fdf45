"""A cached procedure hit through ``POST /rpc`` against raw aiohttp handlers, in the same run.

Run: ``.venv/bin/python bench/bench_cached_rpc.py [seconds] [rounds]`` (``python -m bench`` runs
it with the defaults, 10 s and 3 rounds). Each server runs in its own process on a free
127.0.0.1 port; a real Redis comes from ``tests.stack``. Every server answers the same ~1 KB JSON
document:

- ``raw json``: an aiohttp handler that reads the body and returns the document (orjson);
- ``raw json-rpc``: a hand-written JSON-RPC 2.0 handler on aiohttp with orjson;
- ``infrawatch``: the real app, ``bench.payload`` cached (``CachePolicy``), every request a
  hit served by the hot tier;
- ``infrawatch, hot tier off``: the same with ``CACHE_HOT_TIER=false``: every hit is a Redis GET.

Load: ``wrk -t2 -c64 -d<seconds>s --latency`` with a Lua script that POSTs a JSON-RPC request,
after a 3 s warm-up per server; the rounds are interleaved so that drift hits all servers
alike. Reported per server: requests per second, the ratio to ``raw json`` of the same round,
server CPU per request (from ``/proc/<pid>/stat``), p50/p99 latency, and for infrawatch the
Redis commands the run cost (``INFO stats``). The target (issue 3): cached hit / raw aiohttp
>= 0.7.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: this checkout's server and tests

import orjson  # noqa: E402
from aiohttp import web  # noqa: E402

from server.cache.middleware import CacheMiddleware, procedure_key  # noqa: E402
from server.cache.policy import CachePolicy  # noqa: E402
from server.config import Settings  # noqa: E402
from server.rpc.router import (  # noqa: E402
    ANONYMOUS,
    Context,
    NoInput,
    Router,
    query,
    validate_input,
)
from tests.assembly import create_app_with, replacing  # noqa: E402
from tests.cache_support import running_cache  # noqa: E402
from tests.stack import RedisServer, free_port, make_workdir, remove_workdir  # noqa: E402
from tests.stack.ports import HOST, is_listening  # noqa: E402

PAYLOAD: dict[str, Any] = {
    "items": [{"id": i, "name": f"item-{i}", "value": i * 1.5, "ok": i % 2 == 0} for i in range(16)]
}
METHOD = "bench.payload"
REQUEST = orjson.dumps({"jsonrpc": "2.0", "method": METHOD, "id": 1}).decode()
SERVERS = ("raw json", "raw json-rpc", "infrawatch", "infrawatch, hot tier off")
WARMUP_SECONDS = 3
START_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the servers (each run in its own process: ``python bench/bench_cached_rpc.py serve ...``) ---


def raw_json_app() -> web.Application:
    body = orjson.dumps(PAYLOAD)

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/rpc", handle)
    return app


def raw_jsonrpc_app() -> web.Application:
    async def payload() -> Any:
        return PAYLOAD

    methods = {METHOD: payload}

    async def handle(request: web.Request) -> web.Response:
        try:
            call = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            error = {"code": -32700, "message": "Parse error"}
            return _rpc_response({"jsonrpc": "2.0", "error": error, "id": None})
        method = methods.get(call.get("method")) if isinstance(call, dict) else None
        if method is None or call.get("jsonrpc") != "2.0":
            error = {"code": -32601, "message": "Method not found"}
            return _rpc_response({"jsonrpc": "2.0", "error": error, "id": call.get("id")})
        return _rpc_response({"jsonrpc": "2.0", "result": await method(), "id": call.get("id")})

    app = web.Application()
    app.router.add_post("/rpc", handle)
    return app


def _rpc_response(answer: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def infrawatch_app(redis_url: str, hot_tier: bool) -> web.Application:
    async def payload(_ctx: Context, _: NoInput) -> dict[str, Any]:
        return PAYLOAD

    settings = Settings(redis_url=redis_url, cache_hot_tier=hot_tier, log_level="WARNING")
    cached = query(METHOD, payload, options=(CachePolicy(ttl=3600, namespace="bench"),))
    # The real catalogue, over this app's own resources, with the cached procedure beside it.
    return create_app_with(settings, replacing([cached]))


def serve(kind: str, port: int, redis_url: str) -> None:
    apps = {
        "raw json": raw_json_app,
        "raw json-rpc": raw_jsonrpc_app,
        "infrawatch": lambda: infrawatch_app(redis_url, hot_tier=True),
        "infrawatch, hot tier off": lambda: infrawatch_app(redis_url, hot_tier=False),
    }
    web.run_app(apps[kind](), host=HOST, port=port, access_log=None, print=None)


# --- the driver ---


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/rpc"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


@dataclass
class Result:
    kind: str
    round: int
    rps: float
    cpu_us: float
    p50_ms: float
    p99_ms: float
    redis_commands: int | None


@contextlib.contextmanager
def running(kind: str, redis_url: str) -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "serve", kind, str(port), redis_url]
    process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not is_listening(port, timeout=0.2):
            if process.poll() is not None:
                raise RuntimeError(f"{kind} server exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server not listening after {START_TIMEOUT:g}s")
            time.sleep(0.05)
        yield Server(kind, port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def check(server: Server) -> None:
    """Each server answers correctly; infrawatch's second answer is a hit."""

    def post() -> tuple[Any, str | None]:
        req = urllib.request.Request(  # noqa: S310 - a loopback URL we built
            server.url, data=REQUEST.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return orjson.loads(resp.read()), resp.headers.get("X-Cache")

    answer, _ = post()
    answer, cache = post()
    got = answer if server.kind == "raw json" else answer.get("result")
    if got != PAYLOAD:
        raise RuntimeError(f"{server.kind} answered {answer!r}")
    if server.kind.startswith("infrawatch") and cache != "HIT":
        raise RuntimeError(f"{server.kind}: expected X-Cache: HIT, got {cache!r}")


def wrk(url: str, seconds: int, script: Path) -> str:
    argv = ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    output = done.stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors against {url}:\n{output}")
    return output


def _latency_ms(output: str, pct: str) -> float:
    match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    if match is None:
        raise RuntimeError(f"no {pct}% latency in wrk output:\n{output}")
    value, unit = float(match[1]), match[2]
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def measure(server: Server, seconds: int, script: Path, redis: RedisServer, rnd: int) -> Result:
    wrk(server.url, WARMUP_SECONDS, script)
    commands_before = _redis_commands(redis)
    cpu_before = server.cpu_seconds()
    output = wrk(server.url, seconds, script)
    cpu = server.cpu_seconds() - cpu_before
    commands = _redis_commands(redis) - commands_before
    match = re.search(r"^\s*(\d+) requests in", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if match is None or rps is None:
        raise RuntimeError(f"unreadable wrk output:\n{output}")
    requests = int(match[1])
    return Result(
        kind=server.kind,
        round=rnd,
        rps=float(rps[1]),
        cpu_us=cpu / requests * 1e6,
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        redis_commands=commands if server.kind.startswith("infrawatch") else None,
    )


def _redis_commands(redis: RedisServer) -> int:
    # INFO itself counts as one command; so do the PINGs of the bench's own checks.
    return int(redis.info("stats")["total_commands_processed"])


async def breakdown(redis_url: str, calls: int = 50_000) -> list[tuple[str, float]]:
    """Where a hit's time goes inside the process: µs per call of each step, best of 3."""

    async def payload(_ctx: Context, _: NoInput) -> dict[str, Any]:
        return PAYLOAD

    settings = Settings(redis_url=redis_url)
    policy = CachePolicy(ttl=3600, namespace="bench")
    proc = query(METHOD, payload, options=(policy,))
    plain = query(METHOD, payload)
    async with running_cache(settings) as cache:
        with_cache = Router([proc], middleware=[CacheMiddleware(cache)], timeout=30)
        bare = Router([plain], timeout=None)
        while cache.near.hits == 0:  # until a hit comes from the hot tier
            await with_cache.call(METHOD, None, Context())
            await asyncio.sleep(0.01)

        async def timed(fn: Any) -> float:
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(calls):
                    await fn()
                best = min(best, (time.perf_counter() - start) / calls * 1e6)
            return best

        no_input = validate_input(proc, None)

        async def key_and_peek() -> None:
            cache.peek("bench", procedure_key(proc, policy, no_input, ANONYMOUS))

        async def validation() -> None:
            validate_input(proc, None)

        async def context() -> None:
            Context(protocol="jsonrpc")

        async def nothing() -> None:
            return None

        return [
            (
                "router.call, cached hit (hot tier), 30 s timeout",
                await timed(lambda: with_cache.call(METHOD, None, Context())),
            ),
            (
                "router.call, same handler, no cache, no timeout",
                await timed(lambda: bare.call(METHOD, None, Context())),
            ),
            ("procedure key + Cache.peek (lookup, counters, latency)", await timed(key_and_peek)),
            ("validate_input(NoInput)", await timed(validation)),
            ("Context()", await timed(context)),
            ("an awaited coroutine doing nothing (in each row above)", await timed(nothing)),
        ]


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    import aiohttp
    import redis

    return (
        f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"redis-py {redis.__version__}, load average {load} at start"
    )


def report(results: list[Result]) -> None:
    base = {r.round: r.rps for r in results if r.kind == "raw json"}
    print(
        "\n| server | round | req/s | ÷ raw json | server CPU µs/req | p50 ms | p99 ms | "
        "Redis commands |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        commands = "" if r.redis_commands is None else str(r.redis_commands)
        print(
            f"| {r.kind} | {r.round} | {r.rps:,.0f} | {r.rps / base[r.round]:.2f} | "
            f"{r.cpu_us:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {commands} |"
        )
    print("\nmean ratio to raw json over the rounds:")
    for kind in SERVERS:
        ratios = [r.rps / base[r.round] for r in results if r.kind == kind]
        print(f"  {kind:<26} {sum(ratios) / len(ratios):.2f}")


def main(seconds: int, rounds: int) -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    print(f"machine: {machine()}")
    print(f"wrk -t2 -c64 -d{seconds}s --latency, {WARMUP_SECONDS}s warm-up, {rounds} rounds")
    workdir = make_workdir()
    try:
        with RedisServer(workdir) as redis, tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = [[{REQUEST}]]\n"
            )
            results: list[Result] = []
            for rnd in range(1, rounds + 1):
                for kind in SERVERS:
                    with running(kind, redis.url) as server:
                        check(server)
                        result = measure(server, seconds, script, redis, rnd)
                    print(f"round {rnd}: {kind}: {result.rps:,.0f} req/s", flush=True)
                    results.append(result)
            report(results)
            print("\nin-process, µs per call:")
            for label, us in asyncio.run(breakdown(redis.url)):
                print(f"  {label:<58} {us:6.2f}")
    finally:
        remove_workdir(workdir)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        args = [int(a) for a in sys.argv[1:3]]
        raise SystemExit(main(*args) if args else main(10, 3))
