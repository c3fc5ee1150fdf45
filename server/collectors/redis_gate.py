"""``RedisGate``: how the collectors reach Redis.

Every round trip goes through the ``redis-cache`` breaker (one breaker call per round trip, so
each is bounded by the breaker's call timeout and counted on its own), and redis-py's errors,
``OSError`` and timeouts become ``Unavailable`` here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from server.errors import Unavailable

if TYPE_CHECKING:
    from server.services import Services

P = ParamSpec("P")
T = TypeVar("T")
BREAKER = "redis-cache"
# Keys per SCAN call, commands per pipeline: big enough to amortise the round trip, small
# enough that one reply never holds Redis (or our event loop) for long.
BATCH = 1000
WRONGTYPE = "WRONGTYPE"


class RedisGate:
    def __init__(self, services: Services) -> None:
        # The client is looked up per call: the Redis cleanup context sets and clears it.
        self._services = services

    @property
    def configured(self) -> bool:
        return self._services.redis is not None

    async def run(
        self, op: Callable[Concatenate[Redis, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await op(raw_client, *args, **kwargs)`` through the breaker; ``Unavailable`` when
        Redis is not configured, unreachable, too slow, or its breaker is open."""
        client = self._services.redis
        if client is None:
            raise Unavailable("redis is not configured (set REDIS_URL)")
        breaker = self._services.breakers.get(BREAKER)
        return await breaker.call(_mapped, partial(op, client.raw, *args, **kwargs))

    async def dbsize(self) -> int:
        return await self.run(_dbsize)

    async def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        return await self.run(_scan, cursor, count)

    async def sscan(self, key: str, cursor: int) -> tuple[int, list[bytes]]:
        return await self.run(_sscan, key, cursor)

    async def hscan(self, key: str, cursor: int) -> tuple[int, dict[bytes, bytes]]:
        return await self.run(_hscan, key, cursor)

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` (each ``(name, *args)``) in pipelines of ``BATCH``; a command's own
        error (WRONGTYPE, an unknown or renamed command) comes back in its place, not raised."""
        results: list[Any] = []
        for start in range(0, len(commands), BATCH):
            results.extend(await self.run(_execute, commands[start : start + BATCH]))
        return results


async def _mapped(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except (RedisError, OSError, TimeoutError) as exc:
        raise Unavailable(f"redis unavailable: {type(exc).__name__}: {exc}") from exc


async def _dbsize(raw: Redis) -> int:
    return int(await raw.dbsize())


async def _scan(raw: Redis, cursor: int, count: int) -> tuple[int, list[bytes]]:
    next_cursor, keys = await raw.scan(cursor, count=count)
    return int(next_cursor), _as_bytes(keys)


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
