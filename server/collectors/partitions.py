"""Partition migration: is a partitioned copy of a legacy table ready to take over?

For each ``PARTITION_PAIRS`` entry (``legacy:partitioned``, names validated by
``config.TableName`` and always quoted) ``PartitionWatch`` reads on the primary:

- row counts: exact ``count(*)`` in a read-only transaction under ``SET LOCAL
  statement_timeout``, or the planner's estimate (``pg_class.reltuples``, summed over the leaf
  partitions) once that is above ``PARTITION_EXACT_COUNT_LIMIT`` or the count times out;
- partitions: ``pg_inherits`` children with ``pg_get_expr(relpartbound)`` bounds, and per
  partition rows and ``pg_total_relation_size`` (summed over sub-partitions);
- dual-write triggers on the legacy table (``pg_trigger``; enabled when ``tgenabled`` is
  ``O`` or ``A``). Triggers whose function names the partitioned table are the dual-write ones;
  when none does, every row trigger on INSERT counts;
- recent writes: ``n_tup_ins + n_tup_upd + n_tup_del`` of both tables (``pg_stat_user_tables``)
  against the newest earlier reading at least ``PARTITION_WRITES_WINDOW`` seconds old (or the
  oldest one while none is that old; the first check has none). A window, not "the previous
  check": the page, the alert evaluator and Prometheus all check, and each would otherwise
  shrink the others' interval to nothing.

Readiness is the conjunction of four checks, each listed with its reason: row delta below
``READY_MAX_DELTA``, partitions exist, a dual-write trigger is enabled, writes seen since the
window. A configured table that does not exist is an error for its pair only.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from server.config import PartitionPair, Settings, TableName
from server.datastores.node import Node
from server.errors import ErrorCode, QueryTimeout, RpcError, SqlError

READY_MAX_DELTA = 10
_ENABLED = {"O", "A"}  # fires in origin mode / always; "R" replica-only, "D" disabled
_ENABLED_NAMES = {"O": "enabled", "A": "always", "R": "replica only", "D": "disabled"}
_TRIGGER_ROW, _TRIGGER_BEFORE, _TRIGGER_INSTEAD = 1, 2, 64
_EVENTS = ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE"))

_RESOLVE_SQL = "SELECT to_regclass($1)::oid AS legacy, to_regclass($2)::oid AS partitioned"

# One table, partitioned or not: its leaves (or itself) give estimate, writes and size.
_TABLE_SQL = """
WITH tree AS (
    SELECT t.relid, t.isleaf FROM pg_partition_tree($1::oid::regclass) t
    UNION ALL
    SELECT $1::oid::regclass, true
    WHERE NOT EXISTS (SELECT FROM pg_partition_tree($1::oid::regclass))
)
SELECT (SELECT relkind::text FROM pg_class WHERE oid = $1::oid) AS kind,
       (SELECT CASE WHEN bool_or(c.reltuples < 0) THEN -1 ELSE coalesce(sum(c.reltuples), 0) END
          FROM tree JOIN pg_class c ON c.oid = tree.relid WHERE tree.isleaf)::float8 AS estimate,
       (SELECT coalesce(sum(s.n_tup_ins + s.n_tup_upd + s.n_tup_del), 0)
          FROM tree JOIN pg_stat_user_tables s ON s.relid = tree.relid)::bigint AS writes,
       (SELECT coalesce(sum(pg_total_relation_size(tree.relid)), 0) FROM tree)::bigint
           AS size_bytes
"""

_PARTITIONS_SQL = """
SELECT c.oid::regclass::text AS qualified,
       n.nspname AS schema,
       c.relname AS name,
       c.relkind::text AS kind,
       coalesce(pg_get_expr(c.relpartbound, c.oid), '') AS bounds,
       (SELECT CASE WHEN bool_or(lc.reltuples < 0) THEN -1 ELSE coalesce(sum(lc.reltuples), 0) END
          FROM pg_partition_tree(c.oid) t JOIN pg_class lc ON lc.oid = t.relid
         WHERE t.isleaf)::float8 AS estimate,
       (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
          FROM pg_partition_tree(c.oid) t)::bigint AS size_bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = $1::oid
ORDER BY n.nspname, c.relname
"""

_TRIGGERS_SQL = """
SELECT t.tgname AS name,
       t.tgenabled::text AS enabled,
       t.tgtype::int AS type,
       p.oid::regprocedure::text AS function,
       position(lower($2) IN lower(p.prosrc)) > 0 AS references_partitioned
