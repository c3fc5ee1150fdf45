"""Health: probe each component, aggregate the way operators know from Spring Boot Actuator.

One report shape (``HealthReport``) answers ``monitoring.unifiedHealth`` and every ``/health*``
route. Aggregation (``overall``), worst status wins:

    component  up / not_configured   -> healthy
    component  down, not critical    -> degraded    (HTTP 200: the service still answers;
                                                     Redis down means the cache falls back)
    component  down, critical        -> unhealthy   (HTTP 503: the primary is down)

Spring's ``SimpleStatusAggregator`` orders DOWN > OUT_OF_SERVICE > UP > UNKNOWN and answers
503 for DOWN and OUT_OF_SERVICE; ``degraded`` is the custom status between DOWN and UP that
still answers 200, and ``not_configured`` plays UNKNOWN (counts as up). A report scoped to one
component (``/health/db``, ``/health/redis``) treats that component as critical: a check of
Redis alone that finds Redis down answers 503, as ``/actuator/health/redis`` does.

Every probe is bounded (``HEALTH_CHECK_TIMEOUT``), and all run concurrently, so a hung
database cannot hold a readiness check past that bound. Hosts, versions and full error
messages go only to operators (``show_details``); others see the error's kind.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from server import __version__
from server.alerts.models import EvaluatorStatus, StoreStatus
from server.datastores.pool import InstrumentedPool, PoolSnapshot
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import RedisClient
from server.delivery.models import DeliveryStatus
from server.errors import RpcError
from server.redaction import mask_secrets

Status = Literal["healthy", "degraded", "unhealthy"]
ComponentStatus = Literal["up", "down", "not_configured"]
_RANK: dict[Status, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class PoolFigures(BaseModel):
    min_size: int
    max_size: int
    size: int
    idle: int
    in_use: int
    utilization: float = Field(description="in_use / max_size, in percent")


class ComponentHealth(BaseModel):
    name: str
    status: ComponentStatus
    critical: bool = Field(description="down makes the report unhealthy (503), not degraded")
    latency_ms: float | None = None
    error: str | None = None
    pool: PoolFigures | None = None
    details: dict[str, Any] | None = Field(
        default=None, description="hosts and versions; operators only"
    )


class ProcessHealth(BaseModel):
    pid: int
    rss_bytes: int | None
    cpu_user_seconds: float
    cpu_system_seconds: float
    cpu_average_percent: float = Field(description="CPU time over wall time since start")
    threads: int
    open_fds: int | None


class HealthReport(BaseModel):
    status: Status
    reasons: list[str]
    components: list[ComponentHealth]
    checked_at: datetime
    uptime_seconds: float
    version: str
    process: ProcessHealth | None = None
    alert_store: StoreStatus | None = Field(
        default=None,
        description="/health/detailed: where alerts are kept; durable false means in memory "
        "only (no DATABASE_URL), lost at restart",
    )
    alert_delivery: DeliveryStatus | None = Field(
        default=None,
        description="/health/detailed: where alert events go; durable false means the outbox "
        "is in memory (no DATABASE_URL): delivery is not durable across a restart",
    )
    alert_evaluator: EvaluatorStatus | None = Field(
        default=None, description="/health/detailed: which instance evaluates the alert rules"
    )

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unhealthy" else 200


@dataclass(frozen=True, slots=True)
class Probed:
    """What a probe measured; it raises when the component is down."""

    seconds: float
    pool: PoolFigures | None = None
    details: dict[str, Any] | None = None


# probe(show_details) -> None when the component is not configured; raises when it is down.
Probe = Callable[[bool], Awaitable[Probed | None]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    probe: Probe
    critical: bool = False


class Health:
    """One app's health: the components a report can cover (in report order), how long a probe
    may take, and the process's own state (since when it runs, whether it is shutting down).

    ``add`` lets a part contribute a component (a replica, PgBouncer) as Spring's
    ``HealthContributor`` does.
    """

    def __init__(
        self,
        checks: Sequence[Check] = (),
        *,
        timeout: float,
        store_status: Callable[[], StoreStatus] | None = None,
        delivery_status: Callable[[], DeliveryStatus] | None = None,
        evaluator_status: Callable[[], EvaluatorStatus] | None = None,
    ) -> None:
        self._checks: dict[str, Check] = {}
        for check in checks:
            self.add(check)
        self.timeout = timeout
        self._store_status = store_status
        self._delivery_status = delivery_status
        self._evaluator_status = evaluator_status
        self.started_at = time.time()
        # True from the first shutdown signal on: /health/ready turns 503.
        self.shutting_down = False

    def add(self, check: Check) -> None:
        if check.name in self._checks:
            raise ValueError(f"health check {check.name!r} is already registered")
        self._checks[check.name] = check

    def names(self) -> list[str]:
        return list(self._checks)

    def get(self, name: str) -> Check:
        return self._checks[name]

    async def report(
        self,
        names: Sequence[str] | None = None,
        *,
        show_details: bool = False,
        with_process: bool = False,
        scoped: bool = False,
    ) -> HealthReport:
        """Probe ``names`` (default: every registered check) concurrently and aggregate.

        ``scoped``: the report answers for exactly these components, each counted critical.
        """
        checks = [self._checks[n] for n in (self.names() if names is None else names)]
        components = list(
            await asyncio.gather(
                *(
                    probe(
                        c,
                        bound=self.timeout,
                        show_details=show_details,
                        critical=c.critical or scoped,
                    )
                    for c in checks
                )
            )
        )
        status, reasons = overall(components)
        return self.finish(status, reasons, components, with_process=with_process)

    def finish(
        self,
        status: Status,
        reasons: list[str],
        components: list[ComponentHealth],
        *,
        with_process: bool = False,
    ) -> HealthReport:
        now = time.time()
        store = self._store_status
        return HealthReport(
            status=status,
            reasons=reasons,
            components=components,
            checked_at=datetime.fromtimestamp(now, UTC),
            uptime_seconds=round(now - self.started_at, 3),
            version=__version__,
            process=process_health() if with_process else None,
            alert_store=store() if with_process and store is not None else None,
            alert_delivery=(
                self._delivery_status()
                if with_process and self._delivery_status is not None
                else None
            ),
            alert_evaluator=(
                self._evaluator_status()
                if with_process and self._evaluator_status is not None
                else None
            ),
        )


# --- probing ---


async def probe(
    check: Check, *, bound: float, show_details: bool, critical: bool
) -> ComponentHealth:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(bound):
            probed = await check.probe(show_details)
    except TimeoutError:
        error = f"no answer within {bound:g}s"
        return ComponentHealth(name=check.name, status="down", critical=critical, error=error)
    except Exception as exc:  # any failure of a dependency is "down", never a 500
        return ComponentHealth(
            name=check.name,
            status="down",
            critical=critical,
            error=_full_text(exc) if show_details else error_kind(exc),
            latency_ms=_ms(time.perf_counter() - started),
        )
    if probed is None:
        return ComponentHealth(name=check.name, status="not_configured", critical=critical)
    return ComponentHealth(
        name=check.name,
        status="up",
        critical=critical,
        latency_ms=_ms(probed.seconds),
        pool=probed.pool,
        details=probed.details if show_details else None,
    )


def _full_text(exc: BaseException) -> str:
    """For operators: our message and the driver's own text behind it (passwords masked)."""
    if isinstance(exc, RpcError) and exc.detail:
        return mask_secrets(f"{exc.message}: {exc.detail}")
    return mask_secrets(str(exc))


