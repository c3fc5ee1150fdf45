"""``infrawatch_http_requests_total`` (every HTTP response, by method, route template and
status) and ``infrawatch_http_request_duration_seconds`` (how long each took, by method, route
template and status class), both fed by aiohttp's access-log hook.

Labels stay bounded: ``route`` is the matched resource's template (``/trpc/{path}``, never
``/trpc/monitoring.cacheStats``), every path no route matches shares ``unmatched``, and a
method outside the standard set is ``other``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from server.observability.metrics import LATENCY_BUCKETS, Metrics, family_name

UNMATCHED = "unmatched"
REQUESTS = family_name("http_requests_total", "counter")
DURATION = family_name("http_request_duration_seconds", "histogram")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(resource: AbstractResource | None) -> str:
    return UNMATCHED if resource is None else resource.canonical


# The runner (server/runner.py) asks the app for the access-log class that counts and times
# requests; a test server is given it the same way (``AppRunner(access_log_class=...)``).
ACCESS_LOG_CLASS = web.AppKey("access_log_class", type)


class HttpMetrics:
    """Both HTTP families, fed by aiohttp's access-log hook.

    aiohttp times a request itself when an access logger is enabled (from the parsed request to
    the response written) and hands the duration to ``AbstractAccessLogger.log``, once per
    response, also for a response it made itself (404, 405) or a handler's failure (500). The
    hook adds one row update to a plain table on the loop, as ``rpc_metrics`` does: [seconds
    summed, count per bucket], keyed by (method, matched route, status); labels are made at
    scrape time, where the counter sums a row's buckets and the histogram merges the statuses
    of one class. No middleware (about 8 µs a request) and no ``on_response_prepare`` receiver:
    the counter was one, and it cost a cached call about 10,800 instructions a request
    (callgrind, docs/performance.md), more than the hook does for both families. A request its
    HTTP parser refused (an unknown method, an over-long line) is not counted: aiohttp does
    not log it.
    """

    def __init__(self, metrics: Metrics, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = buckets
        # prometheus-client leaves floatToGoString untyped; it returns the label text.
        self._les: list[str] = [floatToGoString(b) for b in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        # (method, route, status) -> [seconds summed, count per bucket]
        self._table: dict[tuple[str, AbstractRoute | None, int], list[float]] = {}
        metrics.add_collector(self)

    def access_log_class(self) -> type[AbstractAccessLogger]:
        """The class to give ``AppRunner(access_log_class=...)``: its ``log`` is the hot path.

        It reads aiohttp's fields (``_method``, ``_match_info._route``, ``_status``) rather
        than their properties: each property costs a Python call, and the three of them took
        the hook from about 0.4 µs to over 1 µs a request (``bench/bench_http_duration.py``).
        tests/test_http_duration.py fails if aiohttp renames them. The key holds the route;
        its resource's template is read at scrape time.
        """
        table = self._table
        width = len(self._bounds) + 2
        bounds = self._bounds

        class RequestLog(AbstractAccessLogger):
            __slots__ = ()

            def log(
                self, request: web.BaseRequest, response: web.StreamResponse, time: float
            ) -> None:
                method = request._method
                if method not in _METHODS:
                    method = "other"  # any token a client sends: keep the label set bounded
                try:
                    route = request._match_info._route  # type: ignore[attr-defined]
                except AttributeError:  # refused by the HTTP parser: never routed
                    route = None
                key = (method, route, response._status)
                row = table.get(key)
                if row is None:
                    row = table[key] = [0.0] * width
                row[0] += time
                row[bisect_left(bounds, time) + 1] += 1

        return RequestLog

    def describe(self) -> list[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(
                REQUESTS,
                "HTTP responses, by method, route template and status.",
                labels=("method", "route", "status"),
            ),
            HistogramMetricFamily(
                DURATION,
                "HTTP request duration (request parsed to response written), by method, route "
                "template and status class.",
                labels=("method", "route", "status"),
            ),
        )

    def collect(self) -> Iterator[Metric]:
        # Two routes may share a template (one path added twice apart): their rows add up.
        counts: dict[tuple[str, str, str], float] = {}
        merged: dict[tuple[str, str, str], list[float]] = {}
        for (method, route, status), row in list(self._table.items()):
            template = route_label(None if route is None else route.resource)
            exact = (method, template, str(status))
            counts[exact] = counts.get(exact, 0) + sum(row[1:])
            labels = (method, template, f"{status // 100}xx")
            total = merged.get(labels)
            if total is None:
                merged[labels] = list(row)
            else:
                for i, value in enumerate(row):
                    total[i] += value
        requests, durations = self._families()
        for exact, count in counts.items():
            requests.add_metric(exact, count)
        for labels, row in merged.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(self._les, row[1:], strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            durations.add_metric(labels, buckets, row[0])
        yield requests
        yield durations
