"""``infrawatch_rpc_*``: every procedure call, whichever wire adapter made it.

The router calls ``RpcMetrics.observe`` once per call (``Router(observer=...)``), so JSON-RPC,
tRPC and in-process (dashboard) calls are all counted without the adapters knowing. Labels are
bounded: ``procedure`` is a catalogue path or ``unknown``, ``protocol`` one of three, ``code``
``OK`` or one of the tRPC code names.

The figures are plain numbers on the event loop, turned into families when a scrape pulls them
(``collect``): a prometheus-client counter and histogram take a lock per update, and the two of
them cost a cached hit through ``POST /rpc`` about a tenth of its throughput
(``docs/performance.md``). One table, keyed by (procedure, protocol, code), holds each key's
duration buckets; the call and error counts are those buckets' totals, so a call costs one dict
lookup and two list updates.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from server.errors import ErrorCode
from server.observability.metrics import LATENCY_BUCKETS, Metrics, family_name
from server.rpc.router import Transport

OK = "OK"
CALLS = family_name("rpc_calls_total", "counter")
DURATION = family_name("rpc_call_duration_seconds", "histogram")
ERRORS = family_name("rpc_errors_total", "counter")


class RpcMetrics:
    def __init__(self, metrics: Metrics, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = buckets
        # prometheus-client leaves floatToGoString untyped; it returns the label text.
        self._les: list[str] = [floatToGoString(b) for b in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        # key -> [seconds summed, count in bucket 0, ..., count above the last bound]
        self._table: dict[tuple[str, Transport, ErrorCode | None], list[float]] = {}
        metrics.add_collector(self)

    def observe(
        self, procedure: str, protocol: Transport, code: ErrorCode | None, seconds: float
    ) -> None:
        key = (procedure, protocol, code)
        row = self._table.get(key)
        if row is None:
            row = self._table[key] = [0.0] * (len(self._bounds) + 2)
        row[0] += seconds
        row[bisect_left(self._bounds, seconds) + 1] += 1

    def describe(self) -> list[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(CALLS, _CALLS_HELP, labels=("procedure", "protocol", "code")),
            HistogramMetricFamily(DURATION, _DURATION_HELP, labels=("procedure", "protocol")),
            CounterMetricFamily(ERRORS, _ERRORS_HELP, labels=("procedure", "protocol", "code")),
        )

    def collect(self) -> Iterator[Metric]:
        calls, duration, errors = self._families()
        # A histogram child is per (procedure, protocol): the codes' buckets add up.
        merged: dict[tuple[str, str], list[float]] = {}
        for (procedure, protocol, code), row in list(self._table.items()):
            count = sum(row[1:])
            name = OK if code is None else code.value
            calls.add_metric((procedure, protocol, name), count)
            if code is not None:
                errors.add_metric((procedure, protocol, name), count)
            total = merged.get((procedure, protocol))
            if total is None:
                merged[(procedure, protocol)] = list(row)
            else:
                for i, value in enumerate(row):
                    total[i] += value
        for labels, row in merged.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(self._les, row[1:], strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            duration.add_metric(labels, buckets, row[0])
        yield calls
        yield duration
        yield errors


_CALLS_HELP = "Procedure calls, by procedure, protocol and outcome (OK or the tRPC error code)."
_DURATION_HELP = "Time a procedure call took in the router (validation, middleware, handler)."
_ERRORS_HELP = "Procedure calls that ended in an error, by procedure, protocol and tRPC code."
