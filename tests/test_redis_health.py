"""``monitoring.redisHealth`` and the rules on the watched Redis, against real servers, with the
load coming from an application client of their own (never from infrawatch).

Each rule fires and resolves through the app's own evaluator (``run_once``): the application's
keyspace hit rate (misses from the application, infrawatch's own lookups left out), maxmemory
with evictions, a replica link broken, a sentinel stopped, a Cluster node stopped.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio.cluster import RedisCluster as RedisClusterClient

from server.config import HostPort, Settings
from server.datastores.redis_nodes import RedisNodes
from server.errors import Unavailable
from tests.alerting import call, evaluator, result, start_app
from tests.stack import RedisCluster, RedisSentinelGroup, RedisServer
from tests.stack.ports import HOST, free_port
from tests.waiting import eventually

WINDOW = 60.0  # long enough that a test's readings all share the first as their baseline
QUIET = {
    # Rounds by hand (run_once); only the start-up round runs by itself.
    "alert_evaluation_interval": 3600.0,
    # infrawatch's own cache latency is no subject here
    "alert_cache_get_p95_warning": 3_600_000.0,
    "alert_cache_get_p95_critical": 7_200_000.0,
    # figures read right after a change: no micro-cache of expensive reads
    "rpc_coalesce_ttl": 0.0,
}


def settings(**values: Any) -> Settings:
    return Settings(**(QUIET | {"redis_health_window": WINDOW} | values))


async def health(client: TestClient) -> dict[str, Any]:
    answer: dict[str, Any] = result(await call(client, "monitoring.redisHealth"))
    return answer


async def firing(client: TestClient) -> dict[str, dict[str, Any]]:
    """fingerprint -> alert, of every alert firing after one evaluation round."""
    await evaluator(client).run_once()
    answer = result(await call(client, "alerts.list", {"state": "firing"}))
    return {a["fingerprint"]: a for a in answer["alerts"]}


def by_address(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["address"]: node for node in report["nodes"]}


@pytest.fixture
async def application(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """The watched application's own Redis client (its own connection and name)."""
    client = aioredis.Redis.from_url(redis_url, client_name="application")
    yield client
    await client.aclose()


# --- standalone: the node's figures, and the application's hit rate ---


async def test_a_standalone_node_reports_what_its_info_says(
    aiohttp_client: Any, redis_url: str, redis_server: RedisServer
) -> None:
    client = await start_app(aiohttp_client, settings(redis_url=redis_url))
    report = await health(client)
    assert report["redis_configured"] is True
    assert report["mode"] == "standalone"
    [node] = report["nodes"]
    info = redis_server.info("everything")
    assert node["address"] == redis_server.address
    assert node["status"] == "up"
    assert node["role"] == "master"
    assert node["version"] == info["redis_version"]
    assert node["maxclients"] == info["maxclients"]
    assert node["maxmemory_policy"] == info["maxmemory_policy"]
    assert node["maxmemory_bytes"] == info["maxmemory"] == 0
    assert node["memory_used_percent"] is None  # no limit, no percentage
    assert node["used_memory_bytes"] > 0
    assert node["mem_fragmentation_ratio"] > 0
    assert 1 <= node["connected_clients"] <= info["connected_clients"] + 2
    assert node["blocked_clients"] == info["blocked_clients"]
    # the evaluator's start-up round made the first reading: rates from the second on
    assert node["evicted_keys_per_second"] == 0.0
    assert 0 < node["window_seconds"] < WINDOW


async def test_a_node_asked_after_close_is_refused_not_connected(
    redis_url: str, redis_server: RedisServer
) -> None:
    # A reading still running as the app stops must not open a client that nobody closes (its
    # connection was found by the garbage collector later, a ResourceWarning in another test).
    nodes = RedisNodes(Settings(redis_url=redis_url).redis)
    address = (HOST, redis_server.port)
    assert (await nodes.info(address))["redis_version"]
    await nodes.close()
    with pytest.raises(Unavailable, match="stopping"):
        await nodes.info(address)
    assert nodes._clients == {}


