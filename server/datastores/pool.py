"""``InstrumentedPool``: an asyncpg pool for one node that counts what asyncpg does not.

asyncpg reports size and idle connections; callers queued for a connection and how long they
waited are ours to count, around ``acquire``. Every acquire is bounded by the pool's timeout
and ends in a connection, ``PoolExhausted``, ``PoolTimeout`` or ``Unavailable``: never a hang.
An acquire that times out while every connection is in use is ``PoolExhausted`` (our own
saturation, shed as TOO_MANY_REQUESTS, never counted by a breaker); one that times out while
connecting is ``PoolTimeout`` (the server is slow to accept us: a dependency failure).

Opening does no I/O: start-up never waits on, or fails for, a database that is down. The
asyncpg pool is made on the first acquire, connecting ``min_size`` connections (asyncpg insists
that a pool start with at least its floor, and a pool whose start fails is closed for good, so
a failed start leaves nothing behind and the next acquire tries again). From then on asyncpg's
own maintenance keeps ``min_size`` connections open, reconnecting with backoff after an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from server.datastores.sqlstate import DRIVER_ERRORS, map_connect_error
from server.errors import PoolExhausted, PoolTimeout, Unavailable
from server.resilience.models import LatencyStats
from server.resilience.stats import RollingWindow

log = logging.getLogger(__name__)

ACQUIRE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    min_size: int
    max_size: int
    size: int
    idle: int
    in_use: int
    waiting: int
    waiting_peak: int
    utilization: float  # percent of max_size in use
    acquires: int
    acquire_timeouts: int
    acquire_errors: int
    acquire_latency: LatencyStats


class InstrumentedPool:
    def __init__(
        self,
        node: str,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        timeout: float,
        statement_cache_size: int,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.node = node
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._dsn = dsn
        self._statement_cache_size = statement_cache_size
        self._server_settings = dict(server_settings or {})
        self._pool: asyncpg.Pool | None = None
        self._starting = asyncio.Lock()
        # Places for callers, one per connection: waiting for one is ours (see ``reserve``).
        self._places = asyncio.Semaphore(max_size)
        self._closed = True
        self.waiting = 0
        self.waiting_peak = 0
        self.acquires = 0
        self.acquire_timeouts = 0
        self.acquire_errors = 0
        self._latency = RollingWindow(ACQUIRE_WINDOW_SECONDS, buckets=12, reservoir=128)

    async def open(self) -> None:
        """Ready to hand out connections; the first acquire connects (no I/O here)."""
        self._closed = False

    async def close(self, grace: float) -> None:
        """Close gracefully within ``grace`` seconds, then terminate what is left."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), grace)
        except TimeoutError:
            pool.terminate()

    async def _started_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._starting:
            if self._pool is not None:  # another caller started it while we queued
                return self._pool
            if self._closed:
                raise Unavailable(f"{self.node}: the connection pool is closed")
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=self.timeout,  # connect
                command_timeout=self.timeout,  # every statement, unless a call passes its own
                statement_cache_size=self._statement_cache_size,
                server_settings=self._server_settings or None,
            )
            if self._closed:  # closed while we were connecting
                pool.terminate()
                raise Unavailable(f"{self.node}: the connection pool is closed")
            self._pool = pool
            return pool

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for the block, or ``PoolExhausted``/``PoolTimeout``/``Unavailable``
        within the timeout."""
        async with self.reserve() as started, self.connection(started) as conn:
            yield conn

    @asynccontextmanager
    async def reserve(self) -> AsyncIterator[float]:
        """A place among ``max_size`` for the block (yields when the wait began), or
        ``PoolExhausted`` when none frees up within the timeout.

        Waiting for a place is our own saturation, so ``Node.run`` waits here *outside* its
        breaker: neither the breaker's call timeout nor its failure count sees a queue of our
        own making; only ``connection`` (connecting, the server's part) runs inside it."""
        if self._closed:
            raise Unavailable(f"{self.node}: the connection pool is closed")
        self.waiting += 1
        self.waiting_peak = max(self.waiting_peak, self.waiting)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                await self._places.acquire()
        except TimeoutError as exc:
            self.acquire_timeouts += 1
            raise PoolExhausted(self._timeout_message(exhausted=True)) from exc
        finally:
            self.waiting -= 1
        try:
            yield started
        finally:
            self._places.release()

    @asynccontextmanager
    async def connection(self, started: float) -> AsyncIterator[asyncpg.Connection]:
        """Under a ``reserve``: a connection (idle, or connected now) within the timeout, else
        ``PoolTimeout`` (connecting took too long) or ``Unavailable``."""
        try:
            # One deadline for starting the pool (first use) and getting a connection.
            async with asyncio.timeout(self.timeout):
                pool = await self._started_pool()
                conn = await pool.acquire()
        except TimeoutError as exc:
            self.acquire_timeouts += 1
            raise PoolTimeout(self._timeout_message(exhausted=False)) from exc
        except DRIVER_ERRORS as exc:
            self.acquire_errors += 1
            raise map_connect_error(self.node, exc) from exc
        now = time.monotonic()
        self.acquires += 1
        self._latency.success(now, now - started)
        try:
            yield conn
        finally:
            await self._release(pool, conn)

    async def _release(self, pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        """Give ``conn`` back. asyncpg resets it first; when that fails (the session ended
        under us) it terminates the connection and re-raises. The statement's own outcome,
        already decided, must not be replaced by that, and the pool has recovered."""
        try:
            await pool.release(conn)
        except DRIVER_ERRORS as exc:
            log.debug("%s: a connection failed its reset and was closed: %r", self.node, exc)

    def _timeout_message(self, *, exhausted: bool) -> str:
        pool = self._pool
        in_use = pool.get_size() - pool.get_idle_size() if pool is not None else 0
        if exhausted:
            why = "all connections stayed in use"
            in_use = max(in_use, self.max_size)
        else:
            why = "connecting to the server took too long"
        return (
            f"{self.node}: no connection within the {self.timeout:g}s acquire timeout: {why} "
            f"({in_use}/{self.max_size} in use, {max(self.waiting - 1, 0)} other callers waiting)"
        )

    def snapshot(self) -> PoolSnapshot:
        pool = self._pool
        size = pool.get_size() if pool is not None else 0
        idle = pool.get_idle_size() if pool is not None else 0
        in_use = size - idle
        return PoolSnapshot(
            min_size=self.min_size,
            max_size=self.max_size,
            size=size,
            idle=idle,
            in_use=in_use,
            waiting=self.waiting,
            waiting_peak=self.waiting_peak,
            utilization=100.0 * in_use / self.max_size,
            acquires=self.acquires,
            acquire_timeouts=self.acquire_timeouts,
            acquire_errors=self.acquire_errors,
            acquire_latency=self._latency.latency_stats(time.monotonic()),
        )
