"""``MemoryStore``: a bounded least-recently-used map of entries, and Redis glob matching.

Used twice by the cache: as the in-process hot tier in front of Redis, and as the whole cache
when Redis is absent or failing. Expired entries are dropped when met; the bound evicts the
least recently used entry.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from server.cache.entry import Entry


class MemoryStore:
    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("a memory store needs room for at least one entry")
        self.max_items = max_items
        self.evictions = 0
        self._data: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

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

    def get_fresh(self, key: str, now: float) -> Entry | None:
        """``get``, for a fresh entry only (a stale one stays): the hot path in one call."""
        entry = self._data.get(key)
        if entry is None or entry.fresh_until <= now:
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

    def delete_matching(self, pattern: re.Pattern[str]) -> int:
        doomed = [key for key in self._data if pattern.fullmatch(key)]
        for key in doomed:
            del self._data[key]
        return len(doomed)

    def clear(self) -> None:
        self._data.clear()


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Redis's glob (``*``, ``?``, ``[abc]``, ``[^a-z]``, ``\\x``) as a regex for fullmatch,
    so the memory tiers drop exactly the keys ``SCAN MATCH`` finds in Redis."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("^")
                body = body[1:] if negate else body
                escaped = "".join("\\" + c if c in "\\]^[" else c for c in body)
                out.append(f"[{'^' if negate else ''}{escaped}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)
