"""``MemoryStore``: a bounded least-recently-used map of entries.

Used twice by the cache: as the in-process hot tier in front of Redis, and as the whole cache
when Redis is absent or failing. Expired entries are dropped when met; the bound evicts the
least recently used entry.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from server.cache.entry import Entry
from server.glob import Glob

MATCH_SLICE = 1000  # keys matched between two turns of the loop


class MemoryStore:
    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("a memory store needs room for at least one entry")
        self.max_items = max_items
        self.evictions = 0
        self._data: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def entries(self) -> OrderedDict[str, Entry]:
        """The map itself, least recently used first, for a reader that binds its methods
        once (``Cache.hot_reader``): it must ``move_to_end`` what it reads."""
        return self._data

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, now: float) -> Entry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        data = self._data
        data[key] = entry
        data.move_to_end(key)
        if len(data) > self.max_items:
            data.popitem(last=False)
            self.evictions += 1

    def pop(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    async def delete_matching(self, pattern: Glob) -> int:
        """Delete the keys ``pattern`` matches, serving the loop between slices of
        ``MATCH_SLICE`` keys: the costliest pattern allowed (256 bytes, 32 stars) takes about
        1.2 ms per thousand keys, and the store may hold ``CACHE_MEMORY_MAX_ITEMS`` of them.
        A key stored meanwhile is not looked at: it was written after the call began."""
        keys = list(self._data)
        data = self._data
        deleted = 0
        for start in range(0, len(keys), MATCH_SLICE):
            if start:
                await asyncio.sleep(0)
            for key in keys[start : start + MATCH_SLICE]:
                if pattern.matches(key) and data.pop(key, None) is not None:
                    deleted += 1
        return deleted

    def clear(self) -> None:
        self._data.clear()
