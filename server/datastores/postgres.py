"""``PostgresCluster``: the primary, its read replicas and PgBouncer's console, for one app.

Public API (other parts, e.g. the alert store, use only this)::

    cluster = app[POSTGRES]                         # server.appkeys; None without DATABASE_URL
    rows = await cluster.fetch(sql, *args)          # primary, breaker "database-write"
    rows = await cluster.fetch(sql, *args, readonly=True)
                                                    # a replica in rotation (round-robin),
                                                    # else the primary ("database-query")
    row = await cluster.fetchrow(sql, *args, readonly=...)
    value = await cluster.fetchval(sql, *args, readonly=..., column=0)
    status = await cluster.execute(sql, *args)      # primary, "database-write"; "INSERT 0 1"
    async with cluster.transaction() as tx:         # one primary connection, "database-write"
        await tx.execute(sql, *args)                # tx.fetch / fetchrow / fetchval too
        # leaving the block commits; an exception rolls back and propagates

Every method takes ``command_timeout=`` (seconds; default ``DATABASE_TIMEOUT``). ``readonly=False``
(the default) is for statements that write or must see the caller's own writes; ``readonly=True``
for reads that may lag a little behind the primary. Errors are ours, never asyncpg's:
``Unavailable`` (SERVICE_UNAVAILABLE: node down, breaker open, ``PoolTimeout`` when no
connection came within the timeout, ``QueryTimeout``) or ``SqlError`` for a statement at fault
(CONFLICT for integrity/serialization errors, BAD_REQUEST for invalid values, else
INTERNAL_SERVER_ERROR); ``sqlstate.py`` has the table.

Every statement, the monitoring ones included, goes through a breaker (``database-query`` for
primary reads, ``database-write`` for writes, ``database-replica-<name>`` per replica,
``database-health`` for health probes and ``alert-store`` for the alert store, each of these two
on its own small pool: ``health``, ``alert_store``), is timed
into ``stats`` (``QueryStats``) and the Prometheus families of ``QueryMetrics``.

Pools: one per node, ``DATABASE_CONNECTION_LIMIT`` connections at most, ``DATABASE_MIN_CONNECTIONS``
kept open once the server answers (never awaited at start-up), ``DATABASE_TIMEOUT`` to connect,
to acquire and per statement, ``DATABASE_STATEMENT_CACHE_SIZE`` prepared statements per
connection (0 behind PgBouncer in transaction mode). Connections say
``application_name=infrawatch`` unless the URL names one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
from prometheus_client import CollectorRegistry

from server.config import DatabaseSettings, mask_url
from server.datastores.node import Node, Role, Statement
from server.datastores.pgbouncer import PgBouncerAdmin
from server.datastores.pool import InstrumentedPool
from server.datastores.query_metrics import QueryMetrics
from server.datastores.query_stats import QueryStats, Status, operation_of
from server.datastores.replicas import Replica, ReplicaLag, ReplicaSet, replica_name
from server.errors import (
    CallTimeout,
    CircuitOpen,
    PoolExhausted,
    PoolTimeout,
    QueryTimeout,
    RpcError,
    SqlError,
    Unavailable,
)
from server.resilience.breaker import Breaker
from server.resilience.registry import BreakerRegistry

T = TypeVar("T")
log = logging.getLogger("server.datastores.postgres")

QUERY_BREAKER = "database-query"
WRITE_BREAKER = "database-write"
REPLICA_BREAKER_PREFIX = "database-replica-"
PGBOUNCER_BREAKER = "pgbouncer-admin"
# Health probes and the alert store each have their own small pool on the primary and their
# own breaker: a flood that fills the main pool, or trips database-query, cannot make
# /health/ready fail or refuse an operator's acknowledgement.
HEALTH_BREAKER = "database-health"
ALERT_STORE_BREAKER = "alert-store"
HEALTH_POOL_SIZE = 1
ALERT_STORE_POOL_SIZE = 2
APPLICATION_NAME = "infrawatch"
# "canceling statement due to conflict with recovery": the replica's problem, not the query's.
_RECOVERY_CONFLICT = "40001"

_LAG_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_last_xact_replay_timestamp() AS last_replay_at,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused,
       pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::bigint AS lag_bytes,
       pg_last_wal_replay_lsn() >= $1::text::pg_lsn AS caught_up,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
           AS since_last_replay
"""


