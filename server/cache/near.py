"""``NearTier``: the in-process hot tier, coherent with Redis while its tracker is connected.

Only the tracker turns it on (``activate``) once Redis has accepted ``CLIENT TRACKING``, and
off (``deactivate``) when that connection is lost; both flush it, because what changed in
between was never announced. While off, lookups miss and nothing is stored: every read goes to
Redis.

A value read from Redis is stored only if nothing invalidated its key while the read was in
flight. The GET reply and the invalidation travel on different connections, so an invalidation
may overtake the reply of a read that returned the old value: ``begin`` before the read and
``finish`` after it detect exactly that, per key, and refuse the stale store.
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
        self._epoch = 0  # bumped by every flush: reads begun before it may not store
        self._reading: dict[str, int] = {}  # key -> reads in flight
        self._dirty: set[str] = set()  # keys invalidated while a read of them was in flight

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
        self._reading[key] = self._reading.get(key, 0) + 1
        return self._epoch

    def finish(self, key: str, token: int, entry: Entry | None) -> None:
        """End a read; store ``entry`` unless the tier was flushed or the key invalidated since
        ``begin``."""
        left = self._reading[key] - 1
        dirty = key in self._dirty
        if left:
            self._reading[key] = left
        else:
            del self._reading[key]
            self._dirty.discard(key)
        if entry is not None and self.active and token == self._epoch and not dirty:
            self.store.put(key, entry)

    def invalidate(self, keys: Iterable[str]) -> None:
        reading = self._reading
        for key in keys:
            self.store.pop(key)
            self.invalidated_keys += 1
            if key in reading:
                self._dirty.add(key)

    async def delete_matching(self, pattern: Glob) -> int:
        # In-flight reads of matching keys cannot be found by pattern cheaply: refuse them all.
        self._epoch += 1
        return await self.store.delete_matching(pattern)

    def flush(self) -> None:
        self._epoch += 1
        self.flushes += 1
        self.store.clear()

    def activate(self) -> None:
        self.flush()
        self.active = True

    def deactivate(self) -> None:
        self.active = False
        self.flush()
