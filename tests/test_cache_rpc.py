"""The cache as RPC clients see it: X-Cache on POST /rpc, per-caller keys, invalidation by
mutations, stale-if-error, warming, CACHE_ENABLED=false, the cache procedures and the
Prometheus families."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest
from pydantic import BaseModel

from server.appkeys import CACHE, EVALUATOR, METRICS
from server.cache.cache import Cache
from server.cache.middleware import CacheMiddleware
from server.cache.policy import CachePolicy, Invalidates
from server.config import Settings
from server.errors import Unavailable
from server.rpc.router import Context, NoInput, Router, mutation, query
from tests.assembly import create_app_with, replacing
from tests.conftest import OPERATOR_TOKEN
from tests.stack import RedisServer
from tests.waiting import eventually

PREFIX = "infrawatch:cache:"


class Source:
    """What the test procedures compute from: a counter, and a switch that makes it fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.warmed = 0
        self.down = False

    def next(self) -> int:
        if self.down:
            raise Unavailable("source breaker open")
        self.calls += 1
        return self.calls


class Item(BaseModel):
    id: int
    tags: list[str] = []


def procedures(source: Source, *, warm: bool) -> list[Any]:
    async def counter(_ctx: Context, _: NoInput) -> dict[str, int]:
        return {"n": source.next()}

    async def item(_ctx: Context, inp: Item) -> dict[str, Any]:
        return {"id": inp.id, "tags": inp.tags, "n": source.next()}

    async def mine(ctx: Context, _: NoInput) -> dict[str, Any]:
        return {"caller": ctx.caller.name, "n": source.next()}

    async def warm_value(_ctx: Context, _: NoInput) -> dict[str, int]:
        source.warmed += 1
        return {"warmed": source.warmed}

    async def bump(_ctx: Context, _: NoInput) -> str:
        return "bumped"

    warmed = query("t.warm", warm_value, options=(CachePolicy(ttl=60, namespace="w", warm=True),))
    return [
        *([warmed] if warm else []),
        query("t.counter", counter, options=(CachePolicy(ttl=60, namespace="t"),)),
        query("t.item", item, input=Item, options=(CachePolicy(ttl=60, namespace="t"),)),
        query("t.mine", mine, options=(CachePolicy(ttl=60, namespace="t", per_caller=True),)),
        query("t.short", counter, options=(CachePolicy(ttl=0.05, namespace="short"),)),
        mutation("t.bump", bump, options=(Invalidates("t"),)),
    ]


async def rpc(
    client: TestClient, method: str, params: Any = None, token: str | None = None
) -> tuple[dict[str, Any], str | None]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        body["params"] = params
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.post("/rpc", data=orjson.dumps(body), headers=headers)
    assert resp.status == 200
    return orjson.loads(await resp.read()), resp.headers.get("X-Cache")


async def result(client: TestClient, method: str, params: Any = None, **kw: Any) -> Any:
    answer, _ = await rpc(client, method, params, **kw)
    assert "result" in answer, answer
    return answer["result"]


@pytest.fixture
def source() -> Source:
    return Source()


@pytest.fixture
def start(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings], source: Source
) -> Callable[..., Any]:
    async def start(*, warm: bool = False, **overrides: Any) -> TestClient:
        # The alert evaluator reads cached production procedures (partitionMetrics) through
        # the same cache: its start-up round is awaited and no other round comes, so that the
        # counters move only by each test's own calls after that.
        defaults = {
            "database_url": None,
            "cache_ttl_jitter": 0.0,
            "alert_evaluation_interval": 3600.0,
        }
        settings = make_settings(**(defaults | overrides))
        # The real catalogue beside the test's own procedures.
        client: TestClient = await aiohttp_client(
            create_app_with(settings, replacing(procedures(source, warm=warm)))
        )
        found = app_of(client)[EVALUATOR]
        await eventually(
            lambda: found.rounds + found.failed_rounds >= 1, what="the start-up evaluation round"
        )
        return client

    return start


def app_of(client: TestClient) -> web.Application:
    return client.server.app


async def bump_nothing(_ctx: Context, _: NoInput) -> None:
    return None


def test_mutations_cannot_be_cached() -> None:
    # Checked by the cache middleware when the router is built, not at the first call.
    with pytest.raises(ValueError, match="cannot be cached"):
        Router(
            [mutation("a.b", bump_nothing, options=(CachePolicy(ttl=1),))],
            middleware=[CacheMiddleware(Cache(Settings().cache))],
        )


