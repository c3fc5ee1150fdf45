"""``Node``: one PostgreSQL server (the primary or a replica), its pool and its breaker.

``Node.run(sql, call)`` is the one path every statement takes: through a breaker, on a pooled
(or a held) connection, timed, with foreign errors mapped (``sqlstate.map_error``) inside the
breaker call, so that the breaker sees our errors: ``Unavailable`` counts against the node, a
``SqlError`` (the statement's own fault) does not.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import asyncpg

from server.datastores.pool import InstrumentedPool
from server.datastores.query_stats import Status
from server.datastores.sqlstate import DRIVER_ERRORS, map_error
from server.errors import CallTimeout, CircuitOpen, PoolExhausted, PoolTimeout, QueryTimeout
from server.resilience.breaker import Breaker

T = TypeVar("T")
Role = Literal["primary", "replica"]
Statement = Callable[[asyncpg.Connection], Awaitable[T]]
# observe(node, sql, status, seconds executing or None when the statement never ran)
Observer = Callable[[str, str, Status, float | None], None]


class _Timing:
    __slots__ = ("finished", "started")

    def __init__(self) -> None:
        self.started: float | None = None
        self.finished: float | None = None

    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started


class Node:
    def __init__(
        self,
        name: str,
        role: Role,
        url: str,
        pool: InstrumentedPool,
        breaker: Breaker,
        observe: Observer,
    ) -> None:
        self.name = name
        self.role = role
        self.url = url  # masked: for display only
        self.pool = pool
        self.breaker = breaker
        self._observe = observe

    def __repr__(self) -> str:
        return f"<Node {self.name} ({self.role})>"

    async def run(
        self,
        sql: str,
        call: Statement[T],
        *,
        breaker: Breaker | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> T:
        """``call(connection)`` through ``breaker`` (default: the node's own), on ``conn`` when
        given, else on a connection from the pool; ``sql`` is what the statistics see."""
        timing = _Timing()
        try:
            if conn is not None:
                result = await (breaker or self.breaker).call(self._statement, conn, call, timing)
            else:
                # A place in our own pool first, outside the breaker: a queue of our own making
                # (PoolExhausted) is load shedding, not the server's failure.
                async with self.pool.reserve() as started:
                    result = await (breaker or self.breaker).call(
                        self._execute, call, timing, started
                    )
        except CircuitOpen:
            self._observe(self.name, sql, "rejected", None)
            raise
        except (QueryTimeout, CallTimeout, PoolTimeout, PoolExhausted):
            self._observe(self.name, sql, "timeout", timing.seconds())
            raise
        except Exception:
            self._observe(self.name, sql, "error", timing.seconds())
            raise
        self._observe(self.name, sql, "ok", timing.seconds())
        return result

    # Reads on this node through its own breaker (monitoring queries, health checks).

    async def fetch(self, sql: str, *args: Any, command_timeout: float | None = None) -> list[Any]:
        return await self.run(sql, lambda c: c.fetch(sql, *args, timeout=command_timeout))

    async def fetchrow(self, sql: str, *args: Any, command_timeout: float | None = None) -> Any:
        return await self.run(sql, lambda c: c.fetchrow(sql, *args, timeout=command_timeout))

    async def fetchval(self, sql: str, *args: Any, command_timeout: float | None = None) -> Any:
        return await self.run(sql, lambda c: c.fetchval(sql, *args, timeout=command_timeout))

    async def fetchval_within(self, sql: str, *args: Any, statement_timeout_ms: int) -> Any:
        """``fetchval`` in a read-only transaction under ``SET LOCAL statement_timeout``: the
        server itself stops the statement (``QueryTimeout``), and the setting ends with it."""

        async def call(conn: asyncpg.Connection) -> Any:
            async with conn.transaction(readonly=True):
                await conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
                return await conn.fetchval(sql, *args)

        return await self.run(sql, call)

    async def _execute(self, call: Statement[T], timing: _Timing, started: float) -> T:
        async with self.pool.connection(started) as pooled:
            return await self._statement(pooled, call, timing)

    async def _statement(self, conn: asyncpg.Connection, call: Statement[T], timing: _Timing) -> T:
        timing.started = time.monotonic()
        try:
            return await call(conn)
        except DRIVER_ERRORS as exc:
            raise map_error(self.name, exc) from exc
        finally:
            timing.finished = time.monotonic()
