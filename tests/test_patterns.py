"""Key patterns from callers: matched in linear time wherever they are used (key statistics,
invalidation over Redis and the in-memory tiers), bounded in size, refused as invalid params.

The pathological patterns are the issue's own: ``*******!`` over two keys held the event loop
2.4 s in a backtracking matcher, and each further star cost ten times more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.appkeys import CACHE
from server.cache.entry import Entry
from server.cache.memory import MATCH_SLICE, MemoryStore
from server.config import Settings
from server.glob import MAX_PATTERN_BYTES, MAX_WILDCARDS, Glob, _compile, caller_glob
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN
from tests.stack import RedisServer

BEARER = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
LONG_KEY = "a" * 200
# The patterns and worse: every star a chance to backtrack, and no match at the end.
PATHOLOGICAL = [
    "*******!",
    "**********!",
    "*a" * 31 + "!",
    "a*" * 31 + "?!",
    "*?" * 16 + "!",
    "*" + "a" * 100 + "b",  # one star, a long near-miss: quadratic for two pointers
    "*" + "[a]" * 30 + "b*",
    "*" + "[ab]" * 30 + "c*",  # the costliest kind the limits let through
]


@pytest.fixture
def r(redis_url: str, redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as client:
        yield client


def _app(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "auth_tokens": {OPERATOR_NAME: OPERATOR_TOKEN},
        "alert_evaluation_enabled": False,
    }
    return create_app(Settings(**(values | overrides)))


async def _rpc(
    client: TestClient, method: str, params: Any, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
    resp = await client.post("/rpc", data=orjson.dumps(body), headers=headers)
    assert resp.status == 200
    answer: dict[str, Any] = orjson.loads(await resp.read())
    return answer


async def _live_latencies(client: TestClient, stop: asyncio.Event) -> list[float]:
    """/health/live, polled until ``stop``: how long each answer took."""
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        resp = await client.get("/health/live")
        assert resp.status == 200
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return latencies


def test_matching_is_linear_in_the_pattern_whatever_it_is() -> None:
    keys = [LONG_KEY, "a" * 1000, "ab" * 100]
    for pattern in PATHOLOGICAL:
        glob = Glob(pattern)
        started = time.perf_counter()
        for key in keys:
            assert not glob.matches(key)
        # Backtracking takes seconds per key from about eight stars on; ours, microseconds.
        assert time.perf_counter() - started < 0.005, pattern


def _reference(pattern: str, key: bytes) -> bool:
    """The previous matcher (two pointers over the compiled tests), checked against Redis in
    tests/test_key_stats.py: correct, but (key length) x (pattern length) in Python."""
    tests = _compile(pattern.encode())
    n, m = len(key), len(tests)
    i = j = 0
    star, resume = -1, 0
    while i < n:
        test = tests[j] if j < m else b""
        if test is None:
            star, resume = j, i
            j += 1
        elif test and test[key[i]]:
            i += 1
            j += 1
        elif star >= 0:
            resume += 1
            i, j = resume, star + 1
        else:
            return False
    while j < m and tests[j] is None:
        j += 1
    return j == m


@settings(max_examples=2000, deadline=None, database=None)
@given(
    pattern=st.text(alphabet="ab*?[]^-\\", max_size=12),
    key=st.binary(max_size=12).map(lambda raw: bytes(b"ab-]^[*?"[c % 8] for c in raw)),
)
def test_segments_match_exactly_as_the_reference(pattern: str, key: bytes) -> None:
    try:
        glob = Glob(pattern)
    except ValueError:  # an unterminated [
        return
    assert glob.matches(key) == _reference(pattern, key), (pattern, key)


def test_caller_patterns_are_bounded() -> None:
    caller_glob("*" * 1 + "?" * (MAX_WILDCARDS - 1))
    caller_glob("k" * MAX_PATTERN_BYTES)
    caller_glob("\\*" * 100)  # escaped stars are literals, not wildcards
    with pytest.raises(ValueError, match="wildcards"):
        caller_glob("*?" * 17)
    with pytest.raises(ValueError, match="wildcards"):
        caller_glob("[ab]" * (MAX_WILDCARDS + 1))
    with pytest.raises(ValueError, match="bytes"):
        caller_glob("é" * 129)  # 258 bytes in 129 characters
    with pytest.raises(ValueError, match="unterminated"):
        caller_glob("user:[abc")


async def test_pathological_key_stats_patterns_leave_the_loop_responsive(
    aiohttp_client: Any, r: redis.Redis, redis_url: str
) -> None:
    with r.pipeline(transaction=False) as pipe:
        for i in range(2000):
            pipe.set(f"{LONG_KEY}:{i}", "v")
        pipe.execute()
    client = await aiohttp_client(_app(redis_url=redis_url))
    stop = asyncio.Event()
    poller = asyncio.create_task(_live_latencies(client, stop))
    for pattern in PATHOLOGICAL:
        answer = await _rpc(client, "monitoring.cacheKeyStats", {"pattern": pattern})
        assert answer["result"]["sampled_keys"] == 0, answer
        assert answer["result"]["examined_keys"] == 2000
    stop.set()
    latencies = await poller
    assert latencies and max(latencies) < 0.5, max(latencies)


async def test_pathological_invalidation_patterns_over_the_memory_tiers(
    aiohttp_client: Any,
) -> None:
    app = _app(cache_memory_max_items=5000)  # no Redis: the memory store holds everything
    client = await aiohttp_client(app)
    cache = app[CACHE]

    async def value() -> str:
        return "v"

    for i in range(5000):
        await cache.fetch("t", f"{LONG_KEY}{i}", value, ttl=60)
    stop = asyncio.Event()
    poller = asyncio.create_task(_live_latencies(client, stop))
    for pattern in PATHOLOGICAL:
        started = time.perf_counter()
        answer = await _rpc(
            client, "monitoring.invalidateCache", {"pattern": pattern}, headers=BEARER
        )
        assert answer["result"]["deleted"] == 0, answer
        assert time.perf_counter() - started < 1.0, pattern
    stop.set()
    latencies = await poller
    assert max(latencies) < 0.5, max(latencies)
    everything = await _rpc(client, "monitoring.invalidateCache", {"namespace": "t"}, BEARER)
    assert everything["result"]["deleted"] == 5000


async def test_a_memory_sweep_serves_the_loop_between_slices() -> None:
    """However costly the pattern, the loop turns every MATCH_SLICE keys: a store of 20,000
    keys lets a task run at least 19 times during one sweep, and what matched is gone."""
    store = MemoryStore(20_000)
    entry = Entry("v", 1e12, 1e12, 0.0)
    for i in range(20_000):
        store.put(f"{LONG_KEY}{i}{'!' if i % 2 else ''}", entry)
    turns = 0
    sweeping = True

    async def ticker() -> None:
        nonlocal turns
        while sweeping:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    turns = 0
    deleted = await store.delete_matching(Glob("*" * 31 + "!"))
    sweeping = False
    await task
    assert deleted == 10_000 and len(store) == 10_000
    assert turns >= 20_000 // MATCH_SLICE - 1, turns


async def test_a_reversed_range_is_read_as_redis_reads_it(
    aiohttp_client: Any, r: redis.Redis, redis_url: str
) -> None:
    app = _app(redis_url=redis_url)
    client = await aiohttp_client(app)
    cache = app[CACHE]

    async def value() -> str:
        return "v"

    for key in ("m1", "n1", "A1"):
        await cache.fetch("t", key, value, ttl=60)
    # Redis swaps the ends of [z-a]: lower-case letters, as [a-z] does.
    expected = sorted(r.scan_iter(match="infrawatch:cache:t:[z-a]1"))
    assert len(expected) == 2
    answer = await _rpc(
        client, "monitoring.invalidateCache", {"namespace": "t", "pattern": "[z-a]1"}, BEARER
    )
    assert answer["result"]["deleted"] == 2, answer
    stats = await _rpc(client, "monitoring.cacheKeyStats", {"pattern": "infrawatch:cache:t:[z-a]*"})
    assert stats["result"]["sampled_keys"] == 0  # the two are gone; A1 never matched
    assert r.exists("infrawatch:cache:t:A1")


@pytest.mark.parametrize(
    "pattern",
    ["*?" * 17, "x" * (MAX_PATTERN_BYTES + 1), "é" * 129, "user:[abc", "[" * 40],
)
async def test_too_costly_or_broken_patterns_are_invalid_params(
    aiohttp_client: Any, pattern: str
) -> None:
    client = await aiohttp_client(_app())
    for method, headers in (
        ("monitoring.cacheKeyStats", None),
        ("monitoring.invalidateCache", BEARER),
    ):
        answer = await _rpc(client, method, {"pattern": pattern}, headers)
        assert answer["error"]["code"] == -32602, (method, answer)
        assert answer["error"]["data"]["code"] == "BAD_REQUEST"
    trpc = await client.get(
        "/trpc/monitoring.cacheKeyStats",
        params={"input": orjson.dumps({"pattern": pattern}).decode()},
    )
    assert trpc.status == 400
