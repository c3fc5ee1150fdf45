"""``Tracker``: keeps the hot tier coherent through Redis server-assisted client-side caching.

A ``TrackingConnection`` (``datastores/redis_tracking.py``) runs ``CLIENT TRACKING ON BCAST
PREFIX <cache prefix>`` and hands over Redis's invalidation pushes: the keys any client, on any
instance, changed under the prefix (writes, deletes, UNLINK, expiry, eviction) are dropped from
the hot tier, and a FLUSHDB or FLUSHALL flushes it.

Redis sends these pushes only on the connection that turned tracking on. When that connection
is lost, nothing tells us what changed meanwhile: the hot tier is flushed and bypassed at once
(``NearTier.deactivate``) and turned back on, empty, only after a new connection has tracking on
again; the tracker reconnects with backoff. The connection probes itself when idle, and in
Sentinel mode the client's master watch makes the tracker drop it as soon as the master moves.
"""

from __future__ import annotations

import asyncio
import logging

from server import background
from server.cache.near import NearTier
from server.datastores.redis import RedisClient
from server.datastores.redis_tracking import TrackingConnection
from server.errors import Unavailable

log = logging.getLogger(__name__)

CLIENT_NAME = "infrawatch-cache-tracking"
RETRY_MIN = 0.05  # seconds before the first reconnect, doubling up to RETRY_MAX
RETRY_MAX = 5.0


class Tracker:
    def __init__(self, client: RedisClient, near: NearTier, prefix: str) -> None:
        self.client = client
        self.near = near
        self.prefix = prefix
        self.connected = False
        self.connects = 0
        self.drops = 0
        self.messages = 0
        self.last_error: str | None = None
        self.client_id: int | None = None
        self._conn: TrackingConnection | None = None
        client.add_master_listener(self._master_moved)

    async def run(self) -> None:
        """Connect, listen, and reconnect with backoff, until cancelled."""
        delay = RETRY_MIN
        while True:
            conn = TrackingConnection(self.client, self.prefix, self._invalidated, name=CLIENT_NAME)
            try:
                self.client_id = await conn.open()
                self._conn = conn
                self.connected = True
                self.connects += 1
                delay = RETRY_MIN
                self.near.activate()
                log.info("cache tracking connected (client id %s): hot tier on", self.client_id)
                await conn.listen()
            except Exception as exc:
                # Unavailable is the expected way out (a refused probe is one too); anything
                # else (a bug in the push path) must not end the task either: the hot tier
                # would stay off for good.
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, Unavailable):
                    log.exception("cache tracking failed")
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
                await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _master_moved(self) -> None:
        # Our pushes come from the old master: drop the connection; run() reconnects.
        if self._conn is not None:
            self.last_error = "the Sentinel master moved"
            await self._conn.close()

    def _invalidated(self, keys: list[str] | None) -> None:
        self.messages += 1
        if keys is None:
            self.near.flush()  # FLUSHDB / FLUSHALL
        else:
            self.near.invalidate(keys)

    async def stop(self, task: asyncio.Task[None]) -> None:
        await background.stop(task)
