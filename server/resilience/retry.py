"""Around a breaker: ``Retry`` (exponential backoff, full jitter) and ``call_with_fallback``.

Compose them by passing ``breaker.call`` as the function:
``await Retry(on=(CallTimeout,)).call(breaker.call, fetch, key)``. Every attempt then goes
through the breaker, so retries are counted, timed and can trip it like any call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from server.resilience.breaker import Breaker, CircuitOpen

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("server.resilience")


@dataclass(frozen=True, slots=True)
class Retry:
    """Up to ``attempts`` tries in all, retrying only errors of the types in ``on``.

    Before retry ``n`` (0-based) it sleeps a uniform random time in
    ``[0, min(max_delay, base_delay * 2**n))`` ("full jitter"), so that many callers failing
    together do not retry in lockstep. ``CircuitOpen`` is never retried, even when ``on``
    names ``Unavailable``: the breaker has just said the dependency is down, and retrying
    would only spin against it.
    """

    on: tuple[type[BaseException], ...]
    attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if not self.on:
            raise ValueError("Retry needs the exception types to retry (on=...)")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1 (got {self.attempts})")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("expected 0 <= base_delay <= max_delay")

    def backoff(self, retry: int) -> float:
        """The sleep before retry number ``retry`` (0-based)."""
        # The exponent is capped only so that 2.0**n cannot overflow; max_delay caps the delay.
        return random.random() * min(self.max_delay, self.base_delay * 2.0 ** min(retry, 64))

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        for retry in range(self.attempts - 1):
            try:
                return await fn(*args, **kwargs)
            except CircuitOpen:
                raise
            except self.on as exc:
                delay = self.backoff(retry)
                log.debug("retry %d/%d in %.3fs after %r", retry + 1, self.attempts - 1, delay, exc)
                await asyncio.sleep(delay)
        return await fn(*args, **kwargs)


async def call_with_fallback(
    breaker: Breaker,
    fn: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    fallback: Callable[[Exception], Awaitable[T] | T],
    **kwargs: Any,
) -> T:
    """Call ``fn`` through ``breaker``; serve ``fallback(error)`` when it fails for a reason the
    breaker counts against the dependency (rejected, timed out, failed), and count the fallback.

    Client errors (bad input, not found) and ignored errors propagate: a fallback would hide
    the caller's own mistake.
    """
    try:
        return await breaker.call(fn, *args, **kwargs)
    except Exception as exc:
        if not breaker.is_failure(exc):
            raise
        breaker.record_fallback()
        result = fallback(exc)
        if inspect.isawaitable(result):
            return await result
        return result
