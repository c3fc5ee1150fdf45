"""``database.activity``: every client session of each watched server, and PgBouncer's queue.

Per node (the primary, then each replica), from ``pg_stat_activity``: client connections
against ``max_connections`` less the slots reserved for superusers (and ``reserved_connections``
where the server has it), counted by state, database, application and user; sessions idle in a
transaction and the oldest; the longest running query and the longest open transaction; the
sessions waiting on a lock and the sessions holding them (``pg_blocking_pids``). infrawatch's
own connections are counted with the others (they take slots too) and also on their own.

Statement text never carries values: where ``pg_stat_statements`` is installed, the
statement's normalised text comes from it through ``query_id``; else the literals are
stripped from ``pg_stat_activity.query`` (``sql_text.strip_literals``).

A node that does not answer is reported down with its reason; the others still answer. So is
PgBouncer (``SHOW POOLS``: clients waiting and the oldest one's wait, per pool).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.collectors.sql_text import strip_literals
from server.datastores.node import Node
from server.datastores.pgbouncer import PgBouncerAdmin
from server.datastores.postgres import APPLICATION_NAME, PostgresCluster
from server.errors import RpcError, SqlError

QUERY_TEXT_LIMIT = 2000
# Sessions listed at most per list (blocked, blockers): a lock pile-up can hold thousands.
LIST_LIMIT = 50
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")

_LIMITS_SQL = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS statements
"""

# pg_blocking_pids takes the lock manager's locks: asked only for sessions waiting on a lock.
_SESSIONS_SQL = """
SELECT a.pid, a.datname, a.usename, a.application_name, a.state,
       a.pid = pg_backend_pid() AS self, a.backend_type IS NULL AS hidden,
       extract(epoch FROM now() - a.state_change)::float8 AS state_seconds,
       extract(epoch FROM now() - a.query_start)::float8 AS query_seconds,
       extract(epoch FROM now() - a.xact_start)::float8 AS xact_seconds,
       a.query_id, left(a.query, $1) AS query,
       CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END AS blocked_by,
       CASE WHEN a.wait_event_type = 'Lock' THEN
           (SELECT extract(epoch FROM now() - min(l.waitstart))::float8
            FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)
       END AS lock_wait_seconds
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend'
   -- Another role's session, to a role without pg_read_all_stats: backend_type is hidden
   -- too; one with a user and a database is a client (an autovacuum worker may pass).
   OR (a.backend_type IS NULL AND a.usesysid IS NOT NULL AND a.datid IS NOT NULL)
"""

_NORMALISED_SQL = """
SELECT DISTINCT ON (queryid) queryid, left(query, $2) AS query
FROM pg_stat_statements WHERE queryid = ANY($1::int8[])
"""

Normalised = Literal["pg_stat_statements", "literals stripped", "none"]


class Session(BaseModel):
    pid: int
    user: str | None
    database: str | None
    application: str | None
    state: str | None = Field(description="None: this role may not see that session's state")
    seconds: float | None = Field(description="how long: the query, the transaction or the wait")
    query: str | None = Field(description="normalised text, never values")
    normalised_by: Normalised = Field(description="where the text came from")


class BlockedSession(Session):
    blocked_by: list[int] = Field(description="pids holding the lock it waits for")


class Connections(BaseModel):
    used: int = Field(description="client connections (infrawatch's included)")
    max_connections: int = Field(description="max_connections")
    reserved: int = Field(description="superuser_reserved_connections + reserved_connections")
    available: int = Field(description="max_connections - reserved: what clients may take")
    used_percent: float = Field(description="used / available, %")
    self_connections: int = Field(
        description="infrawatch's own (application_name infrawatch, or infrawatch-<purpose> for "
        "the health probes' and the alert store's pools)"
    )
    hidden: int = Field(
        description="other roles' sessions whose state, query and times this role may not see "
        "(it lacks pg_read_all_stats): counted, by user and application too, but in none of "
        "the lists"
    )


