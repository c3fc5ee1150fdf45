"""Instructions per request of a cached hit, counted by callgrind: the measure a noisy machine
does not move.

Run: ``.venv/bin/python bench/bench_instructions.py [requests]`` (4,096). Needs valgrind
(``make bench`` installs it).

Why: on the shared 2-core machine these benches run on, the same server's CPU time per request
moved by up to 40 % between runs minutes apart (docs/performance.md), far more than a change to
the hot path does. Instructions executed do not depend on the machine's load, so two versions
of the code compare to a fraction of a percent.

What: each server runs in process under ``valgrind --tool=callgrind`` on uvloop, behind
aiohttp's real request path as ``infrawatch serve`` runs it (``server/runner.py``'s
``AppRunner``: the HTTP parser, the routing or the RPC routes' shortcut, the response's
preparation and write, the access-log hook) with a transport
that keeps what is written instead of sending it: no socket, no system call, no load generator
in the count. Requests are fed pipelined, 32 at a time, as ``wrk -c32`` keeps 32 in flight.
Only the measured requests are counted (``--instr-atstart=no``, then ``callgrind_control``
around them): start-up and a warm-up of 500 requests are not. Two runs of one server agreed
within 0.5 %.

- ``raw aiohttp POST``: an aiohttp handler that reads the body and returns the document
  (``bench_cached_rpc.raw_json_app``);
- ``infrawatch POST /rpc`` and ``infrawatch GET /trpc``: the real app with ``bench.payload``
  cached, every request a hit of the hot tier (a real Redis from ``tests.stack``).

What this leaves out is the kernel's share (the socket reads and writes, the same for every
server) and the event loop's polling; ``bench_deploy_targets.py`` measures those with wrk.

A second table counts the deploy target's own pairing with the event loop in: each server as
``bench_deploy_targets.py`` starts it (``serve <kind>``: the raw handler on asyncio's loop as
aiohttp comes, infrawatch as ``infrawatch serve`` runs it, on uvloop), under callgrind on a
real loopback socket, loaded by ``wrk -t1 -c64``; only the requests of one wrk window are
counted (``callgrind_control`` around it). This counts what uvloop saves in user space (the
loop, the transports), which the first table's transport cannot show. Kernel time is still
not in it: ``strace -c`` found the same system calls per request for every server here (one
read, one write, one getpid; an epoll wait per ~25 requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: this checkout's server and tests

from aiohttp import web  # noqa: E402

from bench.bench_cached_rpc import REQUEST, infrawatch_app, raw_json_app  # noqa: E402
from bench.bench_deploy_targets import post_script, wrk  # noqa: E402
from server.observability.http_metrics import ACCESS_LOG_CLASS  # noqa: E402
from server.runner import AppRunner  # noqa: E402

PIPELINE = 32
Feed = Callable[[int], Awaitable[None]]
WARMUP = 500
VARIANTS = (
    ("raw aiohttp POST", "raw", "/rpc"),
    ("infrawatch POST /rpc", "infrawatch", "/rpc"),
    ("infrawatch GET /trpc", "infrawatch", "/trpc/bench.payload"),
)
# (name, bench_deploy_targets.serve kind): POST /rpc of the cached document, real sockets.
SERVED = (
    ("raw aiohttp POST, asyncio's loop", "raw"),
    ("raw aiohttp POST, uvloop", "raw-uvloop"),
    ("infrawatch POST /rpc, uvloop", "infrawatch"),
    ("infrawatch POST /rpc, asyncio's loop", "infrawatch-asyncio"),
)
SERVED_SECONDS = 6  # the counted wrk window; the 3 s before it is not counted
SERVED_START_TIMEOUT = 300.0  # infrawatch's imports under valgrind take tens of seconds
_COLLECTED = re.compile(r"Collected : (\d+)")


class Keeper(asyncio.Transport):
    """A transport that counts the responses written to it and sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.responses = 0
        self.wanted = 0
        self.done = asyncio.Event()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.responses += bytes(data).count(b"HTTP/1.1 ")
        if self.responses >= self.wanted:
            self.done.set()

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def request_bytes(path: str) -> bytes:
    if path == "/rpc":
        head = (
            "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(REQUEST)}\r\n\r\n"
        )
        return (head + REQUEST).encode()
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n".encode()


@contextlib.asynccontextmanager
async def pipelined(kind: str, path: str, redis_url: str) -> AsyncIterator[Feed]:
    """A server as below, fed through a ``Keeper``: yields ``feed(count)``, which sends
    ``count`` requests of ``path``, ``PIPELINE`` at a time, and returns when all are answered."""
    if kind == "raw":
        runner: web.AppRunner = web.AppRunner(raw_json_app(), access_log=None)
    else:
        app = infrawatch_app(redis_url, hot_tier=True)
        # On server/runner.py's runner, as it starts it: the RPC routes answered without the
        # router, the access-log hook feeding the HTTP families.
        runner = AppRunner(
            app, access_log=logging.getLogger("bench"), access_log_class=app[ACCESS_LOG_CLASS]
        )
    await runner.setup()
    server = runner.server
    assert server is not None
    transport = Keeper()
    protocol = server()
    protocol.connection_made(transport)
    batch = request_bytes(path) * PIPELINE

    async def feed(count: int) -> None:
        for _ in range(0, count, PIPELINE):
            transport.wanted = transport.responses + PIPELINE
            transport.done.clear()
            protocol.data_received(batch)
            await asyncio.wait_for(transport.done.wait(), 30)

    try:
        yield feed
    finally:
        protocol.connection_lost(None)
        await runner.cleanup()


