"""Rolling statistics of one breaker: a ring of time buckets, and cumulative totals.

The hot path touches one bucket: bump a counter, add the latency to a sum and drop it into the
bucket's bounded reservoir. Sorting for percentiles happens only when a snapshot is asked for.
Buckets are keyed by ``int(now / width)``; a bucket whose key is stale is wiped when reused,
so no timer or background task is needed to age the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from server.resilience.models import BreakerTotals, LatencyStats, WindowStats


class Bucket:
    __slots__ = (
        "epoch",
        "failures",
        "latencies",
        "latency_sum",
        "rejections",
        "samples",
        "successes",
        "timeouts",
    )

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.reset(-1)

    def reset(self, epoch: int) -> None:
        self.epoch = epoch
        self.successes = self.failures = self.timeouts = 0
        self.rejections = 0
        self.samples = 0
        self.latency_sum = 0.0
        self.latencies.clear()  # reuse the list: no allocation when a bucket turns over


@dataclass(frozen=True, slots=True)
class Counts:
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    rejections: int = 0

    @property
    def calls(self) -> int:
        return self.successes + self.failures + self.timeouts

    @property
    def error_rate(self) -> float | None:
        """Failures and timeouts as a percentage of calls."""
        calls = self.calls
        return 100.0 * (self.failures + self.timeouts) / calls if calls else None


class RollingWindow:
    """The last ``seconds`` of outcomes in ``buckets`` slices; ``reservoir`` latencies per slice.

    A bucket keeps every latency in its sum and count (exact mean) but only the last
    ``reservoir`` of them for percentiles, so memory stays bounded under any load.
    """

    def __init__(self, seconds: float, buckets: int = 10, reservoir: int = 128) -> None:
        if seconds <= 0 or buckets < 1 or reservoir < 1:
            raise ValueError("a rolling window needs seconds > 0, buckets >= 1, reservoir >= 1")
        self.seconds = seconds
        self._width = seconds / buckets
        self._reservoir = reservoir
        self._buckets = [Bucket() for _ in range(buckets)]
        # Bumped by every observation: ``json`` reuses its last answer while neither this nor
        # the newest bucket has changed (a status read polled far more often than calls come).
        self._version = 0
        self._json_key: tuple[int, int] | None = None
        self._json: tuple[dict[str, Any], dict[str, Any]] = ({}, {})

    def _bucket(self, now: float) -> Bucket:
        epoch = int(now / self._width)
        bucket = self._buckets[epoch % len(self._buckets)]
        if bucket.epoch != epoch:
            bucket.reset(epoch)
        return bucket

    def _observe(self, bucket: Bucket, latency: float) -> None:
        self._version += 1
        bucket.latency_sum += latency
        n = bucket.samples
        bucket.samples = n + 1
        if n < self._reservoir:
            bucket.latencies.append(latency)
        else:  # full: overwrite the oldest, keeping the newest ``reservoir`` samples
            bucket.latencies[n % self._reservoir] = latency

    def success(self, now: float, latency: float) -> None:
        bucket = self._bucket(now)
        bucket.successes += 1
        self._observe(bucket, latency)

    def failure(self, now: float, latency: float) -> None:
        bucket = self._bucket(now)
        bucket.failures += 1
        self._observe(bucket, latency)

    def timeout(self, now: float, latency: float) -> None:
        bucket = self._bucket(now)
        bucket.timeouts += 1
        self._observe(bucket, latency)

    def rejection(self, now: float) -> None:
        self._version += 1
        self._bucket(now).rejections += 1

    def clear(self) -> None:
        self._version += 1
        for bucket in self._buckets:
            bucket.reset(-1)

    def _live(self, now: float) -> list[Bucket]:
        newest = int(now / self._width)
        oldest = newest - len(self._buckets)
        return [b for b in self._buckets if oldest < b.epoch <= newest]

    def counts(self, now: float) -> Counts:
        live = self._live(now)
        return Counts(
            successes=sum(b.successes for b in live),
            failures=sum(b.failures for b in live),
            timeouts=sum(b.timeouts for b in live),
            rejections=sum(b.rejections for b in live),
        )

    def window_stats(self, now: float) -> WindowStats:
        return WindowStats(**self.window_json(now))

    def latency_stats(self, now: float) -> LatencyStats:
        return LatencyStats(**self.latency_json(now))

    # The same figures as plain JSON (``WindowStats``, ``LatencyStats``), for the live status
    # read, which skips building models (docs/performance.md).

    def json(self, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """``window_json`` and ``latency_json`` in one pass over the live buckets; the last
        answer again (copies) while nothing was observed and no bucket aged out."""
        newest = int(now / self._width)
        key = (self._version, newest)
        if key != self._json_key:
            self._json = self._compute_json(newest)
            self._json_key = key
        window, latency = self._json
        return window.copy(), latency.copy()

    def _compute_json(self, newest: int) -> tuple[dict[str, Any], dict[str, Any]]:
        oldest = newest - len(self._buckets)
        successes = failures = timeouts = rejections = samples = 0
        latency_sum = 0.0
        live = []
        for b in self._buckets:
            if oldest < b.epoch <= newest:
                successes += b.successes
                failures += b.failures
                timeouts += b.timeouts
                rejections += b.rejections
                if b.samples:
                    samples += b.samples
                    latency_sum += b.latency_sum
                    live.append(b)
        calls = successes + failures + timeouts
        window = {
            "window_seconds": self.seconds,
            "calls": calls,
            "successes": successes,
            "failures": failures,
            "timeouts": timeouts,
            "rejections": rejections,
            "error_rate": round(100.0 * (failures + timeouts) / calls, 2) if calls else None,
        }
        if not samples:
            return window, _NO_LATENCY.copy()
        ordered = sorted(x for b in live for x in b.latencies)
        return window, {
            "samples": samples,
            "mean_ms": _ms(latency_sum / samples),
            "p50_ms": _ms(percentile(ordered, 50)),
            "p95_ms": _ms(percentile(ordered, 95)),
            "p99_ms": _ms(percentile(ordered, 99)),
        }

    def window_json(self, now: float) -> dict[str, Any]:
        newest = int(now / self._width)
        oldest = newest - len(self._buckets)
        successes = failures = timeouts = rejections = 0
        for b in self._buckets:
            if oldest < b.epoch <= newest:
                successes += b.successes
                failures += b.failures
                timeouts += b.timeouts
                rejections += b.rejections
        calls = successes + failures + timeouts
        return {
            "window_seconds": self.seconds,
            "calls": calls,
            "successes": successes,
            "failures": failures,
            "timeouts": timeouts,
            "rejections": rejections,
            "error_rate": round(100.0 * (failures + timeouts) / calls, 2) if calls else None,
        }

    def latency_json(self, now: float) -> dict[str, Any]:
        live = self._live(now)
        samples = sum(b.samples for b in live)
        if not samples:
            return _NO_LATENCY.copy()
        ordered = sorted(x for b in live for x in b.latencies)
        mean = sum(b.latency_sum for b in live) / samples
        return {
            "samples": samples,
            "mean_ms": _ms(mean),
            "p50_ms": _ms(percentile(ordered, 50)),
            "p95_ms": _ms(percentile(ordered, 95)),
            "p99_ms": _ms(percentile(ordered, 99)),
        }


_NO_LATENCY: dict[str, Any] = {
    "samples": 0,
    "mean_ms": None,
    "p50_ms": None,
    "p95_ms": None,
    "p99_ms": None,
}


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass(slots=True)
class Totals:
    """Cumulative counts since start: a window reset or an operator never clears them."""

    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    ignored: int = 0
    rejections: int = 0
    transitions: int = 0

    @property
    def calls(self) -> int:
        # Derived rather than counted, so the hot path bumps one counter per call, not two.
        return self.successes + self.failures + self.timeouts + self.ignored + self.rejections

    def model(self) -> BreakerTotals:
        return BreakerTotals(**self.json())

    def json(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "ignored": self.ignored,
            "rejections": self.rejections,
            "transitions": self.transitions,
        }
