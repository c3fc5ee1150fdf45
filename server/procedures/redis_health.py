"""``monitoring.redisHealth``: the watched Redis, node by node (``RedisHealthCollector``).

Without Redis configured the answer is empty with ``redis_configured: false``. A node that
cannot be read is ``down`` in the answer, with the reason; the procedure itself does not fail.
"""

from __future__ import annotations

from server.collectors.redis_health import RedisHealthCollector
from server.collectors.redis_health_models import RedisHealth
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, query


def procedures(collector: RedisHealthCollector) -> list[Procedure]:
    async def redis_health(ctx: Context, _: NoInput) -> RedisHealth:
        return await collector.health()

    return [
        query(
            "monitoring.redisHealth",
            redis_health,
            output=RedisHealth,
            summary="Per Redis node (standalone; Sentinel master, replicas and sentinels; every "
            "Cluster node): role, memory against maxmemory, evictions/s, the application's "
            "keyspace hit rate over REDIS_HEALTH_WINDOW, clients, replication links and lag, "
            "SENTINEL CKQUORUM, Cluster state and slots.",
            # INFO on every node / counts over the outbox tables: coalesced and bounded.
            options=(Cost.EXPENSIVE,),
        ),
    ]