class Transaction:
    """Statements on the one primary connection of ``PostgresCluster.transaction()``."""

    def __init__(self, node: Node, conn: asyncpg.Connection, breaker: Breaker) -> None:
        self._node = node
        self._conn = conn
        self._breaker = breaker

    async def _run(self, sql: str, call: Statement[T]) -> T:
        return await self._node.run(sql, call, breaker=self._breaker, conn=self._conn)

    async def fetch(self, sql: str, *args: Any, command_timeout: float | None = None) -> list[Any]:
        return await self._run(sql, lambda c: c.fetch(sql, *args, timeout=command_timeout))

    async def fetchrow(self, sql: str, *args: Any, command_timeout: float | None = None) -> Any:
        return await self._run(sql, lambda c: c.fetchrow(sql, *args, timeout=command_timeout))

    async def fetchval(
        self, sql: str, *args: Any, column: int = 0, command_timeout: float | None = None
    ) -> Any:
        return await self._run(
            sql, lambda c: c.fetchval(sql, *args, column=column, timeout=command_timeout)
        )

    async def execute(self, sql: str, *args: Any, command_timeout: float | None = None) -> str:
        return await self._run(sql, lambda c: c.execute(sql, *args, timeout=command_timeout))


class PostgresCluster:
    def __init__(
        self,
        settings: DatabaseSettings,
        breakers: BreakerRegistry,
        registry: CollectorRegistry | None = None,
        *,
        close_timeout: float = 10.0,
    ) -> None:
        if settings.url is None:
            raise ValueError("PostgresCluster needs DATABASE_URL")
        self._settings = settings
        self._close_timeout = close_timeout  # SHUTDOWN_TIMEOUT: how long closing pools may take
        self.stats = QueryStats(settings.slow_query_ms)
        self._metrics = QueryMetrics(registry) if registry is not None else None
        self.primary = self._node("primary", "primary", settings.url, breakers)
        self.health = self._node(
            "primary", "primary", settings.url, breakers, purpose="health", size=HEALTH_POOL_SIZE
        )
        self.alert_store = self._node(
            "primary",
            "primary",
            settings.url,
            breakers,
            purpose="alerts",
            size=ALERT_STORE_POOL_SIZE,
        )
        self.write_breaker = breakers.get(WRITE_BREAKER)
        taken: set[str] = {"primary"}
        replicas = []
        for url in settings.replica_urls:
            name = replica_name(url, taken)
            taken.add(name)
            replicas.append(Replica(self._node(name, "replica", url, breakers)))
        self.replicas = ReplicaSet(replicas)
        self.pgbouncer = (
            PgBouncerAdmin(
                settings.pgbouncer_admin_url, self.timeout, breakers.get(PGBOUNCER_BREAKER)
            )
            if settings.pgbouncer_admin_url
            else None
        )
        self.lag: dict[str, ReplicaLag] = {}  # the last measurement of each replica

    def _node(
        self,
        name: str,
        role: Role,
        url: str,
        breakers: BreakerRegistry,
        *,
        purpose: str | None = None,
        size: int | None = None,
    ) -> Node:
        """A node over its own pool; ``purpose`` (health, alerts) makes a small side pool on
        the same server (no connection kept open, ``application_name`` infrawatch-<purpose>)
        with its own breaker."""
        settings = self._settings
        query = parse_qs(urlsplit(url).query)
        application = APPLICATION_NAME if purpose is None else f"{APPLICATION_NAME}-{purpose}"
        pool = InstrumentedPool(
            name if purpose is None else f"{name} ({purpose})",
            url,
            min_size=settings.min_connections if purpose is None else 0,
            max_size=size or settings.connection_limit,
            timeout=self.timeout,
            statement_cache_size=settings.statement_cache_size,
            server_settings=None
            if "application_name" in query
            else {"application_name": application},
        )
        if purpose == "health":
            breaker_name = HEALTH_BREAKER
        elif purpose == "alerts":
            breaker_name = ALERT_STORE_BREAKER
        elif role == "primary":
            breaker_name = QUERY_BREAKER
        else:
            breaker_name = REPLICA_BREAKER_PREFIX + name
        return Node(name, role, mask_url(url), pool, breakers.get(breaker_name), self._observe)

    @property
    def timeout(self) -> float:
        return self._settings.timeout_ms / 1000

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, *(r.node for r in self.replicas)]

    # --- lifecycle ---

    async def start(self) -> None:
        """Open every pool; no I/O, so a database that is down cannot stop start-up."""
        for node in self._all_nodes():
            await node.pool.open()

    async def close(self) -> None:
        await asyncio.gather(*(node.pool.close(self._close_timeout) for node in self._all_nodes()))

    def _all_nodes(self) -> list[Node]:
        """``nodes`` and the side pools of the health probes and the alert store."""
        return [*self.nodes, self.health, self.alert_store]

    # --- the public API ---

    async def fetch(
        self, sql: str, *args: Any, readonly: bool = False, command_timeout: float | None = None
    ) -> list[Any]:
        return await self._dispatch(
            sql, lambda c: c.fetch(sql, *args, timeout=command_timeout), readonly=readonly
        )

    async def fetchrow(
        self, sql: str, *args: Any, readonly: bool = False, command_timeout: float | None = None
    ) -> Any:
        return await self._dispatch(
            sql, lambda c: c.fetchrow(sql, *args, timeout=command_timeout), readonly=readonly
        )

    async def fetchval(
        self,
        sql: str,
        *args: Any,
        readonly: bool = False,
        column: int = 0,
        command_timeout: float | None = None,
    ) -> Any:
        return await self._dispatch(
            sql,
            lambda c: c.fetchval(sql, *args, column=column, timeout=command_timeout),
            readonly=readonly,
        )

    async def execute(self, sql: str, *args: Any, command_timeout: float | None = None) -> str:
        return await self._dispatch(
            sql, lambda c: c.execute(sql, *args, timeout=command_timeout), readonly=False
        )

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str | None = None, readonly: bool = False
    ) -> AsyncIterator[Transaction]:
        """A transaction on the primary, every statement through ``database-write``."""
        node, breaker = self.primary, self.write_breaker
        async with AsyncExitStack() as stack:
            # A place in the pool outside the breaker, as Node.run takes one (PoolExhausted).
            started = await stack.enter_async_context(node.pool.reserve())
            conn = await breaker.call(
                lambda: stack.enter_async_context(node.pool.connection(started))
            )
            tx = conn.transaction(isolation=isolation, readonly=readonly)
            await node.run("BEGIN", lambda c: tx.start(), breaker=breaker, conn=conn)
            try:
                yield Transaction(node, conn, breaker)
            except BaseException:
                if not conn.is_closed():
                    try:
                        await node.run(
                            "ROLLBACK", lambda c: tx.rollback(), breaker=breaker, conn=conn
                        )
                    except RpcError as exc:
                        # Releasing the connection resets it; the caller's error matters more.
                        log.warning("rollback on the primary failed: %s", exc)
                raise
            await node.run("COMMIT", lambda c: tx.commit(), breaker=breaker, conn=conn)

    async def ping(self) -> float:
        """Round trip of ``SELECT 1`` on the primary, in seconds: on the health probes' own
        pool and breaker (``database-health``), never queued behind the service's own reads."""
        started = time.perf_counter()
        await self.health.run("SELECT 1", lambda c: c.fetchval("SELECT 1"))
        return time.perf_counter() - started

    # --- routing ---

    async def _dispatch(self, sql: str, call: Statement[T], *, readonly: bool) -> T:
        if not readonly:
            return await self.primary.run(sql, call, breaker=self.write_breaker)
        if not self.replicas:
            self.replicas.routed(self.primary.name)
            return await self.primary.run(sql, call)
        replica = self.replicas.choose()
        if replica is not None:
            self.replicas.routed(replica.name)
            try:
                return await replica.node.run(sql, call)
            except (QueryTimeout, CallTimeout):
                raise  # as slow on the primary, most likely: no second try
            except (CircuitOpen, PoolTimeout, PoolExhausted) as exc:
                self._fail_over(replica, exc)
            except Unavailable as exc:
                self.replicas.failed(replica, exc)
                self._fail_over(replica, exc)
            except SqlError as exc:
                if exc.sqlstate != _RECOVERY_CONFLICT:
                    raise
                self._fail_over(replica, exc)
        else:
            self.replicas.failovers += 1
        self.replicas.routed(self.primary.name)
        return await self.primary.run(sql, call)

    def _fail_over(self, replica: Replica, exc: RpcError) -> None:
        self.replicas.failovers += 1
        log.info("read failed over from replica %s to the primary: %s", replica.name, exc)

    def _observe(self, node: str, sql: str, status: Status, seconds: float | None) -> None:
        self.stats.record(node, sql, status, seconds)
        if self._metrics is not None:
            self._metrics.observe(node, operation_of(sql), status, seconds)

    # --- replica health and lag ---

    async def check_replicas(self) -> None:
        """One health check of every replica, concurrently."""
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))

    async def _check(self, replica: Replica) -> None:
        started = time.monotonic()
        sql = "SELECT pg_is_in_recovery()"
        try:
            in_recovery = await replica.node.run(sql, lambda c: c.fetchval(sql))
        except RpcError as exc:
            self.replicas.failed(replica, exc)
            return
        self.replicas.passed(
            replica, in_recovery=bool(in_recovery), seconds=time.monotonic() - started
        )

    async def watch_replicas(self, interval: float) -> None:
        """Check every replica now and then every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await self.check_replicas()
            except Exception:
                # A bug here must not end the health checks for the rest of the process.
                log.exception("replica health check round failed")
            await asyncio.sleep(interval)

    async def measure_lag(self) -> list[ReplicaLag]:
        """Lag of every replica behind the primary's current WAL position, in bytes and seconds.

        The primary's position is read first, so a replica that has replayed up to it is
        caught up (lag 0) however long ago the last transaction committed: an idle primary
        shows no lag. Behind it, the lag in seconds is the age of the last replayed commit.
        """
        if not self.replicas:
            return []
        sql = "SELECT pg_current_wal_lsn()::text"
        primary_lsn: str | None = None
        primary_error: str | None = None
        try:
            primary_lsn = await self.primary.run(sql, lambda c: c.fetchval(sql))
        except RpcError as exc:
            primary_error = f"primary position unknown: {exc.message}"
        results = await asyncio.gather(
            *(self._lag_of(r, primary_lsn, primary_error) for r in self.replicas)
        )
        self.lag = {lag.name: lag for lag in results}
        return list(results)

    async def _lag_of(
        self, replica: Replica, primary_lsn: str | None, primary_error: str | None
    ) -> ReplicaLag:
        try:
            row = await replica.node.run(_LAG_SQL, lambda c: c.fetchrow(_LAG_SQL, primary_lsn))
        except RpcError as exc:
            return ReplicaLag(
                name=replica.name, up=False, lag_seconds=None, lag_bytes=None, error=exc.message
            )
        seconds: float | None = None
        lag_bytes: int | None = None
        if row["in_recovery"] and primary_lsn is not None:
            lag_bytes = max(0, int(row["lag_bytes"]))
            if row["caught_up"]:
                seconds = 0.0
            elif row["since_last_replay"] is not None:
                seconds = max(0.0, float(row["since_last_replay"]))
        error = primary_error
        if not row["in_recovery"]:
            error = "not in recovery: this server is not a replica (promoted?)"
        last_replay_at: datetime | None = row["last_replay_at"]
        return ReplicaLag(
            name=replica.name,
            up=True,
            lag_seconds=seconds,
            lag_bytes=lag_bytes,
            in_recovery=row["in_recovery"],
            replay_paused=row["replay_paused"],
            primary_lsn=primary_lsn,
            receive_lsn=row["receive_lsn"],
            replay_lsn=row["replay_lsn"],
            last_replay_at=last_replay_at,
            error=error,
        )
