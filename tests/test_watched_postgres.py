"""``database.topQueries`` and ``database.activity`` against the real test server, the load
coming from the application's own role and connections (tests/watched_load.py)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable
from typing import Any

import asyncpg

from server.collectors.sql_text import strip_literals
from server.config import Settings
from tests.pg_app import AppFactory, database_of, samples
from tests.stack import PgBouncer
from tests.waiting import until_accepted
from tests.watched_load import APP_NAME, APP_ROLE, app_dsn, connect, connections, prepare

# Sent inline, as literals: what must never come out of infrawatch.
SECRET = "s3cret-value-42"
IDLE_SQL = "SELECT name FROM items WHERE name <> 's3cret-value-42'"
BLOCKED_SQL = "UPDATE items SET name = 's3cret-value-42' WHERE id = 1"
SLEEP_SQL = "SELECT pg_sleep(60), 's3cret-value-42'"
PLAIN_ROLE_SQL = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iw_plain') THEN
        CREATE ROLE iw_plain LOGIN;
    END IF;
END
$$;
"""


async def test_top_queries_count_the_application_not_infrawatch(
    make_app: AppFactory, make_settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await prepare(pg_dsn)
    app = await make_app(make_settings(top_queries_window=60.0))
    first = await app.call("database.topQueries", {"order_by": "calls"})
    assert first["available"] is True
    assert first["window_seconds"] is None  # nothing to compare with yet
    assert first["excluded"]["roles"] == ["postgres"]
    conn = await connect(app_dsn(pg_dsn))
    try:
        for i in range(25):
            await conn.fetchval("SELECT count(*) FROM items WHERE id > $1", i)
        await conn.execute("INSERT INTO items SELECT g, 'x' FROM generate_series(1, 500) g")
    finally:
        await conn.close()
    report = await app.call("database.topQueries", {"order_by": "calls", "limit": 500})
    database = database_of(pg_dsn)
    mine = [s for s in report["statements"] if s["database"] == database]
    counted = next(s for s in mine if "count(*) FROM items" in s["query"])
    assert counted["role"] == APP_ROLE
    assert counted["calls"] == 25
    assert counted["window_calls"] == 25
    assert report["window_seconds"] > 0
    # window_seconds is rounded to the millisecond in the answer, the rate from the exact span
    assert abs(counted["calls_per_s"] * report["window_seconds"] - 25) <= 0.05 * 25
    assert counted["time_ms_per_s"] is not None and counted["time_ms_per_s"] >= 0
    assert counted["window_mean_ms"] is not None
    assert counted["shared_hit_ratio"] is None or 0 <= counted["shared_hit_ratio"] <= 100
    insert = next(s for s in mine if s["query"].startswith("INSERT INTO items"))
    assert insert["rows"] == 500
    # normalised: no values
    assert insert["query"] == "INSERT INTO items SELECT g, $1 FROM generate_series($2, $3) g"
    # Not one statement of infrawatch's own role, though it ran several to answer.
    assert all(s["role"] != "postgres" for s in report["statements"])
    assert report["statements_seen"] >= len(mine)
    # limit and order_by
    top = await app.call("database.topQueries", {"order_by": "rows", "limit": 1})
    assert len(top["statements"]) == 1
    assert top["statements"][0]["rows"] >= 500


async def test_own_role_counted_when_the_exclusion_is_off(
    make_app: AppFactory, make_settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await prepare(pg_dsn)
    app = await make_app(make_settings(top_queries_exclude_own_role=False))
    await app.call("database.topQueries")
    report = await app.call("database.topQueries", {"limit": 500})
    assert report["excluded"]["roles"] == []
    assert any(s["role"] == "postgres" for s in report["statements"])


async def test_top_queries_without_the_extension_say_how_to_enable_it(
    make_app: AppFactory, make_settings: Callable[..., Settings], pg_dsn: str
) -> None:
    app = await make_app(make_settings())
    report = await app.call("database.topQueries")
    assert report["available"] is False
    assert "not installed" in report["reason"]
    assert "CREATE EXTENSION pg_stat_statements" in report["how_to_enable"]
    assert report["statements"] == []


async def test_activity_sees_every_client_and_never_values(
    make_app: AppFactory, make_settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await prepare(pg_dsn)
    await _seed(pg_dsn)
    app = await make_app(make_settings())
    dsn = app_dsn(pg_dsn)
    async with connections(dsn) as held:
        idle, holder, waiter, sleeper = [await connect(dsn) for _ in range(4)]
        held += [idle, holder, waiter, sleeper]
        # Started first, and seen running before the others start: the longest running query
        # (a backend scheduled late on a busy machine once started its query after the UPDATE).
        slow = asyncio.create_task(sleeper.execute(SLEEP_SQL))
        await until_accepted(
            lambda: idle.fetchval(
                "SELECT state FROM pg_stat_activity WHERE pid = $1", sleeper.get_server_pid()
            ),
            lambda state: state == "active",
            what="the sleeping session running",
        )
        idle_tx = idle.transaction()
        await idle_tx.start()
        await idle.execute(IDLE_SQL)
        hold_tx = holder.transaction()
        await hold_tx.start()
        await holder.execute("UPDATE items SET name = 'held' WHERE id = 1")
        blocked = asyncio.create_task(waiter.execute(BLOCKED_SQL))
        try:
            report = await until_accepted(
                lambda: app.call("database.activity"),
                lambda r: (
                    r["nodes"][0]["blocked"]
                    and r["nodes"][0]["longest_query"]["pid"] == sleeper.get_server_pid()
                ),
                what="the blocked and the sleeping session in pg_stat_activity",
            )
        finally:
            await hold_tx.rollback()
            await blocked
            await idle_tx.rollback()
            slow.cancel()  # asyncpg cancels the statement on the server
            with contextlib.suppress(asyncio.CancelledError):
                await slow
    primary = report["nodes"][0]
    assert primary["up"] is True
    conns = primary["connections"]
    assert conns["max_connections"] == 100
    assert conns["reserved"] == 3  # superuser_reserved_connections' default
    assert conns["available"] == 97
    assert conns["used"] >= 4 + conns["self_connections"]
    assert conns["used_percent"] == round(100 * conns["used"] / 97, 2)
    assert conns["self_connections"] >= 1
    assert primary["by_application"][APP_NAME] == 4
    assert primary["by_user"][APP_ROLE] == 4
    assert primary["by_database"][database_of(pg_dsn)] >= 4
    assert primary["idle_in_transaction"] >= 1
    assert primary["oldest_idle_in_transaction_seconds"] >= 0
    [blocked_session] = [b for b in primary["blocked"] if b["user"] == APP_ROLE]
    assert blocked_session["blocked_by"] == [holder.get_server_pid()]
    assert blocked_session["pid"] == waiter.get_server_pid()
    assert blocked_session["seconds"] >= 0
    assert holder.get_server_pid() in {b["pid"] for b in primary["blockers"]}
    assert primary["longest_transaction"]["seconds"] >= primary["longest_query"]["seconds"]
    assert "pg_sleep" in primary["longest_query"]["query"]
    # Normalised: pg_stat_statements' text by query_id, or the literals stripped.
    assert SECRET not in str(report)
    assert primary["longest_query"]["normalised_by"] in ("pg_stat_statements", "literals stripped")


async def test_activity_per_node_with_a_replica_and_pgbouncer(
    make_app: AppFactory,
    make_settings: Callable[..., Settings],
    pg_dsn: str,
    postgres_replica: Any,
    pgbouncer: PgBouncer,
) -> None:
    database = database_of(pg_dsn)
    await asyncio.to_thread(postgres_replica.wait_for_replay)
    app = await make_app(
        make_settings(
            database_replica_urls=(postgres_replica.dsn(database=database),),
            pgbouncer_admin_url=pgbouncer.admin_dsn,
        )
    )
    report = await app.call("database.activity")
    assert [n["role"] for n in report["nodes"]] == ["primary", "replica"]
    assert all(n["up"] for n in report["nodes"]), report["nodes"]
    assert report["nodes"][1]["connections"]["used"] >= 1  # infrawatch's own, at least
    assert report["pgbouncer"]["up"] is True
    assert report["pgbouncer"]["cl_waiting"] == 0
    postgres_replica.stop()
    try:
        report = await app.call("database.activity")
    finally:
        postgres_replica.start()
    primary, replica = report["nodes"]
    assert primary["up"] is True
    assert replica["up"] is False
    assert replica["error"]


def test_strip_literals_keeps_the_shape_and_drops_values() -> None:
    assert strip_literals("SELECT * FROM t WHERE a = 'x''y' AND b = 42 AND c = $1") == (
        "SELECT * FROM t WHERE a = ? AND b = ? AND c = $1"
    )
    assert strip_literals("select t1.x from t1 -- token 'abc'\nwhere y = 1.5e3") == (
        "select t1.x from t1 where y = ?"
    )
    assert strip_literals('SELECT "it\'s" FROM x WHERE z = $tag$secret$tag$') == (
        'SELECT "it\'s" FROM x WHERE z = ?'
    )
    assert strip_literals("SELECT E'a\\n', 'cut off") == "SELECT ?, ?"


async def _seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b') ON CONFLICT DO NOTHING")
    finally:
        await conn.close()


async def test_metrics_export_the_watched_server_promtool_clean(
    make_app: AppFactory, make_settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await prepare(pg_dsn)
    app = await make_app(make_settings(top_queries_window=60.0))
    await app.call("database.topQueries")  # the window's first reading
    dsn = app_dsn(pg_dsn)
    async with connections(dsn) as held:
        conn = await connect(dsn)
        held.append(conn)
        for _ in range(30):
            await conn.fetchval("SELECT count(*) FROM items")
        idle_tx = conn.transaction()
        await idle_tx.start()
        # A reading more than MAX_AGE old would be refreshed; this one is fresh, so the scrape
        # reads activity itself and the statements from the collector's last reading.
        await app.call("database.topQueries")
        text = await (await app.client.get("/metrics")).text()
        await idle_tx.rollback()
    found = samples(text)

    def value(name: str, **labels: str) -> float:
        return found[(name, frozenset(labels.items()))]

    assert value("infrawatch_pg_up", node="primary") == 1
    used = value("infrawatch_pg_connections", node="primary")
    assert used >= 2  # the application's one and infrawatch's own
    assert value("infrawatch_pg_connections_available", node="primary") == 97
    ratio = value("infrawatch_pg_connections_used_ratio", node="primary")
    assert abs(ratio - used / 97) < 1e-3  # used_percent is rounded to 0.01
    assert value("infrawatch_pg_idle_in_transaction_sessions", node="primary") >= 1
    assert value("infrawatch_pg_statements_available") == 1
    database = database_of(pg_dsn)
    calls = {
        dict(labels)["queryid"]: v
        for (name, labels), v in found.items()
        if name == "infrawatch_pg_statement_calls_per_second"
        and dict(labels)["database"] == database
    }
    assert calls and max(calls.values()) > 0
    roles = {dict(labels).get("role") for (_, labels) in found} - {None}
    assert roles and "postgres" not in roles  # infrawatch's own role left out
    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == b"" and checked.stderr == b""


async def test_a_role_that_may_not_read_other_roles_statements_is_told_how(
    make_app: AppFactory, make_settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await prepare(pg_dsn)
    database = database_of(pg_dsn)
    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        # A plain role: no superuser, no pg_read_all_stats (pg_monitor).
        await conn.execute(PLAIN_ROLE_SQL)
        await conn.execute(f'GRANT CREATE ON DATABASE "{database}" TO iw_plain')
    finally:
        await conn.close()
    plain = pg_dsn.replace("//postgres@", "//iw_plain@", 1)
    app = await make_app(make_settings(database_url=plain))
    report = await app.call("database.topQueries")
    assert report["available"] is False
    assert report["reason"] == "role 'iw_plain' may read only its own statements' text"
    assert report["how_to_enable"] == "GRANT pg_read_all_stats TO iw_plain;"
    # database.activity still answers: other roles' sessions keep their state to themselves.
    async with connections(app_dsn(pg_dsn)) as held:
        held.append(await connect(app_dsn(pg_dsn)))
        activity = await app.call("database.activity")
    [primary] = activity["nodes"]
    assert primary["up"] is True
    # Counted (they take slots), by user and application too; their state is not shown.
    # infrawatch's own: its main pool's connection answering, and maybe its side pools'
    # (health probes, alert store), idle.
    ours = primary["connections"]["self_connections"]
    assert ours >= 1
    assert primary["connections"]["hidden"] == 1
    assert primary["connections"]["used"] == 1 + ours
    assert primary["by_user"] == {APP_ROLE: 1, "iw_plain": ours}
    assert primary["by_state"].pop("(hidden)") == 1
    assert primary["by_state"].pop("active") == 1
    assert sum(primary["by_state"].values()) == ours - 1
