"""The two stores, case for case: PostgreSQL (a real server, a database per test) and memory.
Plus the migrations and their advisory lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from server.alerts.memory_store import MemoryStore
from server.alerts.migrations import MIGRATION_LOCK, MIGRATIONS, migrate
from server.alerts.models import AlertQuery, AlertRecord, Condition, Round
from server.alerts.pg_store import PostgresStore
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.errors import ErrorCode, RpcError
from server.resilience.registry import BreakerRegistry
from tests.waiting import until_accepted

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
STALE_AFTER = 60.0
Store = MemoryStore | PostgresStore


async def started(settings: Settings) -> PostgresCluster:
    cluster = PostgresCluster(settings.database, BreakerRegistry.from_settings(settings.breakers))
    await cluster.start()
    return cluster


@pytest.fixture(params=["postgres", "memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    # Synchronous fixtures only from here: a database of this test's own.
    make_settings: Callable[..., Settings] = request.getfixturevalue("make_settings")
    cluster = await started(make_settings())
    try:
        pg = PostgresStore(cluster)
        assert await pg.ensure_schema() == [m.version for m in MIGRATIONS]
        yield pg
    finally:
        await cluster.close()


def cond(subject: str = "s1", level: str = "warning", value: float = 11.0) -> Condition:
    threshold = 100.0 if level == "critical" else 10.0
    return Condition("delta", subject, level, f"{subject} is {value}", value, threshold)  # type: ignore[arg-type]


def rnd(
    seconds: float,
    *conditions: Condition,
    instance: str = "a",
    evaluated: frozenset[str] = frozenset({"delta"}),
) -> Round:
    return Round(
        at=T0 + timedelta(seconds=seconds),
        instance=instance,
        conditions=conditions,
        evaluated=evaluated,
        stale_after=STALE_AFTER,
    )


async def everything(store: Store) -> list[AlertRecord]:
    records, total = await store.page(AlertQuery(limit=500))
    assert total == len(records)
    return records


async def test_fires_updates_resolves_and_fires_anew(store: Store) -> None:
    [first] = await store.reconcile(rnd(0, cond(value=11)))
    assert (first.state, first.level, first.value) == ("firing", "warning", 11)
    assert first.fingerprint == "delta:s1"

    [same] = await store.reconcile(rnd(15, cond(value=12)))
    assert same.id == first.id
    assert (same.value, same.first_fired_at, same.last_fired_at) == (
        12,
        T0,
        T0 + timedelta(seconds=15),
    )

    assert await store.reconcile(rnd(30)) == []
    [resolved] = await everything(store)
    assert (resolved.id, resolved.state) == (first.id, "resolved")
    assert resolved.resolved_at == T0 + timedelta(seconds=30)

    [again] = await store.reconcile(rnd(45, cond(value=13)))
    assert again.id != first.id
    assert again.first_fired_at == T0 + timedelta(seconds=45)
    assert [a.id for a in await everything(store)] == [again.id, first.id]  # newest first


async def test_escalates_and_deescalates_on_one_fingerprint(store: Store) -> None:
    [warning] = await store.reconcile(rnd(0, cond(level="warning", value=50)))
    [critical] = await store.reconcile(rnd(15, cond(level="critical", value=150)))
    [back] = await store.reconcile(rnd(30, cond(level="warning", value=40)))
    assert warning.id == critical.id == back.id
    assert (critical.level, critical.threshold) == ("critical", 100)
    assert (back.level, back.value) == ("warning", 40)
    assert len(await everything(store)) == 1


async def test_rules_not_evaluated_keep_their_alerts(store: Store) -> None:
    await store.reconcile(rnd(0, cond()))
    # The source of "delta" could not be read this round: no verdict on its alerts.
    assert len(await store.reconcile(rnd(15, evaluated=frozenset()))) == 1


async def test_two_instances_one_alert_resolved_when_neither_reports_it(store: Store) -> None:
    [a] = await store.reconcile(rnd(0, cond(), instance="a"))
    [b] = await store.reconcile(rnd(1, cond(), instance="b"))
    assert a.id == b.id
    assert set(b.reporters) == {"a", "b"}

    # a no longer sees it, b still does (each has its own breakers, caches): still firing.
    [held] = await store.reconcile(rnd(15, instance="a"))
    assert held.id == a.id and set(held.reporters) == {"b"}
    assert await store.reconcile(rnd(16, instance="b")) == []
    [resolved] = await everything(store)
    assert resolved.resolved_at == T0 + timedelta(seconds=16)


async def test_an_instance_that_stopped_reporting_no_longer_holds_an_alert(store: Store) -> None:
    await store.reconcile(rnd(0, cond(), instance="gone"))
    # Within the grace period another instance's clear leaves it alone...
    assert len(await store.reconcile(rnd(STALE_AFTER - 1, instance="b"))) == 1
    # ...past it, the silent instance's report is stale and the alert resolves.
    assert await store.reconcile(rnd(STALE_AFTER + 1, instance="b")) == []


async def test_replaying_an_older_round_does_not_overwrite_a_newer_report(store: Store) -> None:
    await store.reconcile(rnd(30, cond(level="critical", value=150)))
    [record] = await store.reconcile(rnd(10, cond(level="warning", value=20)))
    assert (record.level, record.value) == ("critical", 150)
    assert record.last_fired_at == T0 + timedelta(seconds=30)
    # Replaying the same round again changes nothing.
    [again] = await store.reconcile(rnd(30, cond(level="critical", value=150)))
    assert again == record


async def test_proposed_ids_are_used_for_new_occurrences(store: Store) -> None:
    proposed = "6f1c2b9e-3a5d-4c8e-9f00-1234567890ab"
    [record] = await store.reconcile(rnd(0, cond()).with_ids({"delta:s1": proposed}))
    assert record.id == proposed


async def test_acknowledge_first_wins_and_unknown_is_not_found(store: Store) -> None:
    [record] = await store.reconcile(rnd(0, cond()))
    first = await store.acknowledge(record.id, "alice", T0 + timedelta(seconds=5), "on it")
    second = await store.acknowledge(record.id, "bob", T0 + timedelta(seconds=6), "me too")
    assert (second.acknowledged_by, second.note) == ("alice", "on it")
    assert second.acknowledged_at == first.acknowledged_at == T0 + timedelta(seconds=5)
    # The acknowledgement stays with the occurrence while it fires and after it resolves.
    [firing] = await store.reconcile(rnd(15, cond(level="critical", value=200)))
    assert firing.acknowledged_by == "alice"
    await store.reconcile(rnd(30))
    [resolved] = await everything(store)
    assert (resolved.state, resolved.acknowledged_by) == ("resolved", "alice")

    with pytest.raises(RpcError) as err:
        await store.acknowledge("00000000-0000-4000-8000-000000000000", "alice", T0, None)
    assert err.value.code is ErrorCode.NOT_FOUND


async def test_list_filters_and_pages(store: Store) -> None:
    subjects = [f"s{i:02}" for i in range(7)]
    for i in range(7):  # each subject starts firing in a round of its own
        await store.reconcile(rnd(i, *(cond(s) for s in subjects[: i + 1])))
    ids = [r.id for r in await everything(store)]
    s00 = next(r for r in await everything(store) if r.subject == "s00")
    await store.acknowledge(s00.id, "alice", T0, None)
    # s00 clears; the odd ones escalate.
    levels = {s: "critical" if int(s[1:]) % 2 else "warning" for s in subjects[1:]}
    await store.reconcile(rnd(10, *(cond(s, level=lv) for s, lv in levels.items())))

    page, total = await store.page(AlertQuery(limit=3, offset=0))
    assert total == 7 and [r.subject for r in page] == ["s06", "s05", "s04"]
    page, _ = await store.page(AlertQuery(limit=3, offset=6))
    assert [r.subject for r in page] == ["s00"]
    assert [r.id for r in (await store.page(AlertQuery(limit=7)))[0]] == ids

    def subjects_of(records: list[AlertRecord]) -> list[str]:
        return [r.subject for r in records]

    firing, total = await store.page(AlertQuery(state="firing"))
    assert total == 6 and "s00" not in subjects_of(firing)
    acked, _ = await store.page(AlertQuery(state="resolved", acknowledged=True))
    assert subjects_of(acked) == ["s00"]
    assert (await store.page(AlertQuery(acknowledged=False)))[1] == 6
    critical, _ = await store.page(AlertQuery(level="critical"))
    assert subjects_of(critical) == ["s05", "s03", "s01"]
    warning, _ = await store.page(AlertQuery(level="warning"))
    assert subjects_of(warning) == ["s06", "s04", "s02", "s00"]
    assert (await store.page(AlertQuery(level="warning", state="firing")))[1] == 3


async def test_a_note_is_stored_verbatim(store: Store) -> None:
    [record] = await store.reconcile(rnd(0, cond()))
    note = "<script>alert('x')</script> & \"quotes\" ünïcode"
    acked = await store.acknowledge(record.id, "alice", T0, note)
    assert acked.note == note
    [listed] = await everything(store)
    assert listed.note == note


# --- migrations ---


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10)


async def test_migrations_apply_once_under_concurrent_start_ups(pg_dsn: str) -> None:
    conns = [await _connect(pg_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(v for r in results for v in r)
        assert applied == [m.version for m in MIGRATIONS]  # each version by exactly one
        rows = await conns[0].fetch("SELECT version, name FROM infrawatch.schema_migrations")
        assert [(r["version"], r["name"]) for r in rows] == [
            (m.version, m.name) for m in MIGRATIONS
        ]
        assert await migrate(conns[0]) == []
    finally:
        for conn in conns:
            await conn.close()


async def test_migrations_wait_for_the_advisory_lock(pg_dsn: str) -> None:
    holder, migrator = await _connect(pg_dsn), await _connect(pg_dsn)
    try:
        await holder.execute("BEGIN")
        await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        task = asyncio.create_task(migrate(migrator))
        # The migrator is blocked on our lock: PostgreSQL shows it waiting for an advisory lock.
        waiting = await _poll(
            holder,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            lambda n: n == 1,
        )
        assert waiting == 1 and not task.done()
        await holder.execute("COMMIT")
        assert await asyncio.wait_for(task, 30) == [m.version for m in MIGRATIONS]
    finally:
        await holder.close()
        await migrator.close()


async def _poll(conn: asyncpg.Connection, sql: str, until: Callable[[Any], bool]) -> Any:
    return await until_accepted(lambda: conn.fetchval(sql), until, what=sql, interval=0.02)
