"""``infrawatch_queue_depth{queue,kind,state}``: queue depths for Prometheus, read at scrape time.

``collect()`` is synchronous, so the figures come from an awaited refresh hook that runs before
each scrape is rendered (``Metrics.add_refresh``). A depth that could not be read is dropped,
not repeated: a stale figure would look like a healthy, unchanging queue.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server.collectors.queue_layout import BULLMQ_PREFIX
from server.collectors.redis_queues import QueueCollector, QueueStats
from server.observability.metrics import PREFIX, Metrics

NAME = f"{PREFIX}_queue_depth"
HELP = "Jobs per state of a Redis-backed job queue (BullMQ, RQ, Celery), read at scrape time."
LABELS = ("queue", "kind", "state")


class QueueDepthGauges(Collector):
    def __init__(self) -> None:
        self._samples: list[tuple[str, str, str, int]] = []

    def update(self, stats: QueueStats) -> None:
        self._samples = [
            (_label(q.name, q.key_prefix), q.kind, state, count)
            for q in stats.queues
            for state, count in sorted(q.states.items())
        ]

    def clear(self) -> None:
        self._samples = []

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without describe(), registering would call collect() before any refresh ran.
        yield GaugeMetricFamily(NAME, HELP, labels=LABELS)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, HELP, labels=LABELS)
        for queue, kind, state, count in self._samples:
            family.add_metric([queue, kind, state], count)
        yield family


def export_queue_depths(metrics: Metrics, collector: QueueCollector) -> None:
    """Export the collector's depths to ``metrics`` (no I/O until a scrape)."""
    gauges = QueueDepthGauges()

    async def refresh() -> None:
        try:
            stats = await collector.stats()
        except BaseException:
            gauges.clear()
            raise
        gauges.update(stats)

    metrics.add_collector(gauges)
    metrics.add_refresh("queues", refresh)


def _label(name: str, prefix: str | None) -> str:
    # Two BullMQ queues of one name under different prefixes must stay two series.
    return name if prefix in (None, BULLMQ_PREFIX) else f"{prefix}:{name}"
