"""The Cache API production uses (``fetch``, ``peek``, ``invalidate``) against the real Redis:
values, TTLs, single flight, pattern invalidation, the memory backend and the hot tier's
coherence. What is stored is read back from Redis through the harness's own client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis

from server.cache.cache import MISSING, Cache
from server.config import Settings
from server.errors import ErrorCode, RpcError, Unavailable
from tests.cache_support import redis_of, returns, running_cache, settled_write, successes
from tests.stack import RedisServer
from tests.waiting import eventually

PREFIX = "infrawatch:cache:"


@pytest.fixture
def make_cache(redis_url: str) -> Callable[..., Any]:
    def make(**overrides: Any) -> Any:
        return running_cache(Settings(**({"redis_url": redis_url} | overrides)))

    return make


@pytest.fixture
async def cache(make_cache: Callable[..., Any]) -> AsyncIterator[Cache]:
    async with make_cache() as cache:
        yield cache


@pytest.fixture
def harness(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client(decode_responses=False)


async def lookup(cache: Cache, namespace: str, key: str) -> tuple[Any, str]:
    """``fetch``'s answer as (value, status); on a miss it computes and stores ``"computed"``."""
    found = await cache.fetch(namespace, key, returns("computed"))
    return found.value, found.status


def stored(harness: redis.Redis, key: str) -> Any:
    """The value the cache keeps in Redis under ``key`` (its envelope's last element)."""
    raw = harness.get(key)
    assert raw is not None, key
    return orjson.loads(raw)[3]


async def test_values_round_trip_under_their_namespace(cache: Cache, harness: redis.Redis) -> None:
    value = {"a": [1, 2.5, "x", None, True], "nested": {"k": "v"}}
    first = await cache.fetch("users", "42", returns(value), ttl=30)
    assert (first.value, first.status) == (value, "MISS")
    assert stored(harness, f"{PREFIX}users:42") == value

    assert await lookup(cache, "users", "42") == (value, "HIT")
    assert await lookup(cache, "orders", "42") == ("computed", "MISS")  # another namespace
    stats = cache.stats.namespaces["users"]
    assert (stats.hits, stats.misses, stats.sets) == (1, 1, 1)


async def test_ttl_has_jitter_below_the_declared_ttl(
    make_cache: Callable[..., Any], harness: redis.Redis
) -> None:
    async with make_cache(cache_ttl_jitter=0.5) as cache:
        for i in range(40):
            await cache.fetch("ttl", str(i), returns(i), ttl=100)
    ttls = [harness.pttl(f"{PREFIX}ttl:{i}") for i in range(40)]
    # At least half the TTL, less the time since the key was written (a jitter near its
    # maximum once gave 49,994 ms).
    assert all(49_000 <= t <= 100_000 for t in ttls), ttls
    assert len(set(ttls)) > 20  # spread out, not one value


async def test_stampede_of_200_misses_computes_once(cache: Cache) -> None:
    calls = 0
    release = asyncio.Event()

    async def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"answer": 42}

    tasks = [asyncio.create_task(cache.fetch("stampede", "k", compute, ttl=30)) for _ in range(200)]
    # Every caller has looked, missed and joined the flight before the computation ends.
    await eventually(
        lambda: cache.stats.namespace("stampede").misses == 200, what="200 misses in flight"
    )
    release.set()
    results = await asyncio.gather(*tasks)

    assert calls == 1
    assert [(r.value, r.status) for r in results] == [({"answer": 42}, "MISS")] * 200
    stats = cache.stats.namespaces["stampede"]
    assert stats.misses == 200
    assert stats.coalesced == 199
    assert await lookup(cache, "stampede", "k") == ({"answer": 42}, "HIT")
    assert calls == 1


