"""``Entry``: one cached value with its freshness, and how it is written to Redis.

Times in an ``Entry`` are on the cache's clock (``time.perf_counter``, monotonic); in Redis they
are wall-clock UNIX seconds, since other instances read them. The Redis value is the JSON array
``[fresh_until, expires_at, stored_at, value]`` (orjson); the key's own TTL is ``expires_at``.
A value past ``fresh_until`` but before ``expires_at`` is stale: kept only so that it can be
served, marked ``STALE``, while its source fails.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson

clock = time.perf_counter


class Entry:
    __slots__ = ("_json", "expires_at", "fresh_until", "stored_at", "value")

    def __init__(self, value: Any, fresh_until: float, expires_at: float, stored_at: float) -> None:
        self.value = value
        self._json: orjson.Fragment | None = None
        self.fresh_until = fresh_until  # clock()
        self.expires_at = expires_at  # clock()
        self.stored_at = stored_at  # wall clock, UNIX seconds

    @classmethod
    def new(cls, value: Any, fresh_for: float, keep_for: float) -> Entry:
        now = clock()
        return cls(value, now + fresh_for, now + keep_for, time.time())

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def json(self) -> orjson.Fragment:
        """The value as JSON, encoded on first use: each later hit for a wire adapter copies
        these bytes into its response instead of serializing the value again."""
        encoded = self._json
        if encoded is None:
            encoded = self._json = orjson.Fragment(orjson.dumps(self.value))
        return encoded

    def encode(self) -> bytes:
        offset = time.time() - clock()
        expires = self.expires_at + offset if self.expires_at != math.inf else None
        return orjson.dumps([self.fresh_until + offset, expires, self.stored_at, self.value])

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        """Raises ``ValueError`` for anything that is not an envelope."""
        data = orjson.loads(raw)
        now = clock()
        if not isinstance(data, list) or len(data) != 4:
            raise ValueError("not a cache envelope")
        fresh_until, expires_at, stored_at, value = data
        offset = now - time.time()
        return cls(
            value,
            fresh_until + offset,
            math.inf if expires_at is None else expires_at + offset,
            stored_at,
        )
