"""``infrawatch_http_*``: an aiohttp middleware counting and timing every request.

Labels stay bounded: ``route`` is the matched resource's template (``/trpc/{path}``, never
``/trpc/monitoring.cacheStats``), every path no route matches shares ``unmatched``, and a
method outside the standard set is ``other``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from server.observability.metrics import Metrics

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def method_label(request: web.Request) -> str:
    return request.method if request.method in _METHODS else "other"


class HttpMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.requests = metrics.counter(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
        )
        self.duration = metrics.histogram(
            "http_request_duration_seconds",
            "Time from routing an HTTP request to its handler returning, by method and route.",
            ("method", "route"),
        )
        # Label lookups take a lock and build tuples; the bounded children are kept here.
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def middleware(self) -> Middleware:
        """The aiohttp middleware (a marked function: aiohttp takes a bare callable, such as a
        bound method, for an old-style middleware factory)."""

        @web.middleware
        async def instrument(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                self._observe(request, exc.status, started)
                raise
            except Exception:
                self._observe(request, 500, started)  # aiohttp answers an escaped error 500
                raise
            self._observe(request, response.status, started)
            return response

        return instrument

    def _observe(self, request: web.Request, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        method, route = method_label(request), route_label(request)
        key = (method, route, status)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts[key] = self.requests.labels(method, route, str(status))
        counter.inc()
        timer = self._timers.get((method, route))
        if timer is None:
            timer = self._timers[(method, route)] = self.duration.labels(method, route)
        timer.observe(elapsed)
