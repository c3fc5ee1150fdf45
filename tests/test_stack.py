"""The harness itself: every service it starts is real and reachable the way the app reaches it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from tests.stack import (
    PgBouncer,
    PostgresServer,
    RedisCluster,
    RedisClusterNode,
    RedisSentinelGroup,
    RedisServer,
)


def _database(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


async def test_primary_accepts_queries(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT 1 + 1") == 2
        assert await conn.fetchval("SELECT current_database()") == _database(pg_dsn)
        assert await conn.fetchval("SHOW server_version_num") >= "150000"
        assert await conn.fetchval("SHOW track_commit_timestamp") == "on"
    finally:
        await conn.close()


async def test_replica_streams_rows_written_on_the_primary(
    pg_dsn: str, postgres: PostgresServer, postgres_replica: PostgresServer
) -> None:
    primary = await asyncpg.connect(pg_dsn)
    try:
        await primary.execute("CREATE TABLE probe (id int PRIMARY KEY, note text)")
        await primary.execute("INSERT INTO probe VALUES (1, 'from the primary')")
    finally:
        await primary.close()

    postgres_replica.wait_for_replay()

    replica = await asyncpg.connect(postgres_replica.dsn(database=_database(pg_dsn)))
    try:
        assert await replica.fetchval("SELECT pg_is_in_recovery()") is True
        assert await replica.fetchval("SELECT note FROM probe WHERE id = 1") == "from the primary"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await replica.execute("INSERT INTO probe VALUES (2, 'refused')")
    finally:
        await replica.close()
    assert postgres.psql("SELECT state FROM pg_stat_replication") == "streaming"


async def test_primary_restarts_on_the_same_data_and_port(
    pg_dsn: str, postgres: PostgresServer
) -> None:
    postgres.psql("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)", _database(pg_dsn))
    port = postgres.port

    postgres.stop()
    assert not postgres.is_running()
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(pg_dsn, timeout=2)

    postgres.start()
    assert postgres.port == port
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT id FROM kept") == 7
    finally:
        await conn.close()


async def test_pgbouncer_pools_the_postgres_database(pgbouncer: PgBouncer, pg_dsn: str) -> None:
    # A pool exists once a client has used it: one through the named entry, one through "*".
    for database in ("postgres", _database(pg_dsn)):
        async with await psycopg.AsyncConnection.connect(pgbouncer.dsn(database)) as conn:
            cur = await conn.execute("SELECT current_database()")
            assert await cur.fetchone() == (database,)

    async with await psycopg.AsyncConnection.connect(
        pgbouncer.admin_dsn, autocommit=True, cursor_factory=psycopg.AsyncClientCursor
    ) as admin:
        cur = await admin.execute("SHOW POOLS")
        assert cur.description is not None
        columns = [column.name for column in cur.description]
        pools = [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]

    databases = {pool["database"] for pool in pools}
    assert {"postgres", _database(pg_dsn)} <= databases
    assert {pool["pool_mode"] for pool in pools if pool["database"] == "postgres"} == {
        "transaction"
    }


async def test_redis_set_and_get(redis_url: str) -> None:
    async with aioredis.from_url(redis_url) as client:
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"


async def test_redis_starts_again_on_the_same_port(
    redis_server: RedisServer, redis_url: str
) -> None:
    port = redis_server.port
    redis_server.stop()
    assert not redis_server.is_running()
    async with aioredis.from_url(redis_url, socket_connect_timeout=1) as client:
        with pytest.raises(aioredis.ConnectionError):
            await client.ping()

    redis_server.start()
    assert redis_server.port == port
    async with aioredis.from_url(redis_url) as client:
        assert await client.ping() is True
        await client.set("after-restart", "1")
        assert await client.get("after-restart") == b"1"


def test_redis_url_starts_empty(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_server.cli("DBSIZE") == 0


@pytest.mark.slow
async def test_sentinel_reports_the_master_and_its_replica(
    redis_sentinel_group: RedisSentinelGroup,
) -> None:
    group = redis_sentinel_group
    host, port = group.sentinel_hosts.split(":")
    sentinel = Sentinel([(host, int(port))], socket_timeout=2)  # type: ignore[no-untyped-call]
    try:
        assert await sentinel.discover_master(group.master_name) == ("127.0.0.1", group.master.port)
        assert await sentinel.discover_slaves(group.master_name) == [
            ("127.0.0.1", group.replica.port)
        ]
    finally:
        await sentinel.aclose()
    assert group.replica.info("replication")["master_link_status"] == "up"


@pytest.mark.slow
def test_cluster_is_ok_on_every_node_with_the_slots_split(redis_cluster: RedisCluster) -> None:
    nodes = redis_cluster.nodes
    assert len(nodes) == 3
    for node in nodes:
        info = node.cluster_info()
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == "16384"
        assert info["cluster_known_nodes"] == "3"
        assert info["cluster_size"] == "3"
    assert [node.owned_slots() for node in nodes] == [
        [(0, 5460)],
        [(5461, 10922)],
        [(10923, 16383)],
    ]
    # Every node routes every slot to the same owner, which is what a cluster client relies on.
    expected = sorted((node.slots[0], node.slots[1], node.port) for node in nodes)
    for node in nodes:
        slots = node.cli("CLUSTER", "SLOTS")
        assert sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots) == expected


@pytest.mark.slow
async def test_cluster_client_spreads_keys_over_every_node(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    keys = [f"probe:{i}" for i in range(30)]
    async with aioredis.RedisCluster.from_url(redis_cluster_url) as client:
        for key in keys:
            await client.set(key, key.upper())
        assert [await client.get(key) for key in keys] == [key.upper().encode() for key in keys]

    owners = {key: redis_cluster.node_for_key(key) for key in keys}
    assert {node.port for node in owners.values()} == {node.port for node in redis_cluster.nodes}
    # SCAN is per node: each holds exactly the keys of its slots, and together they hold all.
    held: dict[int, set[str]] = {}
    for node in redis_cluster.nodes:
        with node.client() as direct:
            held[node.port] = set(direct.scan_iter(count=10))
        assert held[node.port] == {key for key, owner in owners.items() if owner is node}
    assert set().union(*held.values()) == set(keys)


@pytest.mark.slow
async def test_a_restarted_cluster_node_comes_back_with_its_slots(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    node = redis_cluster.nodes[1]
    node_id = node.node_id()
    node.stop()
    node.start()
    redis_cluster.wait_until_ok()

    assert node.node_id() == node_id
    assert node.owned_slots() == [node.slots]
    key = next(f"back:{i}" for i in range(1000) if redis_cluster.node_for_key(f"back:{i}") is node)
    async with aioredis.RedisCluster.from_url(redis_cluster_url) as client:
        await client.set(key, "again")
        assert await client.get(key) == b"again"
    assert node.cli("GET", key) == "again"


@pytest.mark.slow
def test_cluster_starts_within_its_bound_and_stops_every_node(stack_dir: Path) -> None:
    started = time.monotonic()
    with RedisCluster(stack_dir) as cluster:
        elapsed = time.monotonic() - started
        assert all(node.is_ok(3) for node in cluster.nodes)
        pids = [_pid(node) for node in cluster.nodes]
    assert elapsed < 30
    assert not cluster.is_running()
    for pid in pids:
        # Reaped by stop(): the pid no longer names a process.
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _pid(node: RedisClusterNode) -> int:
    pid = node.process.pid
    assert pid is not None
    return pid
