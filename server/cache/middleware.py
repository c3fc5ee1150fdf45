"""``CacheMiddleware``: the router middleware that caches queries, invalidates after mutations.

A query whose options hold a ``CachePolicy`` is answered from the cache under the key
``<path>:<canonical JSON of its input>`` (``<path>:<caller>:<input>`` when ``per_caller``) in
the policy's namespace; inputs whose JSON is longer than ``MAX_INLINE_INPUT`` characters are
keyed by their SHA-256 instead. ``ctx.meta["cache"]`` says ``HIT``, ``MISS`` or ``STALE`` (the
wire adapters send it as ``X-Cache``). While its source raises ``Unavailable`` (a breaker open,
a datastore down), a query with ``stale_if_error`` is answered with its last good value for up
to ``CACHE_STALE_MAX_AGE`` seconds past its TTL, marked ``STALE``.

A mutation whose options hold ``Invalidates(namespaces)`` clears them after it succeeds. A failed
invalidation does not fail the mutation (its work is done); it is logged and counted.

``Warmer`` computes the queries whose policy says ``warm=True`` at start-up and every
``CACHE_WARM_INTERVAL`` seconds, so their first callers hit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import orjson
from pydantic import BaseModel

from server.cache.cache import MISSING, Cache
from server.cache.policy import CachePolicy, Invalidates
from server.errors import RpcError, Unavailable
from server.rpc.router import (
    ANONYMOUS,
    NO_ANSWER,
    Caller,
    Context,
    Next,
    NoInput,
    Peek,
    Procedure,
    Router,
)

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


class CacheMiddleware:
    """The router middleware (a ``FastPath``: hits from the hot tier answer synchronously)."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._stale_max_age = cache.settings.stale_max_age
        # Per path, read from the procedure's options once (``check``, when the router is
        # built): a call costs one dict lookup. A path never checked is not cached.
        self._policies: dict[str, CachePolicy | None] = {}
        # A query without input, not per caller, has one key: built once, not per call.
        self._constant_keys: dict[str, str] = {}

    def check(self, proc: Procedure) -> None:
        policy = proc.option(CachePolicy)
        if policy is not None and proc.kind == "mutation":
            raise ValueError(f"mutation {proc.path!r} cannot be cached")
        self._policies[proc.path] = policy
        if policy is not None and proc.input is NoInput and not policy.per_caller:
            self._constant_keys[proc.path] = procedure_key(proc, policy, NoInput(), ANONYMOUS)

    async def __call__(self, ctx: Context, proc: Procedure, inp: BaseModel, nxt: Next) -> Any:
        cache = self.cache
        policy = self._policies.get(proc.path)
        if policy is None:
            result = await nxt(ctx, inp)
            invalidates = proc.option(Invalidates)
            if invalidates is not None:
                await _invalidate(cache, proc.path, invalidates)
            return result
        if not cache.enabled:
            return await nxt(ctx, inp)
        key = self._key(proc, policy, inp, ctx)
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
            stale_for=self._stale_max_age if policy.stale_if_error else 0.0,
            refresh=refresh,
        )
        meta["cache"] = lookup.status
        return lookup.value

    def peeker(self, proc: Procedure) -> Peek | None:
        """The router's fast path for ``proc``: a hit from the hot tier, without a coroutine
        (None for a procedure that is not cached). A wire adapter only serializes the answer,
        so it gets the entry's JSON, encoded once; an in-process caller gets the value. A
        query without input, not per caller, has one key: its Redis key is made here, once."""
        policy = self._policies.get(proc.path)
        if policy is None:
            return None
        cache = self.cache
        namespace = policy.namespace
        read_json = cache.hot_reader(namespace, encoded=True)
        read_value = cache.hot_reader(namespace, encoded=False)
        constant = self._constant_keys.get(proc.path)
        full = None if constant is None else cache.key(namespace, constant)

        def peek(ctx: Context, inp: BaseModel) -> Any:
            meta = ctx.meta
            if not cache.enabled or meta.get("cache") == REFRESH:
                return NO_ANSWER
            key = full or cache.key(namespace, self._key(proc, policy, inp, ctx))
            value = (read_value if ctx.protocol == "internal" else read_json)(key)
            if value is MISSING:
                return NO_ANSWER
            meta["cache"] = "HIT"
            return value

        return peek

    def _key(self, proc: Procedure, policy: CachePolicy, inp: BaseModel, ctx: Context) -> str:
        key = self._constant_keys.get(proc.path)
        return procedure_key(proc, policy, inp, ctx.caller) if key is None else key


async def _invalidate(cache: Cache, path: str, invalidates: Invalidates) -> None:
    for namespace in invalidates.namespaces:
        try:
            await cache.invalidate(namespace)
        except Unavailable as exc:
            log.warning(
                "%s: cache namespace %s not invalidated: %s", path, namespace, exc.described
            )


class Warmer:
    """Keeps the ``warm=True`` queries of a router computed. Checked at construction: a
    per-caller policy cannot be warmed (there is no caller to warm it for)."""

    def __init__(self, router: Router, interval: float) -> None:
        self.router = router
        self.interval = interval
        self.procedures = []
        for proc in router.procedures:
            policy = proc.option(CachePolicy)
            if policy is None or not policy.warm:
                continue
            if policy.per_caller:
                raise ValueError(f"{proc.path}: a per-caller cache policy cannot be warmed")
            self.procedures.append(proc)
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
            ctx = Context(caller=WARMER, meta={"cache": REFRESH})
            try:
                await self.router.call(proc.path, None, ctx)
            except RpcError as exc:
                self.failures += 1
                log.warning("cache warming of %s failed: %s", proc.path, exc.described)
            else:
                done += 1
        self.runs += 1
        return done