FROM pg_trigger t
JOIN pg_proc p ON p.oid = t.tgfoid
WHERE t.tgrelid = $1::oid AND NOT t.tgisinternal
ORDER BY t.tgname
"""


# --- models ---


class Check(BaseModel):
    name: str = Field(
        description="row_delta, partitions_exist, dual_write_triggers, recent_writes; "
        "tables_exist when the pair cannot be read"
    )
    ok: bool = Field(description="the check passed")
    detail: str = Field(description="the figures behind the verdict")


class PartitionBound(BaseModel):
    name: str = Field(description="the partition, schema-qualified when not on search_path")
    bounds: str = Field(description="pg_get_expr(relpartbound): FOR VALUES ... or DEFAULT")


class TriggerInfo(BaseModel):
    name: str = Field(description="the trigger")
    state: str = Field(description="enabled, always, replica only or disabled (tgenabled)")
    enabled: bool = Field(description="fires for ordinary sessions (tgenabled O or A)")
    timing: str = Field(description="BEFORE, AFTER or INSTEAD OF")
    level: str = Field(description="ROW or STATEMENT")
    events: list[str] = Field(description="INSERT, DELETE, UPDATE, TRUNCATE")
    function: str = Field(description="the trigger function's signature")
    references_partitioned: bool = Field(
        description="the trigger function's source names the partitioned table"
    )


class PairMetrics(BaseModel):
    pair: str = Field(description="legacy:partitioned as configured")
    legacy: str = Field(description="the legacy table")
    partitioned: str = Field(description="the partitioned table")
    legacy_rows: int | None = Field(description="rows in the legacy table; None when unknown")
    partitioned_rows: int | None = Field(
        description="rows in the partitioned table; None when unknown"
    )
    legacy_count_method: str = Field(description="exact, estimate, or why an estimate")
    partitioned_count_method: str = Field(description="exact, estimate, or why an estimate")
    delta: int | None = Field(description="|legacy_rows - partitioned_rows|")
    difference: int | None = Field(description="legacy_rows - partitioned_rows")
    partition_count: int = Field(description="partitions attached (pg_inherits)")
    partitions: list[PartitionBound] = Field(description="each partition's bounds")
    triggers_enabled: bool = Field(description="a dual-write trigger on the legacy table fires")
    triggers: list[TriggerInfo] = Field(description="every user trigger on the legacy table")
    recent_writes: int | None = Field(
        description="rows inserted, updated or deleted in both tables since the baseline "
        "reading (see PARTITION_WRITES_WINDOW); None on the first check"
    )
    legacy_writes_since: int | None = Field(
        description="legacy row writes since the baseline reading"
    )
    partitioned_writes_since: int | None = Field(
        description="partitioned row writes since the baseline reading"
    )
    seconds_since_previous_check: float | None = Field(
        description="age of the baseline reading the writes are counted from; None at first"
    )
    legacy_size_bytes: int | None = Field(description="pg_total_relation_size")
    partitioned_size_bytes: int | None = Field(
        description="pg_total_relation_size summed over partitions"
    )
    ready: bool = Field(description="every check passed: safe to switch over")
    checks: list[Check] = Field(description="each readiness check with its reason")
    error: str | None = Field(description="why the pair could not be checked")
    checked_at: datetime = Field(description="when")


class PartitionMetricsReport(BaseModel):
    ready_max_delta: int = Field(description="row delta must stay below this to be ready")
    exact_count_limit: int = Field(description="PARTITION_EXACT_COUNT_LIMIT")
    pairs: list[PairMetrics] = Field(description="one per PARTITION_PAIRS entry, in order")
    checked_at: datetime = Field(
        description="when the reading began; a cached answer keeps the time of its reading"
    )


class PartitionStats(BaseModel):
    name: str = Field(description="the partition's table name")
    schema_name: str = Field(description="the partition's schema")
    kind: str = Field(description="table, or partitioned (it has sub-partitions)")
    bounds: str = Field(description="pg_get_expr(relpartbound): FOR VALUES ... or DEFAULT")
    rows: int | None = Field(description="rows; None when unknown")
    rows_method: str = Field(description="exact, estimate, or why an estimate")
    size_bytes: int = Field(description="pg_total_relation_size, summed over sub-partitions")


class PairPartitions(BaseModel):
    pair: str = Field(description="legacy:partitioned as configured")
    partitioned: str = Field(description="the partitioned table")
    partition_count: int = Field(description="partitions attached")
    total_size_bytes: int | None = Field(description="pg_total_relation_size over every partition")
    partitions: list[PartitionStats] = Field(description="each partition")
    error: str | None = Field(description="why the pair could not be read")


class PartitionTableStatsReport(BaseModel):
    pairs: list[PairPartitions] = Field(description="the pairs asked for")
    checked_at: datetime = Field(
        description="when the reading began; a cached answer keeps the time of its reading"
    )


# --- reading ---


@dataclass(frozen=True, slots=True)
class _Table:
    oid: int
    kind: str
    estimate: float | None  # None: never analysed
    writes: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class _Reading:
    writes_legacy: int
    writes_partitioned: int
    at: float  # monotonic


class MissingTable(Exception):
    pass


class PartitionWatch:
    """The partition-pair checks of one app; keeps each pair's previous write counters."""

    def __init__(self, node: Node, settings: Settings) -> None:
        self._node = node
        self.pairs = settings.partition_pairs
        self.exact_count_limit = settings.partition_exact_count_limit
        # Half the tighter of our two outer bounds, so the server's statement_timeout fires
        # first and the count falls back to the estimate instead of failing the call.
        self.count_timeout_ms = max(
            1, min(settings.database_timeout_ms, settings.breaker_call_timeout_ms) // 2
        )
        self.writes_window = settings.partition_writes_window
        self._readings: dict[str, deque[_Reading]] = {}
        self.last: dict[str, PairMetrics] = {}

    def find(self, name: str) -> PartitionPair:
        for pair in self.pairs:
            if pair.name == name:
                return pair
        known = ", ".join(p.name for p in self.pairs) or "none configured"
        raise RpcError(ErrorCode.NOT_FOUND, f"no partition pair {name!r} (known: {known})")

    async def metrics(self) -> PartitionMetricsReport:
        checked_at = datetime.now(UTC)
        results = await asyncio.gather(*(self._pair_metrics(pair) for pair in self.pairs))
        self.last = {m.pair: m for m in results}
        return PartitionMetricsReport(
            ready_max_delta=READY_MAX_DELTA,
            exact_count_limit=self.exact_count_limit,
            pairs=list(results),
            checked_at=checked_at,
        )

    async def table_stats(self, only: str | None = None) -> PartitionTableStatsReport:
        pairs = [self.find(only)] if only is not None else list(self.pairs)
        checked_at = datetime.now(UTC)
        return PartitionTableStatsReport(
            pairs=list(await asyncio.gather(*(self._pair_partitions(p) for p in pairs))),
            checked_at=checked_at,
        )

    # --- one pair ---

    async def _pair_metrics(self, pair: PartitionPair) -> PairMetrics:
        try:
            return await self._measure(pair)
        except (MissingTable, SqlError) as exc:
            return self._failed(pair, str(exc) if isinstance(exc, MissingTable) else exc.message)

    async def _measure(self, pair: PartitionPair) -> PairMetrics:
        legacy_oid, partitioned_oid = await self._resolve(pair)
        legacy = await self._table(legacy_oid)
        partitioned = await self._table(partitioned_oid)
        legacy_rows, legacy_method = await self._count(pair.legacy.quoted, legacy.estimate)
        part_rows, part_method = await self._count(pair.partitioned.quoted, partitioned.estimate)
        partitions = await self._node.fetch(_PARTITIONS_SQL, partitioned_oid)
        triggers = [
            _trigger(row)
            for row in await self._node.fetch(_TRIGGERS_SQL, legacy_oid, pair.partitioned.name)
        ]
        now = time.monotonic()
        readings = self._readings.setdefault(pair.name, deque())
        previous = _baseline(readings, now, self.writes_window)
        _remember(readings, _Reading(legacy.writes, partitioned.writes, now), self.writes_window)

        delta = difference = None
        if legacy_rows is not None and part_rows is not None:
            difference = legacy_rows - part_rows
            delta = abs(difference)
        since_legacy = since_part = recent = None
        if previous is not None:
            since_legacy = legacy.writes - previous.writes_legacy
            since_part = partitioned.writes - previous.writes_partitioned
            if since_legacy >= 0 and since_part >= 0:
                recent = since_legacy + since_part
        dual_write = [t for t in triggers if t.references_partitioned] or [
            t for t in triggers if t.level == "ROW" and "INSERT" in t.events
        ]
        triggers_enabled = any(t.enabled for t in dual_write)
        checks = [
            _delta_check(legacy_rows, legacy_method, part_rows, part_method, delta),
            _partitions_check(partitioned.kind, len(partitions), pair.partitioned),
            _trigger_check(dual_write, triggers_enabled, pair),
            _writes_check(previous, since_legacy, since_part, now),
        ]
        return PairMetrics(
            pair=pair.name,
            legacy=str(pair.legacy),
            partitioned=str(pair.partitioned),
            legacy_rows=legacy_rows,
            partitioned_rows=part_rows,
            legacy_count_method=legacy_method,
            partitioned_count_method=part_method,
            delta=delta,
            difference=difference,
            partition_count=len(partitions),
            partitions=[
                PartitionBound(name=p["qualified"], bounds=p["bounds"]) for p in partitions
            ],
            triggers_enabled=triggers_enabled,
            triggers=triggers,
            recent_writes=recent,
            legacy_writes_since=since_legacy,
            partitioned_writes_since=since_part,
            seconds_since_previous_check=None if previous is None else round(now - previous.at, 3),
            legacy_size_bytes=legacy.size_bytes,
            partitioned_size_bytes=partitioned.size_bytes,
            ready=all(c.ok for c in checks),
            checks=checks,
            error=None,
            checked_at=datetime.now(UTC),
        )

    def _failed(self, pair: PartitionPair, error: str) -> PairMetrics:
        return PairMetrics(
            pair=pair.name,
            legacy=str(pair.legacy),
            partitioned=str(pair.partitioned),
            legacy_rows=None,
            partitioned_rows=None,
            legacy_count_method="not counted",
            partitioned_count_method="not counted",
            delta=None,
            difference=None,
            partition_count=0,
            partitions=[],
            triggers_enabled=False,
            triggers=[],
            recent_writes=None,
            legacy_writes_since=None,
            partitioned_writes_since=None,
            seconds_since_previous_check=None,
            legacy_size_bytes=None,
            partitioned_size_bytes=None,
            ready=False,
            checks=[Check(name="tables_exist", ok=False, detail=error)],
            error=error,
            checked_at=datetime.now(UTC),
        )

    async def _pair_partitions(self, pair: PartitionPair) -> PairPartitions:
        try:
            _, partitioned_oid = await self._resolve(pair)
            table = await self._table(partitioned_oid)
            rows = await self._node.fetch(_PARTITIONS_SQL, partitioned_oid)
            partitions = [await self._partition(row) for row in rows]
        except (MissingTable, SqlError) as exc:
            return PairPartitions(
                pair=pair.name,
                partitioned=str(pair.partitioned),
                partition_count=0,
                total_size_bytes=None,
                partitions=[],
                error=str(exc) if isinstance(exc, MissingTable) else exc.message,
            )
        return PairPartitions(
            pair=pair.name,
            partitioned=str(pair.partitioned),
            partition_count=len(partitions),
            total_size_bytes=table.size_bytes,
            partitions=partitions,
            error=None,
        )

    async def _partition(self, row: Any) -> PartitionStats:
        estimate = row["estimate"] if row["estimate"] >= 0 else None
        rows, method = await self._count(row["qualified"], estimate)
        return PartitionStats(
            name=row["name"],
            schema_name=row["schema"],
            kind="partitioned" if row["kind"] == "p" else "table",
            bounds=row["bounds"],
            rows=rows,
            rows_method=method,
            size_bytes=row["size_bytes"],
        )

    # --- statements ---

    async def _resolve(self, pair: PartitionPair) -> tuple[int, int]:
        row = await self._node.fetchrow(_RESOLVE_SQL, pair.legacy.quoted, pair.partitioned.quoted)
        missing = [
            str(name)
            for name, oid in ((pair.legacy, row["legacy"]), (pair.partitioned, row["partitioned"]))
            if oid is None
        ]
        if missing:
            raise MissingTable(
                f"table {' and '.join(repr(m) for m in missing)} "
                f"{'does' if len(missing) == 1 else 'do'} not exist"
            )
        return row["legacy"], row["partitioned"]

    async def _table(self, oid: int) -> _Table:
        row = await self._node.fetchrow(_TABLE_SQL, oid)
        return _Table(
            oid=oid,
            kind=row["kind"],
            estimate=row["estimate"] if row["estimate"] >= 0 else None,
            writes=row["writes"],
            size_bytes=row["size_bytes"],
        )

    async def _count(self, relation: str, estimate: float | None) -> tuple[int | None, str]:
        """Exact when small enough and quick enough; else the planner's estimate.

        ``relation`` is a quoted name: ``TableName.quoted`` or the server's own ``::regclass``
        text, never text from a request.
        """
        if estimate is not None and estimate > self.exact_count_limit:
            return round(estimate), "estimate"
        sql = f"SELECT count(*) FROM {relation}"  # noqa: S608 - a quoted identifier, see above
        try:
            rows = await self._node.fetchval_within(sql, statement_timeout_ms=self.count_timeout_ms)
        except QueryTimeout:
            fallback = None if estimate is None else round(estimate)
            return fallback, f"estimate (count(*) exceeded {self.count_timeout_ms} ms)"
        return int(rows), "exact"


