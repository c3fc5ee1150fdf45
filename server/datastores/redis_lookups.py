"""``OwnLookups``: the keyspace hits and misses infrawatch's own commands cause.

Redis counts ``keyspace_hits``/``keyspace_misses`` (INFO stats) for every key a read command
looks up, whoever sends it. infrawatch looks keys up too: its procedure cache's GETs, the queue
collector's LLEN/ZCARD/EXISTS/TYPE, the key sampler's PTTL. On a quiet deployment those would be
the only lookups and, mostly misses, would make "the application's hit rate" fall to 0 %. So
every read infrawatch sends is tallied here, from its reply, and ``monitoring.redisHealth``
subtracts the tally from the server's counters.

From the reply alone: an aggregate (list, set, sorted set, hash) that exists is never empty
(Redis deletes the key with its last element), so a count of 0 is a miss. SISMEMBER and HGET
replying 0/nil may also be a hit on a key without that member or field; they count as misses
(the error is at most one lookup per queue per read, in the direction of a lower rate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

# Commands that look one key up, and whether their reply says the key was found.
_COUNTS = frozenset({"LLEN", "ZCARD", "HLEN", "SCARD", "SISMEMBER", "SMEMBERS"})
_VALUES = frozenset({"GET", "HGET", "LINDEX"})


class OwnLookups:
    """Running totals of this process's own key lookups (never reset).

    A lookup is tallied when its reply arrives, after Redis has counted it: a reading of
    Redis's counters taken while one of ours is in flight may hold it while the tally does
    not yet. So each read that looks keys up is bracketed by ``begin()``/``end()``, and the
    reader waits for ``quiet()`` and checks ``started`` did not move while it read.
    """

    __slots__ = ("_quiet", "hits", "misses", "pending", "started")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.started = 0  # reads begun, ever
        self.pending = 0  # reads begun and not ended
        self._quiet = asyncio.Event()
        self._quiet.set()

    def begin(self) -> None:
        self.started += 1
        self.pending += 1
        self._quiet.clear()

    def end(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self._quiet.set()

    async def quiet(self) -> None:
        """Until none of our reads is in flight."""
        await self._quiet.wait()

    def add(self, *, hits: int = 0, misses: int = 0) -> None:
        self.hits += hits
        self.misses += misses

    def value(self, found: object) -> None:
        """One lookup whose reply is the value: ``None`` is a miss."""
        if found is None:
            self.misses += 1
        else:
            self.hits += 1

    def reply(self, command: Sequence[Any], reply: object) -> None:
        """Tally one command of a pipeline by its reply (see the module docstring)."""
        if isinstance(reply, Exception) or not command:
            return  # WRONGTYPE and the like: the key was found, but no figure is worth a guess
        name = str(command[0]).upper()
        if name in _COUNTS:
            self.add(hits=1) if _nonzero(reply) else self.add(misses=1)
        elif name in _VALUES:
            self.value(reply)
        elif name == "EXISTS":
            found = int(reply)  # type: ignore[call-overload]
            self.add(hits=found, misses=len(command) - 1 - found)
        elif name == "TYPE":
            kind = reply.decode() if isinstance(reply, bytes) else str(reply)
            self.add(misses=1) if kind == "none" else self.add(hits=1)
        elif name == "PTTL":
            self.add(misses=1) if reply == -2 else self.add(hits=1)
        elif name == "MEMORY" and len(command) > 1 and str(command[1]).upper() == "USAGE":
            self.value(reply)

    def scan(self, cursor: int, found: int) -> None:
        """One SSCAN/HSCAN call: a missing key answers cursor 0 and nothing."""
        if cursor == 0 and found == 0:
            self.misses += 1
        else:
            self.hits += 1


def _nonzero(reply: object) -> bool:
    if isinstance(reply, int | float):
        return reply != 0
    if isinstance(reply, list | set | tuple | dict):
        return len(reply) > 0
    return reply is not None
