"""Redis stopped in the middle of a test: the breaker opens after its threshold and then
fails fast, admits exactly one half-open trial, closes once Redis is back; cached procedures
keep answering throughout (from memory, or by computing)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from server.appkeys import BREAKERS, CACHE
from server.cache.policy import CachePolicy
from server.config import Settings
from server.datastores.redis import BREAKER, RedisClient
from server.errors import CircuitOpen, Unavailable
from server.resilience import BreakerRegistry, BreakerState
from server.rpc.router import Context, NoInput, query
from tests.assembly import create_app_with, replacing
from tests.stack import RedisServer
from tests.waiting import eventually

FAST_BREAKER = {"breaker_failure_threshold": 3, "breaker_reset_timeout": 0.5}


async def test_a_call_after_close_is_refused_not_connected(redis_url: str) -> None:
    # redis-py would open a new connection for it that nobody closes.
    settings = Settings(redis_url=redis_url)
    client = RedisClient(
        settings.redis, BreakerRegistry.from_settings(settings.breakers).get(BREAKER)
    )
    await client.execute(client.raw.set, "k", "v")
    await client.close()
    with pytest.raises(Unavailable, match="stopping"):
        await client.execute(client.raw.get, "k")
    pool = client.raw.connection_pool
    connections = [*pool._available_connections, *pool._in_use_connections]  # type: ignore[union-attr]
    assert not any(c.is_connected for c in connections)


async def test_a_call_in_flight_at_close_leaves_no_connection_open(redis_url: str) -> None:
    # close() disconnects the in-use connection too; redis-py's retry then connects it again
    # for the same command, and that connection went back to the pool open, for the garbage
    # collector to find on a stopped loop (a ResourceWarning in a later test).
    settings = Settings(redis_url=redis_url, redis_command_timeout_ms=5000)
    client = RedisClient(
        settings.redis, BreakerRegistry.from_settings(settings.breakers).get(BREAKER)
    )
    waiting = asyncio.create_task(client.execute(client.raw.blpop, ["nothing-here"], timeout=0.5))
    await eventually(
        lambda: bool(client.raw.connection_pool._in_use_connections),  # type: ignore[union-attr]
        what="the BLPOP on its connection",
    )
    await client.close()
    with contextlib.suppress(Unavailable):
        await waiting
    pool = client.raw.connection_pool
    connections = [*pool._available_connections, *pool._in_use_connections]  # type: ignore[union-attr]
    assert connections and not any(c.is_connected for c in connections)


async def test_breaker_opens_fails_fast_trials_once_and_closes_again(
    redis_server: RedisServer, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, **FAST_BREAKER)
    breaker = BreakerRegistry.from_settings(settings.breakers).get(BREAKER)
    client = RedisClient(settings.redis, breaker)
    try:
        await client.execute(client.raw.set, "k", "v")
        redis_server.stop()

        for _ in range(3):
            with pytest.raises(Unavailable) as failed:
                await client.execute(client.raw.get, "k")
            assert not isinstance(failed.value, CircuitOpen)
        assert breaker.state is BreakerState.OPEN

        took = []
        for _ in range(200):
            start = time.perf_counter()
            with pytest.raises(CircuitOpen):
                await client.execute(client.raw.get, "k")
            took.append(time.perf_counter() - start)
        took.sort()
        assert took[len(took) // 2] < 0.001, f"median {took[len(took) // 2] * 1e6:.0f} µs"
        assert took[int(len(took) * 0.99)] < 0.001, (
            f"p99 {took[int(len(took) * 0.99)] * 1e6:.0f} µs"
        )

        await eventually(lambda: breaker.seconds_until_half_open() == 0, what="reset timeout")
        outcomes = await asyncio.gather(
            *(client.execute(client.raw.get, "k") for _ in range(20)), return_exceptions=True
        )
        rejected = [o for o in outcomes if isinstance(o, CircuitOpen)]
        tried = [o for o in outcomes if isinstance(o, Unavailable) and o not in rejected]
        assert (len(rejected), len(tried)) == (19, 1), outcomes
        assert breaker.state is BreakerState.OPEN  # the one trial failed: open again

        redis_server.start()
        await eventually(lambda: breaker.seconds_until_half_open() == 0, what="reset timeout")
        assert await client.execute(client.raw.set, "k", "back") is True
        assert breaker.state is BreakerState.CLOSED
        assert await client.command("GET", "k") == b"back"
    finally:
        await client.close()


async def test_ping_goes_through_the_breaker(redis_server: RedisServer, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, **FAST_BREAKER)
    breakers = BreakerRegistry.from_settings(settings.breakers)
    client = RedisClient(settings.redis, breakers.get(BREAKER))
    try:
        assert 0 < await client.ping() < 1
        assert breakers.get(BREAKER).totals.successes == 1
        info = await client.info()
        assert info["redis_version"]
    finally:
        await client.close()


COMPUTED: list[int] = []


async def demo_value(_ctx: Context, _: NoInput) -> dict[str, int]:
    COMPUTED.append(1)
    return {"computed": len(COMPUTED)}


DEMO = query("demo.value", demo_value, options=(CachePolicy(ttl=60, namespace="demo"),))


async def rpc(client: TestClient, method: str, params: Any = None) -> tuple[Any, str | None]:
    body = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        body["params"] = params
    resp = await client.post("/rpc", data=orjson.dumps(body))
    assert resp.status == 200
    answer = orjson.loads(await resp.read())
    assert "result" in answer, answer
    return answer["result"], resp.headers.get("X-Cache")


async def test_cached_procedures_keep_answering_while_redis_is_down(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    redis_server: RedisServer,
) -> None:
    COMPUTED.clear()
    settings = make_settings(database_url=None, **FAST_BREAKER)
    client: TestClient = await aiohttp_client(create_app_with(settings, replacing([DEMO])))
    cache = client.server.app[CACHE]
    breaker = client.server.app[BREAKERS].get(BREAKER)
    assert await rpc(client, "demo.value") == ({"computed": 1}, "MISS")
    assert await rpc(client, "demo.value") == ({"computed": 1}, "HIT")

    redis_server.stop()
    answers = [await rpc(client, "demo.value") for _ in range(20)]

    # Answered every time; computed once more at most (the memory fallback then holds it).
    assert all(result["computed"] in (1, 2) for result, _ in answers)
    assert answers[-1][1] == "HIT"
    assert len(COMPUTED) <= 2
    assert breaker.state is BreakerState.OPEN
    stats, _ = await rpc(client, "monitoring.cacheStats")
    assert stats["backend"] == "memory"
    assert stats["redis_available"] is False
    assert stats["redis"] is None
    assert stats["hot_tier"]["active"] is False
    health, _ = await rpc(client, "monitoring.unifiedHealth")
    assert health["status"] == "degraded"

    redis_server.start()

    async def back() -> bool:
        await rpc(client, "demo.value")  # the cache's next Redis call decides its backend
        stats, _ = await rpc(client, "monitoring.cacheStats")
        return bool(stats["redis_available"]) and stats["backend"] == "redis"

    await eventually(back, what="cache back on Redis", timeout=15)
    assert breaker.state is BreakerState.CLOSED
    await eventually(lambda: cache.near.active, what="tracking back", timeout=15)
    await cache.invalidate("demo")
    computed = len(COMPUTED)
    result, status = await rpc(client, "demo.value")
    assert (result, status) == ({"computed": computed + 1}, "MISS")
    assert await rpc(client, "demo.value") == (result, "HIT")

    async def from_hot_tier() -> bool:
        hits = cache.near.hits
        assert await rpc(client, "demo.value") == (result, "HIT")
        return cache.near.hits > hits

    await eventually(from_hot_tier, what="hits served by the hot tier again", timeout=5)
