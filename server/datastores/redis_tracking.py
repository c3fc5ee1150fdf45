"""``TrackingConnection``: one Redis connection with ``CLIENT TRACKING ON BCAST PREFIX <prefix>``,
the invalidation stream of a client-side cache.

It is a dedicated RESP3 connection, outside the client's pool (``RedisClient.tracking_connection``):
Redis pushes ``invalidate [keys]`` on it whenever any client changes, deletes or expires a key
under the prefix, and ``invalidate null`` on FLUSHDB or FLUSHALL. Each push reaches the
``on_invalidate`` callback as the list of keys, or ``None`` for a flush. BCAST, rather than the
default mode, because Redis then remembers nothing per key for us, and reads need not go through
this connection.

Redis sends these pushes only on the connection that turned tracking on, so a connection is
used once: ``open()``, ``listen()`` until it is lost, ``close()``; the caller opens a new one to
start again. While idle for ``REDIS_HEALTH_CHECK_INTERVAL`` seconds, ``listen()`` probes the
other end (PING; ROLE in Sentinel mode, where a demoted master is as good as lost).

Errors: ``open()`` and ``listen()`` raise ``server.errors.Unavailable`` only, redis-py's and the
OS's errors mapped here by ``RedisClient.unavailable``. ``open()`` runs through the client's
``execute`` (its breaker, call timeout and connection bound); ``listen()`` does not: it lasts as
long as the connection.

The push handler is set on redis-py's parser (``Connection._parser``): redis-py's asyncio client
has no public hook for invalidation pushes (its client-side cache is synchronous only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from server.datastores.redis import RedisClient, connection_errors
from server.errors import Unavailable

# Keys changed under the prefix, or None when the whole database was flushed.
OnInvalidate = Callable[[list[str] | None], None]
_PUSHED = object()  # what a read returns when it met an invalidation push


class TrackingConnection:
    def __init__(
        self, client: RedisClient, prefix: str, on_invalidate: OnInvalidate, *, name: str
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._on_invalidate = on_invalidate
        self._name = name  # its CLIENT SETNAME, so operators can tell it in CLIENT LIST
        self.probe_interval = client.settings.redis_health_check_interval or math.inf
        self.client_id: int | None = None  # Redis's CLIENT ID of the connection, once open
        self._conn: AbstractConnection | None = None

    async def open(self) -> int:
        """Connect and turn tracking on; returns the connection's client id. ``Unavailable``
        when Redis cannot be reached, refuses, is in Cluster mode or the breaker rejects it."""
        self._conn = await self._client.execute(self._open)
        assert self.client_id is not None
        return self.client_id

    async def listen(self) -> NoReturn:
        """Hand every invalidation push to ``on_invalidate`` until the connection is lost or
        closed, then raise ``Unavailable``."""
        conn = self._conn
        if conn is None:
            raise Unavailable("the tracking connection is not open")
        try:
            while True:
                reply = await conn.read_response(timeout=self.probe_interval, push_request=True)
                if reply is None:  # idle for a whole interval: is the other end still there?
                    await self._probe(conn)
        except connection_errors() as exc:
            raise self._client.unavailable(exc) from exc

    async def close(self) -> None:
        """Drop the connection (a ``listen()`` under way then raises); safe to repeat."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)

    async def _open(self) -> AbstractConnection:
        conn = self._client.tracking_connection(self._name)
        if conn is None:
            raise Unavailable("client tracking is not available in Redis Cluster mode")
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            conn._parser.set_invalidation_push_handler(self._on_push)  # type: ignore[attr-defined]
            self.client_id = await self._command(conn, "CLIENT", "ID")
            reply = await self._command(
                conn, "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self._prefix
            )
            if reply not in (b"OK", "OK", True):
                raise RedisConnectionError(f"CLIENT TRACKING answered {reply!r}")
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn

    async def _probe(self, conn: AbstractConnection) -> None:
        if self._client.mode == "sentinel":
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

    async def _on_push(self, message: list[Any]) -> object:
        keys = message[1] if len(message) > 1 else None
        self._on_invalidate(
            None if keys is None else [k.decode() if isinstance(k, bytes) else k for k in keys]
        )
        return _PUSHED