# --- checks ---


def _delta_check(
    legacy: int | None, legacy_method: str, part: int | None, part_method: str, delta: int | None
) -> Check:
    if delta is None:
        return Check(name="row_delta", ok=False, detail="a row count is unknown")
    return Check(
        name="row_delta",
        ok=delta < READY_MAX_DELTA,
        detail=f"legacy {legacy} rows ({legacy_method}), partitioned {part} rows "
        f"({part_method}): delta {delta}, must be below {READY_MAX_DELTA}",
    )


def _partitions_check(kind: str, count: int, table: TableName) -> Check:
    if kind != "p":
        return Check(
            name="partitions_exist", ok=False, detail=f"{table} is not a partitioned table"
        )
    return Check(
        name="partitions_exist",
        ok=count > 0,
        detail=f"{count} partition{'s' if count != 1 else ''} attached to {table}",
    )


def _trigger_check(dual_write: list[TriggerInfo], enabled: bool, pair: PartitionPair) -> Check:
    if not dual_write:
        return Check(
            name="dual_write_triggers",
            ok=False,
            detail=f"no row trigger on INSERT on {pair.legacy} and none naming {pair.partitioned}",
        )
    listed = ", ".join(f"{t.name} ({t.state})" for t in dual_write)
    return Check(
        name="dual_write_triggers",
        ok=enabled,
        detail=f"{'enabled' if enabled else 'none enabled'}: {listed}",
    )


