"""Per-call overhead of our breaker against a bare await and against aiobreaker alone.

Run: ``.venv/bin/python bench/bench_breaker.py [calls] [rounds]``. Each round times ``calls``
sequential awaits per variant (interleaved, so drift hits all alike); the best round per variant
is reported, and overhead is that minus the bare await of the same callee. Two callees: one
that returns at once (pure overhead), and one that yields to the loop once, as real I/O does
(the loop then also runs, and purges cancelled timer handles as it would in service).
The budget (issue 3) is 5 µs per call over a bare await, closed state, success.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from aiobreaker import CircuitBreaker

from server.resilience import Breaker, BreakerConfig

Variant = Callable[[], Awaitable[object]]


async def noop() -> int:
    return 1


async def yields() -> int:
    await asyncio.sleep(0)
    return 1


def variants(callee: Callable[[], Awaitable[int]]) -> dict[str, Variant]:
    ours = Breaker("bench", BreakerConfig(call_timeout=5.0))
    ours_no_timeout = Breaker("bench-nt", BreakerConfig(call_timeout=None))
    theirs = CircuitBreaker(fail_max=5)

    async def with_asyncio_timeout() -> int:
        async with asyncio.timeout(5.0):
            return await callee()

    return {
        "bare await": callee,
        "asyncio.timeout alone": with_asyncio_timeout,
        "aiobreaker call_async": lambda: theirs.call_async(callee),
        "ours, call timeout 5 s": lambda: ours.call(callee),
        "ours, no call timeout": lambda: ours_no_timeout.call(callee),
    }


async def timed(fn: Variant, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / calls * 1e6


async def table(title: str, callee: Callable[[], Awaitable[int]], calls: int, rounds: int) -> None:
    cases = variants(callee)
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, fn in cases.items():
            await timed(fn, calls // 10)  # warm up
            best[name] = min(best[name], await timed(fn, calls))
    bare = best["bare await"]
    print(f"\n{title}")
    print(f"{'variant':<26} {'µs/call':>8} {'overhead µs':>12}")
    for name, us in best.items():
        print(f"{name:<26} {us:8.3f} {us - bare:12.3f}")


async def main(calls: int, rounds: int) -> None:
    print(f"Python {sys.version.split()[0]}, {calls} calls x {rounds} rounds, best round")
    await table("callee returns at once", noop, calls, rounds)
    await table("callee yields to the loop once", yields, calls, rounds)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*args) if args else main(200_000, 5))
