"""``SingleFlight``: concurrent callers for one key share one computation (per process).

The first caller (the leader) runs the function; callers arriving while it runs wait for its
outcome, value or error. Followers wait through ``asyncio.shield``, so a follower that gives up
(its request timed out) does not cancel the others. If the leader itself is cancelled, the
waiting followers do not inherit its cancellation: one of them becomes the new leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _LeaderGone(Exception):
    """The leader was cancelled before it finished; a follower takes over."""


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``(result, shared)``: ``shared`` is True for a follower that waited on a leader."""
        while (running := self._calls.get(key)) is not None:
            try:
                return await asyncio.shield(running), True
            except _LeaderGone:
                continue
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        try:
            result = await fn()
        except asyncio.CancelledError:
            _settle(future, _LeaderGone())
            raise
        except BaseException as exc:
            _settle(future, exc)
            raise
        finally:
            del self._calls[key]
        future.set_result(result)
        return result, False


def _settle(future: asyncio.Future[Any], exc: BaseException) -> None:
    future.set_exception(exc)
    future.exception()  # mark it retrieved: with no follower, asyncio would log it as lost
