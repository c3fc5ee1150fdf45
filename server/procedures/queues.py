"""``monitoring.queueStats``: depth of the Redis-backed job queues (BullMQ, RQ, Celery).

Without Redis configured the answer is an empty list with ``redis_configured: false``: nothing
is wrong, there is nothing to watch. Redis configured but unreachable (or its ``redis-cache``
breaker open) is SERVICE_UNAVAILABLE.
"""

from __future__ import annotations

from server.collectors.redis_queues import QueueCollector, QueueStats, QueueStatsInput
from server.errors import ErrorCode
from server.rpc.cost import Cost
from server.rpc.router import Context, Procedure, query


def procedures(queues: QueueCollector) -> list[Procedure]:
    async def queue_stats(ctx: Context, inp: QueueStatsInput) -> QueueStats:
        return await queues.stats(rediscover=inp.rediscover)

    return [
        query(
            "monitoring.queueStats",
            queue_stats,
            input=QueueStatsInput,
            output=QueueStats,
            summary="Depth and per-state job counts of BullMQ, RQ and Celery queues in Redis, "
            "named in QUEUE_NAMES or discovered by SCAN.",
            errors=(ErrorCode.SERVICE_UNAVAILABLE,),
            options=(Cost.EXPENSIVE,),
        ),
    ]
