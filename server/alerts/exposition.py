"""``infrawatch_alerts_firing{level}``: read at scrape time from the book's last round."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.alerts.book import AlertBook
from server.alerts.models import LEVELS


class FiringCollector(Collector):
    def __init__(self, book: AlertBook) -> None:
        self._book = book

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "infrawatch_alerts_firing",
            "Alerts firing now, by level (every instance's when the store is durable).",
            labels=["level"],
        )
        counts = self._book.firing_counts()
        for level in LEVELS:
            family.add_metric([level], counts[level])
        yield family
