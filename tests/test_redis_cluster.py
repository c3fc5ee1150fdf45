"""Cluster mode against a real three-master Redis Cluster on loopback: the cache's reads,
writes, counters, multi-key operations and pattern invalidation span every node."""

from __future__ import annotations

import pytest

from server.collectors.redis_info import redis_info
from server.config import Settings
from tests.cache_support import redis_of, running_cache
from tests.stack import RedisCluster

pytestmark = pytest.mark.slow

PREFIX = "infrawatch:cache:"


@pytest.fixture
def cluster_settings(redis_cluster_url: str) -> Settings:
    """The session cluster (tests/conftest.py), ok and emptied for this test."""
    return Settings(redis_url=redis_cluster_url, redis_cluster_enabled=True)


def keys_per_node(group: RedisCluster) -> list[int]:
    return [int(node.cli("DBSIZE")) for node in group.nodes]


async def test_cache_spans_every_node(
    cluster_settings: Settings, redis_cluster: RedisCluster
) -> None:
    async with running_cache(cluster_settings) as cache:
        client = redis_of(cache)
        assert client.mode == "cluster"
        assert cache.tracker is None  # CLIENT TRACKING is per node: no hot tier here

        await cache.set_many("c", {f"user:{i}": i for i in range(300)}, ttl=60)
        await cache.set_many("c", {f"order:{i}": i for i in range(200)}, ttl=60)
        spread = keys_per_node(redis_cluster)
        assert sum(spread) == 500 and all(n > 50 for n in spread), spread

        assert await cache.get("c", "user:7") == 7
        found = await cache.get_many("c", [f"user:{i}" for i in range(0, 300, 3)] + ["nope"])
        assert found == {f"user:{i}": i for i in range(0, 300, 3)}
        assert await cache.get_or_set("c", "computed", _compute, ttl=60) == {"computed": True}
        assert await cache.incr("c", "counter", 2, ttl=60) == 2
        assert await cache.incr("c", "counter", 3, ttl=60) == 5
        assert await cache.delete("c", "user:1", "user:2", "order:1", "missing") == 3

        deleted = await cache.invalidate("c", "user:*")
        assert deleted == 298
        assert sum(keys_per_node(redis_cluster)) == 500 - 3 + 2 - 298
        assert await cache.get("c", "order:5") == 5

        info = await redis_info(client)
        assert (info.mode, info.nodes, info.role) == ("cluster", 3, "master")
        assert info.keys == sum(keys_per_node(redis_cluster))
        assert cache.backend == "redis"


async def _compute() -> dict[str, bool]:
    return {"computed": True}
