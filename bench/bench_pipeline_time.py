"""Microseconds per request through aiohttp's whole request path, in process, without sockets:
a steadier clock than wrk on a shared machine, for comparing two versions of the hot path.

Run: ``.venv/bin/python bench/bench_pipeline_time.py [batches]`` (15). Needs a Redis:
``tests.stack`` starts one.

Each server is set up as ``bench_instructions.py`` sets it up for callgrind (the raw handler,
or the real app on ``server/runner.py``'s runner with the access-log hook), fed the same
pipelined requests (32 at a time) through a transport that keeps what is written
(``bench_instructions.Keeper``), and timed with ``time.perf_counter`` over batches of 4,096
requests after 6,000 of warm-up. The figure is the best and the median batch. What it leaves
out is the kernel (the socket reads and writes) and the loop's polling, the same for every
server; ``bench_deploy_targets.py`` measures those. The servers run one after another, each in
its own process, so that none warms the others' caches.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: this checkout's server and tests

from aiohttp import web  # noqa: E402

from bench.bench_cached_rpc import infrawatch_app, raw_json_app  # noqa: E402
from bench.bench_instructions import PIPELINE, Keeper, request_bytes  # noqa: E402
from server.observability.http_metrics import ACCESS_LOG_CLASS  # noqa: E402
from server.runner import AppRunner  # noqa: E402

WARMUP = 6000
BATCH = 4096
# (name, server, path, loop)
VARIANTS = (
    ("raw aiohttp POST, asyncio's loop", "raw", "/rpc", "asyncio"),
    ("raw aiohttp POST, uvloop", "raw", "/rpc", "uvloop"),
    ("infrawatch POST /rpc, uvloop", "infrawatch", "/rpc", "uvloop"),
    ("infrawatch GET /trpc, uvloop", "infrawatch", "/trpc/bench.payload", "uvloop"),
)


async def timed(kind: str, path: str, batches: int, redis_url: str) -> list[float]:
    if kind == "raw":
        runner: web.AppRunner = web.AppRunner(raw_json_app(), access_log=None)
    else:
        app = infrawatch_app(redis_url, hot_tier=True)
        runner = AppRunner(
            app, access_log=logging.getLogger("bench"), access_log_class=app[ACCESS_LOG_CLASS]
        )
    await runner.setup()
    server = runner.server
    assert server is not None
    transport = Keeper()
    protocol = server()
    protocol.connection_made(transport)
    pipelined = request_bytes(path) * PIPELINE

    async def feed(count: int) -> None:
        for _ in range(0, count, PIPELINE):
            transport.wanted = transport.responses + PIPELINE
            transport.done.clear()
            protocol.data_received(pipelined)
            await asyncio.wait_for(transport.done.wait(), 30)

    try:
        await feed(WARMUP // 2)
        await asyncio.sleep(0.3)  # the hot tier takes the entry once Redis has it
        await feed(WARMUP // 2)
        per_request = []
        for _ in range(batches):
            started = time.perf_counter()
            await feed(BATCH)
            per_request.append((time.perf_counter() - started) / BATCH * 1e6)
        return per_request
    finally:
        protocol.connection_lost(None)
        await runner.cleanup()


def one(kind: str, path: str, loop: str, batches: int, redis_url: str) -> None:
    """Child process: print best and median µs per request."""
    coro = timed(kind, path, batches, redis_url)
    if loop == "uvloop":
        import uvloop

        results = uvloop.run(coro)
    else:
        results = asyncio.run(coro)
    print(f"{min(results):.2f} {statistics.median(results):.2f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "one":
        one(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
        return
    from tests.stack import RedisServer, make_workdir, remove_workdir

    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    workdir = make_workdir()
    try:
        with RedisServer(workdir) as redis:
            print("| server | µs/request, best batch | median batch |")
            print("| --- | --- | --- |")
            for name, kind, path, loop in VARIANTS:
                argv = [sys.executable, __file__, "one", kind, path, loop, str(batches)]
                out = subprocess.run(
                    [*argv, redis.url], capture_output=True, text=True, check=True, timeout=600
                ).stdout.split()
                print(f"| {name} | {out[0]} | {out[1]} |")
    finally:
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
