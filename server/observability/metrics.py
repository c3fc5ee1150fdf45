"""``Metrics``: the per-app Prometheus registry every part of the service reports into.

Never the global default registry: tests build many apps, and each must have its own series.
Two ways in:

- pushed: a part creates its families through ``metrics.counter/gauge/histogram`` (or with
  ``registry=metrics.registry``) and updates them where things happen (an HTTP request, an
  RPC call, a Redis operation);
- pulled: a part adds a ``prometheus_client`` collector (``add_collector``) whose synchronous
  ``collect()`` reads figures it already holds, and, for figures that need I/O (Redis INFO,
  ``SHOW POOLS``), an awaited ``add_refresh`` hook that runs before each scrape is rendered.

Every family is named ``infrawatch_*`` in base units (``_seconds``, ``_bytes``, ``_total``);
the process and platform collectors (``process_*``, ``python_info``) keep their standard names.

``collect()`` of a pulled collector runs on the event loop, between render slices
(``exposition.py``): it must only read what it holds, never wait.

With ``serve --workers N`` (``multiprocess.py``) every worker writes its values to files and
a scrape merges them; pulled families are copied into those files too, merged per family as
``add_collector(..., merge=...)`` says.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from server.observability import multiprocess
from server.observability.exposition import Exposition, Slicer, compress, negotiate, render
from server.observability.multiprocess import DEFAULT_MERGE, PROCESS_MERGE, Merge, MergeRule

log = logging.getLogger(__name__)

PREFIX = "infrawatch"
Refresh = Callable[[], Awaitable[None]]
# Seconds; fine below 10 ms for in-memory answers, coarse above (16 sample lines per child).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# Prometheus wants base units: seconds, bytes, ratios. These suffixes name something else.
_NOT_BASE_UNITS = (
    "_ms", "_msec", "_millis", "_milliseconds", "_us", "_microseconds", "_ns", "_nanoseconds",
    "_minutes", "_hours", "_days", "_kb", "_mb", "_gb", "_kilobytes", "_megabytes",
    "_gigabytes", "_percent", "_percentage", "_pct",
)  # fmt: skip

F = TypeVar("F", bound=MetricWrapperBase)


def family_name(name: str, kind: str) -> str:
    """``name`` checked and prefixed: ``cache_hits_total`` -> ``infrawatch_cache_hits_total``.

    Raises ``ValueError`` naming the rule a name breaks.
    """
    if not _NAME.match(name):
        raise ValueError(
            f"metric name {name!r} must be lower-case words of [a-z0-9] joined by single '_'"
        )
    full = name if name.startswith(PREFIX + "_") else f"{PREFIX}_{name}"
    if kind == "counter" and not full.endswith("_total"):
        raise ValueError(f"counter {full!r} must end in _total")
    if kind != "counter" and full.endswith("_total"):
        raise ValueError(f"{kind} {full!r} must not end in _total (only counters do)")
    stem = full.removesuffix("_total")
    for suffix in _NOT_BASE_UNITS:
        if stem.endswith(suffix):
            raise ValueError(f"{full!r} is not in base units: use _seconds, _bytes or _ratio")
    return full


class _Guarded:
    """A pulled collector whose failure costs its own families, not the whole scrape."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def describe(self) -> list[Metric]:
        describe = getattr(self.collector, "describe", None)
        return list(describe() if describe is not None else self.collector.collect())

    def collect(self) -> list[Metric]:
        try:
            return list(self.collector.collect())
        except Exception:
            log.exception("metrics collector %r failed; its families are left out", self.collector)
            return []


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        multiprocess_dir: str | None = None,
        standard_collectors: bool = True,
    ) -> None:
        """``multiprocess_dir`` defaults to the directory prometheus-client writes to, when it
        runs in multiprocess mode (``multiprocess.py``); ``None`` otherwise."""
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._refreshers: list[tuple[str, Refresh]] = []
        self._pulled: list[tuple[Collector, MergeRule]] = []
        self._families: dict[str, MetricWrapperBase] = {}
        self.multiprocess_dir = multiprocess_dir or multiprocess.directory()
        self._mirror = multiprocess.Mirror() if self.multiprocess_dir else None
        if standard_collectors:
            self.add_collector(ProcessCollector(registry=None), merge=PROCESS_MERGE)
            self.add_collector(PlatformCollector(registry=None), merge="livemostrecent")

    # --- pulled figures ---

    def add_collector(self, collector: Collector, *, merge: MergeRule = DEFAULT_MERGE) -> None:
        """Register a scrape-time collector. ``merge`` says how its gauges combine over
        ``--workers`` (a mode, or a mode per family name): ``livesum`` for figures each worker
        holds a share of (its pool), ``livemax``/``livemin`` for worst/best, the default
        ``livemostrecent`` for figures every worker sees alike (replica lag, Redis INFO).

        A ``collect()`` that raises is logged and its families left out of that scrape."""
        guarded = _Guarded(collector)
        self.registry.register(guarded)
        self._pulled.append((guarded, merge))

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

    # --- pushed figures: the business-metrics API ---

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """The counter family ``infrawatch_<name>`` (``name`` ends in ``_total``), created on
        first use; asking again with the same labels returns the same family."""
        full = family_name(name, "counter")
        return self._family(
            Counter,
            full,
            lambda: Counter(full, documentation, labels, registry=self.registry),
            labels,
        )

    def gauge(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        merge: Merge = "livesum",
    ) -> Gauge:
        """A gauge family; ``merge`` is how ``--workers`` combine it (see ``add_collector``)."""
        full = family_name(name, "gauge")
        return self._family(
            Gauge,
            full,
            lambda: Gauge(
                full, documentation, labels, registry=self.registry, multiprocess_mode=merge
            ),
            labels,
        )

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        full = family_name(name, "histogram")
        return self._family(
            Histogram,
            full,
            lambda: Histogram(full, documentation, labels, registry=self.registry, buckets=buckets),
            labels,
        )

    def _family(
        self, kind: type[F], full: str, create: Callable[[], F], labels: Sequence[str]
    ) -> F:
        existing = self._families.get(full)
        if existing is None:
            family = create()
            self._families[full] = family
            return family
        if not isinstance(existing, kind) or existing._labelnames != tuple(labels):
            raise ValueError(
                f"metric {full!r} already exists as a {type(existing).__name__.lower()} "
                f"with labels {list(existing._labelnames)}"
            )
        return existing

    # --- a scrape ---

    @property
    def multiprocess(self) -> bool:
        return self.multiprocess_dir is not None

    def sync(self) -> None:
        """Copy this worker's pulled figures into the shared files (``--workers`` only)."""
        if self._mirror is not None:
            self._mirror.sync(self._pulled)

    async def sync_forever(self, interval: float) -> None:
        """Each worker's copy on an interval: the scrape may reach any other worker."""
        while True:
            try:
                self.sync()
            except Exception:
                log.exception("copying pulled metrics to the shared files failed")
            await asyncio.sleep(interval)

    async def expose(
        self,
        accept: str | None = None,
        accept_encoding: str | None = None,
        *,
        refresh_timeout: float | None = 1.0,
    ) -> Exposition:
        """Refresh awaited figures (bounded; ``None``: the caller has refreshed them), then
        render in the format ``accept`` asks for, gzipped when ``accept_encoding`` allows."""
        if refresh_timeout is not None:
            await self.refresh(refresh_timeout)
        encode, content_type = negotiate(accept)
        slicer = Slicer()
        families: Iterable[Metric]
        if self.multiprocess_dir is not None:
            self.sync()
            families = await multiprocess.merged(self.multiprocess_dir, slicer)
        else:
            families = self.registry.collect()  # lazily: collectors run between slices
        exposition = await render(families, encode, content_type, slicer=slicer)
        return await compress(exposition, accept_encoding)
