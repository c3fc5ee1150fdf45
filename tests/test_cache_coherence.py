"""Two instances on one Redis: an invalidation on one reaches the other's hot tier within
100 ms; a lost tracking connection flushes and bypasses the hot tier until it is back."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from server.appkeys import CACHE
from server.cache.cache import Cache
from server.cache.policy import CachePolicy, Invalidates
from server.config import Settings
from server.rpc.router import Context, NoInput, mutation, query
from tests.assembly import create_app_with, replacing
from tests.conftest import OPERATOR_TOKEN
from tests.stack import RedisServer
from tests.waiting import eventually

KEY = "infrawatch:cache:shared:shared.version:{}"


class Version:
    value = 1


def procedures(version: Version) -> list[Any]:
    async def current(_ctx: Context, _: NoInput) -> dict[str, int]:
        return {"version": version.value}

    async def bump(_ctx: Context, _: NoInput) -> int:
        version.value += 1
        return version.value

    return [
        query("shared.version", current, options=(CachePolicy(ttl=300, namespace="shared"),)),
        mutation("shared.bump", bump, options=(Invalidates("shared"),)),
    ]


async def call(client: TestClient, method: str, token: str | None = None) -> tuple[Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = orjson.dumps({"jsonrpc": "2.0", "method": method, "id": 1})
    resp = await client.post("/rpc", data=body, headers=headers)
    answer = orjson.loads(await resp.read())
    assert "result" in answer, answer
    return answer["result"], resp.headers.get("X-Cache")


async def start_two(
    aiohttp_client: Callable[..., Any], settings: Settings
) -> tuple[TestClient, TestClient, Version]:
    version = Version()  # the shared source of truth both instances compute from
    # Each with the real catalogue (monitoring.cacheStats) beside the test's own procedures.
    a = await aiohttp_client(create_app_with(settings, replacing(procedures(version))))
    b = await aiohttp_client(create_app_with(settings, replacing(procedures(version))))
    for client in (a, b):
        cache = cache_of(client)
        await eventually(lambda cache=cache: cache.near.active, what="tracking connected")
    return a, b, version


def cache_of(client: TestClient) -> Cache:
    return client.server.app[CACHE]


async def until_hot(client: TestClient, expected: Any) -> None:
    """Call until the answer comes from the instance's hot tier (no Redis round trip)."""
    near = cache_of(client).near

    async def hot() -> bool:
        hits = near.hits
        assert await call(client, "shared.version") == (expected, "HIT")
        return near.hits > hits

    await eventually(hot, what="a hit from the hot tier", timeout=5)


async def test_invalidation_reaches_the_other_instance_within_100_ms(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    a, b, _ = await start_two(aiohttp_client, make_settings(database_url=None))
    assert await call(a, "shared.version") == ({"version": 1}, "MISS")
    await until_hot(a, {"version": 1})
    await until_hot(b, {"version": 1})
    b_near = cache_of(b).near
    assert KEY in b_near.store

    assert await call(a, "shared.bump", OPERATOR_TOKEN) == (2, None)
    invalidated = time.monotonic()
    await eventually(lambda: KEY not in b_near.store, what="B's hot entry dropped", timeout=1)
    took = time.monotonic() - invalidated
    assert took < 0.1, f"{took * 1000:.1f} ms"

    assert await call(b, "shared.version") == ({"version": 2}, "MISS")
    assert await call(a, "shared.version") == ({"version": 2}, "HIT")


async def test_lost_tracking_connection_flushes_and_bypasses_until_back(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    redis_server: RedisServer,
) -> None:
    a, b, version = await start_two(aiohttp_client, make_settings(database_url=None))
    assert await call(b, "shared.version") == ({"version": 1}, "MISS")
    await until_hot(b, {"version": 1})
    cache = cache_of(b)
    tracker = cache.tracker
    assert tracker is not None and tracker.client_id is not None
    names = redis_server.cli("CLIENT", "LIST", "ID", tracker.client_id)
    assert "name=infrawatch-cache-tracking" in names

    assert redis_server.cli("CLIENT", "KILL", "ID", tracker.client_id) == 1
    await eventually(lambda: not cache.near.active, what="hot tier off", timeout=2)
    assert len(cache.near) == 0
    # While B cannot hear invalidations, A changes the value: B must read it from Redis.
    assert await call(a, "shared.bump", OPERATOR_TOKEN) == (2, None)
    # (If tracking is already back by now, it came back with an empty hot tier: same answer.)
    hits = cache.near.hits
    assert await call(b, "shared.version") == ({"version": 2}, "MISS")
    assert cache.near.hits == hits

    await eventually(lambda: cache.near.active, what="tracking back", timeout=10)
    assert (tracker.drops, tracker.connects) == (1, 2)
    await until_hot(b, {"version": 2})
    stats = (await call(b, "monitoring.cacheStats"))[0]["hot_tier"]
    assert stats["active"] is True
    assert stats["tracking"]["drops"] == 1