async def test_the_applications_misses_fire_the_hit_rate_rule_and_its_hits_resolve_it(
    aiohttp_client: Any, redis_url: str, application: aioredis.Redis
) -> None:
    client = await start_app(
        aiohttp_client, settings(redis_url=redis_url, alert_cache_min_lookups=100)
    )
    await health(client)  # the window's baseline
    await application.set("app:present", "x")
    for i in range(200):
        assert await application.get(f"app:missing:{i}") is None
    for _ in range(30):
        assert await application.get("app:present") == b"x"

    keyspace = (await health(client))["keyspace"]
    # exactly the application's lookups: infrawatch's own (the evaluator's cache reads) left out
    assert (keyspace["hits"], keyspace["misses"]) == (30, 200)
    assert keyspace["hit_rate"] == round(100 * 30 / 230, 2)
    alerts = await firing(client)
    alert = alerts["cache_hit_rate:keyspace"]
    assert alert["level"] == "critical"
    assert "application's Redis keyspace hit rate is 13.0%" in alert["message"]

    for _ in range(2000):
        await application.get("app:present")
    assert "cache_hit_rate:keyspace" not in await firing(client)  # 2030 of 2230: 91 %
    assert (await health(client))["keyspace"]["hit_rate"] > 90


async def test_too_few_lookups_in_the_window_judge_nothing(
    aiohttp_client: Any, redis_url: str, application: aioredis.Redis
) -> None:
    client = await start_app(
        aiohttp_client, settings(redis_url=redis_url, alert_cache_min_lookups=100)
    )
    await health(client)
    for i in range(99):
        await application.get(f"cold:{i}")
    keyspace = (await health(client))["keyspace"]
    assert (keyspace["lookups"], keyspace["hit_rate"]) == (99, 0.0), keyspace
    found = await firing(client)
    assert "cache_hit_rate:keyspace" not in found, found["cache_hit_rate:keyspace"]["message"]


async def test_a_quiet_deployment_raises_nothing(aiohttp_client: Any, redis_url: str) -> None:
    """infrawatch alone on a Redis (its cache on it, queues watched, keys sampled): its own
    lookups are many and mostly misses, and none of them is the application's."""
    client = await start_app(
        aiohttp_client,
        settings(
            redis_url=redis_url,
            queue_names="rq:mail,celery:default,bullmq:render",
            alert_cache_min_lookups=1,
        ),
    )
    await health(client)
    for _ in range(20):
        await evaluator(client).run_once()
        result(await call(client, "monitoring.queueStats"))
        result(await call(client, "monitoring.cacheKeyStats"))
    report = await health(client)
    keyspace = report["keyspace"]
    assert keyspace["own_misses"] > 100  # the queue reads alone: LLEN/ZCARD of absent states
    assert keyspace["lookups"] == 0
    assert keyspace["hit_rate"] is None
    assert await firing(client) == {}


# --- maxmemory and evictions ---


@pytest.fixture
def limited_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session Redis with a 4 MB maxmemory (allkeys-lru), handed back without a limit."""
    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    redis_server.cli("CONFIG", "SET", "maxmemory", str(4 * 1024 * 1024))
    yield redis_server
    redis_server.cli("CONFIG", "SET", "maxmemory", "0")
    redis_server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis_server.cli("FLUSHALL")
    redis_server.cli("CONFIG", "RESETSTAT")  # later tests expect no evictions on it


async def test_maxmemory_with_evictions_fires_memory_and_eviction_warnings(
    aiohttp_client: Any,
    redis_url: str,
    limited_redis: RedisServer,
    application: aioredis.Redis,
) -> None:
    # a short window: the eviction rate falls back to 0 soon after the evictions stop
    client = await start_app(aiohttp_client, settings(redis_url=redis_url, redis_health_window=1))
    await health(client)
    value = b"v" * 10_000
    for i in range(1000):  # 10 MB into 4 MB
        await application.set(f"bulk:{i}", value)
    info = limited_redis.info("stats")
    assert info["evicted_keys"] > 0

    alerts = await firing(client)
    node = by_address(await health(client))[limited_redis.address]
    assert node["memory_used_percent"] >= 90
    assert node["maxmemory_policy"] == "allkeys-lru"
    assert node["evicted_keys"] >= info["evicted_keys"]
    memory = alerts[f"redis_memory:{limited_redis.address}"]
    assert memory["level"] == "warning"
    assert "allkeys-lru" in memory["message"]
    evictions = alerts[f"redis_evictions:{limited_redis.address}"]
    assert evictions["level"] == "warning"
    assert evictions["value"] > 0

    limited_redis.cli("CONFIG", "SET", "maxmemory", "0")

    async def resolved() -> bool:
        found = await firing(client)
        return not any(f.startswith(("redis_memory:", "redis_evictions:")) for f in found)

    await eventually(resolved, what="memory and eviction alerts resolved", timeout=15)


# --- a replica link broken ---


@pytest.fixture
def replicated(stack_dir: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its replica of this test's own."""
    master = RedisServer(stack_dir, name="primary")
    with master, RedisServer(stack_dir, replica_of=master, name="secondary") as replica:
        replica.wait_for_sync()
        yield master, replica