async def test_single_flight_shares_errors_and_survives_a_cancelled_leader(cache: Cache) -> None:
    release = asyncio.Event()
    calls = 0

    async def fails() -> None:
        nonlocal calls
        calls += 1
        await release.wait()
        raise Unavailable("source down")

    tasks = [asyncio.create_task(cache.fetch("sf", "err", fails)) for _ in range(5)]
    await eventually(lambda: calls == 1, what="the leader computing")
    # Every caller has missed and joined the flight before the leader fails (a latecomer
    # would rightly start a computation of its own).
    await eventually(lambda: cache.stats.namespaces["sf"].misses == 5, what="all five waiting")
    release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(o, Unavailable) for o in outcomes)

    gate = asyncio.Event()
    started = 0

    async def slow() -> str:
        nonlocal started
        started += 1
        await gate.wait()
        return "done"

    leader = asyncio.create_task(cache.fetch("sf", "cancel", slow))
    await eventually(lambda: started == 1, what="the leader computing")
    follower = asyncio.create_task(cache.fetch("sf", "cancel", slow))
    await eventually(lambda: cache.stats.namespaces["sf"].misses == 7, what="the follower waiting")
    leader.cancel()
    await eventually(lambda: started == 2, what="the follower taking over")
    gate.set()
    answer = await follower
    assert (answer.value, answer.status) == ("done", "MISS")
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_invalidate_pattern_on_10000_keys_deletes_exactly_the_matching(
    cache: Cache, harness: redis.Redis
) -> None:
    pipe = harness.pipeline(transaction=False)
    for i in range(4000):
        pipe.set(f"{PREFIX}inv:user:{i}", b"1")
    for i in range(3000):
        pipe.set(f"{PREFIX}inv:order:{i}", b"1")
    for i in range(2990):
        pipe.set(f"{PREFIX}other:user:{i}", b"1")
    for i in range(10):
        pipe.set(f"user:{i}", b"1")  # outside the cache's prefix
    pipe.execute()
    assert harness.dbsize() == 10_000
    # The pipeline's 9,990 invalidation pushes first, or they could drop the hot entry below.
    await eventually(lambda: cache.near.invalidated_keys >= 9_990, what="the pipeline's pushes")
    await settled_write(cache, "inv", "user:hot", "in the hot tier")
    # From Redis, and kept in the hot tier.
    assert await lookup(cache, "inv", "user:hot") == ("in the hot tier", "HIT")
    assert cache.peek("inv", "user:hot") == "in the hot tier"
    assert len(cache.near) == 1

    deleted = await cache.invalidate("inv", "user:*")

    assert deleted == 4001
    remaining = {k.decode() for k in harness.scan_iter(count=1000)}
    assert len(remaining) == 10_001 - 4_001
    assert not any(k.startswith(f"{PREFIX}inv:user:") for k in remaining)
    assert sum(k.startswith(f"{PREFIX}inv:order:") for k in remaining) == 3000
    assert sum(k.startswith(f"{PREFIX}other:user:") for k in remaining) == 2990
    assert sum(k.startswith("user:") for k in remaining) == 10
    assert len(cache.near) == 0
    assert cache.peek("inv", "user:hot") is MISSING
    assert cache.stats.namespaces["inv"].invalidations == 1
    assert await lookup(cache, "inv", "user:hot") == ("computed", "MISS")


async def test_invalidate_whole_namespace_and_across_namespaces(
    cache: Cache, harness: redis.Redis
) -> None:
    for namespace, key in (("a", "1"), ("a", "2"), ("b", "1")):
        await cache.fetch(namespace, key, returns(int(key)), ttl=30)
    assert harness.dbsize() == 3
    assert await cache.invalidate("a") == 2
    assert harness.exists(f"{PREFIX}b:1") == 1
    assert await cache.invalidate(None, "b:*") == 1
    assert harness.dbsize() == 0
    assert cache.stats.namespaces["*"].invalidations == 1
    # Each UNLINK is a timed delete of the namespace it cleared.
    a_stats = cache.stats.namespaces["a"]
    assert a_stats.deletes == 2 and sum(a_stats.durations["delete"].counts) == 1
    assert cache.stats.namespaces["*"].deletes == 1


async def test_namespaces_are_checked(cache: Cache) -> None:
    with pytest.raises(ValueError, match="namespace"):
        await cache.fetch("bad namespace*", "k", returns(1))
    with pytest.raises(ValueError, match="namespace"):
        await cache.invalidate("bad namespace*")


async def test_memory_backend_without_redis() -> None:
    async with running_cache(Settings(cache_memory_max_items=3)) as cache:
        assert cache.backend == "memory"
        for key in "abcd":
            first = await cache.fetch("m", key, returns(key.upper()), ttl=30)
            assert (first.value, first.status) == (key.upper(), "MISS")
        assert cache.memory.evictions == 1  # "a", least recently used
        assert [await lookup(cache, "m", k) for k in "bcd"] == [
            ("B", "HIT"),
            ("C", "HIT"),
            ("D", "HIT"),
        ]
        assert await cache.invalidate("m", "[bc]") == 2
        assert await lookup(cache, "m", "d") == ("D", "HIT")
        assert await lookup(cache, "m", "a") == ("computed", "MISS")  # evicted
        assert await lookup(cache, "m", "b") == ("computed", "MISS")  # invalidated
        assert cache.memory.evictions == 1


