"""Connection pools: ours per node (asyncpg, counted by ``InstrumentedPool``), the server's view
of its connections (``pg_stat_activity`` against ``max_connections``), and PgBouncer's pools.

The pool figures are read before the server is asked, so they are not disturbed by the
connection the ``pg_stat_activity`` query itself borrows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.datastores.node import Node
from server.datastores.pgbouncer import PgBouncerAdmin
from server.datastores.postgres import PostgresCluster
from server.errors import RpcError
from server.resilience.models import LatencyStats

_ACTIVITY_SQL = """
SELECT coalesce(a.state, 'unknown') AS state,
       count(*)::int AS connections,
       count(*) FILTER (
           WHERE a.application_name = current_setting('application_name')
             AND a.datname = current_database()
       )::int AS ours,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend'
GROUP BY 1
ORDER BY 1
"""


class ServerConnections(BaseModel):
    """What the PostgreSQL server reports about its client connections."""

    max_connections: int = Field(description="the server's max_connections")
    superuser_reserved_connections: int = Field(
        description="connections kept for superusers out of max_connections"
    )
    total: int = Field(description="client backends on the server, every database and user")
    by_state: dict[str, int] = Field(description="client backends by pg_stat_activity.state")
    ours: int = Field(
        description="connections with our application_name to our database (this pool's "
        "connections plus any other infrawatch instance's)"
    )
    utilization: float = Field(description="total / max_connections, percent 0-100")


class NodePoolStats(BaseModel):
    scope: Literal["self"] = Field(
        default="self",
        description="the pool figures are infrawatch's own pool; server (every client of the "
        "watched server) is database.activity's subject",
    )
    node: str = Field(description='"primary" or the replica\'s name')
    role: str = Field(description='"primary" or "replica"')
    url: str = Field(description="the node's URL, password masked")
    min_size: int = Field(
        description="DATABASE_MIN_CONNECTIONS: connections kept open once the server answers"
    )
    max_size: int = Field(description="DATABASE_CONNECTION_LIMIT")
    size: int = Field(description="open connections in the pool")
    idle: int = Field(description="open connections not handed out")
    in_use: int = Field(description="connections handed out to callers")
    waiting: int = Field(description="callers waiting to acquire a connection right now")
    waiting_peak: int = Field(description="most callers ever seen waiting at once")
    utilization: float = Field(description="in_use / max_size, percent 0-100")
    acquires: int = Field(description="connections handed out since start")
    acquire_timeouts: int = Field(description="acquires that gave up after DATABASE_TIMEOUT")
    acquire_errors: int = Field(description="acquires that failed to connect")
    acquire_latency: LatencyStats = Field(description="time to acquire, over the last minute")
    breaker: str = Field(description="the breaker this node's statements go through")
    breaker_state: str = Field(description="closed, open, half_open, forced_open or disabled")
    server: ServerConnections | None = Field(
        description="the server's own view; None when it could not be asked"
    )
    error: str | None = Field(default=None, description="why server is None")


class PgBouncerPool(BaseModel):
    database: str = Field(description="PgBouncer's database name")
    user: str = Field(description="the pool's user")
    pool_mode: str | None = Field(description="session, transaction or statement")
    cl_active: int = Field(description="client connections linked to a server connection")
    cl_waiting: int = Field(description="client connections waiting for a server connection")
    sv_active: int = Field(description="server connections linked to a client")
    sv_idle: int = Field(description="server connections idle and ready for use")
    sv_used: int = Field(description="server connections idle past server_check_delay")
    sv_tested: int = Field(description="server connections being tested")
    sv_login: int = Field(description="server connections logging in")
    maxwait_seconds: float = Field(description="how long the oldest waiting client has waited")


class PgBouncerDatabase(BaseModel):
    name: str = Field(description="the database name clients use")
    host: str | None = Field(description="the server PgBouncer connects to (None: the console)")
    port: int | None = Field(description="the server's port")
    database: str | None = Field(description="the database on the server")
    pool_size: int | None = Field(description="most server connections per user/database pool")
    min_pool_size: int | None = Field(description="server connections kept open")
    reserve_pool: int | None = Field(description="extra connections allowed when clients wait")
    pool_mode: str | None = Field(description="the database's own pool mode; None: the default")
    max_connections: int | None = Field(description="max_db_connections; 0 means unlimited")
    current_connections: int | None = Field(description="server connections open for this database")
    paused: bool = Field(description="PAUSEd by an operator")
    disabled: bool = Field(description="DISABLEd by an operator")


class PgBouncerStat(BaseModel):
    database: str = Field(description="PgBouncer's database name")
    total_xact_count: int = Field(description="transactions since PgBouncer started")
    total_query_count: int = Field(description="queries since PgBouncer started")
    total_received: int = Field(description="bytes")
    total_sent: int = Field(description="bytes")
    total_xact_time_us: int = Field(description="microseconds spent in transactions")
    total_query_time_us: int = Field(description="microseconds spent in queries")
    total_wait_time_us: int = Field(
        description="microseconds clients waited for a server connection"
    )
    avg_xact_count: int = Field(description="per second, over the last stats period")
    avg_query_count: int = Field(description="per second, over the last stats period")
    avg_query_time_us: int = Field(description="mean query time over the last stats period")
    avg_wait_time_us: int = Field(
        description="mean wait for a server connection over the last stats period"
    )


class PgBouncerTotals(BaseModel):
    cl_active: int = Field(description="client connections linked to a server connection")
    cl_waiting: int = Field(description="client connections waiting for a server connection")
    sv_active: int = Field(description="server connections linked to a client")
    sv_idle: int = Field(description="server connections idle and ready")
    sv_used: int = Field(description="server connections idle past server_check_delay")
    maxwait_seconds: float = Field(description="the longest wait of any client now")


class PgBouncerStats(BaseModel):
    url: str = Field(description="the admin console URL, password masked")
    available: bool = Field(description="the console answered")
    error: str | None = Field(default=None, description="why it did not")
    version: str | None = Field(default=None, description="SHOW VERSION")
    totals: PgBouncerTotals | None = Field(
        default=None, description="over every pool except the admin console's own"
    )
    pools: list[PgBouncerPool] = Field(default=[], description="SHOW POOLS, every pool")
    databases: list[PgBouncerDatabase] = Field(default=[], description="SHOW DATABASES")
    stats: list[PgBouncerStat] = Field(default=[], description="SHOW STATS")
    lists: dict[str, int] = Field(default={}, description="SHOW LISTS: item counts")


class ConnectionPoolStats(BaseModel):
    nodes: list[NodePoolStats] = Field(description="the primary, then each replica")
    pgbouncer: PgBouncerStats | None = Field(description="None when PGBOUNCER_ADMIN_URL is unset")
    collected_at: datetime = Field(description="when the figures were read")


async def connection_pool_stats(cluster: PostgresCluster) -> ConnectionPoolStats:
    # Everything at once: the figures describe one moment, and one slow node delays no other.
    nodes, bouncer = await asyncio.gather(
        asyncio.gather(*(node_pool_stats(node) for node in cluster.nodes)),
        _maybe_pgbouncer(cluster.pgbouncer),
    )
    return ConnectionPoolStats(nodes=list(nodes), pgbouncer=bouncer, collected_at=datetime.now(UTC))


async def _maybe_pgbouncer(admin: PgBouncerAdmin | None) -> PgBouncerStats | None:
    return await pgbouncer_stats(admin) if admin is not None else None


async def node_pool_stats(node: Node, *, ask_server: bool = True) -> NodePoolStats:
    pool = node.pool.snapshot()
    server: ServerConnections | None = None
    error: str | None = None
    if ask_server:
        try:
            server = _server_connections(await node.fetch(_ACTIVITY_SQL))
        except RpcError as exc:
            error = exc.message
    return NodePoolStats(
        node=node.name,
        role=node.role,
        url=node.url,
        min_size=pool.min_size,
        max_size=pool.max_size,
        size=pool.size,
        idle=pool.idle,
        in_use=pool.in_use,
        waiting=pool.waiting,
        waiting_peak=pool.waiting_peak,
        utilization=round(pool.utilization, 2),
        acquires=pool.acquires,
        acquire_timeouts=pool.acquire_timeouts,
        acquire_errors=pool.acquire_errors,
        acquire_latency=pool.acquire_latency,
        breaker=node.breaker.name,
        breaker_state=node.breaker.state.value,
        server=server,
        error=error,
    )


def _server_connections(rows: list[Any]) -> ServerConnections:
    by_state = {row["state"]: row["connections"] for row in rows}
    total = sum(by_state.values())
    max_connections = rows[0]["max_connections"]
    return ServerConnections(
        max_connections=max_connections,
        superuser_reserved_connections=rows[0]["reserved"],
        total=total,
        by_state=by_state,
        ours=sum(row["ours"] for row in rows),
        utilization=round(100.0 * total / max_connections, 2),
    )


async def pgbouncer_stats(admin: PgBouncerAdmin) -> PgBouncerStats:
    try:
        shown = await admin.show("VERSION", "POOLS", "DATABASES", "STATS", "LISTS")
    except RpcError as exc:
        return PgBouncerStats(url=admin.display_url, available=False, error=exc.message)
    pools = [_pool(row) for row in shown["POOLS"]]
    served = [p for p in pools if p.database != "pgbouncer"]
    version = shown["VERSION"][0]["version"] if shown["VERSION"] else None
    return PgBouncerStats(
        url=admin.display_url,
        available=True,
        version=version,
        totals=PgBouncerTotals(
            cl_active=sum(p.cl_active for p in served),
            cl_waiting=sum(p.cl_waiting for p in served),
            sv_active=sum(p.sv_active for p in served),
            sv_idle=sum(p.sv_idle for p in served),
            sv_used=sum(p.sv_used for p in served),
            maxwait_seconds=max((p.maxwait_seconds for p in served), default=0.0),
        ),
        pools=pools,
        databases=[_database(row) for row in shown["DATABASES"]],
        stats=[_stat(row) for row in shown["STATS"]],
        lists={str(row["list"]): int(row["items"]) for row in shown["LISTS"]},
    )


def _pool(row: dict[str, Any]) -> PgBouncerPool:
    return PgBouncerPool(
        database=row["database"],
        user=row["user"],
        pool_mode=row.get("pool_mode"),
        cl_active=row.get("cl_active", 0),
        cl_waiting=row.get("cl_waiting", 0),
        sv_active=row.get("sv_active", 0),
        sv_idle=row.get("sv_idle", 0),
        sv_used=row.get("sv_used", 0),
        sv_tested=row.get("sv_tested", 0),
        sv_login=row.get("sv_login", 0),
        maxwait_seconds=row.get("maxwait", 0) + row.get("maxwait_us", 0) / 1_000_000,
    )


def _database(row: dict[str, Any]) -> PgBouncerDatabase:
    return PgBouncerDatabase(
        name=row["name"],
        host=row.get("host"),
        port=row.get("port"),
        database=row.get("database"),
        pool_size=row.get("pool_size"),
        min_pool_size=row.get("min_pool_size"),
        reserve_pool=row.get("reserve_pool"),
        pool_mode=row.get("pool_mode"),
        max_connections=row.get("max_connections"),
        current_connections=row.get("current_connections"),
        paused=bool(row.get("paused")),
        disabled=bool(row.get("disabled")),
    )


def _stat(row: dict[str, Any]) -> PgBouncerStat:
    return PgBouncerStat(
        database=row["database"],
        total_xact_count=row.get("total_xact_count", 0),
        total_query_count=row.get("total_query_count", 0),
        total_received=row.get("total_received", 0),
        total_sent=row.get("total_sent", 0),
        total_xact_time_us=row.get("total_xact_time", 0),
        total_query_time_us=row.get("total_query_time", 0),
        total_wait_time_us=row.get("total_wait_time", 0),
        avg_xact_count=row.get("avg_xact_count", 0),
        avg_query_count=row.get("avg_query_count", 0),
        avg_query_time_us=row.get("avg_query_time", 0),
        avg_wait_time_us=row.get("avg_wait_time", 0),
    )
