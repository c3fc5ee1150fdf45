"""The sections of the dashboard, each fed by procedures called in-process through the router.

A section appears when at least one of its procedures is in the catalogue; a procedure that is
not there is simply not called (no placeholder figures). Every call of one render runs
concurrently, at most ``CONCURRENCY`` at a time, each bounded by
``DASHBOARD_SECTION_TIMEOUT``. A call that fails becomes that section's error text, and a
section whose template cannot show the data it got shows that instead: one bad source never
takes the page down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from markupsafe import Markup

from server.rpc.errors import ProcedureNotFound, RpcError
from server.rpc.router import Caller, Context, Router
from server.services import Services

log = logging.getLogger(__name__)

# Calls in flight at once for one render: enough to overlap the slow ones, few enough that a
# page view never takes more than a handful of the pools' connections.
CONCURRENCY = 4


@dataclass(frozen=True, slots=True)
class Source:
    path: str
    input: Mapping[str, Any] | None = None


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
        return tuple(source.path for source in self.sources)


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
    Section("alerts", "Alerts", (Source("alerts.list"),)),
    Section("breakers", "Circuit breakers", (Source("monitoring.circuitBreakerStatus"),)),
    Section(
        "cache",
        "Cache",
        (Source("monitoring.cacheStats"), Source("monitoring.cacheInvalidationMetrics")),
    ),
    Section("pools", "Connection pools and PgBouncer", (Source("monitoring.connectionPoolStats"),)),
    Section(
        "replicas",
        "Replicas and lag",
        (Source("database.replicaHealth"), Source("database.replicaLag")),
    ),
    Section("partitions", "Partition migration", (Source("monitoring.partitionMetrics"),)),
    Section("queries", "Query statistics", (Source("monitoring.queryStats"),)),
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
    services: Services,
    caller: Caller,
    *,
    per_call_seconds: float,
    sections: Iterable[Section] = SECTIONS,
) -> Gathered:
    """Call every procedure the present sections need, concurrently and bounded."""
    present = present_sections(router, sections)
    sources = {
        s.path: s for section in present for s in section.sources if in_catalogue(router, s.path)
    }
    limit = asyncio.Semaphore(CONCURRENCY)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(source: Source) -> Outcome:
        async with limit:
            return await _call(router, services, caller, source, per_call_seconds)

    outcomes = await asyncio.gather(*(one(s) for s in sources.values()))
    return Gathered(present, dict(zip(sources, outcomes, strict=True)), loop.time() - started)


async def _call(
    router: Router, services: Services, caller: Caller, source: Source, limit_seconds: float
) -> Outcome:
    ctx = Context(services=services, caller=caller, protocol="internal")
    try:
        async with asyncio.timeout(limit_seconds):
            return Outcome(data=await router.call(source.path, source.input, ctx))
    except RpcError as exc:
        return Outcome(error=exc.message, code=exc.code.value)
    except TimeoutError:
        return Outcome(error=f"no answer within {limit_seconds:g} s", code="TIMEOUT")
    except Exception:  # the page must render whatever one source does
        log.exception("dashboard: %s failed", source.path)
        return Outcome(error="internal error (logged on the server)", code="INTERNAL_SERVER_ERROR")


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
            "src": {p: gathered.outcomes[p] for p in section.paths if p in gathered.outcomes},
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
    outcome = src.get("alerts.list")
    if outcome is None or not outcome.ok:
        return {}
    alerts = list(outcome.data["alerts"])
    firing = [a for a in alerts if a["state"] == "firing"]
    # Critical first, then newest first as the procedure returns them (sorted() is stable).
    firing = sorted(firing, key=lambda a: a["level"] != "critical")
    resolved = [a for a in alerts if a["state"] != "firing"]
    return {
        "firing": firing,
        "resolved": resolved,
        "critical_count": sum(1 for a in firing if a["level"] == "critical"),
        "warning_count": sum(1 for a in firing if a["level"] != "critical"),
        "unacknowledged_count": sum(1 for a in firing if not a["acknowledged"]),
    }


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
