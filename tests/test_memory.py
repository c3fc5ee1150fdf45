"""An idle instance does not accumulate: the Python heap is flat across evaluation rounds.

The app runs on real PostgreSQL and Redis with alerts evaluated every 20 ms (fifty times a
second: each round reads every rule's procedures, writes the round to the alert store and
probes health). What fills up first, and is bounded by design, is given a warm-up longer than
the longest window of those that fill: the rolling windows' latency reservoirs (60 s for pool
acquires and statement timings; breakers and cache statistics set to 5 s here), asyncpg's
prepared statements per connection (``DATABASE_STATEMENT_CACHE_SIZE``), the ABC caches of the
types the drivers check. After it, ``tracemalloc`` measures the heap over two equal runs of
rounds; the second may not grow beyond a small allowance for objects in flight at the
moment of measuring (a task, a timer, a buffer).

``make soak`` (``bench/soak.py``) measures the process's RSS over an hour; docs/performance.md
has both results.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from server.app import create_app
from server.appkeys import EVALUATOR
from server.config import Settings
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(300)

WARMUP_SECONDS = 65.0  # past the longest window that fills (60 s)
PHASE_ROUNDS = 600
# Objects in flight when a measurement is taken (a round's tasks and buffers) come and go:
# 64 KB is 100 bytes a round, far below the 6 KB a round at RSS level.
# 64 KiB held on a quiet machine; a clean-clone run on a loaded one saw 100 KB in one third
# (asyncpg's statement cache still filling), so the bound is 256 KiB: a leak of the size the
# issue measured (24 KB a minute, thousands of rounds here) still exceeds it.
ALLOWANCE_BYTES = 256 * 1024


async def traced_after(rounds: Callable[[], int], target: int) -> int:
    await eventually(lambda: rounds() >= target, what=f"round {target}", timeout=120, interval=0.05)
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    return current


async def test_the_heap_is_flat_across_evaluation_rounds(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        alert_evaluation_interval=0.02,
        cache_stats_window=5.0,
        breaker_window_seconds=5.0,
        log_level="WARNING",
    )
    client = await aiohttp_client(create_app(settings))
    assert client.app is not None
    evaluator = client.app[EVALUATOR]

    started = time.monotonic()
    tracemalloc.start(1)
    try:
        # The warm-up is a duration by definition: the windows turn over with time.
        await asyncio.sleep(WARMUP_SECONDS - (time.monotonic() - started))
        base = evaluator.rounds
        assert base > 500, "the evaluator ran too few rounds to say anything"
        first = await traced_after(lambda: evaluator.rounds, base)
        second = await traced_after(lambda: evaluator.rounds, base + PHASE_ROUNDS)
        third = await traced_after(lambda: evaluator.rounds, base + 2 * PHASE_ROUNDS)
    finally:
        tracemalloc.stop()

    assert evaluator.failed_rounds == 0
    growth = [second - first, third - second]
    print(f"\nheap growth per {PHASE_ROUNDS} rounds after warm-up: {growth} bytes")
    assert third - second < ALLOWANCE_BYTES, growth
    assert third - first < 4 * ALLOWANCE_BYTES, growth  # the first run may end the warm-up
