"""A cache wired to the test's real Redis, outside any app: client, breaker and tracker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from server.cache.cache import Cache
from server.config import Settings
from server.datastores.redis import BREAKER, RedisClient
from server.resilience.registry import BreakerRegistry
from tests.waiting import eventually


@contextlib.asynccontextmanager
async def running_cache(settings: Settings, *, wait_tracking: bool = True) -> AsyncIterator[Cache]:
    """A cache with its Redis client attached and the tracker running, as ``create_app`` builds
    them and its cleanup contexts start them; everything is closed on exit."""
    cache = Cache(settings.cache)
    breakers = BreakerRegistry.from_settings(settings.breakers)
    client = (
        RedisClient(settings.redis, breakers.get(BREAKER)) if settings.redis.configured else None
    )
    tracker = cache.attach(client)
    tasks = [asyncio.create_task(tracker.run())] if tracker is not None else []
    if client is not None and client.mode == "sentinel":
        tasks.append(asyncio.create_task(client.watch_master()))
    try:
        if tracker is not None and wait_tracking:
            await eventually(lambda: cache.near.active, what="tracking connected")
        yield cache
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        cache.detach()
        if client is not None:
            await client.close()


def returns(value: Any) -> Callable[[], Awaitable[Any]]:
    """A ``compute`` for ``Cache.fetch`` that answers ``value``."""

    async def compute() -> Any:
        return value

    return compute


def redis_of(cache: Cache) -> RedisClient:
    assert cache.redis is not None
    return cache.redis


def successes(cache: Cache) -> int:
    """Redis calls that went through the breaker and succeeded (hot-tier hits make none)."""
    return redis_of(cache).breaker.totals.successes


async def settled_write(cache: Cache, namespace: str, key: str, value: object) -> None:
    """Store ``value`` (``fetch`` with ``refresh``: computed and stored without looking, as the
    warmer stores) and wait for Redis's invalidation push of that write to come back: until
    then, a read may store the key in the hot tier only for the push to drop it again."""
    tracker = cache.tracker
    assert tracker is not None
    before = cache.near.invalidated_keys
    stored = await cache.fetch(namespace, key, returns(value), ttl=60, refresh=True)
    assert stored.status == "MISS"
    await eventually(
        lambda: cache.near.invalidated_keys > before + 1, what="the write's own push", timeout=2
    )
