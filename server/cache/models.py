"""What the cache procedures return, built from the cache's own figures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.cache.cache import NAMESPACE, Cache
from server.cache.stats import NamespaceStats, rate
from server.collectors.redis_info import RedisInfo
from server.glob import caller_glob
from server.resilience.models import LatencyStats


class CacheLatency(BaseModel):
    get: LatencyStats
    set: LatencyStats
    delete: LatencyStats


class NamespaceCounts(BaseModel):
    namespace: str
    hits: int
    misses: int
    hit_rate: float | None = Field(description="percent of lookups that hit (0-100)")
    stale_served: int
    coalesced: int = Field(description="misses that waited for another caller's computation")
    sets: int
    deletes: int
    invalidations: int
    invalidation_failures: int


class TrackingStatus(BaseModel):
    connected: bool
    client_id: int | None
    connects: int
    drops: int
    messages: int = Field(description="invalidation pushes received")
    last_error: str | None


class HotTierStatus(BaseModel):
    enabled: bool = Field(description="CACHE_HOT_TIER and a Redis mode that supports it")
    active: bool = Field(description="serving now: its tracking connection is up")
    entries: int
    max_entries: int
    hits: int
    evictions: int
    invalidated_keys: int
    flushes: int
    tracking: TrackingStatus | None


class MemoryFallbackStatus(BaseModel):
    entries: int
    max_entries: int
    evictions: int


SELF_SCOPE = (
    "self: infrawatch's own procedure cache, not the watched application's Redis "
    "(that is monitoring.redisHealth); these figures feed no alert rule on the watched system"
)


class CacheStatsReport(BaseModel):
    scope: Literal["self"] = Field("self", description=SELF_SCOPE)
    backend: Literal["redis", "memory"]
    enabled: bool
    redis_configured: bool
    redis_available: bool
    redis_mode: str
    hits: int
    misses: int
    hit_rate: float | None
    stale_served: int
    coalesced: int
    latency: CacheLatency
    namespaces: list[NamespaceCounts]
    hot_tier: HotTierStatus
    memory_fallback: MemoryFallbackStatus
    last_error: str | None
    since: datetime = Field(description="when the counters were last reset (or the start)")
    redis: RedisInfo | None


class NamespaceInvalidations(BaseModel):
    namespace: str
    invalidations: int
    failures: int
    failure_rate: float | None


class CacheInvalidationMetrics(BaseModel):
    scope: Literal["self"] = Field("self", description=SELF_SCOPE)
    invalidations: int
    failures: int
    failure_rate: float | None = Field(description="percent of invalidations that failed")
    invalidations_per_minute: float
    since: datetime
    namespaces: list[NamespaceInvalidations]
    hot_tier_invalidated_keys: int
    tracking_messages: int
    latency: CacheLatency


class InvalidateCacheInput(BaseModel):
    """Which keys to delete: a namespace, a glob pattern of keys, or both.

    With a namespace, ``pattern`` matches the keys inside it (default ``*``: all of them);
    without one, it matches ``<namespace>:<key>`` across every namespace.
    """

    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(default=None, pattern=f"^{NAMESPACE.pattern}$")
    pattern: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("pattern")
    @classmethod
    def _glob_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            caller_glob(value)  # ValueError with the reason (bad or too costly): invalid params
        return value

    @model_validator(mode="after")
    def _something(self) -> InvalidateCacheInput:
        if self.namespace is None and self.pattern is None:
            raise ValueError("give a namespace, a pattern, or both")
        return self


class InvalidateCacheResult(BaseModel):
    deleted: int
    namespace: str | None
    pattern: str
    match: str = Field(description="the SCAN MATCH pattern used in Redis")


class ResetCacheMetricsResult(BaseModel):
    reset_at: datetime


def _counts(ns: NamespaceStats) -> NamespaceCounts:
    return NamespaceCounts(
        namespace=ns.name,
        hits=ns.hits,
        misses=ns.misses,
        hit_rate=ns.hit_rate,
        stale_served=ns.stale_served,
        coalesced=ns.coalesced,
        sets=ns.sets,
        deletes=ns.deletes,
        invalidations=ns.invalidations,
        invalidation_failures=ns.invalidation_failures,
    )


def latency(cache: Cache, now: float) -> CacheLatency:
    return CacheLatency(**cache.stats.latency_stats(now))


def hot_tier(cache: Cache) -> HotTierStatus:
    near, tracker = cache.near, cache.tracker
    return HotTierStatus(
        enabled=tracker is not None,
        active=near.active,
        entries=len(near),
        max_entries=near.store.max_items,
        hits=near.hits,
        evictions=near.store.evictions,
        invalidated_keys=near.invalidated_keys,
        flushes=near.flushes,
        tracking=None
        if tracker is None
        else TrackingStatus(
            connected=tracker.connected,
            client_id=tracker.client_id,
            connects=tracker.connects,
            drops=tracker.drops,
            messages=tracker.messages,
            last_error=tracker.last_error,
        ),
    )


def stats_report(
    cache: Cache, now: float, *, redis_available: bool, redis: RedisInfo | None
) -> CacheStatsReport:
    stats = cache.stats
    hits, misses = stats.total("hits"), stats.total("misses")
    memory = cache.memory
    return CacheStatsReport(
        backend=cache.backend,
        enabled=cache.enabled,
        redis_configured=cache.redis is not None,
        redis_available=redis_available,
        redis_mode=cache.redis.mode if cache.redis is not None else "none",
        hits=hits,
        misses=misses,
        hit_rate=rate(hits, hits + misses),
        stale_served=stats.total("stale_served"),
        coalesced=stats.total("coalesced"),
        latency=latency(cache, now),
        namespaces=[_counts(ns) for _, ns in sorted(stats.namespaces.items())],
        hot_tier=hot_tier(cache),
        memory_fallback=MemoryFallbackStatus(
            entries=len(memory), max_entries=memory.max_items, evictions=memory.evictions
        ),
        last_error=cache.last_error,
        since=datetime.fromtimestamp(stats.since, UTC),
        redis=redis,
    )


def invalidation_report(cache: Cache, now: float, wall_now: float) -> CacheInvalidationMetrics:
    stats = cache.stats
    done, failed = stats.total("invalidations"), stats.total("invalidation_failures")
    minutes = max(wall_now - stats.since, 1e-9) / 60
    tracker = cache.tracker
    return CacheInvalidationMetrics(
        invalidations=done,
        failures=failed,
        failure_rate=rate(failed, done + failed),
        invalidations_per_minute=round(done / minutes, 3),
        since=datetime.fromtimestamp(stats.since, UTC),
        namespaces=[
            NamespaceInvalidations(
                namespace=ns.name,
                invalidations=ns.invalidations,
                failures=ns.invalidation_failures,
                failure_rate=rate(
                    ns.invalidation_failures, ns.invalidations + ns.invalidation_failures
                ),
            )
            for _, ns in sorted(stats.namespaces.items())
        ],
        hot_tier_invalidated_keys=cache.near.invalidated_keys,
        tracking_messages=tracker.messages if tracker is not None else 0,
        latency=latency(cache, now),
    )