async def test_x_cache_miss_then_hit(start: Callable[..., Any], source: Source) -> None:
    client = await start()
    first = await rpc(client, "t.counter")
    second = await rpc(client, "t.counter")
    assert first == ({"jsonrpc": "2.0", "result": {"n": 1}, "id": 1}, "MISS")
    assert second == ({"jsonrpc": "2.0", "result": {"n": 1}, "id": 1}, "HIT")
    assert source.calls == 1
    health = await rpc(client, "monitoring.unifiedHealth")
    assert health[1] is None  # not cached: no X-Cache


async def test_key_is_the_canonical_input(
    start: Callable[..., Any], source: Source, redis_server: RedisServer
) -> None:
    client = await start()
    a = await result(client, "t.item", {"id": 1, "tags": ["x"]})
    assert await result(client, "t.item", {"tags": ["x"], "id": 1}) == a  # key order is not input
    b = await result(client, "t.item", {"id": 2})
    assert a["n"] != b["n"] and source.calls == 2
    keys = sorted(redis_server.client().scan_iter(f"{PREFIX}t:*"))  # decoded: the harness's
    assert keys == [
        f'{PREFIX}t:t.item:{{"id":1,"tags":["x"]}}',
        f'{PREFIX}t:t.item:{{"id":2,"tags":[]}}',
    ]
    long = await result(client, "t.item", {"id": 3, "tags": ["y" * 300]})
    assert long["id"] == 3
    assert any(":t.item:sha256:" in k for k in redis_server.client().scan_iter(f"{PREFIX}t:*"))


async def test_per_caller_policy_keys_by_caller(start: Callable[..., Any]) -> None:
    client = await start()
    anonymous = await result(client, "t.mine")
    alice = await result(client, "t.mine", token=OPERATOR_TOKEN)
    assert anonymous["caller"] is None and alice["caller"] == "alice"
    assert await result(client, "t.mine", token=OPERATOR_TOKEN) == alice
    assert await result(client, "t.mine") == anonymous


async def test_mutation_invalidates_its_namespaces(
    start: Callable[..., Any], source: Source
) -> None:
    client = await start()
    await rpc(client, "t.counter")
    assert (await rpc(client, "t.counter"))[1] == "HIT"
    assert await result(client, "t.bump", token=OPERATOR_TOKEN) == "bumped"
    answer, status = await rpc(client, "t.counter")
    assert (answer["result"], status) == ({"n": 2}, "MISS")
    assert app_of(client)[CACHE].stats.namespaces["t"].invalidations == 1


async def test_stale_if_error_serves_the_last_good_answer(
    start: Callable[..., Any], source: Source
) -> None:
    client = await start(cache_stale_max_age=60)
    assert (await rpc(client, "t.short"))[1] == "MISS"
    source.down = True

    async def expired() -> bool:
        answer, status = await rpc(client, "t.short")
        return status == "STALE" and answer["result"] == {"n": 1}

    await eventually(expired, what="a STALE answer once the TTL has passed")
    assert app_of(client)[CACHE].stats.namespaces["short"].stale_served >= 1

    source.down = False
    answer, status = await rpc(client, "t.short")
    assert (answer["result"], status) == ({"n": 2}, "MISS")


async def test_without_stale_window_the_error_is_the_answer(
    start: Callable[..., Any], source: Source
) -> None:
    client = await start(cache_stale_max_age=0)
    await rpc(client, "t.short")
    source.down = True

    async def failing() -> bool:
        answer, _ = await rpc(client, "t.short")
        return "error" in answer

    await eventually(failing, what="the source's error once the TTL has passed")
    answer, status = await rpc(client, "t.short")
    assert answer["error"]["data"]["code"] == "SERVICE_UNAVAILABLE"
    assert status is None


async def test_warm_procedures_are_computed_at_start_and_on_the_interval(
    start: Callable[..., Any], source: Source
) -> None:
    client = await start(warm=True, cache_warm_interval=0.2)
    stats = app_of(client)[CACHE].stats
    await eventually(lambda: stats.namespace("w").sets >= 1, what="warmed at start")
    answer, status = await rpc(client, "t.warm")
    assert status == "HIT" and answer["result"]["warmed"] >= 1
    await eventually(lambda: source.warmed >= 2, what="warmed again")

    async def refreshed() -> bool:
        answer, status = await rpc(client, "t.warm")
        return status == "HIT" and answer["result"]["warmed"] >= 2

    await eventually(refreshed, what="the refreshed value served")