class NodeActivity(BaseModel):
    node: str
    role: str
    up: bool
    error: str | None = None
    connections: Connections | None = None
    by_state: dict[str, int] = {}
    by_database: dict[str, int] = {}
    by_application: dict[str, int] = {}
    by_user: dict[str, int] = {}
    idle_in_transaction: int = Field(default=0, description="sessions idle in a transaction")
    oldest_idle_in_transaction_seconds: float | None = Field(
        default=None, description="the longest such idle, seconds since its last statement"
    )
    longest_query: Session | None = Field(default=None, description="the longest active query")
    longest_transaction: Session | None = Field(default=None, description="the oldest open one")
    blocked: list[BlockedSession] = Field(default=[], description="longest wait first")
    longest_blocked_seconds: float | None = Field(default=None, description="of those")
    blockers: list[Session] = Field(default=[], description="sessions holding those locks")


class BouncerPool(BaseModel):
    database: str
    user: str
    cl_active: int
    cl_waiting: int = Field(description="clients waiting for a server connection")
    maxwait_seconds: float = Field(description="the oldest waiting client's wait")


class BouncerActivity(BaseModel):
    up: bool
    error: str | None = None
    cl_waiting: int = Field(default=0, description="over every pool")
    maxwait_seconds: float = Field(default=0.0, description="the longest wait of any pool")
    pools: list[BouncerPool] = []


class ActivityReport(BaseModel):
    nodes: list[NodeActivity] = Field(description="the primary, then each replica")
    pgbouncer: BouncerActivity | None = Field(description="None without PGBOUNCER_ADMIN_URL")
    checked_at: datetime


async def activity(cluster: PostgresCluster) -> ActivityReport:
    checked_at = datetime.now(UTC)
    nodes, bouncer = await asyncio.gather(
        asyncio.gather(*(_node_activity(node) for node in cluster.nodes)),
        _bouncer(cluster.pgbouncer),
    )
    return ActivityReport(nodes=list(nodes), pgbouncer=bouncer, checked_at=checked_at)


async def _node_activity(node: Node) -> NodeActivity:
    try:
        limits = await node.fetchrow(_LIMITS_SQL)
        rows = await node.fetch(_SESSIONS_SQL, QUERY_TEXT_LIMIT)
    except RpcError as exc:
        return NodeActivity(node=node.name, role=node.role, up=False, error=exc.message)
    others = [row for row in rows if not row["self"]]
    idle = [row for row in others if row["state"] in IDLE_IN_TRANSACTION]
    active = [row for row in others if row["state"] == "active" and row["query_seconds"]]
    open_tx = [row for row in others if row["xact_seconds"] is not None]
    waiting = sorted((row for row in others if row["blocked_by"]), key=_wait_seconds, reverse=True)[
        :LIST_LIMIT
    ]
    blocker_pids = {pid for row in waiting for pid in row["blocked_by"]}
    holders = [row for row in rows if row["pid"] in blocker_pids][:LIST_LIMIT]
    longest_query = max(active, key=lambda r: r["query_seconds"], default=None)
    longest_tx = max(open_tx, key=lambda r: r["xact_seconds"], default=None)
    named = [r for r in (longest_query, longest_tx, *waiting, *holders) if r is not None]
    texts = await _normalised(node, named) if limits["statements"] else {}
    reserved = int(limits["superuser_reserved"]) + int(limits["reserved"])
    available = max(1, int(limits["max_connections"]) - reserved)
    return NodeActivity(
        node=node.name,
        role=node.role,
        up=True,
        connections=Connections(
            used=len(rows),
            max_connections=limits["max_connections"],
            reserved=reserved,
            available=available,
            used_percent=round(100.0 * len(rows) / available, 2),
            self_connections=sum(1 for r in rows if _ours(r["application_name"])),
            hidden=sum(1 for r in rows if r["hidden"]),
        ),
        by_state=_count(rows, "state"),
        by_database=_count(rows, "datname"),
        by_application=_count(rows, "application_name"),
        by_user=_count(rows, "usename"),
        idle_in_transaction=len(idle),
        oldest_idle_in_transaction_seconds=_round(
            max((r["state_seconds"] or 0.0 for r in idle), default=None)
        ),
        longest_query=_session(longest_query, "query_seconds", texts),
        longest_transaction=_session(longest_tx, "xact_seconds", texts),
        blocked=[
            BlockedSession(
                **_fields(row, _wait_seconds(row), texts), blocked_by=list(row["blocked_by"])
            )
            for row in waiting
        ],
        longest_blocked_seconds=_round(_wait_seconds(waiting[0])) if waiting else None,
        blockers=[Session(**_fields(r, r["xact_seconds"], texts)) for r in holders],
    )


