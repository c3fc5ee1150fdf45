"""``cached(cache)``: the router middleware that caches queries and invalidates after mutations.

A query with a ``CachePolicy`` is answered from the cache under the key
``<path>:<canonical JSON of its input>`` (``<path>:<caller>:<input>`` when ``per_caller``) in
the policy's namespace; inputs whose JSON is longer than ``MAX_INLINE_INPUT`` characters are
keyed by their SHA-256 instead. ``ctx.meta["cache"]`` says ``HIT``, ``MISS`` or ``STALE`` (the
wire adapters send it as ``X-Cache``). While its source raises ``Unavailable`` (a breaker open,
a datastore down), a query with ``stale_if_error`` is answered with its last good value for up
to ``CACHE_STALE_MAX_AGE`` seconds past its TTL, marked ``STALE``.

A mutation that names ``invalidates`` namespaces clears them after it succeeds. A failed
invalidation does not fail the mutation (its work is done); it is logged and counted.

``Warmer`` computes the queries whose policy says ``warm=True`` at start-up and every
``CACHE_WARM_INTERVAL`` seconds, so their first callers hit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from server.cache.cache import MISSING, Cache
from server.errors import RpcError, Unavailable
from server.rpc.router import (
    NO_ANSWER,
    CachePolicy,
    Caller,
    Context,
    Middleware,
    Next,
    NoInput,
    Procedure,
    Router,
)

if TYPE_CHECKING:
    from server.services import Services

log = logging.getLogger(__name__)

REFRESH = "REFRESH"  # ctx.meta["cache"] set by the warmer: compute and store, do not look
MAX_INLINE_INPUT = 200
WARMER = Caller("cache-warmer")


def procedure_key(proc: Procedure, policy: CachePolicy, inp: BaseModel, caller: Caller) -> str:
    if type(inp) is NoInput:
        body = "{}"
    else:
        body = orjson.dumps(inp.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS).decode()
        if len(body) > MAX_INLINE_INPUT:
            body = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    if policy.per_caller:
        return f"{proc.path}:{caller.name or '-'}:{body}"
    return f"{proc.path}:{body}"


def cached(cache: Cache) -> Middleware:
    stale_max_age = cache.settings.cache_stale_max_age
    # A query without input, not per caller, has one key: built once, not per call.
    constant_keys: dict[str, str] = {}

    async def cache_middleware(ctx: Context, proc: Procedure, inp: BaseModel, nxt: Next) -> Any:
        policy = proc.cache
        if policy is None:
            result = await nxt(ctx, inp)
            if proc.invalidates:
                await _invalidate(cache, proc)
            return result
        if not cache.enabled:
            return await nxt(ctx, inp)
        key = key_of(proc, policy, inp, ctx)
        meta = ctx.meta
        refresh = meta.get("cache") == REFRESH
        if not refresh:
            value = cache.peek(policy.namespace, key)
            if value is not MISSING:
                meta["cache"] = "HIT"
                return value
        lookup = await cache.fetch(
            policy.namespace,
            key,
            lambda: nxt(ctx, inp),
            policy.ttl,
            stale_for=stale_max_age if policy.stale_if_error else 0.0,
            refresh=refresh,
        )
        meta["cache"] = lookup.status
        return lookup.value

    def key_of(proc: Procedure, policy: CachePolicy, inp: BaseModel, ctx: Context) -> str:
        key = constant_keys.get(proc.path)
        if key is None:
            key = procedure_key(proc, policy, inp, ctx.caller)
            if type(inp) is NoInput and not policy.per_caller:
                constant_keys[proc.path] = key
        return key

    def peek(ctx: Context, proc: Procedure, inp: BaseModel) -> Any:
        """A hit from the hot tier, without a coroutine: the router's fast path. A wire
        adapter only serializes the answer, so it gets the entry's JSON, encoded once."""
        policy = proc.cache
        if policy is None or not cache.enabled or not cache.near.active:
            return NO_ANSWER
        meta = ctx.meta
        if meta.get("cache") == REFRESH:
            return NO_ANSWER
        key = key_of(proc, policy, inp, ctx)
        value = cache.peek(policy.namespace, key, encoded=ctx.protocol != "internal")
        if value is MISSING:
            return NO_ANSWER
        meta["cache"] = "HIT"
        return value

    cache_middleware.peek = peek  # type: ignore[attr-defined]
    return cache_middleware


async def _invalidate(cache: Cache, proc: Procedure) -> None:
    for namespace in proc.invalidates:
        try:
            await cache.invalidate(namespace)
        except Unavailable as exc:
            log.warning("%s: cache namespace %s not invalidated: %s", proc.path, namespace, exc)


class Warmer:
    """Keeps the ``warm=True`` queries of a router computed. Checked at construction: a
    per-caller policy cannot be warmed (there is no caller to warm it for)."""

    def __init__(self, router: Router, services: Services, interval: float) -> None:
        self.router = router
        self.services = services
        self.interval = interval
        self.procedures = [p for p in router.procedures if p.cache is not None and p.cache.warm]
        for proc in self.procedures:
            assert proc.cache is not None
            if proc.cache.per_caller:
                raise ValueError(f"{proc.path}: a per-caller cache policy cannot be warmed")
        self.runs = 0
        self.failures = 0

    async def run(self) -> None:
        while True:
            await self.warm_once()
            await asyncio.sleep(self.interval)

    async def warm_once(self) -> int:
        """Compute every warm query once; returns how many succeeded."""
        done = 0
        for proc in self.procedures:
            ctx = Context(services=self.services, caller=WARMER, meta={"cache": REFRESH})
            try:
                await self.router.call(proc.path, None, ctx)
            except RpcError as exc:
                self.failures += 1
                log.warning("cache warming of %s failed: %s", proc.path, exc.message)
            else:
                done += 1
        self.runs += 1
        return done
