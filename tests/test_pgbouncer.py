"""PgBouncer: the admin console's figures as the procedures report them, checked against SHOW
POOLS read directly; the datastore working through PgBouncer in transaction mode; and the
console down."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from server.config import Settings
from tests.pg_app import AppFactory, database_of
from tests.stack import PgBouncer
from tests.waiting import until_accepted

POOL_FIELDS = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used")


async def _show(bouncer: PgBouncer, what: str) -> list[dict[str, Any]]:
    """``SHOW <what>`` on the admin console, read by the test itself."""
    async with await psycopg.AsyncConnection.connect(
        bouncer.admin_dsn, autocommit=True, cursor_factory=psycopg.AsyncClientCursor
    ) as conn:
        cursor = await conn.execute(
            {"POOLS": "SHOW POOLS", "DATABASES": "SHOW DATABASES", "LISTS": "SHOW LISTS"}[what]
        )
        assert cursor.description is not None
        columns = [c.name for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in await cursor.fetchall()]


def _row(rows: list[dict[str, Any]], key: str, value: str) -> dict[str, Any]:
    return next(row for row in rows if row[key] == value)


async def _sleep_through(bouncer: PgBouncer, database: str, seconds: float) -> None:
    async with await psycopg.AsyncConnection.connect(bouncer.dsn(database), autocommit=True) as c:
        await c.execute("SELECT pg_sleep(%s)", (seconds,))


async def test_pool_figures_match_show_pools(
    make_app: AppFactory, pg_dsn: str, pgbouncer: PgBouncer
) -> None:
    db = database_of(pg_dsn)
    app = await make_app(Settings(database_url=pg_dsn, pgbouncer_admin_url=pgbouncer.admin_dsn))
    # Eight clients on a pool of five server connections (default_pool_size): three wait.
    sleepers = [asyncio.create_task(_sleep_through(pgbouncer, db, 3)) for _ in range(8)]
    try:
        before = await until_accepted(
            lambda: _show(pgbouncer, "POOLS"),
            lambda rows: any(
                r["database"] == db and r["sv_active"] == 5 and r["cl_waiting"] == 3 for r in rows
            ),
            what="five busy server connections and three waiting clients",
            within=15,
        )
        stats = await app.call("monitoring.connectionPoolStats")
        after = await _show(pgbouncer, "POOLS")
        databases = await _show(pgbouncer, "DATABASES")
    finally:
        await asyncio.gather(*sleepers)

    bouncer = stats["pgbouncer"]
    assert bouncer["available"] is True
    assert bouncer["version"].startswith("PgBouncer ")
    ours = _row(bouncer["pools"], "database", db)
    direct_before, direct_after = _row(before, "database", db), _row(after, "database", db)
    assert {f: ours[f] for f in POOL_FIELDS} == {f: direct_after[f] for f in POOL_FIELDS}
    assert (ours["sv_active"], ours["cl_active"], ours["cl_waiting"]) == (5, 5, 3)
    assert ours["pool_mode"] == "transaction"
    waited = direct_before["maxwait"] + direct_before["maxwait_us"] / 1e6
    waited_after = direct_after["maxwait"] + direct_after["maxwait_us"] / 1e6
    assert waited <= ours["maxwait_seconds"] <= waited_after
    assert ours["maxwait_seconds"] > 0
    assert bouncer["totals"]["cl_waiting"] == sum(
        p["cl_waiting"] for p in bouncer["pools"] if p["database"] != "pgbouncer"
    )
    assert bouncer["totals"]["sv_active"] >= 5

    entry = _row(bouncer["databases"], "name", db)
    direct = _row(databases, "name", db)
    assert entry["pool_size"] == direct["pool_size"] == 5
    assert entry["current_connections"] == direct["current_connections"] == 5
    assert entry["max_connections"] == direct["max_connections"]
    assert entry["port"] == direct["port"]
    assert any(s["database"] == db for s in bouncer["stats"])
    assert {"databases", "pools", "used_clients", "used_servers"} <= set(bouncer["lists"])
    assert bouncer["lists"]["pools"] == len(after)


async def test_statistics_count_what_went_through(
    make_app: AppFactory, pg_dsn: str, pgbouncer: PgBouncer
) -> None:
    db = database_of(pg_dsn)
    app = await make_app(Settings(database_url=pg_dsn, pgbouncer_admin_url=pgbouncer.admin_dsn))
    await asyncio.gather(*(_sleep_through(pgbouncer, db, 0) for _ in range(4)))
    # PgBouncer folds finished queries into SHOW STATS on its stats period; poll for them.
    stats = await until_accepted(
        lambda: app.call("monitoring.connectionPoolStats"),
        lambda s: any(
            r["database"] == db and r["total_query_count"] >= 4 for r in s["pgbouncer"]["stats"]
        ),
        what="four queries counted by SHOW STATS",
        within=40,
        interval=0.5,
    )
    entry = _row(stats["pgbouncer"]["stats"], "database", db)
    assert entry["total_xact_count"] >= 4
    assert entry["total_received"] > 0
    assert entry["total_query_time_us"] > 0


async def test_the_datastore_through_pgbouncer_in_transaction_mode(
    make_app: AppFactory, pg_dsn: str, pgbouncer: PgBouncer
) -> None:
    db = database_of(pg_dsn)
    # statement_cache_size=0: prepared statements do not survive a server connection change.
    settings = Settings(
        database_url=pgbouncer.dsn(db),
        database_statement_cache_size=0,
        pgbouncer_admin_url=pgbouncer.admin_dsn,
    )
    app = await make_app(settings)
    cluster = app.cluster
    await cluster.execute("CREATE TABLE through (id int, note text)")
    results = await asyncio.gather(
        *(cluster.execute("INSERT INTO through VALUES ($1, $2)", i, f"n{i}") for i in range(30))
    )
    async with cluster.transaction() as tx:
        await tx.execute("INSERT INTO through VALUES ($1, $2)", 30, "in a transaction")
        assert await tx.fetchval("SELECT count(*) FROM through") == 31

    assert results == ["INSERT 0 1"] * 30
    assert await cluster.fetchval("SELECT sum(id) FROM through WHERE id > $1", 9) == sum(
        range(10, 31)
    )
    pools = await app.call("monitoring.connectionPoolStats")
    assert pools["nodes"][0]["server"]["max_connections"] == 100
    info = await app.call("database.info")
    assert info["pgbouncer"]["up"] is True
    assert info["configuration"]["statement_cache_size"] == 0


async def test_console_down_degrades_only_its_section(
    make_app: AppFactory, pg_dsn: str, pgbouncer: PgBouncer
) -> None:
    app = await make_app(
        Settings(
            database_url=pg_dsn, pgbouncer_admin_url=pgbouncer.admin_dsn, database_timeout_ms=2000
        )
    )
    await asyncio.to_thread(pgbouncer.stop)

    stats = await app.call("monitoring.connectionPoolStats")

    assert stats["pgbouncer"]["available"] is False
    assert "pgbouncer admin console unreachable" in stats["pgbouncer"]["error"]
    assert stats["pgbouncer"]["pools"] == []
    assert stats["nodes"][0]["server"] is not None  # the database figures still come
    breaker = app.breakers.find("pgbouncer-admin")
    assert breaker.totals.failures == 1