async def test_cache_disabled_computes_every_time_and_stores_nothing(
    start: Callable[..., Any], source: Source, redis_server: RedisServer
) -> None:
    client = await start(cache_enabled=False)
    for n in (1, 2, 3):
        answer, status = await rpc(client, "t.counter")
        assert (answer["result"], status) == ({"n": n}, None)
    assert redis_server.client().dbsize() == 0
    stats = await result(client, "monitoring.cacheStats")
    assert stats["enabled"] is False


def _counts(stats: dict[str, Any]) -> dict[str, int]:
    latency = stats["latency"]
    return {
        "hits": stats["hits"],
        "misses": stats["misses"],
        "stale_served": stats["stale_served"],
        **{f"{op}_samples": latency[op]["samples"] for op in ("get", "set", "delete")},
    }


async def test_cache_stats_contract(start: Callable[..., Any]) -> None:
    client = await start()
    # Production procedures are cached too (the alert evaluator's start-up round read one):
    # totals are compared with a baseline taken before this test's own calls.
    before = _counts(await result(client, "monitoring.cacheStats"))
    await rpc(client, "t.counter")
    await rpc(client, "t.counter")
    stats = await result(client, "monitoring.cacheStats")

    assert stats["backend"] == "redis" and stats["enabled"] is True
    assert stats["redis_available"] is True
    moved = {name: n - before[name] for name, n in _counts(stats).items()}
    assert moved == {
        "hits": 1,
        "misses": 1,
        "stale_served": 0,
        "get_samples": 2,  # the MISS read Redis; the HIT came from the hot tier (1 in 8 timed)
        "set_samples": 1,
        "delete_samples": 0,
    }
    for op in ("get", "set", "delete"):
        assert set(stats["latency"][op]) >= {"samples", "mean_ms", "p50_ms", "p95_ms", "p99_ms"}
    assert stats["latency"]["get"]["p99_ms"] > 0
    t = next(ns for ns in stats["namespaces"] if ns["namespace"] == "t")
    assert (t["hits"], t["misses"], t["hit_rate"]) == (1, 1, 50.0)
    # The totals are the namespaces' sums, and the hit rate is theirs.
    spaces = stats["namespaces"]
    assert stats["hits"] == sum(ns["hits"] for ns in spaces)
    assert stats["misses"] == sum(ns["misses"] for ns in spaces)
    assert stats["hit_rate"] == round(100 * stats["hits"] / (stats["hits"] + stats["misses"]), 2)
    redis = stats["redis"]
    assert redis["version"].startswith(("6.", "7.", "8."))
    assert redis["role"] == "master"
    assert redis["used_memory_bytes"] > 0
    assert redis["maxmemory_bytes"] == 0
    assert redis["eviction_policy"] == "noeviction"
    assert redis["evicted_keys"] == 0
    assert redis["keyspace_hits"] >= 1 and redis["keyspace_misses"] >= 1
    assert redis["connected_clients"] >= 2  # the pool and the tracking connection
    assert redis["connected_replicas"] == 0
    assert redis["keys"] >= 1


async def test_invalidation_procedures(
    start: Callable[..., Any], redis_server: RedisServer
) -> None:
    client = await start()
    for i in range(3):
        await rpc(client, "t.item", {"id": i})
    await rpc(client, "t.counter")

    refused, _ = await rpc(client, "monitoring.invalidateCache", {"namespace": "t"})
    assert refused["error"]["data"]["code"] == "UNAUTHORIZED"
    bad, _ = await rpc(client, "monitoring.invalidateCache", {}, token=OPERATOR_TOKEN)
    assert bad["error"]["code"] == -32602
    bad, _ = await rpc(
        client, "monitoring.invalidateCache", {"namespace": "t*"}, token=OPERATOR_TOKEN
    )
    assert bad["error"]["code"] == -32602

    done = await result(
        client,
        "monitoring.invalidateCache",
        {"namespace": "t", "pattern": "t.item:*"},
        token=OPERATOR_TOKEN,
    )
    assert done == {
        "deleted": 3,
        "namespace": "t",
        "pattern": "t.item:*",
        "match": f"{PREFIX}t:t.item:*",
    }
    # Only this namespace: production procedures keep their own keys beside it.
    assert list(redis_server.client().scan_iter(f"{PREFIX}t:*")) == [f"{PREFIX}t:t.counter:{{}}"]
    everything = await result(client, "monitoring.invalidateCache", ["t"], token=OPERATOR_TOKEN)
    assert everything["deleted"] == 1

    metrics = await result(client, "monitoring.cacheInvalidationMetrics")
    assert (metrics["invalidations"], metrics["failures"], metrics["failure_rate"]) == (2, 0, 0.0)
    assert metrics["invalidations_per_minute"] > 0
    assert {"namespace": "t", "invalidations": 2, "failures": 0, "failure_rate": 0.0} in metrics[
        "namespaces"
    ]

    reset = await result(client, "monitoring.resetCacheMetrics", token=OPERATOR_TOKEN)
    assert reset["reset_at"]
    stats = await result(client, "monitoring.cacheStats")
    assert (stats["hits"], stats["misses"]) == (0, 0)
    assert stats["latency"]["get"]["samples"] == 0
    assert (await result(client, "monitoring.cacheInvalidationMetrics"))["invalidations"] == 0


