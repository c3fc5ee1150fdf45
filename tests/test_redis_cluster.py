"""Cluster mode against a real three-master Redis Cluster on loopback: the cache's reads,
writes and pattern invalidation span every node."""

from __future__ import annotations

import orjson
import pytest

from server.collectors.redis_info import redis_info
from server.config import Settings
from tests.cache_support import redis_of, returns, running_cache
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

        for kind, count in (("user", 300), ("order", 200)):
            for i in range(count):
                first = await cache.fetch("c", f"{kind}:{i}", returns(i), ttl=60)
                assert first.status == "MISS"
        spread = keys_per_node(redis_cluster)
        assert sum(spread) == 500 and all(n > 50 for n in spread), spread

        found = [await cache.fetch("c", f"user:{i}", returns(None)) for i in range(0, 300, 3)]
        assert [(f.value, f.status) for f in found] == [(i, "HIT") for i in range(0, 300, 3)]
        computed = await cache.fetch("c", "computed", returns({"computed": True}), ttl=60)
        assert (computed.value, computed.status) == ({"computed": True}, "MISS")
        raw = await client.execute(client.raw.get, f"{PREFIX}c:computed")
        assert raw is not None and orjson.loads(raw)[3] == {"computed": True}
        assert 0 < await client.execute(client.raw.pttl, f"{PREFIX}c:computed") <= 60_000

        deleted = await cache.invalidate("c", "user:*")
        assert deleted == 300
        assert sum(keys_per_node(redis_cluster)) == 500 + 1 - 300
        order = await cache.fetch("c", "order:5", returns(None))
        assert (order.value, order.status) == (5, "HIT")

        info = await redis_info(client)
        assert (info.mode, info.nodes, info.role) == ("cluster", 3, "master")
        assert info.keys == sum(keys_per_node(redis_cluster))
        assert cache.backend == "redis"
