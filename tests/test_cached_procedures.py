"""The production procedures that are cached, against the real primary and Redis: which ones,
for how long, in which namespace, what a cached answer says about its age, and what happens
when the database fails under a cached answer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.cache.policy import CachePolicy
from server.config import PartitionPair, Settings, TableName
from server.procedures.database import DATABASE_NAMESPACE
from server.rpc.router import Procedure
from tests.assembly import create_app_with, real_catalogue
from tests.conftest import OPERATOR_TOKEN
from tests.stack import RedisServer
from tests.waiting import eventually

PREFIX = "infrawatch:cache:"
PAIR = "legacy_items:part_items"
SCHEMA = """
CREATE TABLE legacy_items (id int PRIMARY KEY);
CREATE TABLE part_items (id int NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE part_items_low PARTITION OF part_items FOR VALUES FROM (0) TO (1000);
INSERT INTO legacy_items SELECT generate_series(1, 5);
"""
# The procedures that must stay live: what an operator acts on in the moment.
LIVE = {
    "monitoring.unifiedHealth",
    "monitoring.unifiedMetrics",
    "monitoring.circuitBreakerStatus",
    "monitoring.cacheStats",
    "monitoring.cacheInvalidationMetrics",
    "monitoring.cacheKeyStats",
    "monitoring.queueStats",
    "monitoring.connectionPoolStats",
    "monitoring.queryStats",
    "database.replicaHealth",
    "database.replicaLag",
    "database.replicaStats",
    "alerts.list",
}
# (ttl seconds, namespace, stale_if_error, warm), as docs/procedures.md lists them.
POLICIES = {
    "monitoring.partitionMetrics": (10.0, "database", False, False),
    "monitoring.partitionTableStats": (30.0, "database", True, False),
    "database.info": (30.0, "database", True, False),
}
KEYS = {
    "monitoring.partitionMetrics": "monitoring.partitionMetrics:{}",
    "monitoring.partitionTableStats": 'monitoring.partitionTableStats:{"pair":null}',
    "database.info": "database.info:{}",
}


def _pair() -> tuple[PartitionPair, ...]:
    legacy, partitioned = PAIR.split(":")
    return (PartitionPair(TableName.parse(legacy), TableName.parse(partitioned)),)


@pytest.fixture
async def schema(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], schema: None) -> Settings:
    # Asked for before aiohttp_client in each test: the app stops before the test database
    # is dropped.
    # No alert evaluator: its reads would fill the cache before the test's own first call.
    # No TTL jitter: the stored lifetimes are then exactly the policies'.
    return make_settings(
        partition_pairs=_pair(), alert_evaluation_enabled=False, cache_ttl_jitter=0.0
    )


async def rpc(
    client: TestClient, method: str, params: Any = None, token: str | None = None
) -> tuple[dict[str, Any], str | None]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.post("/rpc", data=orjson.dumps(body), headers=headers)
    assert resp.status == 200
    return orjson.loads(await resp.read()), resp.headers.get("X-Cache")


async def answer(client: TestClient, method: str) -> tuple[dict[str, Any], str | None]:
    payload, status = await rpc(client, method)
    assert "result" in payload, payload
    return payload["result"], status


async def add_rows(dsn: str, count: int) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("INSERT INTO legacy_items SELECT generate_series(1000, 999 + $1)", count)
    finally:
        await conn.close()


def _time(output: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(output["checked_at"])


def test_the_catalogue_caches_only_slow_changing_figures() -> None:
    catalogue = real_catalogue()
    cached = {p.path: c for p in catalogue if (c := p.option(CachePolicy)) is not None}
    assert {
        path: (c.ttl, c.namespace, c.stale_if_error, c.warm) for path, c in cached.items()
    } == POLICIES
    assert not any(policy.per_caller for policy in cached.values())
    assert {p.path for p in catalogue} >= LIVE  # each one exists, so the check below bites
    assert not LIVE & set(cached)


async def test_a_cached_answer_is_the_same_reading_with_its_time(
    settings: Settings, pg_dsn: str, redis_server: RedisServer, aiohttp_client: Any
) -> None:
    client: TestClient = await aiohttp_client(create_app(settings))
    first: dict[str, dict[str, Any]] = {}
    for path in POLICIES:
        first[path], status = await answer(client, path)
        assert status == "MISS", path
    [pair] = first["monitoring.partitionMetrics"]["pairs"]
    assert pair["legacy_rows"] == 5

    await add_rows(pg_dsn, 3)
    for path in POLICIES:
        again, status = await answer(client, path)
        # The same reading, time included: not a fresh one that merely looks like it.
        assert (again, status) == (first[path], "HIT"), path

    # What Redis holds: the same answer, fresh for the policy's TTL, kept past it only where
    # the policy serves a stale answer while the source fails.
    stale_window = settings.cache_stale_max_age
    with redis_server.client() as r:
        for path, (ttl, namespace, stale_if_error, _) in POLICIES.items():
            raw = r.get(f"{PREFIX}{namespace}:{KEYS[path]}")
            assert raw is not None, path
            fresh_until, expires_at, stored_at, value = orjson.loads(raw)
            assert value == first[path]
            assert fresh_until - stored_at == pytest.approx(ttl, abs=0.05), path
            kept = expires_at - fresh_until
            assert kept == pytest.approx(stale_window if stale_if_error else 0.0, abs=0.05), path
            assert _time(value).timestamp() <= stored_at, path

    # An operator forces fresh readings of the whole namespace.
    done, _ = await rpc(
        client, "monitoring.invalidateCache", {"namespace": DATABASE_NAMESPACE}, OPERATOR_TOKEN
    )
    assert done["result"]["deleted"] == len(POLICIES)
    fresh: dict[str, dict[str, Any]] = {}
    for path in POLICIES:
        fresh[path], status = await answer(client, path)
        assert status == "MISS", path
        assert _time(fresh[path]) > _time(first[path]), path
    [pair] = fresh["monitoring.partitionMetrics"]["pairs"]
    assert pair["legacy_rows"] == 8


def _short(proc: Procedure, ttl: float) -> Procedure:
    policy = proc.option(CachePolicy)
    assert policy is not None
    options = tuple(
        dataclasses.replace(policy, ttl=ttl) if option is policy else option
        for option in proc.options
    )
    return dataclasses.replace(proc, options=options)


async def test_with_the_database_failing_a_verdict_is_not_served_stale(
    settings: Settings, aiohttp_client: Any
) -> None:
    # The production procedures and policies, with a TTL short enough to outlive in a test.
    def shortened(catalogue: list[Procedure]) -> list[Procedure]:
        return [
            _short(p, 0.2) if p.path in POLICIES and p.path != "database.info" else p
            for p in catalogue
        ]

    client: TestClient = await aiohttp_client(create_app_with(settings, shortened))
    verdict, _ = await answer(client, "monitoring.partitionMetrics")
    partitions, _ = await answer(client, "monitoring.partitionTableStats")

    forced, _ = await rpc(
        client,
        "monitoring.setCircuitBreakerState",
        {"name": "database-query", "state": "open"},
        OPERATOR_TOKEN,
    )
    assert "result" in forced, forced

    async def refused() -> bool:
        payload, status = await rpc(client, "monitoring.partitionMetrics")
        return "error" in payload and status is None

    await eventually(refused, what="partitionMetrics refused once its answer expired")
    payload, status = await rpc(client, "monitoring.partitionMetrics")
    assert payload["error"]["data"]["code"] == "SERVICE_UNAVAILABLE"
    assert "database-query" in payload["error"]["message"]
    assert verdict["pairs"]  # there was a verdict to serve, and it was not

    # Figures without a verdict may be served past their TTL, marked, with their own time.
    async def stale() -> bool:
        return (await rpc(client, "monitoring.partitionTableStats"))[1] == "STALE"

    await eventually(stale, what="partitionTableStats served STALE")
    served, status = await answer(client, "monitoring.partitionTableStats")
    assert (served, status) == (partitions, "STALE")
