"""What ``infrawatch_http_request_duration_seconds`` costs a request (target: <= 1 µs).

Run: ``.venv/bin/python bench/bench_http_duration.py [requests]`` (1,000,000).

With an access logger enabled, aiohttp adds per request: one ``loop.time()`` when the request
starts, one when it is written, and the call of ``RequestHandler.log_access`` which calls our
``RequestLog.log`` (``server/observability/http_metrics.py``). Each part is timed here in
process, on a routed ``POST /rpc`` request of the real app (``create_app``), over ``requests``
calls, best of 5 runs: aiohttp's own ``log_access`` on a real ``RequestHandler`` built with
the hook (which reads the clock and calls ours), plus the clock read at the request's start.
A wrk comparison could not resolve a microsecond next to a request's ~50 µs, so none is made.
Exit status 1 when the target is missed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from server.app import create_app
from server.config import Settings
from server.observability.http_metrics import ACCESS_LOG_CLASS

TARGET_NS = 1000.0


def best_ns(run: Callable[[int], None], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        run(n)
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


async def main(n: int) -> int:
    app = create_app(Settings(auth_tokens={"bench": "bench-token-0123456789"}))
    logger_class = app[ACCESS_LOG_CLASS]
    hook = logger_class(None, "")  # type: ignore[arg-type]
    request = make_mocked_request("POST", "/rpc", app=app)
    request._match_info = await app.router.resolve(request)  # as aiohttp routes it
    response = web.Response(status=200)
    loop = asyncio.get_running_loop()

    # aiohttp's own connection handler with this hook, as the runner makes it.
    server = web.Server(
        lambda _request: None,  # type: ignore[arg-type,return-value]
        access_log_class=logger_class,
        access_log=logging.getLogger("bench"),
    )
    handler = server()

    def log(n: int) -> None:
        log_ = hook.log
        for _ in range(n):
            log_(request, response, 0.000123)

    def log_access(n: int) -> None:
        # What aiohttp runs once a response is written: loop.time() and our log.
        log_access_ = handler.log_access
        start = loop.time()
        for _ in range(n):
            log_access_(request, response, start)

    def clock(n: int) -> None:
        time_ = loop.time
        for _ in range(n):
            time_()

    def empty(n: int) -> None:
        for _ in range(n):
            pass

    baseline = best_ns(empty, n)
    log_ns = best_ns(log, n) - baseline
    access_ns = best_ns(log_access, n) - baseline
    clock_ns = best_ns(clock, n) - baseline
    total = access_ns + clock_ns  # the start's loop.time() is the only other addition
    print(f"RequestLog.log alone (bucket update):         {log_ns:6.0f} ns")
    print(f"RequestHandler.log_access (+ loop.time, log): {access_ns:6.0f} ns")
    print(f"loop.time() at the request's start:           {clock_ns:6.0f} ns")
    print(f"per request: {total:.0f} ns (target <= {TARGET_NS:.0f} ns)")
    return 0 if total <= TARGET_NS else 1


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    raise SystemExit(asyncio.run(main(count)))
