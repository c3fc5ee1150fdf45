"""``Revocations``: signed-in sessions ended by signing out, before their cookie expires.

A session cookie is valid by its signature alone until it expires; signing out must also make
a copy of the cookie worthless. The session id is written to Redis under
``infrawatch:session:revoked:<sid>`` with the session's remaining lifetime as its TTL, so every
instance and worker sharing the Redis refuses it, and the key goes away when the cookie would
have expired anyway. An in-process copy answers first and keeps working while Redis is down or
not configured (then a revocation holds in this process only, which is all a single process
needs). A Redis that cannot be read counts as "not revoked": an outage must not sign every
operator out; it is logged.

Only signed-in sessions are looked up: a visitor's session (no operator) grants nothing.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from server.datastores.redis import RedisClient
from server.errors import Unavailable
from web.session import Session

log = logging.getLogger(__name__)

KEY_PREFIX = "infrawatch:session:revoked:"
MAX_LOCAL = 10_000


class Revocations:
    def __init__(self, redis: RedisClient | None, *, max_local: int = MAX_LOCAL) -> None:
        self.redis = redis
        self.max_local = max_local
        self._local: OrderedDict[str, int] = OrderedDict()  # sid -> expiry (epoch seconds)

    async def revoke(self, session: Session) -> None:
        now = time.time()
        self._remember(session.sid, session.expires, now)
        ttl = int(session.expires - now) + 1
        if self.redis is None or ttl <= 0:
            return
        try:
            await self.redis.execute(self.redis.raw.set, KEY_PREFIX + session.sid, "1", ex=ttl)
        except Unavailable as exc:
            log.warning("session revocation kept in this process only: %s", exc.message)

    async def is_revoked(self, session: Session) -> bool:
        expires = self._local.get(session.sid)
        if expires is not None:
            return True
        if self.redis is None:
            return False
        try:
            found = await self.redis.execute(self.redis.raw.exists, KEY_PREFIX + session.sid)
        except Unavailable as exc:
            log.warning("session revocations unreadable, trusting the signature: %s", exc.message)
            return False
        return bool(found)

    def _remember(self, sid: str, expires: int, now: float) -> None:
        self._local[sid] = expires
        # Expired entries are dropped oldest first, and the copy never holds more than its bound.
        while self._local:
            oldest_sid, oldest_expires = next(iter(self._local.items()))
            if oldest_expires > now and len(self._local) <= self.max_local:
                break
            del self._local[oldest_sid]
