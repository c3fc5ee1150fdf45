"""The sections of the dashboard, each fed by procedures called in-process through the router.

A section appears when at least one of its procedures is in the catalogue; a procedure that is
not there is simply not called (no stand-in figures). Calls run concurrently, at most
``CONCURRENCY`` at a time, each bounded by ``SECTION_TIMEOUT``. A call that fails
becomes that section's error text, and a section whose template cannot show the data it got
shows that instead: one bad source never takes the page down.

``monitoring.unifiedMetrics`` (the status banner) itself reads every section's procedure and
returns each answer under ``sections``; where it did, the page shows that same answer rather
than calling the procedure a second time, so the banner and the sections below it describe
one and the same reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from markupsafe import Markup

from server.errors import ProcedureNotFound
from server.rpc.reading import read
from server.rpc.router import Caller, Context, Router

log = logging.getLogger(__name__)

# Calls in flight at once for one render: enough to overlap the slow ones, few enough that a
# page view never takes more than a handful of the pools' connections.
CONCURRENCY = 4


UNIFIED = "monitoring.unifiedMetrics"


@dataclass(frozen=True, slots=True)
class Source:
    path: str
    input: Mapping[str, Any] | None = None
    name: str = ""  # tells two calls of one procedure apart; the path by default

    @property
    def key(self) -> str:
        return self.name or self.path


@dataclass(frozen=True, slots=True)
class Section:
    id: str
    title: str
    sources: tuple[Source, ...]

    @property
    def template(self) -> str:
        return f"sections/{self.id}.html"

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(source.path for source in self.sources))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(source.key for source in self.sources)


@dataclass(slots=True)
class Outcome:
    """What one procedure gave: its data, or the error text to show in its place."""

    data: Any = None
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


SECTIONS: tuple[Section, ...] = (
    Section(
        "status",
        "Status",
        (Source("monitoring.unifiedMetrics"), Source("monitoring.unifiedHealth")),
    ),
    Section(
        "alerts",
        "Alerts",
        (
            # Firing ones on their own: a burst of resolved alerts must not page them away.
            Source("alerts.list", {"state": "firing", "limit": 200}, "alerts.firing"),
            Source("alerts.list", {"state": "resolved", "limit": 10}, "alerts.resolved"),
        ),
    ),
    Section("deliveries", "Alert delivery", (Source("alerts.deliveries"),)),
    Section("breakers", "Circuit breakers", (Source("monitoring.circuitBreakerStatus"),)),
    Section("redis", "Redis health", (Source("monitoring.redisHealth"),)),
    Section(
        "cache",
        "infrawatch's own procedure cache",
        (Source("monitoring.cacheStats"), Source("monitoring.cacheInvalidationMetrics")),
    ),
    Section("activity", "Server activity: every client", (Source("database.activity"),)),
    Section(
        "top_queries",
        "Top queries: the application's statements",
        (Source("database.topQueries", {"order_by": "time_per_s", "limit": 15}),),
    ),
    Section(
        "pools",
        "infrawatch's own connection pools, and PgBouncer",
        (Source("monitoring.connectionPoolStats"),),
    ),
    Section(
        "replicas",
        "Replicas and lag",
        (Source("database.replicaHealth"), Source("database.replicaLag")),
    ),
    Section("partitions", "Partition migration", (Source("monitoring.partitionMetrics"),)),
    Section("queries", "infrawatch's own query statistics", (Source("monitoring.queryStats"),)),
    Section("queues", "Job queues", (Source("monitoring.queueStats"),)),
)


def in_catalogue(router: Router, path: str) -> bool:
    try:
        router.lookup(path, "internal")
    except ProcedureNotFound:
        return False
    return True


def present_sections(router: Router, sections: Iterable[Section] = SECTIONS) -> list[Section]:
    """The sections with at least one procedure in the catalogue, in page order."""
    return [s for s in sections if any(in_catalogue(router, p) for p in s.paths)]


@dataclass(slots=True)
class Gathered:
    sections: list[Section]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0


async def gather(
    router: Router,
    caller: Caller,
    *,
    per_call_seconds: float,
    sections: Iterable[Section] = SECTIONS,
) -> Gathered:
    """Call every procedure the present sections need, concurrently and bounded."""
    present = present_sections(router, sections)
    sources = {
        s.key: s for section in present for s in section.sources if in_catalogue(router, s.path)
    }
    limit = asyncio.Semaphore(CONCURRENCY)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def run(batch: list[Source]) -> dict[str, Outcome]:
        async def one(source: Source) -> Outcome:
            async with limit:
                return await _call(router, caller, source, per_call_seconds)

        results = await asyncio.gather(*(one(s) for s in batch))
        return {s.key: outcome for s, outcome in zip(batch, results, strict=True)}

    outcomes: dict[str, Outcome] = {}
    if UNIFIED in sources:
        # First the unified reading and what it cannot hold (calls with an input)...
        first = [s for s in sources.values() if s.path == UNIFIED or s.input is not None]
        outcomes = await run(first)
        for key, source in sources.items():
            reused = _from_unified(outcomes[UNIFIED], source)
            if key not in outcomes and reused is not None:
                outcomes[key] = reused
    # ...then whatever it did not answer.
    outcomes |= await run([s for k, s in sources.items() if k not in outcomes])
    return Gathered(present, outcomes, loop.time() - started)


def _from_unified(unified: Outcome, source: Source) -> Outcome | None:
    """``source``'s answer as ``monitoring.unifiedMetrics`` read it, if it holds one."""
    if not unified.ok or source.input is not None or not isinstance(unified.data, dict):
        return None
    found = unified.data.get("sections")
    entry = found.get(source.path) if isinstance(found, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("status"), str):
        return None
    if entry["status"] == "ok":
        return Outcome(data=entry.get("data"))
    raw_error = entry.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    return Outcome(
        error=str(error.get("message") or entry["status"]), code=error.get("code") or None
    )