async def test_invalidation_failure_is_counted_and_reported(
    start: Callable[..., Any], redis_server: RedisServer
) -> None:
    client = await start(breaker_failure_threshold=1, redis_retries=0)
    await rpc(client, "t.counter")
    redis_server.stop()
    failed, _ = await rpc(client, "monitoring.invalidateCache", ["t"], token=OPERATOR_TOKEN)
    assert failed["error"]["data"]["code"] == "SERVICE_UNAVAILABLE"
    metrics = await result(client, "monitoring.cacheInvalidationMetrics")
    assert (metrics["failures"], metrics["failure_rate"]) == (1, 100.0)
    # A mutation whose invalidation fails still succeeds: its own work is done.
    assert await result(client, "t.bump", token=OPERATOR_TOKEN) == "bumped"


async def test_prometheus_families(start: Callable[..., Any], redis_server: RedisServer) -> None:
    client = await start()
    await rpc(client, "t.counter")
    await rpc(client, "t.counter")
    await result(client, "monitoring.invalidateCache", ["t"], token=OPERATOR_TOKEN)
    metrics = app_of(client)[METRICS]
    await metrics.refresh(2.0)
    text = generate_latest(metrics.registry).decode()

    assert 'infrawatch_cache_hits_total{namespace="t",scope="self"} 1.0' in text
    assert 'infrawatch_cache_misses_total{namespace="t",scope="self"} 1.0' in text
    assert 'infrawatch_cache_invalidations_total{namespace="t",scope="self"} 1.0' in text
    assert 'infrawatch_cache_invalidation_failures_total{namespace="t",scope="self"} 0.0' in text
    assert (
        'infrawatch_cache_operation_duration_seconds_count{namespace="t",operation="set",'
        'scope="self"} 1.0' in text
    )
    assert "infrawatch_redis_up 1.0" in text
    checked = await asyncio.create_subprocess_exec(
        "promtool",
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(checked.communicate(text.encode()), 30)
    assert checked.returncode == 0, output.decode()

    redis_server.stop()
    await metrics.refresh(5.0)
    assert "infrawatch_redis_up 0.0" in generate_latest(metrics.registry).decode()


async def test_batches_answer_hits_at_once_and_run_the_rest_in_order(
    start: Callable[..., Any], source: Source
) -> None:
    """A batch answers its cache hits and refusals without waiting and runs the rest; the
    answers keep the members' order on both wires."""
    client = await start()
    assert await result(client, "t.counter") == {"n": 1}
    body = [
        {"jsonrpc": "2.0", "method": "t.counter", "id": "a"},
        {"jsonrpc": "2.0", "method": "t.item", "params": {"id": 7}, "id": "b"},
        {"jsonrpc": "2.0", "method": "t.nope", "id": "c"},
        {"jsonrpc": "2.0", "method": "t.counter"},  # a notification: no answer
        {"jsonrpc": "2.0", "method": "t.item", "params": {"id": "x"}, "id": "d"},
        {"jsonrpc": "2.0", "method": "t.counter", "id": "e"},
    ]
    resp = await client.post("/rpc", data=orjson.dumps(body))
    answers = orjson.loads(await resp.read())
    assert [a["id"] for a in answers] == ["a", "b", "c", "d", "e"], answers
    assert answers[0]["result"] == answers[4]["result"] == {"n": 1}
    assert answers[1]["result"] == {"id": 7, "tags": [], "n": 2}
    assert answers[2]["error"]["code"] == -32601
    assert answers[3]["error"]["code"] == -32602
    assert source.calls == 2
    paths = "t.counter,t.item,t.nope,t.counter"
    resp = await client.get(
        f"/trpc/{paths}", params={"batch": "1", "input": orjson.dumps({"1": {"id": 8}}).decode()}
    )
    items = orjson.loads(await resp.read())
    assert resp.status == 207, items
    assert items[0] == items[3] == {"result": {"data": {"n": 1}}}
    assert items[1] == {"result": {"data": {"id": 8, "tags": [], "n": 3}}}
    assert items[2]["error"]["data"]["code"] == "NOT_FOUND"
    assert source.calls == 3
