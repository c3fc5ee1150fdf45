"""Delivery figures for /metrics, pulled at scrape time from the sender's last refresh:
``infrawatch_alert_deliveries_pending{target}`` and
``infrawatch_alert_delivery_oldest_pending_seconds{target}`` (every instance's, from the
outbox). The counters of attempts (``..._sent_total``, ``..._failed_total``) are this
process's own, created in ``create_app``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.delivery.sender import Sender


class DeliveryCollector(Collector):
    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def collect(self) -> Iterable[Metric]:
        pending = GaugeMetricFamily(
            "infrawatch_alert_deliveries_pending",
            "Alert events waiting for delivery, by target (the outbox, every instance's).",
            labels=["target"],
        )
        oldest = GaugeMetricFamily(
            "infrawatch_alert_delivery_oldest_pending_seconds",
            "Age of the oldest alert event waiting for delivery, by target (0: none).",
            labels=["target"],
        )
        figures = self._sender.figures()
        now = datetime.now(UTC)
        for target in self._sender.targets:
            f = figures.get(target.name)
            pending.add_metric([target.name], f.pending if f else 0)
            age = (now - f.oldest_pending_at).total_seconds() if f and f.oldest_pending_at else 0
            oldest.add_metric([target.name], age)
        yield pending
        yield oldest
