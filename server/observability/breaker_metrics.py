"""``infrawatch_breaker_*``: read from the app's breakers at scrape time (a pulled collector).

Nothing is counted twice: ``Breaker.totals`` already holds the cumulative counts, so the
collector reads them, and ``Breaker.state`` gives the state. ``collect()`` only reads.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from server.observability.multiprocess import Merge
from server.resilience.models import BreakerState
from server.resilience.registry import BreakerRegistry

# The contract's encoding: 0 closed, 1 open (or forced open), 2 half-open; disabled reads 0
# (calls pass, as when closed).
STATE_VALUE = {
    BreakerState.CLOSED: 0.0,
    BreakerState.OPEN: 1.0,
    BreakerState.FORCED_OPEN: 1.0,
    BreakerState.HALF_OPEN: 2.0,
    BreakerState.DISABLED: 0.0,
}
# Over --workers, the highest state of any worker: a breaker open anywhere shows.
MERGE: Merge = "livemax"


class BreakerCollector:
    def __init__(self, breakers: BreakerRegistry) -> None:
        self._breakers = breakers

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        state, failures, rejections, timeouts = self._families()
        for breaker in self._breakers.all():
            labels = [breaker.name]
            totals = breaker.totals
            state.add_metric(labels, STATE_VALUE[breaker.state])
            failures.add_metric(labels, totals.failures)
            rejections.add_metric(labels, totals.rejections)
            timeouts.add_metric(labels, totals.timeouts)
        yield from (state, failures, rejections, timeouts)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, CounterMetricFamily, CounterMetricFamily, CounterMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                "infrawatch_breaker_state",
                "Circuit breaker state: 0 closed (or disabled), 1 open (or forced open), "
                "2 half-open.",
                labels=["breaker"],
            ),
            CounterMetricFamily(
                "infrawatch_breaker_failures_total",
                "Calls through the breaker that failed (timeouts not included).",
                labels=["breaker"],
            ),
            CounterMetricFamily(
                "infrawatch_breaker_rejections_total",
                "Calls the breaker refused at once because it was open.",
                labels=["breaker"],
            ),
            CounterMetricFamily(
                "infrawatch_breaker_timeouts_total",
                "Calls through the breaker that exceeded its call timeout.",
                labels=["breaker"],
            ),
        )
