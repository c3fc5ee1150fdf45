"""Cache procedures: statistics for everyone; invalidation and counter reset for operators."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from server.cache.cache import Cache
from server.cache.entry import clock
from server.cache.models import (
    CacheInvalidationMetrics,
    CacheStatsReport,
    InvalidateCacheInput,
    InvalidateCacheResult,
    ResetCacheMetricsResult,
    invalidation_report,
    stats_report,
)
from server.collectors.redis_info import RedisInfo, redis_info
from server.datastores.redis import RedisClient
from server.errors import ErrorCode, Unavailable
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, mutation, query

log = logging.getLogger(__name__)


def procedures(cache: Cache, redis: RedisClient | None) -> list[Procedure]:
    """The cache procedures over one app's cache (and Redis, for its INFO summary)."""

    async def cache_stats(ctx: Context, _: NoInput) -> CacheStatsReport:
        info: RedisInfo | None = None
        if redis is not None:
            try:
                info = await redis_info(redis)
            except Unavailable as exc:
                log.info("cacheStats: Redis INFO unavailable: %s", exc.message)
        return stats_report(cache, clock(), redis_available=info is not None, redis=info)

    async def cache_invalidation_metrics(ctx: Context, _: NoInput) -> CacheInvalidationMetrics:
        return invalidation_report(cache, clock(), time.time())

    async def invalidate_cache(ctx: Context, inp: InvalidateCacheInput) -> InvalidateCacheResult:
        pattern = inp.pattern or "*"
        log.warning(
            "cache invalidation by %s: namespace=%s pattern=%s",
            ctx.caller.name,
            inp.namespace,
            pattern,
        )
        deleted = await cache.invalidate(inp.namespace, pattern)
        match = cache.prefix + (pattern if inp.namespace is None else f"{inp.namespace}:{pattern}")
        return InvalidateCacheResult(
            deleted=deleted, namespace=inp.namespace, pattern=pattern, match=match
        )

    async def reset_cache_metrics(ctx: Context, _: NoInput) -> ResetCacheMetricsResult:
        stats = cache.stats
        stats.reset()
        log.warning("cache counters reset by %s", ctx.caller.name)
        return ResetCacheMetricsResult(reset_at=datetime.fromtimestamp(stats.since, UTC))

    return [
        query(
            "monitoring.cacheStats",
            cache_stats,
            output=CacheStatsReport,
            summary="Cache backend (redis/memory), hits, misses, hit rate, stale answers, GET/"
            "SET/DELETE latency, per-namespace counts, hot tier, and a summary of Redis INFO.",
            options=(Cost.CHEAP,),
        ),
        query(
            "monitoring.cacheInvalidationMetrics",
            cache_invalidation_metrics,
            output=CacheInvalidationMetrics,
            summary="Invalidations and their failures (totals, rates, per namespace), hot-tier "
            "invalidations, and GET/SET/DELETE timings.",
            options=(Cost.CHEAP,),
        ),
        mutation(
            "monitoring.invalidateCache",
            invalidate_cache,
            input=InvalidateCacheInput,
            output=InvalidateCacheResult,
            summary="Delete cached entries by namespace and/or key pattern (SCAN + UNLINK, "
            "never KEYS); returns how many were deleted.",
            errors=(ErrorCode.SERVICE_UNAVAILABLE,),
            positional=("namespace", "pattern"),
            options=(Cost.OPERATOR,),
        ),
        mutation(
            "monitoring.resetCacheMetrics",
            reset_cache_metrics,
            output=ResetCacheMetricsResult,
            summary="Zero the cache's counters and latency windows.",
            options=(Cost.OPERATOR,),
        ),
    ]