async def test_disabled_cache_stores_nothing_and_always_computes(
    make_cache: Callable[..., Any], harness: redis.Redis
) -> None:
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        return calls

    async with make_cache(cache_enabled=False) as cache:
        answers = [await cache.fetch("off", "c", compute, ttl=30) for _ in range(2)]
        assert [(a.value, a.status) for a in answers] == [(1, "MISS"), (2, "MISS")]
        assert cache.peek("off", "c") is MISSING
        assert await cache.invalidate("off") == 0  # not caching: it keeps working
    assert harness.dbsize() == 0


async def test_hot_tier_serves_repeat_reads_without_redis(cache: Cache) -> None:
    await settled_write(cache, "hot", "k", {"v": 1})
    assert await lookup(cache, "hot", "k") == ({"v": 1}, "HIT")  # from Redis, now in the hot tier
    before = successes(cache)
    for _ in range(100):
        assert await lookup(cache, "hot", "k") == ({"v": 1}, "HIT")
    assert successes(cache) == before
    assert cache.near.hits == 100


async def test_hot_reader_is_made_once_and_counts_after_a_stats_reset(cache: Cache) -> None:
    """The compiled reader of the hot path: its namespace is checked when it is made, not at
    the first hit; one serves each namespace and form; a hit after ``reset_cache_metrics`` is
    counted in the new counters, not in the ones the reader was made beside."""
    with pytest.raises(ValueError, match="namespace"):
        cache.hot_reader("bad namespace*", encoded=True)
    read_json = cache.hot_reader("hot", encoded=True)
    assert cache.hot_reader("hot", encoded=True) is read_json
    read_value = cache.hot_reader("hot", encoded=False)
    assert read_value is not read_json
    full = cache.key("hot", "k")
    assert read_value(full) is MISSING  # not in the hot tier yet: a miss is not counted
    assert cache.stats.namespaces["hot"].hits == 0

    await settled_write(cache, "hot", "k", {"v": 1})
    assert await lookup(cache, "hot", "k") == ({"v": 1}, "HIT")  # from Redis, now hot
    assert read_value(full) == {"v": 1}
    assert orjson.loads(orjson.dumps(read_json(full))) == {"v": 1}  # a Fragment of its JSON
    cache.stats.reset()
    assert read_json(full) is not MISSING
    assert cache.stats.namespaces["hot"].hits == 1
    cache.near.store.pop(full)
    assert read_json(full) is MISSING


async def test_hot_tier_fills_while_reads_of_the_key_never_pause(cache: Cache) -> None:
    """32 readers that never pause, from the moment the key is written: the write's own push
    arrives while they read, the key still turns hot, and then Redis is left alone. Whether
    their reads ever all end at once is up to the loop here; tests/test_near_tier.py plays the
    case where they never do (a hot key under load), step by step."""
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            if cache.peek("busy", "k") is MISSING:
                await cache.fetch("busy", "k", returns("computed"), ttl=60)
            else:
                await asyncio.sleep(0)  # a hot hit: no await otherwise

    invalidated = cache.near.invalidated_keys
    await cache.fetch("busy", "k", returns("written"), ttl=60, refresh=True)
    readers = [asyncio.create_task(reader()) for _ in range(32)]
    try:
        # The write's own push comes while the readers run (it is the invalidation that
        # spoils their first reads); after it, nothing changes the key.
        await eventually(
            lambda: cache.near.invalidated_keys > invalidated + 1, what="the write's push"
        )
        await eventually(lambda: len(cache.near) == 1, what="the key in the hot tier", timeout=3)
        in_flight = redis_of(cache).own_lookups
        await eventually(lambda: in_flight.pending == 0, what="the last reads from Redis")
        before = successes(cache)
        hits = cache.near.hits
        await eventually(lambda: cache.near.hits > hits + 1000, what="hot hits", timeout=3)
        assert successes(cache) == before  # no Redis read since
        assert len(cache.near) == 1
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert cache.peek("busy", "k") == "written"


async def test_hot_tier_drops_a_key_another_client_writes(
    cache: Cache, harness: redis.Redis
) -> None:
    await settled_write(cache, "hot", "k", "old")
    assert await lookup(cache, "hot", "k") == ("old", "HIT")
    assert f"{PREFIX}hot:k" in cache.near.store

    other = Cache(cache.settings)  # another instance writing through its own connection
    other.attach(redis_of(cache))
    await other.fetch("hot", "k", returns("new"), ttl=30, refresh=True)

    took = await eventually(
        lambda: f"{PREFIX}hot:k" not in cache.near.store, what="invalidation", timeout=1
    )
    assert took < 0.1
    assert await lookup(cache, "hot", "k") == ("new", "HIT")


