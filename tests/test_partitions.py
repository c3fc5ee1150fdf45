"""Partition migration against a demo schema on the real primary: a legacy table, its range-
partitioned copy in another schema, and a dual-write trigger. Readiness is false while the
copies differ and true once they agree and writes flow; every figure is checked against what
the server reports."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import generate_latest

from server.config import PartitionPair, Settings, TableName
from server.errors import ErrorCode, RpcError
from tests.pg_app import AppFactory, PgApp, database_of, samples
from tests.stack import PostgresServer
from tests.waiting import until_accepted

PAIR = "orders_legacy:shop.orders_p"

SCHEMA = """
CREATE SCHEMA shop;
CREATE TABLE orders_legacy (
    id bigint PRIMARY KEY, amount numeric NOT NULL, created_at timestamptz NOT NULL
);
CREATE TABLE shop.orders_p (
    id bigint NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL
) PARTITION BY RANGE (created_at);
CREATE TABLE shop.orders_p_2024 PARTITION OF shop.orders_p
    FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2025-01-01 00:00:00+00');
CREATE TABLE shop.orders_p_2025 PARTITION OF shop.orders_p
    FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2026-01-01 00:00:00+00');
CREATE TABLE shop.orders_p_default PARTITION OF shop.orders_p DEFAULT;
-- Rows written before the dual-write trigger existed: the copy starts behind.
INSERT INTO orders_legacy
    SELECT g, g * 1.5, timestamptz '2024-06-01 00:00:00+00' + g * interval '1 day'
    FROM generate_series(1, 300) g;
CREATE FUNCTION orders_dual_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO shop.orders_p VALUES (NEW.id, NEW.amount, NEW.created_at);
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE shop.orders_p SET amount = NEW.amount, created_at = NEW.created_at
        WHERE id = OLD.id;
    ELSE
        DELETE FROM shop.orders_p WHERE id = OLD.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER orders_dual_write AFTER INSERT OR UPDATE OR DELETE ON orders_legacy
    FOR EACH ROW EXECUTE FUNCTION orders_dual_write();
