"""What a procedure declares for the cache middleware, in its ``options``.

``CachePolicy`` on a query: how its answer may be kept. ``Invalidates`` on a mutation: the
namespaces its success makes stale.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How the cache middleware may keep a query's answer."""

    ttl: float | None = None  # seconds; None: CACHE_DEFAULT_TTL
    namespace: str = "rpc"
    per_caller: bool = False  # the answer depends on who asks: the key includes the caller
    warm: bool = False  # computed at start-up and on an interval
    stale_if_error: bool = True


@dataclass(frozen=True, slots=True)
class Invalidates:
    """Cache namespaces a mutation makes stale; cleared after it succeeds."""

    namespaces: tuple[str, ...]

    def __init__(self, *namespaces: str) -> None:
        object.__setattr__(self, "namespaces", namespaces)