async def serve_in_process(kind: str, path: str, requests: int, redis_url: str) -> None:
    async with pipelined(kind, path, redis_url) as feed:
        await feed(WARMUP)
        counting(True)
        await feed(requests)
        counting(False)


def counting(on: bool) -> None:
    """Start or stop callgrind's count of this process (``callgrind_control``; valgrind reads
    the command within a few thousand instructions, a rounding error over the run)."""
    valgrind_control(os.getpid(), on=on)


def instructions(kind: str, path: str, requests: int, redis_url: str, out: Path) -> int:
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",  # start-up and warm-up are not counted
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve()),
        "in-process",
        kind,
        path,
        str(requests),
        redis_url,
    ]
    # A fixed hash seed: the same dict and set layouts in both counts.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{kind} {path} under callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def served_instructions(kind: str, redis_url: str, out: Path, post_script: Path) -> float:
    """Instructions per request of one server of ``bench_deploy_targets.py`` on a real socket,
    over one counted wrk window."""
    from tests.stack.ports import HOST, free_port, is_listening

    port = free_port()
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve().parent / "bench_deploy_targets.py"),
        "serve",
        kind,
        str(port),
        redis_url,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    url = f"http://{HOST}:{port}/rpc"
    try:
        deadline = time.monotonic() + SERVED_START_TIMEOUT
        while not is_listening(port, timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} under callgrind did not start listening")
            time.sleep(0.5)
        _requests(url, 3, post_script, counted=False)  # warm-up
        valgrind_control(process.pid, on=True)
        requests = _requests(url, SERVED_SECONDS, post_script)
        valgrind_control(process.pid, on=False)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    found = _COLLECTED.search(stderr.decode(errors="replace"))
    if found is None:
        raise RuntimeError(f"{kind}: no count from callgrind:\n{stderr[-2000:]!r}")
    return int(found.group(1)) / requests


def _requests(url: str, seconds: int, script: Path, *, counted: bool = True) -> int:
    """Requests answered in one wrk window (one thread: valgrind's server is the bottleneck);
    under callgrind a request takes milliseconds, hence the long timeout."""
    report = wrk(url, seconds, script, warmup=not counted, threads=1, timeout="30s")
    return int(report.split(" requests in ")[0].split()[-1])


def valgrind_control(pid: int, *, on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "--instr=on" if on else "--instr=off", str(pid)],
        capture_output=True,
        check=True,
        timeout=60,
    )


def main(requests: int) -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 1
    requests -= requests % PIPELINE
    from tests.stack import RedisServer, make_workdir, remove_workdir

    print(f"callgrind: {requests:,} requests counted per server, after {WARMUP} uncounted")
    workdir = make_workdir()
    try:
        with (
            RedisServer(workdir) as redis,
            tempfile.TemporaryDirectory() as tmp,
            ThreadPoolExecutor(max_workers=2) as pool,  # valgrind runs a process on one core
        ):
            counts = {
                name: pool.submit(
                    instructions, kind, path, requests, redis.url, Path(tmp) / f"{i}.out"
                )
                for i, (name, kind, path) in enumerate(VARIANTS)
            }
            results = {name: count.result() / requests for name, count in counts.items()}
            served: dict[str, float] = {}
            if shutil.which("wrk") is not None:
                script = post_script(Path(tmp))
                # One at a time: wrk and valgrind take both cores between them.
                for i, (name, kind) in enumerate(SERVED):
                    out = Path(tmp) / f"served-{i}.out"
                    served[name] = served_instructions(kind, redis.url, out, script)
    finally:
        remove_workdir(workdir)
    raw = results["raw aiohttp POST"]
    print("\n| server | instructions a request | ÷ raw aiohttp POST |")
    print("| --- | --- | --- |")
    for name, count in results.items():
        print(f"| {name} | {count:,.0f} | {count / raw:.2f}x |")
    if not served:
        print("\n(wrk is not installed: the served counts are left out)")
        return 0
    base = served[SERVED[0][0]]
    print(f"\nServed on 127.0.0.1, wrk -t1 -c64, {SERVED_SECONDS} s counted:")
    # As a req/s ratio reads: above 1.0x, fewer instructions than the raw handler on asyncio's
    # loop (the deploy target's pairing: infrawatch on uvloop against aiohttp as it comes).
    print(f"\n| server | instructions a request | ({SERVED[0][0]}) ÷ this |")
    print("| --- | --- | --- |")
    for name, count in served.items():
        print(f"| {name} | {count:,.0f} | {base / count:.2f}x |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "in-process":
        import uvloop

        kind, path, count, redis_url = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        uvloop.run(serve_in_process(kind, path, count, redis_url))
    else:
        raise SystemExit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4096))