async def _normalised(node: Node, rows: list[Any]) -> dict[int, str]:
    ids = list({int(r["query_id"]) for r in rows if r["query_id"] is not None})
    if not ids:
        return {}
    try:
        found = await node.fetch(_NORMALISED_SQL, ids, QUERY_TEXT_LIMIT)
    except (SqlError, RpcError):
        return {}  # the literals are stripped instead
    return {int(r["queryid"]): str(r["query"]) for r in found}


def _session(row: Any, field: str, texts: dict[int, str]) -> Session | None:
    return None if row is None else Session(**_fields(row, row[field], texts))


def _fields(row: Any, seconds: float | None, texts: dict[int, str]) -> dict[str, Any]:
    query, by = _text(row, texts)
    return {
        "pid": row["pid"],
        "user": row["usename"],
        "database": row["datname"],
        "application": row["application_name"],
        "state": row["state"],
        "seconds": _round(seconds),
        "query": query,
        "normalised_by": by,
    }


def _text(row: Any, texts: dict[int, str]) -> tuple[str | None, Normalised]:
    query_id = row["query_id"]
    if query_id is not None and int(query_id) in texts:
        return texts[int(query_id)], "pg_stat_statements"
    raw = row["query"]
    # "<insufficient privilege>" and empty texts carry no values.
    if not raw or raw.startswith("<"):
        return raw or None, "none"
    return strip_literals(raw), "literals stripped"


def _wait_seconds(row: Any) -> float:
    value = row["lock_wait_seconds"]
    if value is None:
        value = row["query_seconds"]
    return float(value or 0.0)


def _count(rows: list[Any], column: str) -> dict[str, int]:
    # Sessions of other roles may hide their state from a role without pg_read_all_stats.
    counts = Counter(str(r[column]) if r[column] is not None else "(hidden)" for r in rows)
    return dict(counts.most_common())


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


async def _bouncer(admin: PgBouncerAdmin | None) -> BouncerActivity | None:
    if admin is None:
        return None
    try:
        shown = await admin.show("POOLS")
    except RpcError as exc:
        return BouncerActivity(up=False, error=exc.message)
    pools = [
        BouncerPool(
            database=str(row["database"]),
            user=str(row["user"]),
            cl_active=int(row["cl_active"]),
            cl_waiting=int(row["cl_waiting"]),
            maxwait_seconds=round(
                int(row.get("maxwait") or 0) + int(row.get("maxwait_us") or 0) / 1e6, 3
            ),
        )
        for row in shown["POOLS"]
        # The console's own pseudo-database.
        if row["database"] != "pgbouncer"
    ]
    return BouncerActivity(
        up=True,
        cl_waiting=sum(p.cl_waiting for p in pools),
        maxwait_seconds=max((p.maxwait_seconds for p in pools), default=0.0),
        pools=pools,
    )


def _ours(application: str | None) -> bool:
    """infrawatch's main pool, or one of its side pools (``infrawatch-health``, ...)."""
    return application is not None and (
        application == APPLICATION_NAME or application.startswith(APPLICATION_NAME + "-")
    )
