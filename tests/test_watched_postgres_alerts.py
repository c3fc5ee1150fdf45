"""The rules on the watched PostgreSQL fire and resolve, each brought about by the application's
own connections and role (tests/watched_load.py), never by infrawatch: a connection flood up to
the thresholds on a small server, an idle open transaction, a held lock, clients queued in
PgBouncer, slow statements."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.alerts.rules import Verdict
from server.config import Settings
from tests.alerting import evaluator, start_app
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN, SESSION_SECRET
from tests.stack import PgBouncer, PostgresServer, make_workdir, remove_workdir
from tests.waiting import until_accepted
from tests.watched_load import APP_ROLE, app_dsn, connect, connections, prepare

# A rule that no other figure of these tests can touch: the rounds are run by hand.
HAND_ROUNDS = {"alert_evaluation_interval": 3600.0, "alert_cache_get_p95_warning": 3.6e6}
HAND_ROUNDS |= {"alert_cache_get_p95_critical": 7.2e6}


async def _timed(found: Awaitable[dict[str, str]]) -> tuple[float, dict[str, str]]:
    answer = await found
    return time.monotonic(), answer


def levels(verdict: Verdict, rule: str) -> dict[str, str]:
    return {c.subject: c.level for c in verdict.conditions if c.rule == rule}


async def round_of(client: TestClient, rule: str) -> dict[str, str]:
    verdict = await evaluator(client).run_once()
    assert rule in verdict.evaluated, verdict.failed
    return levels(verdict, rule)


async def firing(client: TestClient, rule: str) -> dict[str, str]:
    await evaluator(client).book.flush()
    return {r.subject: r.level for r in evaluator(client).book.firing() if r.rule == rule}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return make_settings(**(HAND_ROUNDS | overrides))

    return make


async def test_idle_in_transaction_fires_and_resolves(
    aiohttp_client: Any, settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await prepare(pg_dsn, statements=False)
    client = await start_app(aiohttp_client, settings(alert_idle_in_transaction_seconds=1))
    assert await round_of(client, "idle_in_transaction") == {}
    async with connections(app_dsn(pg_dsn)) as held:
        conn = await connect(app_dsn(pg_dsn))
        held.append(conn)
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT count(*) FROM items")
        found = await until_accepted(
            lambda: round_of(client, "idle_in_transaction"),
            lambda found: found,
            what="the idle_in_transaction warning",
            interval=0.3,
        )
        assert found == {"primary": "warning"}
        assert await firing(client, "idle_in_transaction") == {"primary": "warning"}
        [record] = [r for r in evaluator(client).book.firing() if r.rule == "idle_in_transaction"]
        assert "idle in a transaction" in record.message
        await tx.commit()
        assert await round_of(client, "idle_in_transaction") == {}
    assert await firing(client, "idle_in_transaction") == {}


async def test_blocked_session_fires_and_resolves(
    aiohttp_client: Any, settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await prepare(pg_dsn, statements=False)
    client = await start_app(
        aiohttp_client,
        # The holder sits idle in its transaction too: that rule is not under test here.
        settings(alert_blocked_session_seconds=1, alert_idle_in_transaction_seconds=3600),
    )
    async with connections(app_dsn(pg_dsn)) as held:
        holder, waiter = await connect(app_dsn(pg_dsn)), await connect(app_dsn(pg_dsn))
        held += [holder, waiter]
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        blocked = asyncio.create_task(waiter.fetchval("SELECT count(*) FROM items"))
        try:
            found = await until_accepted(
                lambda: round_of(client, "blocked_session"),
                lambda found: found,
                what="the blocked_session warning",
                interval=0.3,
            )
        finally:
            await tx.rollback()
            await blocked
        assert found == {"primary": "warning"}
        [record] = [r for r in evaluator(client).book.firing() if r.rule == "blocked_session"]
        assert f"waits for pid(s) [{holder.get_server_pid()}]" in record.message
        assert await round_of(client, "blocked_session") == {}
    assert await firing(client, "blocked_session") == {}


async def test_slow_statements_fire_and_resolve(
    aiohttp_client: Any, settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await prepare(pg_dsn)
    window = 1.0
    client = await start_app(
        aiohttp_client,
        settings(slow_query_ms=100, alert_slow_statement_min_calls=3, top_queries_window=window),
    )
    assert await round_of(client, "slow_statement") == {}  # a first reading to compare with
    conn = await connect(app_dsn(pg_dsn))
    try:
        # Fast statements, many: not slow. Slow ones, too few: not a trend yet.
        for _ in range(20):
            await conn.fetchval("SELECT count(*) FROM items")
        for _ in range(2):
            await conn.execute("SELECT pg_sleep(0.12)")
        assert await round_of(client, "slow_statement") == {}
        for _ in range(3):
            await conn.execute("SELECT pg_sleep(0.12)")
    finally:
        await conn.close()
    fired_at = time.monotonic()  # before the round's reading: the window counts from that
    found = await round_of(client, "slow_statement")
    [(subject, level)] = found.items()
    assert level == "warning"
    assert subject.split(":")[:2] == [pg_dsn.rsplit("/", 1)[1], APP_ROLE]
    [record] = [r for r in evaluator(client).book.firing() if r.rule == "slow_statement"]
    assert "SELECT pg_sleep($1)" in record.message
    assert record.value is not None and record.value >= 100
    # Once a window has passed without a call, nothing is slow any more.
    resolved_at = await until_accepted(
        lambda: _timed(round_of(client, "slow_statement")),
        lambda answer: answer[1] == {},
        what="the slow_statement alert resolved",
        interval=0.2,
    )
    assert resolved_at[0] - fired_at >= window
    assert await firing(client, "slow_statement") == {}


async def test_pgbouncer_waiting_clients_fire_warning_then_critical_and_resolve(
    aiohttp_client: Any, settings: Callable[..., Settings], pg_dsn: str, pgbouncer: PgBouncer
) -> None:
    database = pg_dsn.rsplit("/", 1)[1]
    client = await start_app(
        aiohttp_client,
        settings(
            pgbouncer_admin_url=pgbouncer.admin_dsn,
            alert_pgbouncer_maxwait_warning=0.5,
            alert_pgbouncer_maxwait_critical=2.0,
            alert_idle_in_transaction_seconds=3600,
        ),
    )
    assert await round_of(client, "pgbouncer_waiting") == {}
    # The application's clients of PgBouncer (infrawatch reads only its admin console).
    through = pgbouncer.dsn(database)
    async with connections(through) as held:
        # default_pool_size = 5 (tests/stack/pgbouncer.py): five open transactions take every
        # server connection of the pool, the sixth client queues.
        for _ in range(5):
            conn = await connect(through, statement_cache_size=0)
            held.append(conn)
            await conn.execute("BEGIN")
            await conn.execute("SELECT 1")
        queued = await connect(through, statement_cache_size=0)
        held.append(queued)
        waiting = asyncio.create_task(queued.fetchval("SELECT 1"))
        try:
            warning = await until_accepted(
                lambda: round_of(client, "pgbouncer_waiting"),
                lambda found: found,
                what="the pgbouncer_waiting warning",
                interval=0.2,
            )
            assert warning == {f"{database}/postgres": "warning"}
            critical = await until_accepted(
                lambda: round_of(client, "pgbouncer_waiting"),
                lambda found: "critical" in found.values(),
                what="the pgbouncer_waiting critical alert",
                interval=0.3,
            )
            assert critical == {f"{database}/postgres": "critical"}
        finally:
            for conn in held[:5]:
                await conn.execute("COMMIT")
            assert await asyncio.wait_for(waiting, 10) == 1
        assert await round_of(client, "pgbouncer_waiting") == {}
    assert await firing(client, "pgbouncer_waiting") == {}


# --- a connection flood on a server of its own, with few connections ---

SMALL_MAX_CONNECTIONS = 23  # 20 for clients once superuser_reserved_connections (3) are kept


@pytest.fixture(scope="module")
def small_postgres() -> Iterator[PostgresServer]:
    # A work folder of the stack's own: the server's account must be able to enter it.
    directory = make_workdir()
    try:
        with PostgresServer(directory, name="small", max_connections=SMALL_MAX_CONNECTIONS) as pg:
            yield pg
    finally:
        remove_workdir(directory)


async def test_connection_flood_fires_warning_then_critical_and_resolves(
    aiohttp_client: Any, small_postgres: PostgresServer, redis_url: str
) -> None:
    database = small_postgres.create_database("flood")
    dsn = small_postgres.dsn(database=database)
    await prepare(dsn, statements=False)
    settings = Settings(
        **HAND_ROUNDS,
        database_url=dsn,
        redis_url=redis_url,
        auth_tokens={OPERATOR_NAME: OPERATOR_TOKEN},
        session_secret=SESSION_SECRET,
        # infrawatch's own share stays small and fixed: one connection, so the figures the
        # test reaches are the application's.
        database_connection_limit=1,
        database_min_connections=1,
        rpc_coalesce_ttl=0.0,
    )
    client = await start_app(aiohttp_client, settings)
    assert await round_of(client, "db_connections") == {}

    def percent() -> float:
        reading = evaluator(client).last_readings["database.activity"]
        [primary] = reading.output["nodes"]
        value: float = primary["connections"]["used_percent"]
        return value

    async with connections(app_dsn(dsn)) as held:
        # The application opens connections one at a time; infrawatch's own (its main pool
        # and its side pools for probes and the alert store) count too, so the level each
        # round reports must follow the share it read: warning from 80 %, critical from 95 %.
        levels: list[str] = []
        while "critical" not in levels:
            assert len(held) < 20, levels
            held.append(await connect(app_dsn(dsn)))
            level = (await round_of(client, "db_connections")).get("primary")
            share = percent()
            expected = "critical" if share >= 95 else "warning" if share >= 80 else None
            assert level == expected, (share, level)
            if level is not None:
                levels.append(level)
        assert levels[0] == "warning", levels  # 20 slots: 80 % and 95 % are different counts
        [record] = [r for r in evaluator(client).book.firing() if r.rule == "db_connections"]
        assert "of 20 client connections" in record.message
    assert await round_of(client, "db_connections") == {}
    assert percent() < 80
    assert await firing(client, "db_connections") == {}