async def test_a_broken_replica_link_fires_critical_and_resolves_when_it_syncs(
    aiohttp_client: Any, replicated: tuple[RedisServer, RedisServer]
) -> None:
    master, replica = replicated
    client = await start_app(aiohttp_client, settings(redis_url=master.url))
    nodes = by_address(await health(client))
    assert nodes[master.address]["role"] == "master"
    [link] = nodes[master.address]["replicas"]
    assert link["address"] == replica.address
    assert link["state"] == "online"
    assert link["lag_bytes"] >= 0
    seen = nodes[replica.address]
    assert (seen["role"], seen["master_link_status"]) == ("replica", "up")
    assert seen["master_address"] == master.address
    assert seen["replication_lag_bytes"] is not None
    assert await firing(client) == {}

    nowhere = free_port()
    replica.cli("REPLICAOF", HOST, nowhere)
    alerts = await firing(client)
    alert = alerts[f"redis_replica_link:{replica.address}"]
    assert alert["level"] == "critical"
    assert f"{HOST}:{nowhere} link down" in alert["message"]
    # the master no longer lists it; the replica is still watched
    nodes = by_address(await health(client))
    assert nodes[master.address]["replicas"] == []
    assert nodes[replica.address]["master_link_status"] == "down"

    replica.cli("REPLICAOF", HOST, master.port)
    replica.wait_for_sync()
    assert f"redis_replica_link:{replica.address}" not in await firing(client)


