"""Read replicas against a real streaming replica (pg_basebackup -R): routing, lag while replay
is paused and after it resumes, a replica stopped and started again."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from server.config import Settings
from tests.pg_app import AppFactory, PgApp, database_of, samples
from tests.stack import PostgresServer
from tests.waiting import until_accepted

HEALTH_INTERVAL = 0.3
TIMEOUT_MS = 1000


def _settings(pg_dsn: str, replica: PostgresServer, copies: int = 1) -> Settings:
    url = replica.dsn(database=database_of(pg_dsn))
    return Settings(
        database_url=pg_dsn,
        database_replica_urls=(url,) * copies,
        replica_health_interval=HEALTH_INTERVAL,
        database_timeout_ms=TIMEOUT_MS,
        breaker_reset_timeout=0.5,
    )


async def _in_rotation(app: PgApp, expected: bool, within: float = 30.0) -> dict[str, object]:
    report: dict[str, object] = await until_accepted(
        lambda: app.call("database.replicaHealth"),
        lambda r: all(entry["in_rotation"] is expected for entry in r["replicas"]),
        what=f"replicas in rotation == {expected}",
        within=within,
    )
    return report


@pytest.fixture
async def app(make_app: AppFactory, pg_dsn: str, postgres_replica: PostgresServer) -> PgApp:
    # The test database is created on the primary; the replica must have replayed it.
    await asyncio.to_thread(postgres_replica.wait_for_replay)
    app = await make_app(_settings(pg_dsn, postgres_replica))
    await _in_rotation(app, True)
    return app


async def _lsn_diff(server: PostgresServer, a: str, b: str) -> int:
    out = await asyncio.to_thread(
        server.psql, "SELECT pg_wal_lsn_diff(:'a', :'b')", variables={"a": a, "b": b}
    )
    return int(out)


async def test_reads_go_round_robin_over_healthy_replicas(
    make_app: AppFactory, pg_dsn: str, postgres_replica: PostgresServer
) -> None:
    await asyncio.to_thread(postgres_replica.wait_for_replay)
    app = await make_app(_settings(pg_dsn, postgres_replica, copies=2))
    health = await _in_rotation(app, True)
    first, second = f"127.0.0.1-{postgres_replica.port}", f"127.0.0.1-{postgres_replica.port}-2"
    cluster = app.cluster

    for _ in range(6):
        assert await cluster.fetchval("SELECT pg_is_in_recovery()", readonly=True) is True
    assert await cluster.fetchval("SELECT pg_is_in_recovery()") is False  # writes: primary
    stats = await app.call("database.replicaStats")
    await app.metrics.refresh(5)
    values = samples(generate_latest(app.metrics.registry).decode())

    assert [entry["name"] for entry in health["replicas"]] == [first, second]  # type: ignore[index]
    assert stats["reads_routed"] == {"primary": 0, first: 3, second: 3}
    assert stats["failovers"] == 0
    assert stats["replicas_in_rotation"] == 2
    assert [r["pool"]["acquires"] >= 3 for r in stats["replicas"]] == [True, True]
    assert values[("infrawatch_replica_up", frozenset({("replica", first)}))] == 1
    assert values[("infrawatch_db_reads_routed_total", frozenset({("node", second)}))] == 3
    breakers = {b.name for b in app.breakers.all()}
    assert {f"database-replica-{first}", f"database-replica-{second}"} <= breakers


async def test_replica_figures_match_the_servers(
    app: PgApp, pg_dsn: str, postgres_replica: PostgresServer
) -> None:
    info = await app.call("database.info")
    pools = await app.call("monitoring.connectionPoolStats")
    health = await app.call("database.replicaHealth")
    version = await asyncio.to_thread(postgres_replica.psql, "SHOW server_version_num")
    ours = await asyncio.to_thread(
        postgres_replica.psql,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :'db' "
        "AND application_name = 'infrawatch'",
        variables={"db": database_of(pg_dsn)},
    )

    primary, replica = info["nodes"]
    assert (primary["in_recovery"], replica["in_recovery"]) == (False, True)
    assert replica["server_version_num"] == int(version)
    assert replica["database"] == database_of(pg_dsn)
    node = pools["nodes"][1]
    assert node["role"] == "replica"
    # The stats query ran on a pooled connection: the idle one, or a new one while the health
    # check held that. Either way the server counts exactly the pool's connections.
    assert node["server"]["ours"] in (node["size"], node["size"] + 1)
    assert int(ours) == app.cluster.replicas.find(node["node"]).node.pool.snapshot().size
    entry = health["replicas"][0]
    assert entry["healthy"] is True
    assert entry["in_recovery"] is True
    assert entry["error"] is None
    last_check = datetime.fromisoformat(entry["last_check"])
    assert (datetime.now(UTC) - last_check).total_seconds() < 10


async def test_lag_rises_while_replay_is_paused_and_falls_after(
    app: PgApp, pg_dsn: str, postgres: PostgresServer, postgres_replica: PostgresServer
) -> None:
    db = database_of(pg_dsn)
    # Idle and caught up: no lag, however old the last replayed commit is.
    idle = await until_accepted(
        lambda: app.call("database.replicaLag"),
        lambda r: (
            r["replicas"][0]["lag_bytes"] == 0
            and (
                datetime.now(UTC) - datetime.fromisoformat(r["replicas"][0]["last_replay_at"])
            ).total_seconds()
            > 1.0
        ),
        what="replica caught up with a commit older than 1 s",
    )
    assert idle["replicas"][0]["lag_seconds"] == 0.0

    await asyncio.to_thread(postgres_replica.psql, "SELECT pg_wal_replay_pause()")
    try:
        await until_accepted(
            lambda: asyncio.to_thread(
                postgres_replica.psql, "SELECT pg_get_wal_replay_pause_state()"
            ),
            lambda state: state == "paused",
            what="replay paused",
        )
        replay = await asyncio.to_thread(postgres_replica.psql, "SELECT pg_last_wal_replay_lsn()")
        await asyncio.to_thread(
            postgres.psql, "CREATE TABLE lagging AS SELECT g FROM generate_series(1, 5000) g", db
        )
        before = await asyncio.to_thread(postgres.psql, "SELECT pg_current_wal_lsn()")
        first = (await app.call("database.replicaLag"))["replicas"][0]
        after = await asyncio.to_thread(postgres.psql, "SELECT pg_current_wal_lsn()")

        assert first["replay_paused"] is True
        assert first["replay_lsn"] == replay
        low, high = (
            await _lsn_diff(postgres, before, replay),
            await _lsn_diff(postgres, after, replay),
        )
        assert 0 < low <= first["lag_bytes"] <= high
        assert first["lag_seconds"] > 0

        await asyncio.to_thread(postgres.psql, "INSERT INTO lagging SELECT 1", db)
        second = await until_accepted(
            lambda: app.call("database.replicaLag"),
            lambda r: (
                r["replicas"][0]["lag_bytes"] > first["lag_bytes"]
                and r["replicas"][0]["lag_seconds"] > first["lag_seconds"]
            ),
            what="lag growing while replay is paused",
        )
        assert second["replicas"][0]["up"] is True
    finally:
        await asyncio.to_thread(postgres_replica.psql, "SELECT pg_wal_replay_resume()")

    caught_up = await until_accepted(
        lambda: app.call("database.replicaLag"),
        lambda r: r["replicas"][0]["lag_bytes"] == 0 and r["replicas"][0]["lag_seconds"] == 0,
        what="replica caught up after resume",
    )
    assert caught_up["replicas"][0]["replay_paused"] is False
    await app.metrics.refresh(5)
    values = samples(generate_latest(app.metrics.registry).decode())
    name = caught_up["replicas"][0]["name"]
    assert values[("infrawatch_replica_lag_bytes", frozenset({("replica", name)}))] == 0


async def test_stopped_replica_leaves_the_rotation_and_comes_back(
    app: PgApp, postgres_replica: PostgresServer
) -> None:
    cluster = app.cluster
    assert await cluster.fetchval("SELECT pg_is_in_recovery()", readonly=True) is True

    await asyncio.to_thread(postgres_replica.stop)
    stopped = time.monotonic()
    out = await _in_rotation(app, False)
    detected = time.monotonic() - stopped
    # One interval for the next check to start, the timeout for it to fail, and slack for a
    # machine shared with other test runs.
    assert detected < HEALTH_INTERVAL + TIMEOUT_MS / 1000 + 3
    entry = out["replicas"][0]  # type: ignore[index]
    assert entry["healthy"] is False
    assert entry["error"]

    assert await cluster.fetchval("SELECT pg_is_in_recovery()", readonly=True) is False
    stats = await app.call("database.replicaStats")
    assert stats["failovers"] >= 1
    assert stats["reads_routed"]["primary"] >= 1
    assert stats["replicas_in_rotation"] == 0
    lag = await app.call("database.replicaLag")
    assert lag["replicas"][0]["up"] is False
    assert lag["replicas"][0]["lag_bytes"] is None

    await asyncio.to_thread(postgres_replica.start)
    back = await _in_rotation(app, True)
    assert back["replicas"][0]["healthy"] is True  # type: ignore[index]
    assert await cluster.fetchval("SELECT pg_is_in_recovery()", readonly=True) is True
