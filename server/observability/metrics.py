"""``Metrics``: the per-app Prometheus registry every part of the service reports into.

Never the global default registry: tests build many apps, and each must have its own series.
Two ways in:

- pushed: a part creates its families with ``registry=metrics.registry`` and updates them
  where things happen (an HTTP request, an RPC call, a Redis operation);
- pulled: a part adds a ``prometheus_client`` collector (``add_collector``) whose synchronous
  ``collect()`` reads figures it already holds, and, for figures that need I/O (Redis INFO,
  ``SHOW POOLS``), an awaited ``add_refresh`` hook that runs before each scrape is rendered.

Every family is named ``infrawatch_*`` in base units (``_seconds``, ``_bytes``, ``_total``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PREFIX = "infrawatch"
Refresh = Callable[[], Awaitable[None]]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._refreshers: list[tuple[str, Refresh]] = []

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def add_refresh(self, name: str, refresh: Refresh) -> None:
        """``refresh()`` is awaited before every scrape; it must bound its own I/O."""
        self._refreshers.append((name, refresh))

    async def refresh(self, deadline_seconds: float) -> None:
        """Run every refresh hook concurrently; one that fails or overruns keeps its old
        figures (the scrape still answers) and is logged."""
        if not self._refreshers:
            return
        results = await asyncio.gather(
            *(asyncio.wait_for(fn(), deadline_seconds) for _, fn in self._refreshers),
            return_exceptions=True,
        )
        for (name, _), result in zip(self._refreshers, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("metrics refresh %s failed: %r", name, result)