async def test_a_replica_lagging_past_the_threshold_is_critical(
    aiohttp_client: Any,
    replicated: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = replicated
    client = await start_app(
        aiohttp_client, settings(redis_url=master.url, alert_redis_replica_lag_bytes=1000)
    )
    # the replica stops reading its link while the master writes 100 KB
    replica.cli("CLIENT", "PAUSE", "3000", "ALL")
    writer = aioredis.Redis.from_url(master.url)
    try:
        await writer.set("big", b"x" * 100_000)
    finally:
        await writer.aclose()
    report = by_address(await health(client))
    [link] = report[master.address]["replicas"]
    assert link["lag_bytes"] >= 100_000
    # the paused replica may not answer INFO: either the lag or its silence is reported
    alerts = await firing(client)
    assert (
        f"redis_replica_lag:{replica.address}" in alerts
        or f"redis_replica_link:{replica.address}" in alerts
    ), alerts


# --- Sentinel ---


def sentinel_settings(group: RedisSentinelGroup) -> Settings:
    return settings(
        redis_sentinel_hosts=(HostPort(group.sentinel.host, group.sentinel.port),),
        redis_master_name=group.master_name,
    )


async def test_sentinel_master_replica_and_sentinel_then_a_sentinel_stopped(
    aiohttp_client: Any, redis_sentinel_group: RedisSentinelGroup
) -> None:
    group = redis_sentinel_group
    client = await start_app(aiohttp_client, sentinel_settings(group))
    report = await health(client)
    assert report["mode"] == "sentinel"
    nodes = by_address(report)
    assert nodes[group.master.address]["role"] == "master"
    assert nodes[group.replica.address]["role"] == "replica"
    assert nodes[group.replica.address]["master_link_status"] == "up"
    sentinel = nodes[group.sentinel.address]
    assert sentinel["role"] == "sentinel"
    assert sentinel["sentinel_quorum_ok"] is True
    assert sentinel["sentinel_quorum_message"].startswith("OK ")
    assert report["sentinel"]["quorum_ok"] is True
    assert report["sentinel"]["master_address"] == group.master.address
    assert not any(f.startswith("redis_") for f in await firing(client))

    group.sentinel.stop()
    try:
        report = await health(client)
        nodes = by_address(report)
        assert nodes[group.sentinel.address]["status"] == "down"
        assert nodes[group.sentinel.address]["error"]
        # the data nodes last seen still answer
        assert nodes[group.master.address]["status"] == "up"
        assert nodes[group.replica.address]["status"] == "up"
        assert report["sentinel"]["quorum_ok"] is False
        alert = (await firing(client))[f"redis_sentinel_quorum:{group.master_name}"]
        assert alert["level"] == "critical"
        assert "no sentinel answered" in alert["message"]
    finally:
        group.sentinel.start()
    assert f"redis_sentinel_quorum:{group.master_name}" not in await firing(client)


# --- Cluster ---


async def test_every_cluster_node_then_one_stopped(
    aiohttp_client: Any, redis_cluster_url: str, redis_cluster: RedisCluster
) -> None:
    client = await start_app(
        aiohttp_client,
        settings(redis_url=redis_cluster_url, redis_cluster_enabled=True),
    )
    report = await health(client)
    assert report["mode"] == "cluster"
    nodes = by_address(report)
    assert set(nodes) == {n.address for n in redis_cluster.nodes}
    for node in nodes.values():
        assert (node["status"], node["role"], node["cluster_state"]) == ("up", "master", "ok")
    assert report["cluster"]["state"] == "ok"
    assert report["cluster"]["slots_assigned"] == report["cluster"]["slots_ok"] == 16384
    assert not any(f.startswith("redis_cluster") for f in await firing(client))

    stopped = redis_cluster.nodes[-1]
    stopped.stop()
    try:

        async def cluster_failed() -> bool:
            return "redis_cluster_state:cluster" in await firing(client)

        await eventually(cluster_failed, what="the cluster reported not ok", timeout=20)
        report = await health(client)
        nodes = by_address(report)
        assert nodes[stopped.address]["status"] == "down"
        assert nodes[stopped.address]["error"]
        assert all(n["status"] == "up" for a, n in nodes.items() if a != stopped.address)
        assert report["cluster"]["state"] == "fail"
        assert stopped.address in report["cluster"]["failing_nodes"]
    finally:
        stopped.start()
        redis_cluster.wait_until_ok()
    assert "redis_cluster_state:cluster" not in await firing(client)


# --- Prometheus ---


async def test_prometheus_families_per_node_are_promtool_clean(
    aiohttp_client: Any, replicated: tuple[RedisServer, RedisServer]
) -> None:
    master, replica = replicated
    client = await start_app(aiohttp_client, settings(redis_url=master.url))
    text = await (await client.get("/metrics")).read()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }
    assert (
        samples[("infrawatch_redis_node_up", (("node", master.address), ("role", "master")))] == 1
    )
    assert samples[("infrawatch_redis_replica_link_up", (("node", replica.address),))] == 1
    info = master.info("memory")
    assert samples[("infrawatch_redis_maxmemory_bytes", (("node", master.address),))] == 0
    assert samples[("infrawatch_redis_memory_used_bytes", (("node", master.address),))] > 0
    assert info["used_memory"] > 0
    assert ("infrawatch_redis_evicted_keys_total", (("node", master.address),)) in samples
    # infrawatch's own cache says whose figures it counts
    assert b'scope="self"' in text or b"infrawatch_cache_hits_total" not in text
    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == b"" and checked.stderr == b""


async def test_queue_discovery_and_key_stats_cover_every_cluster_primary(
    aiohttp_client: Any, redis_cluster_url: str, redis_cluster: RedisCluster
) -> None:
    app = RedisClusterClient.from_url(redis_cluster_url)
    try:
        names = [f"q{i}" for i in range(12)]
        for name in names:  # RQ's queue lists, spread over the nodes by their names' hash
            await app.rpush(f"rq:queue:{name}", "job")
        for i in range(30):
            await app.set(f"app:{i}", "x")
    finally:
        await app.aclose()
    holders = {redis_cluster.node_for_key(f"rq:queue:{n}").port for n in names}
    assert len(holders) == len(redis_cluster.nodes)  # the test means something: all nodes

    client = await start_app(
        aiohttp_client,
        settings(redis_url=redis_cluster_url, redis_cluster_enabled=True),
    )
    stats = result(await call(client, "monitoring.queueStats"))
    assert stats["scan_complete"] is True, stats
    assert sorted(q["name"] for q in stats["queues"] if q["kind"] == "rq") == sorted(names), stats
    keys = result(await call(client, "monitoring.cacheKeyStats", {"pattern": "app:*"}))
    assert keys["exact"] is True
    assert keys["sampled_keys"] == 30