async def test_flushall_flushes_the_hot_tier(cache: Cache, harness: redis.Redis) -> None:
    await settled_write(cache, "hot", "k", 1)
    assert await lookup(cache, "hot", "k") == (1, "HIT")
    assert cache.peek("hot", "k") == 1
    assert len(cache.near) == 1
    harness.flushall()
    await eventually(lambda: len(cache.near) == 0, what="flush pushed", timeout=1)
    assert cache.peek("hot", "k") is MISSING
    assert await lookup(cache, "hot", "k") == ("computed", "MISS")


async def test_tracking_connection_killed_flushes_and_bypasses_then_recovers(
    cache: Cache, harness: redis.Redis
) -> None:
    tracker = cache.tracker
    assert tracker is not None and tracker.client_id is not None
    await settled_write(cache, "hot", "k", "v")
    assert await lookup(cache, "hot", "k") == ("v", "HIT")
    assert len(cache.near) == 1

    assert harness.execute_command("CLIENT", "KILL", "ID", tracker.client_id) == 1
    await eventually(lambda: not cache.near.active, what="hot tier off", timeout=2)
    assert len(cache.near) == 0
    # Bypassed: reads go to Redis, and what they read is not kept in the hot tier.
    assert cache.peek("hot", "k") is MISSING
    before = successes(cache)
    assert await lookup(cache, "hot", "k") == ("v", "HIT")
    assert successes(cache) == before + 1

    await eventually(lambda: cache.near.active, what="tracking back", timeout=10)
    assert tracker.drops == 1 and tracker.connects == 2
    assert await lookup(cache, "hot", "k") == ("v", "HIT")
    hits = cache.near.hits
    assert await lookup(cache, "hot", "k") == ("v", "HIT")
    assert cache.near.hits == hits + 1


async def test_tracking_survives_a_probe_redis_refuses(
    make_cache: Callable[..., Any], harness: redis.Redis
) -> None:
    # A PING the server answers with an error (here: the ACL takes PING away) cannot tell us
    # the connection still gets every push: the tracker drops it, flushes and bypasses the hot
    # tier and reconnects, and the tier comes back once the probe passes again.
    async with make_cache(redis_health_check_interval=0.2) as cache:
        tracker = cache.tracker
        assert tracker is not None
        harness.execute_command("ACL", "SETUSER", "default", "-ping")
        try:
            await eventually(lambda: tracker.drops >= 2, what="probes refused, twice", timeout=10)
            assert tracker.last_error is not None and "NoPermissionError" in tracker.last_error
        finally:
            harness.execute_command("ACL", "SETUSER", "default", "+ping")
        connects = tracker.connects
        await eventually(lambda: tracker.connects > connects, what="a new connection", timeout=10)
        await eventually(lambda: cache.near.active, what="hot tier on again", timeout=10)
        await settled_write(cache, "hot", "k", "v")
        assert await lookup(cache, "hot", "k") == ("v", "HIT")
        assert tracker.connected


async def test_stale_value_is_served_only_while_the_source_is_unavailable(
    make_cache: Callable[..., Any], harness: redis.Redis
) -> None:
    async with make_cache(cache_ttl_jitter=0.0) as cache:
        first = await cache.fetch("st", "k", returns("good"), ttl=0.05, stale_for=60)
        assert (first.value, first.status) == ("good", "MISS")
        raw = harness.get(f"{PREFIX}st:k")
        assert raw is not None
        fresh_until = orjson.loads(raw)[0]  # wall clock: [fresh_until, expires_at, ...]
        assert 0 < harness.pttl(f"{PREFIX}st:k") <= 60_050  # kept for the stale window

        await eventually(lambda: time.time() > fresh_until, what="entry past its TTL")

        stale = await cache.fetch(
            "st", "k", _raises(Unavailable("breaker open")), 0.05, stale_for=60
        )
        assert (stale.value, stale.status) == ("good", "STALE")
        assert cache.stats.namespaces["st"].stale_served == 1

        with pytest.raises(RpcError) as err:
            await cache.fetch(
                "st", "k", _raises(RpcError(ErrorCode.CONFLICT, "no")), 0.05, stale_for=60
            )
        assert err.value.code is ErrorCode.CONFLICT
        with pytest.raises(Unavailable):  # stale window 0: nothing stale may be served
            await cache.fetch("st", "k", _raises(Unavailable("down")), 0.05, stale_for=0)

        fresh = await cache.fetch("st", "k", returns("better"), ttl=30, stale_for=60)
        assert (fresh.value, fresh.status) == ("better", "MISS")


def _raises(exc: Exception) -> Callable[[], Any]:
    async def compute() -> Any:
        raise exc

    return compute
