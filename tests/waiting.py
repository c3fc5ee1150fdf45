"""Waiting in async tests: poll a condition until a deadline, never sleep a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], object | Awaitable[object]],
    *,
    what: str,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for polling, not for one await
    interval: float = 0.002,
) -> float:
    """Poll ``predicate`` (sync or async) until truthy; returns the seconds it took.

    Fails the test with ``what`` after ``timeout`` seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true after {timeout:g}s: {what}")
        await asyncio.sleep(interval)
