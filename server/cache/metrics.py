"""The cache's Prometheus families, pulled at scrape time from the counters the cache keeps.

``infrawatch_cache_hits_total{namespace}``, ``infrawatch_cache_misses_total{namespace}``,
``infrawatch_cache_operation_duration_seconds{namespace,operation}`` (histogram: get, set,
delete), ``infrawatch_cache_invalidations_total{namespace}``,
``infrawatch_cache_invalidation_failures_total{namespace}``, and ``infrawatch_redis_up`` (1/0;
absent when Redis is not configured), refreshed by one PING before each scrape.

Every ``infrawatch_cache_*`` series carries ``scope="self"``: they count infrawatch's own
procedure cache, not the application's use of Redis (``infrawatch_redis_*``).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from server.cache.cache import Cache
from server.cache.stats import OPERATIONS
from server.datastores.redis import RedisClient
from server.errors import Unavailable

SCOPE = "self"
_COUNTERS = (
    ("hits", "infrawatch_cache_hits", "Cache lookups that found a fresh value."),
    ("misses", "infrawatch_cache_misses", "Cache lookups that found no fresh value."),
    ("invalidations", "infrawatch_cache_invalidations", "Completed cache invalidations."),
    (
        "invalidation_failures",
        "infrawatch_cache_invalidation_failures",
        "Cache invalidations that could not clear Redis.",
    ),
)


class CacheCollector(Collector):
    """Register it on the app's ``Metrics`` with its ``refresh`` (one PING before a scrape)."""

    def __init__(self, cache: Cache, redis: RedisClient | None) -> None:
        self.cache = cache
        self.redis = redis
        self.redis_up: bool | None = None

    async def refresh(self) -> None:
        redis = self.redis
        if redis is None:
            self.redis_up = None
            return
        try:
            await redis.ping()
        except Unavailable:
            self.redis_up = False
        else:
            self.redis_up = True

    def collect(self) -> Iterator[Metric]:
        namespaces = list(self.cache.stats.namespaces.values())
        for field, name, doc in _COUNTERS:
            family = CounterMetricFamily(
                name, f"infrawatch's own procedure cache: {doc}", labels=["namespace", "scope"]
            )
            for ns in namespaces:
                family.add_metric([ns.name, SCOPE], getattr(ns, field))
            yield family
        durations = HistogramMetricFamily(
            "infrawatch_cache_operation_duration_seconds",
            "infrawatch's own procedure cache: duration of its operations, hot tier and Redis "
            "alike.",
            labels=["namespace", "operation", "scope"],
        )
        for ns in namespaces:
            for op in OPERATIONS:
                histogram = ns.durations[op]
                durations.add_metric(
                    [ns.name, op, SCOPE], histogram.cumulative(), sum_value=histogram.total
                )
        yield durations
        if self.redis is not None:
            up = GaugeMetricFamily("infrawatch_redis_up", "1 when Redis answered PING at scrape.")
            # Before any refresh ran, the cache's own view of its last Redis call.
            answered = self.redis_up
            if answered is None:
                answered = not self.cache.degraded
            up.add_metric([], 1.0 if answered else 0.0)
            yield up
