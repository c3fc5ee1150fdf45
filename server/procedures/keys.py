"""``monitoring.cacheKeyStats``: keys per namespace, estimated from a bounded SCAN sample.

Without Redis configured the answer is all zero with ``redis_configured: false``; Redis
configured but unreachable (or its ``redis-cache`` breaker open) is SERVICE_UNAVAILABLE.
"""

from __future__ import annotations

from server.collectors.redis_keys import KeyStats, KeyStatsInput, key_stats
from server.datastores.redis_gate import RedisGate
from server.errors import ErrorCode
from server.rpc.cost import Cost
from server.rpc.router import Context, Procedure, query


def procedures(redis: RedisGate) -> list[Procedure]:
    async def cache_key_stats(ctx: Context, inp: KeyStatsInput) -> KeyStats:
        return await key_stats(redis, inp)

    return [
        query(
            "monitoring.cacheKeyStats",
            cache_key_stats,
            input=KeyStatsInput,
            output=KeyStats,
            summary="Key counts per namespace (SCAN sample, never KEYS): sampled and estimated "
            "counts, share with an expiry, sampled MEMORY USAGE.",
            errors=(ErrorCode.BAD_REQUEST, ErrorCode.SERVICE_UNAVAILABLE),
            options=(Cost.EXPENSIVE,),
        ),
    ]
