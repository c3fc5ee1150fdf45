"""``RedisGate``: how the collectors reach Redis, in the shapes they need (DBSIZE, SCAN pages,
pipelines, SSCAN/HSCAN of keys other software owns).

Every round trip is one ``RedisClient.execute``: through the ``redis-cache`` breaker (so each
is bounded by the breaker's call timeout and counted on its own) and the client's connection
bound, with redis-py's errors mapped to ``Unavailable`` there. The one redis-py error read here
is a WRONGTYPE reply to SSCAN or HSCAN, which is an empty answer, not a failure. Callers catch
``Unavailable`` only; in a pipeline's answer a command's own error is an ``Exception`` value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from server.datastores.redis import RedisClient
from server.datastores.redis_lookups import OwnLookups
from server.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")
# Keys per SCAN call, commands per pipeline: big enough to amortise the round trip, small
# enough that one reply never holds Redis (or our event loop) for long.
BATCH = 1000
WRONGTYPE = "WRONGTYPE"


class RedisGate:
    def __init__(self, client: RedisClient | None) -> None:
        self._client = client

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def run(
        self, op: Callable[Concatenate[Redis, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await op(raw_client, *args, **kwargs)`` through the breaker; ``Unavailable`` when
        Redis is not configured, unreachable, too slow, or its breaker is open."""
        client = self._client
        if client is None:
            raise Unavailable("redis is not configured (set REDIS_URL)")
        # Typed as the standalone client: every command here is one a Cluster client takes too.
        raw = cast(Redis, client.raw)
        return await client.execute(op, raw, *args, **kwargs)

    async def dbsize(self) -> int:
        return await self.run(_dbsize)

    async def scan_nodes(self) -> list[Any]:
        """What one SCAN walk covers: every primary in Cluster mode (a cursor is per node
        there), else ``[None]``, the one server."""
        client = self._client
        if client is None or not isinstance(client.raw, RedisCluster):
            return [None]
        cluster = client.raw
        if not cluster.get_primaries():
            # the client learns the nodes with its first command: none was sent yet
            await client.execute(cluster.initialize)
        return list(cluster.get_primaries())

    async def scan(self, cursor: int, count: int, node: Any = None) -> tuple[int, list[bytes]]:
        """One SCAN call, on ``node`` (one of ``scan_nodes()``)."""
        return await self.run(_scan, cursor, count, node)

    async def sscan(self, key: str, cursor: int) -> tuple[int, list[bytes]]:
        with self._lookups() as tally:
            next_cursor, members = await self.run(_sscan, key, cursor)
            tally.scan(next_cursor, len(members))
        return next_cursor, members

    async def hscan(self, key: str, cursor: int) -> tuple[int, dict[bytes, bytes]]:
        with self._lookups() as tally:
            next_cursor, entries = await self.run(_hscan, key, cursor)
            tally.scan(next_cursor, len(entries))
        return next_cursor, entries

    @contextlib.contextmanager
    def _lookups(self) -> Iterator[OwnLookups]:
        """Our own key lookups, tallied so that monitoring.redisHealth leaves them out."""
        if self._client is None:
            raise Unavailable("redis is not configured (set REDIS_URL)")
        tally = self._client.own_lookups
        tally.begin()
        try:
            yield tally
        finally:
            tally.end()

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` (each ``(name, *args)``) in pipelines of ``BATCH``; a command's own
        error (WRONGTYPE, an unknown or renamed command) comes back in its place, not raised."""
        results: list[Any] = []
        with self._lookups() as tally:
            for start in range(0, len(commands), BATCH):
                batch = commands[start : start + BATCH]
                replies = await self.run(_execute, batch)
                for command, reply in zip(batch, replies, strict=True):
                    tally.reply(command, reply)
                results.extend(replies)
        return results


async def _dbsize(raw: Redis) -> int:
    return int(await raw.dbsize())


async def _scan(raw: Redis, cursor: int, count: int, node: Any) -> tuple[int, list[bytes]]:
    if node is None:
        next_cursor, keys = await raw.scan(cursor, count=count)
        return int(next_cursor), _as_bytes(keys)
    # RedisCluster.scan answers {node: cursor} and the keys of the one node asked.
    cursors: Any
    cursors, keys = await raw.scan(cursor, count=count, target_nodes=node)
    return int(next(iter(cursors.values()))), _as_bytes(keys)


# SSCAN and HSCAN read keys that other software owns: one of another type is not ours to read
# (an empty answer), and certainly not a sign that Redis is down (no breaker failure).


async def _sscan(raw: Redis, key: str, cursor: int) -> tuple[int, list[bytes]]:
    try:
        next_cursor, members = await raw.sscan(key, cursor, count=BATCH)
    except ResponseError as exc:
        if not str(exc).startswith(WRONGTYPE):
            raise
        return 0, []
    return int(next_cursor), _as_bytes(members)


async def _hscan(raw: Redis, key: str, cursor: int) -> tuple[int, dict[bytes, bytes]]:
    try:
        next_cursor, entries = await raw.hscan(key, cursor, count=BATCH)
    except ResponseError as exc:
        if not str(exc).startswith(WRONGTYPE):
            raise
        return 0, {}
    return int(next_cursor), dict(entries)  # type: ignore[arg-type]  # bytes: no decoding


def _as_bytes(items: list[bytes | str]) -> list[bytes]:
    # Key names stay bytes whatever the client's decode_responses: a key need not be UTF-8.
    return [item.encode() if isinstance(item, str) else item for item in items]


async def _execute(raw: Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    async with raw.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=False)
