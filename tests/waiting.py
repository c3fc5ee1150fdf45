"""Waiting in async tests: poll a condition until a deadline, never sleep a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


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


async def until_accepted(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    what: str = "the probe's answer accepted",
    within: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Call ``probe`` until ``accept`` takes its answer and return that answer; fails the test
    with ``what`` and the last answer after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {within:g}s; last answer: {value!r}")
        await asyncio.sleep(interval)
