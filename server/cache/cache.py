"""``Cache``: namespaced JSON values in Redis, a coherent hot tier in front, memory behind.

    lookup = await cache.fetch("rpc", "k", compute, ttl=30)  # compute once per process on a miss
    lookup.value, lookup.status                              # the value; "HIT", "MISS" or "STALE"
    value = cache.peek("rpc", "k")                           # hot tier only, sync; else MISSING
    deleted = await cache.invalidate("rpc", "monitoring.*")  # SCAN + UNLINK, never KEYS

Keys live in Redis as ``<CACHE_KEY_PREFIX><namespace>:<key>`` (``infrawatch:cache:rpc:...``);
values as orjson (see ``entry.py``). A namespace is ``[A-Za-z0-9_.-]{1,64}``; a key is any text.

Where a value comes from, fastest first:

1. the hot tier (``NearTier``), while its ``Tracker`` holds Redis's invalidation stream;
2. Redis, through the ``redis-cache`` breaker;
3. a bounded in-memory LRU, when Redis is not configured, or a Redis call failed or was
   rejected by the open breaker. The cache then reports ``backend: "memory"`` until a Redis call
   succeeds again, which empties that LRU (what it holds was never shared).

No cache operation raises because Redis is down: reads miss or come from memory, writes go to
memory. ``invalidate`` is the exception: it raises ``Unavailable`` when Redis could not be
cleared, because a caller who asked for the deletion must know it did not happen.

``CACHE_ENABLED=false`` (or ``cache.enabled = False`` at run time) makes every ``fetch`` compute
without looking or storing; ``invalidate`` keeps working, since it is not caching.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from server.cache.entry import Entry, clock
from server.cache.flight import SingleFlight
from server.cache.memory import MemoryStore
from server.cache.near import NearTier
from server.cache.stats import ALL_NAMESPACES, CacheStats, NamespaceStats
from server.cache.tracking import Tracker
from server.config import CacheSettings
from server.datastores.redis import RedisClient
from server.errors import Unavailable
from server.glob import Glob

log = logging.getLogger(__name__)

Status = Literal["HIT", "MISS", "STALE"]
NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SCAN_COUNT = 1000  # keys SCAN looks at per call
UNLINK_BATCH = 500  # keys per UNLINK
# Hot-tier hits are timed one in this many: their GET latency (a microsecond or two) is steady,
# and timing every one costs as much as the lookup. Every other operation is timed.
HOT_TIMING_EVERY = 8


# The hot tier's read of one namespace, by Redis key: the value (or its JSON), or MISSING.
HotRead = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class Lookup:
    value: Any
    status: Status


class Cache:
    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.prefix = settings.key_prefix
        self.default_ttl = settings.default_ttl
        self.jitter = settings.ttl_jitter
        self.near = NearTier(settings.memory_max_items)
        self.memory = MemoryStore(settings.memory_max_items)
        self.stats = CacheStats(settings.stats_window)
        self.redis: RedisClient | None = None
        self.tracker: Tracker | None = None
        self.degraded = False  # the last Redis call failed: memory serves
        self.last_error: str | None = None
        self._flights: SingleFlight[Any] = SingleFlight()
        self._hot_readers: dict[tuple[str, bool], HotRead] = {}

    # --- wiring (app start and stop) ---

    def attach(self, redis: RedisClient | None) -> Tracker | None:
        """Use ``redis`` from now on; returns the tracker to run when a hot tier is possible."""
        self.redis = redis
        self.degraded = False
        self.memory.clear()
        self.tracker = None
        hot = self.enabled and self.settings.hot_tier
        if redis is not None and hot and redis.mode != "cluster":
            self.tracker = Tracker(redis, self.near, self.prefix)
        return self.tracker

    def detach(self) -> None:
        self.redis = None
        self.tracker = None
        self.near.deactivate()

    @property
    def backend(self) -> Literal["redis", "memory"]:
        return "redis" if self.redis is not None and not self.degraded else "memory"

    # --- keys ---

    def key(self, namespace: str, key: str) -> str:
        """The Redis key of ``key`` in ``namespace``."""
        return f"{self.prefix}{namespace}:{key}"

    def namespace_stats(self, namespace: str) -> NamespaceStats:
        stats = self.stats.namespaces.get(namespace)
        if stats is None:
            if not NAMESPACE.fullmatch(namespace):
                raise ValueError(f"cache namespace {namespace!r} must match {NAMESPACE.pattern}")
            stats = self.stats.namespace(namespace)
        return stats

    def _lifetimes(self, ttl: float | None, stale_for: float) -> tuple[float, float]:
        """(fresh, keep) seconds: the TTL less up to ``CACHE_TTL_JITTER`` of it, and that plus
        the stale window."""
        fresh = self.default_ttl if ttl is None else ttl
        if fresh <= 0:
            raise ValueError(f"a cache TTL must be positive (got {fresh})")
        fresh *= 1.0 - self.jitter * random.random()
        return fresh, fresh + max(stale_for, 0.0)

    # --- reads ---

    async def fetch(
        self,
        namespace: str,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        ttl: float | None = None,
        *,
        stale_for: float = 0.0,
        refresh: bool = False,
    ) -> Lookup:
        """The cached value of ``key``, or ``await compute()`` stored for ``ttl`` seconds
        (``CACHE_DEFAULT_TTL`` when ``None``), and how it answered (HIT, MISS, STALE).
        Concurrent misses of one key in this process run ``compute`` once.

        ``stale_for`` > 0 keeps the value that long past its TTL, and serves it (STALE) when
        ``compute`` raises ``Unavailable``; ``refresh`` computes and stores without looking.
        """
        if not self.enabled:
            return Lookup(await compute(), "MISS")
        stats = self.namespace_stats(namespace)
        full = self.key(namespace, key)
        entry: Entry | None = None
        if not refresh:
            entry = await self._read(stats, full)
            if entry is not None and entry.is_fresh(clock()):
                stats.hits += 1
                return Lookup(entry.value, "HIT")
            stats.misses += 1
        try:
            value, shared = await self._flights.run(
                full, lambda: self._compute(stats, full, compute, ttl, stale_for)
            )
        except Unavailable:
            if entry is None or stale_for <= 0 or clock() - entry.fresh_until > stale_for:
                raise
            stats.stale_served += 1
            return Lookup(entry.value, "STALE")
        if shared:
            stats.coalesced += 1
        return Lookup(value, "MISS")

    def peek(self, namespace: str, key: str, *, encoded: bool = False) -> Any:
        """The fresh value of ``key`` from the hot tier alone, counted as a hit, or
        ``MISSING`` (not counted: the caller goes on to ``fetch``). Synchronous: the fast path
        of the cached-procedure middleware. ``encoded``: the value as an ``orjson.Fragment``
        (JSON encoded once per entry), for a caller that will only serialize it."""
        return self.hot_reader(namespace, encoded=encoded)(self.key(namespace, key))

    def hot_reader(self, namespace: str, *, encoded: bool) -> HotRead:
        """``peek`` in ``namespace``, by the Redis key itself (``key(namespace, key)``), with
        what it reads bound once: the cache middleware makes one per cached procedure when
        the router is built, and each hit is this one call (docs/performance.md). Made once
        per namespace and form."""
        made = self._hot_readers.get((namespace, encoded))
        if made is not None:
            return made
        self.namespace_stats(namespace)  # a bad name fails here, not at the first hit
        near = self.near
        entries = near.store.entries
        get, move_to_end = entries.get, entries.move_to_end
        stats = self.stats

        def read(full: str) -> Any:
            if not near.active:
                return MISSING
            start = clock()
            entry = get(full)
            if entry is None or entry.fresh_until <= start:
                return MISSING
            move_to_end(full)
            near.hits += 1
            # Looked up per hit: ``reset`` replaces the namespaces' counters.
            counters = stats.namespaces.get(namespace) or self.namespace_stats(namespace)
            counters.hits += 1
            if not near.hits % HOT_TIMING_EVERY:
                stats.observe(counters, "get", start, clock())
            return entry.json() if encoded else entry.value

        self._hot_readers[(namespace, encoded)] = read
        return read

    async def _compute(
        self,
        stats: NamespaceStats,
        full: str,
        compute: Callable[[], Awaitable[Any]],
        ttl: float | None,
        stale_for: float,
    ) -> Any:
        value = await compute()
        fresh, keep = self._lifetimes(ttl, stale_for)
        await self._write(stats, full, Entry.new(value, fresh, keep), keep)
        return value

    async def _read(self, stats: NamespaceStats, full: str) -> Entry | None:
        start = clock()
        entry = self.near.get(full, start)
        if entry is None:
            redis = self.redis
            if redis is None:
                entry = self.memory.get(full, start)
            else:
                entry = await self._read_redis(redis, full)
        self.stats.observe(stats, "get", start, clock())
        return entry

    async def _read_redis(self, redis: RedisClient, full: str) -> Entry | None:
        near = self.near
        token = near.begin(full)
        lookups = redis.own_lookups  # not the application's: redisHealth leaves them out
        lookups.begin()
        try:
            raw = await redis.execute(redis.raw.get, full)
            lookups.value(raw)
        except Unavailable as exc:
            near.finish(full, token, None)
            self._fell_back(exc)
            return self.memory.get(full, clock())
        except BaseException:
            near.finish(full, token, None)
            raise
        finally:
            lookups.end()
        entry = _decode(full, raw)
        near.finish(full, token, entry)
        self._recovered()
        return entry

    # --- writes ---

    async def _write(self, stats: NamespaceStats, full: str, entry: Entry, keep: float) -> None:
        start = clock()
        # Our own write invalidates the hot tier at once; its tracking push would come later.
        self.near.invalidate((full,))
        redis = self.redis
        if redis is None:
            self.memory.put(full, entry)
        else:
            try:
                payload = entry.encode()
            except TypeError:
                log.exception("cache: a value is not JSON-serialisable; not cached")
                return
            px = max(1, math.ceil(keep * 1000))
            try:
                await redis.execute(redis.raw.set, full, payload, px=px)
            except Unavailable as exc:
                self._fell_back(exc)
                self.memory.put(full, entry)
            else:
                self._recovered()
        stats.sets += 1
        self.stats.observe(stats, "set", start, clock())

    # --- deletion ---

    async def invalidate(self, namespace: str | None = None, pattern: str = "*") -> int:
        """Delete every key of ``namespace`` (all namespaces when ``None``) whose key matches
        the Redis glob ``pattern``; returns how many were deleted.

        Redis is walked with SCAN and cleared with UNLINK in batches of ``UNLINK_BATCH``, each
        step through the breaker; the hot tier and the memory store are cleared by the same
        pattern. Raises ``Unavailable`` (and counts a failure) when Redis could not be cleared.
        """
        label = ALL_NAMESPACES if namespace is None else namespace
        stats = self.stats.namespace(label) if namespace is None else self.namespace_stats(label)
        match = self.prefix + (pattern if namespace is None else f"{namespace}:{pattern}")
        glob = Glob(match)
        await self.near.delete_matching(glob)
        in_memory = await self.memory.delete_matching(glob)
        redis = self.redis
        if redis is None:
            stats.invalidations += 1
            return in_memory
        deleted = 0
        try:
            async for page in redis.scan_pages(match, SCAN_COUNT):
                for i in range(0, len(page), UNLINK_BATCH):
                    # Each UNLINK is the cache's delete operation: timed and counted as one.
                    start = clock()
                    unlinked = await redis.execute(redis.raw.unlink, *page[i : i + UNLINK_BATCH])
                    self.stats.observe(stats, "delete", start, clock())
                    stats.deletes += unlinked
                    deleted += unlinked
        except Unavailable as exc:
            stats.invalidation_failures += 1
            self._fell_back(exc)
            log.warning(
                "cache: invalidating %s failed after %d keys: %s", match, deleted, exc.described
            )
            raise
        self._recovered()
        stats.invalidations += 1
        return deleted

    # --- Redis health as the cache sees it ---

    def _fell_back(self, exc: Unavailable) -> None:
        self.last_error = exc.message
        if not self.degraded:
            self.degraded = True
            log.warning("cache: Redis unavailable, serving from memory: %s", exc.described)

    def _recovered(self) -> None:
        if self.degraded:
            self.degraded = False
            self.memory.clear()
            log.info("cache: Redis is back; memory fallback emptied")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _decode(full: str, raw: bytes | str | None) -> Entry | None:
    if raw is None:
        return None
    if isinstance(raw, str):  # only a client made with decode_responses would give text
        raw = raw.encode()
    try:
        return Entry.decode(raw)
    except ValueError:
        log.warning("cache: %s does not hold a cache value; ignored", full)
        return None
