"""The cache's own figures: per-namespace counters, latency histograms and rolling percentiles.

Kept by the cache on its hot path (a few integer increments and one bisect per operation) and
read by ``monitoring.cacheStats``, ``monitoring.cacheInvalidationMetrics`` and the Prometheus
collector. ``reset()`` zeroes everything (``monitoring.resetCacheMetrics``); Prometheus sees that
as a counter reset, which ``rate()`` handles.

Hot-tier hits are timed one in ``HOT_TIMING_EVERY`` (cache.py); hits are all counted. The
percentiles reuse the breakers' ``RollingWindow`` (latencies of the last
``CACHE_STATS_WINDOW`` seconds, a bounded reservoir per slice); the histograms are cumulative
since the last reset, for Prometheus.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Literal

from server.resilience.models import LatencyStats
from server.resilience.stats import RollingWindow

Operation = Literal["get", "set", "delete"]
OPERATIONS: tuple[Operation, ...] = ("get", "set", "delete")
ALL_NAMESPACES = "*"  # the namespace label of an invalidation across every namespace

# Seconds. A hot-tier hit takes microseconds, a Redis round trip a fraction of a millisecond.
BUCKETS: tuple[float, ...] = (
    0.000005,
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class NamespaceStats:
    __slots__ = (
        "coalesced",
        "deletes",
        "durations",
        "hits",
        "invalidation_failures",
        "invalidations",
        "misses",
        "name",
        "sets",
        "stale_served",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = self.misses = self.stale_served = self.coalesced = 0
        self.sets = self.deletes = 0
        self.invalidations = self.invalidation_failures = 0
        self.durations: dict[Operation, Histogram] = {op: Histogram() for op in OPERATIONS}

    @property
    def hit_rate(self) -> float | None:
        return rate(self.hits, self.hits + self.misses)


class CacheStats:
    def __init__(self, window_seconds: float) -> None:
        self.namespaces: dict[str, NamespaceStats] = {}
        self.latency = {op: RollingWindow(window_seconds) for op in OPERATIONS}
        self.since = time.time()

    def namespace(self, name: str) -> NamespaceStats:
        stats = self.namespaces.get(name)
        if stats is None:
            stats = self.namespaces[name] = NamespaceStats(name)
        return stats

    def observe(self, ns: NamespaceStats, op: Operation, start: float, now: float) -> None:
        seconds = now - start
        ns.durations[op].observe(seconds)
        self.latency[op].success(now, seconds)

    def latency_stats(self, now: float) -> dict[Operation, LatencyStats]:
        return {op: window.latency_stats(now) for op, window in self.latency.items()}

    def total(self, field: str) -> int:
        return sum(getattr(ns, field) for ns in self.namespaces.values())

    def reset(self) -> None:
        # Known namespaces stay listed (at zero): dashboards keep their rows.
        self.namespaces = {name: NamespaceStats(name) for name in self.namespaces}
        for window in self.latency.values():
            window.clear()
        self.since = time.time()


def rate(part: int, whole: int) -> float | None:
    """``part`` as a percentage of ``whole`` (0-100), ``None`` when there is no data yet."""
    return round(100.0 * part / whole, 2) if whole else None