"""


def _pairs(*texts: str) -> tuple[PartitionPair, ...]:
    pairs = []
    for text in texts:
        legacy, partitioned = text.split(":")
        pairs.append(PartitionPair(TableName.parse(legacy), TableName.parse(partitioned)))
    return tuple(pairs)


@pytest.fixture
async def demo(pg_dsn: str, postgres: PostgresServer) -> str:
    db = database_of(pg_dsn)
    await asyncio.to_thread(postgres.psql, SCHEMA, db)
    return db


async def _metrics(app: PgApp) -> dict[str, Any]:
    out: dict[str, Any] = await app.call("monitoring.partitionMetrics")
    return {pair["pair"]: pair for pair in out["pairs"]}


def _checks(pair: dict[str, Any]) -> dict[str, bool]:
    return {check["name"]: check["ok"] for check in pair["checks"]}


async def test_readiness_follows_the_copies(
    make_app: AppFactory, demo: str, postgres: PostgresServer
) -> None:
    app = await make_app(
        Settings(database_url=postgres.dsn(database=demo), partition_pairs=_pairs(PAIR))
    )

    first = (await _metrics(app))[PAIR]
    bounds = await asyncio.to_thread(
        postgres.psql,
        "SELECT string_agg(c.oid::regclass::text || '=' || pg_get_expr(c.relpartbound, c.oid), "
        "'|' ORDER BY c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'shop.orders_p'::regclass",
        demo,
    )

    assert (first["legacy_rows"], first["partitioned_rows"]) == (300, 0)
    assert first["legacy_count_method"] == first["partitioned_count_method"] == "exact"
    assert (first["delta"], first["difference"]) == (300, 300)
    assert first["partition_count"] == 3
    assert "|".join(f"{p['name']}={p['bounds']}" for p in first["partitions"]) == bounds
    assert first["triggers_enabled"] is True
    trigger = first["triggers"][0]
    assert (trigger["name"], trigger["state"], trigger["timing"], trigger["level"]) == (
        "orders_dual_write",
        "enabled",
        "AFTER",
        "ROW",
    )
    assert trigger["events"] == ["INSERT", "DELETE", "UPDATE"]
    assert trigger["references_partitioned"] is True
    assert first["recent_writes"] is None  # no previous reading yet
    assert first["ready"] is False
    assert _checks(first) == {
        "row_delta": False,
        "partitions_exist": True,
        "dual_write_triggers": True,
        "recent_writes": False,
    }

    # Backfill the copy, then write through the legacy table: the trigger copies the rows.
    await asyncio.to_thread(
        postgres.psql,
        "INSERT INTO shop.orders_p SELECT * FROM orders_legacy;"
        "INSERT INTO orders_legacy SELECT g, g, timestamptz '2025-12-31 00:00:00+00' "
        "FROM generate_series(301, 305) g;",
        demo,
    )
    ready = await until_accepted(
        lambda: _metrics(app),
        lambda pairs: pairs[PAIR]["ready"],
        what="the pair ready once the copies agree and writes are seen",
        interval=0.25,
    )
    pair = ready[PAIR]
    counts = await asyncio.to_thread(
        postgres.psql,
        "SELECT (SELECT count(*) FROM orders_legacy) || '|' || "
        "(SELECT count(*) FROM shop.orders_p)",
        demo,
    )
    assert counts == "305|305"
    assert (pair["legacy_rows"], pair["partitioned_rows"], pair["delta"]) == (305, 305, 0)
    assert pair["recent_writes"] > 0
    assert pair["recent_writes"] == pair["legacy_writes_since"] + pair["partitioned_writes_since"]
    assert pair["seconds_since_previous_check"] > 0
    assert all(_checks(pair).values())
    # Checks in quick succession (page, evaluator, scrape) count over the same window: the
    # next one still sees the writes instead of an interval shrunk to nothing.
    again = (await _metrics(app))[PAIR]
    assert again["recent_writes"] >= pair["recent_writes"]
    assert again["ready"] is True

    sizes = await asyncio.to_thread(
        postgres.psql,
        "SELECT pg_total_relation_size('orders_legacy') || '|' || "
        "(SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('shop.orders_p'))",
        demo,
    )
    assert f"{pair['legacy_size_bytes']}|{pair['partitioned_size_bytes']}" == sizes

    await app.metrics.refresh(10)
    values = samples(generate_latest(app.metrics.registry).decode())
    assert values[("infrawatch_partition_row_delta", frozenset({("pair", PAIR)}))] == 0
    assert ("infrawatch_partition_ready", frozenset({("pair", PAIR)})) in values

    # The trigger switched off: the pair is no longer ready, whatever the counts say.
    await asyncio.to_thread(
        postgres.psql, "ALTER TABLE orders_legacy DISABLE TRIGGER orders_dual_write", demo
    )
    off = (await _metrics(app))[PAIR]
    assert off["triggers_enabled"] is False
    assert off["triggers"][0]["state"] == "disabled"
    assert off["ready"] is False
    assert _checks(off)["dual_write_triggers"] is False


async def test_partition_table_stats_match_the_server(
    make_app: AppFactory, demo: str, postgres: PostgresServer
) -> None:
    app = await make_app(
        Settings(database_url=postgres.dsn(database=demo), partition_pairs=_pairs(PAIR))
    )
    await asyncio.to_thread(
        postgres.psql, "INSERT INTO shop.orders_p SELECT * FROM orders_legacy", demo
    )

    out = await app.call("monitoring.partitionTableStats", {"pair": PAIR})
    server = await asyncio.to_thread(
        postgres.psql,
        "SELECT string_agg(format('%s|%s|%s|%s', c.relname, pg_get_expr(c.relpartbound, c.oid), "
        "(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %s', "
        "c.oid::regclass), false, true, '')))[1]::text, pg_total_relation_size(c.oid)), "
        "';' ORDER BY c.relname) "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'shop.orders_p'::regclass",
        demo,
    )

    (pair,) = out["pairs"]
    assert pair["error"] is None
    assert pair["partition_count"] == 3
    ours = ";".join(
        f"{p['name']}|{p['bounds']}|{p['rows']}|{p['size_bytes']}" for p in pair["partitions"]
    )
    assert ours == server
    assert [p["rows"] for p in pair["partitions"]] == [213, 87, 0]  # 2024, 2025, default
    assert {p["rows_method"] for p in pair["partitions"]} == {"exact"}
    assert {p["schema_name"] for p in pair["partitions"]} == {"shop"}
    assert pair["total_size_bytes"] == sum(p["size_bytes"] for p in pair["partitions"])

    with pytest.raises(RpcError) as info:
        await app.call("monitoring.partitionTableStats", {"pair": "nope:nothing"})
    assert info.value.code is ErrorCode.NOT_FOUND


async def test_estimates_above_the_exact_count_limit(
    make_app: AppFactory, demo: str, postgres: PostgresServer
) -> None:
    await asyncio.to_thread(
        postgres.psql,
        "INSERT INTO shop.orders_p SELECT * FROM orders_legacy; ANALYZE orders_legacy;"
        "ANALYZE shop.orders_p;",
        demo,
    )
    settings = Settings(
        database_url=postgres.dsn(database=demo),
        partition_pairs=_pairs(PAIR),
        partition_exact_count_limit=100,
    )
    app = await make_app(settings)

    pair = (await _metrics(app))[PAIR]
    estimates = await asyncio.to_thread(
        postgres.psql,
        "SELECT (SELECT reltuples::bigint FROM pg_class WHERE oid = 'orders_legacy'::regclass) "
        "|| '|' || (SELECT sum(c.reltuples)::bigint FROM pg_partition_tree('shop.orders_p') t "
        "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf)",
        demo,
    )

    assert f"{pair['legacy_rows']}|{pair['partitioned_rows']}" == estimates == "300|300"
    assert pair["legacy_count_method"] == pair["partitioned_count_method"] == "estimate"


async def test_a_missing_table_or_a_slow_count_stays_within_its_pair(
    make_app: AppFactory, demo: str, postgres: PostgresServer
) -> None:
    # A view that takes 3 s to count stands in for a table too big to count in time.
    await asyncio.to_thread(
        postgres.psql,
        "CREATE VIEW slow_legacy AS SELECT g AS id FROM generate_series(1, 10) g, pg_sleep(3)",
        demo,
    )
    settings = Settings(
        database_url=postgres.dsn(database=demo),
        partition_pairs=_pairs("nope:shop.orders_p", "slow_legacy:shop.orders_p", PAIR),
        database_timeout_ms=2000,
    )
    app = await make_app(settings)

    pairs = await _metrics(app)

    missing = pairs["nope:shop.orders_p"]
    assert missing["error"] == "table 'nope' does not exist"
    assert missing["ready"] is False
    assert missing["checks"] == [
        {"name": "tables_exist", "ok": False, "detail": "table 'nope' does not exist"}
    ]
    slow = pairs["slow_legacy:shop.orders_p"]
    assert slow["error"] is None
    assert slow["legacy_rows"] is None
    assert slow["legacy_count_method"] == "estimate (count(*) exceeded 1000 ms)"
    assert slow["partitioned_rows"] == 0
    assert _checks(slow)["row_delta"] is False
    assert pairs[PAIR]["legacy_rows"] == 300  # the other pairs are unaffected
    stats = await app.call("monitoring.partitionTableStats", ["nope:shop.orders_p"])
    assert stats["pairs"][0]["error"] == "table 'nope' does not exist"


async def test_without_pairs_there_is_nothing_to_report(make_app: AppFactory, pg_dsn: str) -> None:
    app = await make_app(Settings(database_url=pg_dsn))
    assert (await app.call("monitoring.partitionMetrics"))["pairs"] == []
    stats = await app.call("monitoring.partitionTableStats")
    assert set(stats) == {"pairs", "checked_at"} and stats["pairs"] == []
