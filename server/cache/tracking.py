"""``Tracker``: keeps the hot tier coherent through Redis server-assisted client-side caching.

One dedicated RESP3 connection runs ``CLIENT TRACKING ON BCAST PREFIX <cache prefix>``: Redis
then pushes ``invalidate [keys]`` on it whenever any client, on any instance, changes a key under
the prefix (writes, deletes, UNLINK, expiry, eviction), and ``invalidate null`` on FLUSHDB or
FLUSHALL. BCAST, rather than the default mode, because Redis then remembers nothing per key for
us, and reads need not go through this connection.

Redis sends these pushes only on the connection that turned tracking on. When that connection
is lost, nothing tells us what changed meanwhile: the hot tier is flushed and bypassed at once
(``NearTier.deactivate``) and turned back on, empty, only after a new connection has tracking on
again. An idle connection is probed every ``REDIS_HEALTH_CHECK_INTERVAL`` seconds (PING; ROLE in
Sentinel mode), and in Sentinel mode the client's master watch drops it as soon as the master
moves.

The push handler is set on redis-py's parser (``Connection._parser``): redis-py's asyncio client
has no public hook for invalidation pushes (its client-side cache is synchronous only).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from server import background
from server.cache.near import NearTier
from server.datastores.redis import RedisClient
from server.errors import Unavailable

log = logging.getLogger(__name__)

CLIENT_NAME = "infrawatch-cache-tracking"
RETRY_MIN = 0.05  # seconds before the first reconnect, doubling up to RETRY_MAX
RETRY_MAX = 5.0
_PUSHED = object()  # what a read returns when it met an invalidation push


class Tracker:
    def __init__(self, client: RedisClient, near: NearTier, prefix: str) -> None:
        self.client = client
        self.near = near
        self.prefix = prefix
        settings = client.settings
        self.probe_interval = settings.redis_health_check_interval or math.inf
        self.connected = False
        self.connects = 0
        self.drops = 0
        self.messages = 0
        self.last_error: str | None = None
        self.client_id: int | None = None
        self._conn: AbstractConnection | None = None
        client.add_master_listener(self._master_moved)

    async def run(self) -> None:
        """Connect, listen, and reconnect with backoff, until cancelled."""
        delay = RETRY_MIN
        while True:
            conn: AbstractConnection | None = None
            try:
                conn = self._conn = await self.client.execute(self._open)
                self.connected = True
                self.connects += 1
                delay = RETRY_MIN
                self.near.activate()
                log.info("cache tracking connected (client id %s): hot tier on", self.client_id)
                await self._listen(conn)
            except (Unavailable, RedisError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.connected:
                    self.drops += 1
                    log.warning(
                        "cache tracking connection lost (%s): hot tier flushed and bypassed",
                        self.last_error,
                    )
            finally:
                # Also on cancellation (shutdown): nothing may be served from an unwatched tier.
                self.near.deactivate()
                self.connected = False
                self._conn = None
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _open(self) -> AbstractConnection:
        conn = self.client.tracking_connection(CLIENT_NAME)
        if conn is None:
            raise Unavailable("client tracking is not available in Redis Cluster mode")
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            conn._parser.set_invalidation_push_handler(self._on_push)  # type: ignore[attr-defined]
            self.client_id = await self._command(conn, "CLIENT", "ID")
            reply = await self._command(
                conn, "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.prefix
            )
            if reply not in (b"OK", "OK", True):
                raise RedisConnectionError(f"CLIENT TRACKING answered {reply!r}")
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn

    async def _listen(self, conn: AbstractConnection) -> None:
        timeout = self.probe_interval
        while True:
            reply = await conn.read_response(timeout=timeout, push_request=True)
            if reply is None:  # idle for a whole interval: is the other end still there?
                await self._probe(conn)

    async def _probe(self, conn: AbstractConnection) -> None:
        if self.client.mode == "sentinel":
            role = await self._command(conn, "ROLE")
            if not role or role[0] not in (b"master", "master"):
                raise RedisConnectionError("the tracked server is no longer the master")
        else:
            await self._command(conn, "PING")

    @staticmethod
    async def _command(conn: AbstractConnection, *args: Any) -> Any:
        """Send one command and read its reply, handling pushes that arrive first."""
        await conn.send_command(*args)
        while True:
            reply = await conn.read_response(push_request=True)
            if reply is not _PUSHED:
                return reply

    async def _master_moved(self) -> None:
        # Our pushes come from the old master: drop the connection; run() reconnects.
        if self._conn is not None:
            self.last_error = "the Sentinel master moved"
            await self._conn.disconnect(nowait=True)

    async def _on_push(self, message: list[Any]) -> object:
        self.messages += 1
        keys = message[1] if len(message) > 1 else None
        if keys is None:
            self.near.flush()  # FLUSHDB / FLUSHALL
        else:
            self.near.invalidate(k.decode() if isinstance(k, bytes) else k for k in keys)
        return _PUSHED

    async def stop(self, task: asyncio.Task[None]) -> None:
        await background.stop(task)
