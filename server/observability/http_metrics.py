"""``infrawatch_http_requests_total``: every HTTP response, counted as it is prepared;
``infrawatch_http_request_duration_seconds``: how long each request took, by method, route
template and status class, timed by aiohttp's access-log hook.

Labels stay bounded: ``route`` is the matched resource's template (``/trpc/{path}``, never
``/trpc/monitoring.cacheStats``), every path no route matches shares ``unmatched``, and a
method outside the standard set is ``other``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
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


class HttpMetrics:
    """Counts every response as it is prepared (``on_response_prepare``), not in a middleware:
    an aiohttp middleware costs about 8 µs a request, a sixth of a cached hit's whole budget,
    and the signal is dispatched anyway. The counts are plain numbers on the loop, keyed by the
    matched resource itself (its template is read at scrape time), for the reason
    ``rpc_metrics`` gives. Durations are ``HttpDurations``' (aiohttp's own timer, below).
    """

    def __init__(self, metrics: Metrics) -> None:
        self._counts: defaultdict[tuple[str, AbstractResource | None, int], int] = defaultdict(int)
        metrics.add_collector(self)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        method = request.method
        if method not in _METHODS:
            method = "other"  # a client may send any token as a method: keep the label set
        self._counts[(method, request.match_info.route.resource, response.status)] += 1

    def describe(self) -> list[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            REQUESTS,
            "HTTP responses, by method, route template and status.",
            labels=("method", "route", "status"),
        )

    def collect(self) -> Iterator[Metric]:
        # Two resources may share a template (one path added twice apart): one series each.
        series: dict[tuple[str, str, str], int] = {}
        for (method, resource, status), count in list(self._counts.items()):
            labels = (method, route_label(resource), str(status))
            series[labels] = series.get(labels, 0) + count
        family = self._family()
        for labels, count in series.items():
            family.add_metric(labels, count)
        yield family


# The runner (server/runner.py) asks the app for the access-log class that times requests.
ACCESS_LOG_CLASS = web.AppKey("access_log_class", type)


class HttpDurations:
    """``infrawatch_http_request_duration_seconds``, fed by aiohttp's access-log hook.

    aiohttp times a request itself when an access logger is enabled (from the parsed request to
    the response written) and hands the duration to ``AbstractAccessLogger.log``: no middleware
    (about 8 µs a request) and no second clock read. The hook adds one row update to a plain
    table on the loop, as ``rpc_metrics`` does: [seconds summed, count per bucket], keyed by
    (method, matched route, status class); labels are made at scrape time. A request its
    HTTP parser refused (an unknown method, an over-long line) is not timed: aiohttp does not
    log it.
    """

    def __init__(self, metrics: Metrics, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = buckets
        # prometheus-client leaves floatToGoString untyped; it returns the label text.
        self._les: list[str] = [floatToGoString(b) for b in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        # (method, route, status class) -> [seconds summed, count per bucket]
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

        class DurationLog(AbstractAccessLogger):
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
                key = (method, route, response._status // 100)
                row = table.get(key)
                if row is None:
                    row = table[key] = [0.0] * width
                row[0] += time
                row[bisect_left(bounds, time) + 1] += 1

        return DurationLog

    def describe(self) -> list[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> HistogramMetricFamily:
        return HistogramMetricFamily(
            DURATION,
            "HTTP request duration (request parsed to response written), by method, route "
            "template and status class.",
            labels=("method", "route", "status"),
        )

    def collect(self) -> Iterator[Metric]:
        merged: dict[tuple[str, str, str], list[float]] = {}
        for (method, route, status_class), row in list(self._table.items()):
            resource = None if route is None else route.resource
            labels = (method, route_label(resource), f"{status_class}xx")
            total = merged.get(labels)
            if total is None:
                merged[labels] = list(row)
            else:
                for i, value in enumerate(row):
                    total[i] += value
        family = self._family()
        for labels, row in merged.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(self._les, row[1:], strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(labels, buckets, row[0])
        yield family
