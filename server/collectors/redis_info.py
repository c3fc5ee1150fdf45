"""``redis_info(client)``: the summary of Redis ``INFO`` that ``monitoring.cacheStats`` shows.

In Cluster mode ``INFO`` comes from every primary: memory, clients and counters are summed,
version and eviction policy are the first node's, and ``nodes`` says how many were asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from server.datastores.redis import RedisClient


class RedisInfo(BaseModel):
    mode: str
    version: str | None
    role: str | None
    nodes: int
    uptime_seconds: int | None
    used_memory_bytes: int | None
    maxmemory_bytes: int | None  # 0: no limit
    eviction_policy: str | None
    evicted_keys: int | None
    expired_keys: int | None
    keyspace_hits: int | None
    keyspace_misses: int | None
    keyspace_hit_rate: float | None
    connected_clients: int | None
    connected_replicas: int | None
    keys: int | None


async def redis_info(client: RedisClient) -> RedisInfo:
    """Raises ``Unavailable`` when Redis cannot be asked."""
    info = await client.info()
    if client.mode == "cluster":
        return summarize(list(info.values()), client.mode)
    return summarize([info], client.mode)


def summarize(nodes: list[Mapping[str, Any]], mode: str) -> RedisInfo:
    first = nodes[0] if nodes else {}

    def total(name: str) -> int | None:
        values = [int(n[name]) for n in nodes if name in n]
        return sum(values) if values else None

    hits, misses = total("keyspace_hits"), total("keyspace_misses")
    looked = (hits or 0) + (misses or 0)
    return RedisInfo(
        mode=mode,
        version=_text(first.get("redis_version")),
        role=_text(first.get("role")),
        nodes=len(nodes),
        uptime_seconds=_int(first.get("uptime_in_seconds")),
        used_memory_bytes=total("used_memory"),
        maxmemory_bytes=total("maxmemory"),
        eviction_policy=_text(first.get("maxmemory_policy")),
        evicted_keys=total("evicted_keys"),
        expired_keys=total("expired_keys"),
        keyspace_hits=hits,
        keyspace_misses=misses,
        keyspace_hit_rate=round(100.0 * (hits or 0) / looked, 2) if looked else None,
        connected_clients=total("connected_clients"),
        connected_replicas=total("connected_slaves"),
        keys=sum(_keys(n) for n in nodes) if nodes else None,
    )


def _keys(node: Mapping[str, Any]) -> int:
    # INFO's keyspace section: db0:keys=12,expires=3,avg_ttl=0, which redis-py parses to a dict.
    return sum(
        int(v.get("keys", 0))
        for k, v in node.items()
        if k.startswith("db") and k[2:].isdigit() and isinstance(v, Mapping)
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