def _baseline(readings: deque[_Reading], now: float, window: float) -> _Reading | None:
    """The newest reading at least ``window`` old, else the oldest (None before any)."""
    for reading in reversed(readings):
        if now - reading.at >= window:
            return reading
    return readings[0] if readings else None


def _remember(readings: deque[_Reading], reading: _Reading, window: float) -> None:
    """Keep one reading per 1/30 of the window (so at most ~31, however often checks come),
    and drop readings once a newer one is old enough to be the baseline."""
    if not readings or reading.at - readings[-1].at >= window / 30:
        readings.append(reading)
    while len(readings) >= 2 and reading.at - readings[1].at >= window:
        readings.popleft()


def _writes_check(
    previous: _Reading | None, legacy: int | None, partitioned: int | None, now: float
) -> Check:
    if previous is None or legacy is None or partitioned is None:
        return Check(
            name="recent_writes",
            ok=False,
            detail="first reading of the write counters; writes are counted from the next check",
        )
    if legacy < 0 or partitioned < 0:
        return Check(
            name="recent_writes",
            ok=False,
            detail="table statistics were reset since the baseline reading; counting again",
        )
    return Check(
        name="recent_writes",
        ok=legacy + partitioned > 0,
        detail=f"{legacy} legacy and {partitioned} partitioned row writes in the last "
        f"{now - previous.at:.1f} s",
    )


def _trigger(row: Any) -> TriggerInfo:
    tgtype = row["type"]
    if tgtype & _TRIGGER_INSTEAD:
        timing = "INSTEAD OF"
    else:
        timing = "BEFORE" if tgtype & _TRIGGER_BEFORE else "AFTER"
    return TriggerInfo(
        name=row["name"],
        state=_ENABLED_NAMES.get(row["enabled"], row["enabled"]),
        enabled=row["enabled"] in _ENABLED,
        timing=timing,
        level="ROW" if tgtype & _TRIGGER_ROW else "STATEMENT",
        events=[name for bit, name in _EVENTS if tgtype & bit],
        function=row["function"],
        references_partitioned=row["references_partitioned"],
    )
