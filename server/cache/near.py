"""``NearTier``: the in-process hot tier, coherent with Redis while its tracker is connected.

Only the tracker turns it on (``activate``) once Redis has accepted ``CLIENT TRACKING``, and
off (``deactivate``) when that connection is lost; both flush it, because what changed in
between was never announced. While off, lookups miss and nothing is stored: every read goes to
Redis.

A value read from Redis is stored only if nothing invalidated its key while the read was in
flight. The GET reply and the invalidation travel on different connections, so an invalidation
may overtake the reply of a read that returned the old value: ``begin`` before the read and
``finish`` after it detect exactly that, per read, and refuse the stale store. Per read, not per
key: a hot key under load always has a read in flight, and a mark kept until the key's reads
drain would refuse every later read too, sending each request to Redis for as long as the load
lasts. A read begun after the key's last invalidation stores what it read.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.cache.entry import Entry
from server.cache.memory import MemoryStore
from server.glob import Glob


class NearTier:
    def __init__(self, max_items: int) -> None:
        self.store = MemoryStore(max_items)
        self.active = False
        self.hits = 0
        self.invalidated_keys = 0
        self.flushes = 0
        # A clock of the events that spoil reads in flight: a flush, or the invalidation of a
        # key being read. ``begin`` hands out its time; ``finish`` compares.
        self._now = 0
        self._flushed_at = 0
        # key -> [reads in flight, time of the key's last invalidation during them]
        self._reading: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.store)

    def get(self, key: str, now: float) -> Entry | None:
        if not self.active:
            return None
        entry = self.store.get(key, now)
        if entry is not None:
            self.hits += 1
        return entry

    def begin(self, key: str) -> int:
        """Note a read of ``key`` from Redis; pass the token to ``finish``."""
        reads = self._reading.get(key)
        if reads is None:
            self._reading[key] = [1, 0]
        else:
            reads[0] += 1
        return self._now

    def finish(self, key: str, token: int, entry: Entry | None) -> None:
        """End a read; store ``entry`` unless the tier was flushed or the key invalidated since
        ``begin``."""
        reads = self._reading[key]
        if reads[0] == 1:
            del self._reading[key]
        else:
            reads[0] -= 1
        if entry is None or not self.active:
            return
        if token >= self._flushed_at and token >= reads[1]:
            self.store.put(key, entry)

    def invalidate(self, keys: Iterable[str]) -> None:
        reading = self._reading
        for key in keys:
            self.store.pop(key)
            self.invalidated_keys += 1
            reads = reading.get(key)
            if reads is not None:
                self._now += 1
                reads[1] = self._now

    async def delete_matching(self, pattern: Glob) -> int:
        # In-flight reads of matching keys cannot be found by pattern cheaply: refuse them all.
        self._spoil_all()
        return await self.store.delete_matching(pattern)

    def flush(self) -> None:
        self._spoil_all()
        self.flushes += 1
        self.store.clear()

    def _spoil_all(self) -> None:
        self._now += 1
        self._flushed_at = self._now

    def activate(self) -> None:
        self.flush()
        self.active = True

    def deactivate(self) -> None:
        self.active = False
        self.flush()
