"""Microseconds per request through aiohttp's whole request path, in process, without sockets:
a steadier clock than wrk on a shared machine, for comparing two versions of the hot path.

Run: ``.venv/bin/python bench/bench_pipeline_time.py [batches]`` (15). Needs a Redis:
``tests.stack`` starts one.

Each server is set up and fed as ``bench_instructions.py`` does it for callgrind
(``pipelined``: the raw handler, or the real app on ``server/runner.py``'s runner with the
access-log hook; 32 requests at a time through a transport that keeps what is written), and
timed with ``time.perf_counter`` over batches of 4,096
requests after 6,000 of warm-up. The figure is the best and the median batch. What it leaves
out is the kernel (the socket reads and writes) and the loop's polling, the same for every
server; ``bench_deploy_targets.py`` measures those. The servers run one after another, each in
its own process, so that none warms the others' caches.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: this checkout's server and tests

from bench.bench_instructions import pipelined  # noqa: E402

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
    async with pipelined(kind, path, redis_url) as feed:
        await feed(WARMUP // 2)
        await asyncio.sleep(0.3)  # the hot tier takes the entry once Redis has it
        await feed(WARMUP // 2)
        per_request = []
        for _ in range(batches):
            started = time.perf_counter()
            await feed(BATCH)
            per_request.append((time.perf_counter() - started) / BATCH * 1e6)
        return per_request


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
