"""``monitoring.unifiedMetrics``: every section in one answer, with an overall status.

Each section is a contract procedure's own output, called in-process as the caller (so
``READ_TOKENS_REQUIRED`` and every collector's rules apply unchanged), all at once, each
within ``SECTION_TIMEOUT``. A section that fails is reported as its error, never fails the
whole; a procedure this build does not have is left out.

Overall status, worst wins:
- ``monitoring.unifiedHealth``'s own status and reasons (unhealthy: the primary is down);
- degraded: a section unavailable, failing or slow, or any alert firing (each one is a reason,
  critical first). Alerts never make it *unhealthy*: that word means the service cannot
  serve, as ``/health`` answers 503 for it; an alert's urgency is its level.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.alerts.book import AlertBook
from server.alerts.models import Alert, AlertQuery, Source, StoreStatus, rank
from server.rpc.cost import Cost
from server.rpc.reading import Reading, SectionError, read_all
from server.rpc.router import Context, NoInput, Procedure, query

Status = Literal["healthy", "degraded", "unhealthy"]
_RANK: dict[Status, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}

HEALTH = "monitoring.unifiedHealth"
SECTIONS: tuple[str, ...] = (
    HEALTH,
    "monitoring.circuitBreakerStatus",
    "monitoring.cacheStats",
    "monitoring.cacheInvalidationMetrics",
    "monitoring.redisHealth",
    "monitoring.queueStats",
    "monitoring.connectionPoolStats",
    "monitoring.queryStats",
    "monitoring.partitionMetrics",
    "database.replicaHealth",
    "database.replicaLag",
)
RECENT_ALERTS = 10
REASONS_PER_KIND = 20  # firing alerts named one by one in ``reasons``; the rest counted


class Section(BaseModel):
    procedure: str
    status: Literal["ok", "unavailable", "error", "timeout"]
    data: Any = Field(default=None, description="the procedure's output when status is ok")
    error: SectionError | None = None
    duration_ms: float


class LevelCounts(BaseModel):
    warning: int
    critical: int


class AlertSummary(BaseModel):
    firing: int
    by_level: LevelCounts = Field(description="firing alerts by level")
    unacknowledged: int = Field(description="firing alerts nobody has acknowledged")
    recent: list[Alert] = Field(description="the newest occurrences, firing or resolved")
    source: Source
    store: StoreStatus


class UnifiedMetrics(BaseModel):
    status: Status
    reasons: list[str]
    checked_at: datetime
    sections: dict[str, Section] = Field(description="by procedure path")
    alerts: AlertSummary


def procedures(book: AlertBook, section_timeout: float) -> list[Procedure]:
    """``monitoring.unifiedMetrics`` over the procedures of the router that runs it."""

    async def unified_metrics(ctx: Context, _: NoInput) -> UnifiedMetrics:
        assert ctx.router is not None  # set by the router that runs this call
        readings, alerts = await asyncio.gather(
            read_all(ctx.router, SECTIONS, ctx, section_timeout), _alerts(book)
        )
        sections = {
            path: _section(reading)
            for path, reading in readings.items()
            if reading.outcome != "absent"
        }
        status, reasons = _overall(sections, [r.model() for r in book.firing()])
        return UnifiedMetrics(
            status=status,
            reasons=reasons,
            checked_at=datetime.now(UTC),
            sections=sections,
            alerts=alerts,
        )

    return [
        query(
            "monitoring.unifiedMetrics",
            unified_metrics,
            output=UnifiedMetrics,
            summary="Overall status (healthy, degraded, unhealthy) with its reasons, every "
            "monitoring section (each procedure's output or its error), alert counts by level "
            "and the most recent alerts.",
            options=(Cost.EXPENSIVE,),
        )
    ]


async def _alerts(book: AlertBook) -> AlertSummary:
    page = await book.page(AlertQuery(limit=RECENT_ALERTS))
    firing = book.firing()
    counts = book.firing_counts()
    return AlertSummary(
        firing=len(firing),
        by_level=LevelCounts(**counts),
        unacknowledged=sum(1 for r in firing if not r.acknowledged),
        recent=page.alerts,
        source=page.source,
        store=book.status(),
    )


def _section(reading: Reading) -> Section:
    assert reading.outcome != "absent"
    return Section(
        procedure=reading.path,
        status=reading.outcome,
        data=reading.output,
        error=reading.error,
        duration_ms=round(reading.seconds * 1000, 3),
    )


def _overall(sections: dict[str, Section], firing: list[Alert]) -> tuple[Status, list[str]]:
    status: Status = "healthy"
    reasons: list[str] = []

    def worsen(to: Status) -> None:
        nonlocal status
        if _RANK[to] > _RANK[status]:
            status = to

    health = sections.get(HEALTH)
    if health is not None and health.status == "ok":
        worsen(health.data["status"])
        reasons.extend(health.data["reasons"])
    for section in sections.values():
        if section.status != "ok":
            worsen("degraded")
            message = section.error.message if section.error else section.status
            reasons.append(f"{section.procedure} {section.status}: {message}")
    if firing:
        worsen("degraded")
        named = sorted(firing, key=lambda a: -rank(a.level))[:REASONS_PER_KIND]
        reasons.extend(f"{a.level} alert: {a.message}" for a in named)
        if len(firing) > len(named):
            reasons.append(f"{len(firing) - len(named)} more alerts firing")
    return status, reasons