def error_kind(exc: BaseException) -> str:
    """The error without its text (which may name hosts): the root cause's type."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return f"unreachable ({type(root).__name__})"


def overall(components: Sequence[ComponentHealth]) -> tuple[Status, list[str]]:
    """Worst status wins (see the module docstring)."""
    status: Status = "healthy"
    reasons = []
    for c in components:
        if c.status != "down":
            continue
        reasons.append(f"{c.name} is down: {c.error}")
        mine: Status = "unhealthy" if c.critical else "degraded"
        if _RANK[mine] > _RANK[status]:
            status = mine
    return status, reasons


# --- the standard probes ---


def database_check(postgres: PostgresCluster | None, url: str | None) -> Check:
    """The primary: critical, since without it nothing durable works."""

    async def probe_database(show_details: bool) -> Probed | None:
        if postgres is None:
            return None
        seconds = await postgres.ping()
        details = None
        if show_details:
            details = {**_address(url)}
            # On the probes' own pool and breaker (database-health), as the ping.
            health = postgres.health
            details["server_version"] = await health.breaker.call(_server_version, health.pool)
        # The figures operators watch are the service's main pool's, not the probes' own.
        return Probed(seconds, pool_figures(postgres.primary.pool.snapshot()), details)

    return Check("database", probe_database, critical=True)


async def _server_version(pool: InstrumentedPool) -> str:
    # The version comes with the connection's handshake: no statement is sent.
    async with pool.acquire() as conn:
        v = conn.get_server_version()
    return f"{v.major}.{v.minor}"


def pool_figures(pool: PoolSnapshot) -> PoolFigures:
    return PoolFigures(
        min_size=pool.min_size,
        max_size=pool.max_size,
        size=pool.size,
        idle=pool.idle,
        in_use=pool.in_use,
        utilization=round(pool.utilization, 2),
    )


def redis_check(redis: RedisClient | None, url: str | None) -> Check:
    """Redis: not critical, since the cache falls back to memory without it."""

    async def probe_redis(show_details: bool) -> Probed | None:
        if redis is None:
            return None
        seconds = await redis.ping()
        details = None
        if show_details:
            info = await redis.execute(redis.raw.info, "server")
            details = {
                **_address(url),
                "server_version": info.get("redis_version"),
                "mode": info.get("redis_mode"),
            }
        return Probed(seconds, None, details)

    return Check("redis", probe_redis)


def _address(url: str | None) -> dict[str, Any]:
    """Host, port and database of a URL, never its credentials."""
    if url is None:
        return {}
    parts = urlsplit(url)
    return {"host": parts.hostname, "port": parts.port, "database": parts.path.strip("/") or None}


# --- this process ---


def process_health() -> ProcessHealth:
    times = os.times()
    cpu = times.user + times.system
    uptime = _process_age()
    return ProcessHealth(
        pid=os.getpid(),
        rss_bytes=_rss_bytes(),
        cpu_user_seconds=round(times.user, 3),
        cpu_system_seconds=round(times.system, 3),
        cpu_average_percent=round(100.0 * cpu / uptime, 2) if uptime else 0.0,
        threads=threading.active_count(),
        open_fds=_open_fds(),
    )


def _process_age() -> float | None:
    """Seconds since this process started (``/proc``: its start in clock ticks after boot)."""
    # /proc is a kernel view, not disk: reading it does not block.
    try:
        with open("/proc/self/stat", "rb") as stat:
            started_ticks = float(stat.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as uptime:
            since_boot = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return since_boot - started_ticks / os.sysconf("SC_CLK_TCK")


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