async def _call(router: Router, caller: Caller, source: Source, limit_seconds: float) -> Outcome:
    ctx = Context(caller=caller, protocol="internal")
    reading = await read(router, source.path, ctx, limit_seconds, source.input)
    if reading.error is not None:
        return Outcome(error=reading.error.message, code=reading.error.code)
    return Outcome(data=reading.output)


@dataclass(frozen=True, slots=True)
class Rendered:
    section: Section
    html: Markup


def render(
    env: jinja2.Environment, gathered: Gathered, context: Mapping[str, Any]
) -> list[Rendered]:
    """Each present section as HTML; a template that cannot show its data says so instead."""
    out = []
    for section in gathered.sections:
        values = {
            **context,
            "section": section,
            "src": {k: gathered.outcomes[k] for k in section.keys if k in gathered.outcomes},
        }
        out.append(Rendered(section, _render_one(env, section, values)))
    return out


def _render_one(env: jinja2.Environment, section: Section, values: Mapping[str, Any]) -> Markup:
    try:
        prepare = PREPARE.get(section.id)
        extra = prepare(values["src"]) if prepare else {}
        return Markup(env.get_template(section.template).render({**values, **extra}))  # noqa: S704
    except Exception as exc:  # a shape the template does not know: show it, keep the page
        log.exception("dashboard: section %s could not be rendered", section.id)
        broken = env.get_template("sections/broken.html")
        return Markup(  # noqa: S704 - rendered by an autoescaping template
            broken.render({**values, "problem": f"{type(exc).__name__}: {exc}"})
        )


def _alerts_view(src: Mapping[str, Outcome]) -> dict[str, Any]:
    firing_page = _page(src.get("alerts.firing"))
    resolved_page = _page(src.get("alerts.resolved"))
    # Critical first, then newest first as the procedure returns them (sorted() is stable).
    firing = sorted(
        (a for a in firing_page.get("alerts", ()) if a["state"] == "firing"),
        key=lambda a: a["level"] != "critical",
    )
    return {
        "firing_page": firing_page,
        "firing": firing,
        "resolved": [a for a in resolved_page.get("alerts", ()) if a["state"] != "firing"],
        "critical_count": sum(1 for a in firing if a["level"] == "critical"),
        "warning_count": sum(1 for a in firing if a["level"] != "critical"),
        "unacknowledged_count": sum(1 for a in firing if not a["acknowledged"]),
    }


def _page(outcome: Outcome | None) -> dict[str, Any]:
    return outcome.data if outcome is not None and outcome.ok else {}


def _replicas_view(src: Mapping[str, Outcome]) -> dict[str, Any]:
    """One row per replica from both procedures, matched by name."""
    rows: dict[str, dict[str, Any]] = {}
    for path, key in (("database.replicaHealth", "health"), ("database.replicaLag", "lag")):
        outcome = src.get(path)
        if outcome is not None and outcome.ok:
            for replica in outcome.data["replicas"]:
                rows.setdefault(replica["name"], {"name": replica["name"]})[key] = replica
    return {"replicas": list(rows.values())}


PREPARE: dict[str, Callable[[Mapping[str, Outcome]], dict[str, Any]]] = {
    "alerts": _alerts_view,
    "replicas": _replicas_view,
}
