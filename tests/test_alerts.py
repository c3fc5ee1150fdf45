"""Alerting end to end: real PostgreSQL and Redis, conditions brought about by real means
(a stopped Redis, a breaker forced open or failing for real), procedures called over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest

from server.alerts import AlertBook, Evaluator
from server.alerts.migrations import MIGRATIONS
from server.alerts.models import Condition
from server.alerts.rules import Rule, Sample
from server.appkeys import METRICS, ROUTER
from server.config import Settings
from server.rpc.reading import read
from server.rpc.router import Context, NoInput, Router, query
from tests.alerting import (
    BOB_NAME,
    BOB_TOKEN,
    app_of,
    book,
    breakers,
    call,
    error_code,
    evaluator,
    result,
    start_app,
)
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN
from tests.stack import PostgresServer, RedisServer, free_port
from tests.waiting import eventually, until_accepted

MakeApp = Callable[..., Awaitable[TestClient]]
# Cache GET latency is no subject here, and some tests stop Redis under the app: the
# evaluator's cached reads (monitoring.partitionMetrics) then time failed GETs, retries and
# backoff included, and the rule would fire beside the one under test. No GET takes an hour:
# the rule stays quiet (tests/test_alert_rules.py tests it on its own).
QUIET_GET_P95_MS = 3_600_000.0


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_tokens": {OPERATOR_NAME: OPERATOR_TOKEN, BOB_NAME: BOB_TOKEN},
            # Rounds by hand (run_once); only the start-up round runs by itself.
            "alert_evaluation_interval": 3600.0,
            "breaker_reset_timeout": 0.2,
            "alert_cache_get_p95_warning": QUIET_GET_P95_MS,
            "alert_cache_get_p95_critical": 2 * QUIET_GET_P95_MS,
        }
        return make_settings(**(values | overrides))

    return make


@pytest.fixture
def make_app(aiohttp_client: Any, settings: Callable[..., Settings]) -> MakeApp:
    """``await make_app(**overrides)``: this module's own, in place of the shared one
    (tests/conftest.py): the whole app, evaluator and cache on, past its first round."""

    async def make(**overrides: Any) -> TestClient:
        return await start_app(aiohttp_client, settings(**overrides))

    return make


async def alerts(client: TestClient, **filters: Any) -> dict[str, Any]:
    page: dict[str, Any] = result(await call(client, "alerts.list", filters))
    return page


async def firing(client: TestClient) -> list[dict[str, Any]]:
    page = await alerts(client, state="firing")
    return list(page["alerts"])


async def force(client: TestClient, breaker: str, state: str) -> None:
    breakers(client).get(breaker)  # created on first use, as its datastore would
    params = {"name": breaker, "state": state}
    result(await call(client, "monitoring.setCircuitBreakerState", params, OPERATOR_TOKEN))


async def acknowledge(
    client: TestClient,
    alert_id: str | int,
    note: str | None = None,
    token: str | None = OPERATOR_TOKEN,
) -> dict[str, Any]:
    params: dict[str, Any] = {"id": alert_id} | ({"note": note} if note is not None else {})
    return await call(client, "alerts.acknowledge", params, token)


async def rows(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


# --- fire, update, resolve, fire anew ---


async def test_redis_down_fires_resolves_and_fires_anew(
    make_app: MakeApp, redis_server: RedisServer
) -> None:
    client = await make_app()
    assert await firing(client) == []
    fingerprint = "redis_unavailable:redis"

    async def redis_alerts(state: str = "firing") -> list[dict[str, Any]]:
        page = await alerts(client, state=state)
        return [a for a in page["alerts"] if a["fingerprint"] == fingerprint]

    redis_server.stop()
    await evaluator(client).run_once()
    [alert] = await redis_alerts()
    assert alert["level"] == "critical"
    assert alert["message"].startswith("Redis is unavailable")
    assert alert["acknowledged"] is False and alert["resolved_at"] is None

    await evaluator(client).run_once()  # still down: the same occurrence, updated
    [same] = await redis_alerts()
    assert same["id"] == alert["id"]
    assert same["last_fired_at"] > alert["last_fired_at"]
    assert same["first_fired_at"] == alert["first_fired_at"]

    redis_server.start()

    # Failed calls may have opened the redis-cache breaker (an alert of its own); it lets one
    # trial call through once its reset timeout (0.2 s) has passed, so the round that sees
    # Redis again may come a little after the restart: rounds until none fires.
    async def round_then_firing() -> list[dict[str, Any]]:
        await evaluator(client).run_once()
        return await firing(client)

    await until_accepted(round_then_firing, lambda alerts: alerts == [], what="alerts resolved")
    assert await firing(client) == []
    [resolved] = await redis_alerts("resolved")
    assert resolved["id"] == alert["id"] and resolved["resolved_at"] is not None

    redis_server.stop()
    await evaluator(client).run_once()
    [anew] = await redis_alerts()
    assert anew["id"] != alert["id"]
    page = await alerts(client)
    ours = [a["id"] for a in page["alerts"] if a["fingerprint"] == fingerprint]
    assert ours == [anew["id"], alert["id"]]  # newest first
    assert page["source"] == "database" and page["durable"] is True
    redis_server.start()


async def test_a_forced_open_breaker_is_critical_until_closed(make_app: MakeApp) -> None:
    client = await make_app()
    await force(client, "pgbouncer-admin", "open")
    await evaluator(client).run_once()
    [alert] = await firing(client)
    assert alert["fingerprint"] == "breaker_open:pgbouncer-admin"
    assert alert["level"] == "critical"
    assert "is forced open" in alert["message"]

    await force(client, "pgbouncer-admin", "closed")
    await evaluator(client).run_once()
    assert await firing(client) == []


async def _connect(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


def failures_rule(level: str, threshold: float) -> Rule:
    """Consecutive failures of each breaker: a rule with a threshold of our choosing."""
    return Rule(
        "breaker_failures",
        level,  # type: ignore[arg-type]
        "monitoring.circuitBreakerStatus",
        lambda out: (Sample(b["name"], b["consecutive_failures"]) for b in out["breakers"]),
        ">",
        threshold,
        "breaker",
        "{subject}: {value:g} consecutive failures",
    )


async def test_escalates_from_warning_to_critical_on_one_fingerprint(
    make_app: MakeApp, postgres: PostgresServer
) -> None:
    client = await make_app()
    own = Evaluator(
        [failures_rule("warning", 1), failures_rule("critical", 3)],
        book(client),
        app_of(client)[ROUTER],
        interval=3600,
        timeout=30,
        section_timeout=10,
    )
    flaky = breakers(client).get("flaky", failure_threshold=100)
    closed_port = free_port()

    async def fail(times: int) -> None:
        for _ in range(times):
            with pytest.raises(ConnectionRefusedError):
                await flaky.call(_connect, closed_port)

    await fail(2)
    await own.run_once()
    [warning] = await firing(client)
    assert (warning["fingerprint"], warning["level"]) == ("breaker_failures:flaky", "warning")
    assert (warning["value"], warning["threshold"]) == (2, 1)

    await fail(2)
    await own.run_once()
    [critical] = await firing(client)
    assert critical["id"] == warning["id"]
    assert (critical["level"], critical["value"], critical["threshold"]) == ("critical", 4, 3)

    await flaky.call(_connect, postgres.port)  # a real success ends the streak
    await own.run_once()
    assert await firing(client) == []
    assert (await alerts(client))["total"] == 1


async def test_one_failing_rule_does_not_stop_the_others(make_app: MakeApp) -> None:
    client = await make_app()

    def broken(out: Any) -> list[Sample]:
        raise KeyError("field renamed")

    rules = [
        Rule("broken", "warning", "monitoring.circuitBreakerStatus", broken, ">", 0, "x", "x"),
        *evaluator(client).rules,
    ]
    own = Evaluator(
        rules,
        book(client),
        app_of(client)[ROUTER],
        interval=3600,
        timeout=30,
        section_timeout=10,
    )
    await force(client, "pgbouncer-admin", "open")
    verdict = await own.run_once()
    assert "broken" in verdict.failed
    assert [a["fingerprint"] for a in await firing(client)] == ["breaker_open:pgbouncer-admin"]


async def test_a_slow_section_is_bounded() -> None:
    never = asyncio.Event()

    async def hang(_ctx: Context, _: NoInput) -> None:
        await never.wait()

    router = Router([query("monitoring.queryStats", hang)])
    reading = await read(router, "monitoring.queryStats", Context(), 0.05)
    assert reading.outcome == "timeout"
    assert reading.error is not None and reading.error.code == "TIMEOUT"
    assert (await read(router, "monitoring.none", Context(), 0.05)).outcome == "absent"


# --- several instances on one database ---


async def test_two_instances_on_one_database_make_one_alert(
    make_app: MakeApp, redis_server: RedisServer, pg_dsn: str
) -> None:
    one, two = await make_app(), await make_app()
    fingerprint = "redis_unavailable:redis"

    async def redis_alerts(client: TestClient) -> list[dict[str, Any]]:
        # Both instances' cached reads fail against the stopped Redis too, and may open their
        # redis-cache breakers (an alert of its own, on its own schedule): this alert only.
        return [a for a in await firing(client) if a["fingerprint"] == fingerprint]

    redis_server.stop()
    await asyncio.gather(evaluator(one).run_once(), evaluator(two).run_once())
    [a1], [a2] = await redis_alerts(one), await redis_alerts(two)
    assert a1 == a2
    mine = "SELECT id, reporters FROM infrawatch.alerts WHERE fingerprint = $1"
    [row] = await rows(pg_dsn, mine, fingerprint)
    assert str(row["id"]) == a1["id"]
    assert set(orjson.loads(row["reporters"])) == {book(one).instance, book(two).instance}

    async def sees_redis(client: TestClient) -> bool:
        # One round of this instance; true once it no longer finds the condition. A breaker
        # opened during the outage lets one trial call through after its reset timeout, so
        # the first rounds after the restart may still find Redis down: bounded rounds.
        verdict = await evaluator(client).run_once()
        return all(c.fingerprint != fingerprint for c in verdict.conditions)

    redis_server.start()
    await eventually(lambda: sees_redis(one), what="instance one sees Redis again", interval=0.05)
    # The other instance still reports it: still firing.
    assert [a["id"] for a in await redis_alerts(one)] == [a1["id"]]
    await eventually(lambda: sees_redis(two), what="instance two sees Redis again", interval=0.05)
    assert await redis_alerts(one) == [] and await redis_alerts(two) == []
    assert len(await rows(pg_dsn, mine, fingerprint)) == 1


async def test_concurrent_start_ups_migrate_once(
    aiohttp_client: Any, settings: Callable[..., Settings], pg_dsn: str
) -> None:
    await asyncio.gather(*(start_app(aiohttp_client, settings()) for _ in range(3)))
    applied = await rows(pg_dsn, "SELECT version FROM infrawatch.schema_migrations")
    assert sorted(r["version"] for r in applied) == [m.version for m in MIGRATIONS]


# --- acknowledgement ---


async def _one_firing_alert(client: TestClient) -> dict[str, Any]:
    await force(client, "pgbouncer-admin", "open")
    await evaluator(client).run_once()
    [alert] = await firing(client)
    return alert


async def test_fifty_concurrent_acknowledgements_from_two_apps_keep_the_first(
    make_app: MakeApp, pg_dsn: str
) -> None:
    # 25 at once per app against the operators' bound of 8: the rest queue for as long as the
    # store needs (on a loaded machine one UPDATE of the contended row took 225 ms, and the
    # default half-second queue answered TOO_MANY_REQUESTS). Shedding is tests/test_cost.py's.
    one, two = await make_app(rpc_queue_wait=30.0), await make_app(rpc_queue_wait=30.0)
    alert = await _one_firing_alert(one)
    tokens = [OPERATOR_TOKEN, BOB_TOKEN]
    answers = await asyncio.gather(
        *(
            acknowledge((one, two)[i % 2], alert["id"], f"note {i}", tokens[(i // 2) % 2])
            for i in range(50)
        )
    )
    records = [result(a) for a in answers]
    first = records[0]
    assert first["acknowledged"] is True
    assert first["acknowledged_by"] in {OPERATOR_NAME, BOB_NAME}
    assert first["note"].startswith("note ")
    for record in records:
        assert (record["acknowledged_by"], record["acknowledged_at"], record["note"]) == (
            first["acknowledged_by"],
            first["acknowledged_at"],
            first["note"],
        )
    [row] = await rows(pg_dsn, "SELECT acknowledged_by, note FROM infrawatch.alerts")
    assert (row["acknowledged_by"], row["note"]) == (first["acknowledged_by"], first["note"])
    # Both apps list the same record.
    assert [a["note"] for a in await firing(two)] == [first["note"]]


async def test_an_acknowledgement_survives_a_restart(make_app: MakeApp) -> None:
    before = await make_app()
    alert = await _one_firing_alert(before)
    acked = result(await acknowledge(before, alert["id"], "looking at it"))
    await before.close()

    after = await make_app()  # a new process's worth of state, the same database
    [listed] = (await alerts(after, acknowledged=True))["alerts"]
    assert listed["id"] == alert["id"]
    assert (listed["acknowledged_by"], listed["acknowledged_at"], listed["note"]) == (
        OPERATOR_NAME,
        acked["acknowledged_at"],
        "looking at it",
    )
    again = result(await acknowledge(after, alert["id"], "second", BOB_TOKEN))
    assert (again["acknowledged_by"], again["note"]) == (OPERATOR_NAME, "looking at it")


async def test_acknowledge_refusals(make_app: MakeApp) -> None:
    client = await make_app()
    alert = await _one_firing_alert(client)

    unknown = await acknowledge(client, "00000000-0000-4000-8000-000000000000")
    assert error_code(unknown) == "NOT_FOUND"
    assert unknown["error"]["code"] == -32004
    anonymous = await acknowledge(client, alert["id"], token=None)
    assert error_code(anonymous) == "UNAUTHORIZED"
    # An id that names no alert, whatever its shape, is NOT_FOUND.
    assert error_code(await acknowledge(client, "not-an-id")) == "NOT_FOUND"
    assert error_code(await call(client, "alerts.acknowledge", {"id": 12}, OPERATOR_TOKEN)) == (
        "NOT_FOUND"
    )
    assert error_code(await call(client, "alerts.acknowledge", {"id": [1]}, OPERATOR_TOKEN)) == (
        "BAD_REQUEST"
    )
    assert error_code(await acknowledge(client, alert["id"], "x" * 1001)) == "BAD_REQUEST"
    # None of these recorded anything.
    [still] = await firing(client)
    assert still["acknowledged"] is False
    # Positional params (id, note) work as well.
    acked = result(await call(client, "alerts.acknowledge", [alert["id"], "ok"], OPERATOR_TOKEN))
    assert acked["note"] == "ok"


async def test_a_note_with_markup_is_stored_and_returned_verbatim(
    make_app: MakeApp, pg_dsn: str
) -> None:
    client = await make_app()
    alert = await _one_firing_alert(client)
    note = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    assert result(await acknowledge(client, alert["id"], note))["note"] == note
    [listed] = await firing(client)
    assert listed["note"] == note  # data, not markup: escaping is the renderer's job
    [row] = await rows(pg_dsn, "SELECT note FROM infrawatch.alerts")
    assert row["note"] == note


# --- the database going away ---


async def test_database_down_during_an_acknowledgement(
    make_app: MakeApp, postgres: PostgresServer
) -> None:
    client = await make_app()
    alert = await _one_firing_alert(client)

    postgres.stop()
    try:
        refused = await acknowledge(client, alert["id"], "while down")
        assert error_code(refused) == "SERVICE_UNAVAILABLE"
        assert "not recorded" in refused["error"]["message"]
        # Evaluation goes on, in memory; reads say where they come from.
        await evaluator(client).run_once()
        page = await alerts(client, state="firing")
        assert page["source"] == "memory"
        assert [a["id"] for a in page["alerts"]] == [alert["id"]]
        assert page["alerts"][0]["acknowledged"] is False
    finally:
        postgres.start()

    page = await until_accepted(lambda: alerts(client), lambda p: p["source"] == "database")
    assert page["source"] == "database"
    [listed] = page["alerts"]
    assert listed["acknowledged"] is False and listed["note"] is None
    acked = await until_accepted(
        lambda: acknowledge(client, alert["id"], "after"), lambda p: "result" in p
    )
    assert result(acked)["note"] == "after"


async def test_evaluation_continues_in_memory_and_catches_the_store_up(
    make_app: MakeApp, pg_dsn: str
) -> None:
    client = await make_app()
    # The store's own breaker forced open: every write of the alert store is refused.
    await force(client, "alert-store", "open")
    await evaluator(client).run_once()
    status = book(client).status()
    assert (status.durable, status.available, status.pending_rounds) == (True, False, 1)
    assert "alert-store" in (status.last_error or "")

    page = await alerts(client)
    assert page["source"] == "memory"
    [alert] = page["alerts"]
    assert alert["fingerprint"] == "breaker_open:alert-store"
    assert error_code(await acknowledge(client, alert["id"])) == "SERVICE_UNAVAILABLE"
    assert await rows(pg_dsn, "SELECT 1 FROM infrawatch.alerts") == []

    await force(client, "alert-store", "closed")
    await evaluator(client).run_once()  # writes the queued round, then this one
    assert book(client).status().pending_rounds == 0
    [row] = await rows(pg_dsn, "SELECT * FROM infrawatch.alerts")
    assert str(row["id"]) == alert["id"]
    assert row["first_fired_at"] == datetime.fromisoformat(alert["first_fired_at"])
    assert row["state"] == "resolved" and row["acknowledged_at"] is None
    page = await alerts(client)
    assert page["source"] == "database" and page["alerts"][0]["state"] == "resolved"


async def test_an_acknowledgement_never_waits_behind_the_outage_backlog(
    make_app: MakeApp, pg_dsn: str
) -> None:
    client = await make_app()
    alert_book = book(client)
    await force(client, "alert-store", "open")
    # An outage's backlog: rounds whose shapes alternate, so that none collapses into another.
    started = datetime.now(UTC)
    flapping = Condition("flapping", "db", "warning", "flaps", 1.0, 0.0)
    steady = Condition("steady", "db", "critical", "held", 2.0, 1.0)
    for n in range(3000):
        conditions = (steady, flapping) if n % 2 else (steady,)
        at = started + timedelta(milliseconds=n)
        await alert_book.record(conditions, frozenset({"flapping", "steady"}), at)
    assert alert_book.status().pending_rounds == 3000
    [held] = [r for r in alert_book.firing() if r.rule == "steady"]
    await force(client, "alert-store", "closed")

    began = time.perf_counter()
    acked = result(await acknowledge(client, held.id, "on it"))
    took = time.perf_counter() - began
    # Written at once, on its own: the backlog is still queued, untouched by the ack.
    assert took < 2.0, took
    assert alert_book.status().pending_rounds == 3000
    assert (acked["id"], acked["acknowledged_by"], acked["note"]) == (
        held.id,
        OPERATOR_NAME,
        "on it",
    )
    [row] = await rows(pg_dsn, "SELECT * FROM infrawatch.alerts")
    assert str(row["id"]) == held.id and row["acknowledged_by"] == OPERATOR_NAME
    assert row["first_fired_at"] == started
    # Idempotent: a repeat returns the first acknowledgement.
    again = result(await acknowledge(client, held.id, "again"))
    assert again["note"] == "on it"

    # The backlog replays onto the same row and keeps the acknowledgement.
    await alert_book.flush()
    assert alert_book.status().pending_rounds == 0
    steady_rows = await rows(
        pg_dsn, "SELECT * FROM infrawatch.alerts WHERE rule = 'steady' ORDER BY first_fired_at"
    )
    assert [str(r["id"]) for r in steady_rows] == [held.id]
    assert steady_rows[0]["note"] == "on it" and steady_rows[0]["state"] == "firing"
    assert steady_rows[0]["last_fired_at"] == started + timedelta(milliseconds=2999)


# --- without a database ---


async def test_in_memory_store_without_database_url(
    aiohttp_client: Any, settings: Callable[..., Settings]
) -> None:
    client = await start_app(aiohttp_client, settings(database_url=None))
    assert book(client).durable is False
    assert book(client).status().durable is False
    alert = await _one_firing_alert(client)
    acked = result(await acknowledge(client, alert["id"], "memory only"))
    assert (acked["acknowledged_by"], acked["note"]) == (OPERATOR_NAME, "memory only")
    page = await alerts(client, acknowledged=True)
    assert (page["source"], page["durable"], page["total"]) == ("memory", False, 1)
    assert error_code(await acknowledge(client, "00000000-0000-4000-8000-000000000000")) == (
        "NOT_FOUND"
    )


# --- the background task and the metric ---


async def test_the_evaluator_runs_on_its_interval(make_app: MakeApp) -> None:
    client = await make_app(alert_evaluation_interval=0.2)
    rounds = evaluator(client).rounds
    await force(client, "pgbouncer-admin", "open")
    listed = await until_accepted(lambda: firing(client), lambda a: len(a) == 1)
    assert [a["fingerprint"] for a in listed] == ["breaker_open:pgbouncer-admin"]
    assert evaluator(client).rounds > rounds


async def test_rounds_are_bounded_and_a_failed_round_does_not_stop_the_task() -> None:
    never = asyncio.Event()

    async def hang(_ctx: Context, _: NoInput) -> None:
        await never.wait()

    rule = Rule("slow", "warning", "monitoring.queryStats", lambda out: [], ">", 0, "x", "x")
    own = Evaluator(
        [rule],
        AlertBook(instance="i", stale_after=1),
        Router([query("monitoring.queryStats", hang)]),
        interval=0.05,
        timeout=0.05,  # shorter than the section bound: the round itself times out
        section_timeout=60,
    )
    with pytest.raises(TimeoutError):
        await own.run_once()
    task = asyncio.create_task(own.run())
    try:
        await eventually(lambda: own.failed_rounds >= 3, what="three failed rounds")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert own.rounds == 0


async def test_the_evaluator_task_ends_with_the_app(make_app: MakeApp) -> None:
    client = await make_app()
    assert any(t.get_name() == "alert-evaluator" for t in asyncio.all_tasks())
    await client.close()
    assert not any(t.get_name() == "alert-evaluator" for t in asyncio.all_tasks())


async def test_alerts_firing_gauge(make_app: MakeApp) -> None:
    client = await make_app()
    await _one_firing_alert(client)
    text = generate_latest(app_of(client)[METRICS].registry).decode()
    assert 'infrawatch_alerts_firing{level="critical"} 1.0' in text
    assert 'infrawatch_alerts_firing{level="warning"} 0.0' in text
