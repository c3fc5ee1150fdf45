"""``monitoring.unifiedHealth``: is the primary reachable, is Redis, and how fast they answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from server.rpc.errors import RpcError
from server.rpc.router import Context, NoInput, Procedure, query

Status = Literal["healthy", "degraded", "unhealthy"]


class ComponentHealth(BaseModel):
    name: str
    status: Literal["up", "down", "not_configured"]
    latency_ms: float | None = None
    error: str | None = None


class UnifiedHealth(BaseModel):
    status: Status
    reasons: list[str]
    components: list[ComponentHealth]
    checked_at: datetime
    uptime_seconds: float


async def _probe(name: str, ping: Callable[[], Awaitable[float]] | None) -> ComponentHealth:
    if ping is None:
        return ComponentHealth(name=name, status="not_configured")
    try:
        seconds = await ping()
    except RpcError as exc:
        return ComponentHealth(name=name, status="down", error=exc.message)
    return ComponentHealth(name=name, status="up", latency_ms=round(seconds * 1000, 3))


def overall(components: list[ComponentHealth]) -> tuple[Status, list[str]]:
    """Worst wins: primary down is unhealthy; Redis down only degrades (the cache falls back)."""
    reasons = [f"{c.name} is down: {c.error}" for c in components if c.status == "down"]
    down = {c.name for c in components if c.status == "down"}
    if "database" in down:
        return "unhealthy", reasons
    return ("degraded" if down else "healthy"), reasons


async def unified_health(ctx: Context, _: NoInput) -> UnifiedHealth:
    services = ctx.services
    pg, redis = services.postgres, services.redis
    components = list(
        await asyncio.gather(
            _probe("database", pg.ping if pg is not None else None),
            _probe("redis", redis.ping if redis is not None else None),
        )
    )
    status, reasons = overall(components)
    now = datetime.now(UTC)
    return UnifiedHealth(
        status=status,
        reasons=reasons,
        components=components,
        checked_at=now,
        uptime_seconds=round(now.timestamp() - services.started_at, 3),
    )


PROCEDURES: list[Procedure] = [
    query(
        "monitoring.unifiedHealth",
        unified_health,
        output=UnifiedHealth,
        summary="Quick status: reachability and round-trip time of the primary and Redis.",
    ),
]
