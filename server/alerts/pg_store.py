"""``PostgresStore``: alerts in ``infrawatch.alerts`` on the primary. Every database call of
alerting is in this module.

Every call is a ``Node.run`` on the primary's ``alert_store`` node: a pool of its own and the
``alert-store`` breaker, so a flood that fills the main pool or trips ``database-query`` cannot
refuse an operator's acknowledgement. Timed into the query statistics, foreign errors mapped
at the datastore's edge.
Connection-level failures and serialization conflicts are ``Unavailable`` (the book keeps
evaluating in memory and catches up); any other statement error becomes ``StoreRejected`` (a
bug or a schema drift: retrying the same statement will not help). Firing, resolving and
acknowledging are single statements that are safe to repeat and safe to race (see
``models.Round`` for how resolution treats several instances).

With delivery targets configured, a round and an acknowledgement also write their events
(``events.py``) to the outbox tables, in the same transaction as the change: an alert change
without its event, or an event of a change rolled back, cannot happen (``OutboxWriter``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson

from server.alerts.events import AlertEvent, event, round_events
from server.alerts.memory_store import not_found
from server.alerts.migrations import RECONCILE_LOCK, migrate
from server.alerts.models import AlertQuery, AlertRecord, Round
from server.datastores.postgres import PostgresCluster
from server.errors import PoolExhausted, SqlError, StoreRejected, Unavailable

T = TypeVar("T")

# SQLSTATE class 40: a deadlock or serialization failure; the same statement may pass later.
_TRANSIENT_CLASS = "40"

_FIRE = """
INSERT INTO infrawatch.alerts AS a
    (id, fingerprint, rule, subject, level, state, message, value, threshold,
     first_fired_at, last_fired_at, reporters)
SELECT c.id, c.fingerprint, c.rule, c.subject, c.level, 'firing', c.message, c.value,
       c.threshold, $9, $9, jsonb_build_object($10::text, $11::float8)
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::float8[], $8::float8[])
     AS c(id, fingerprint, rule, subject, level, message, value, threshold)
ORDER BY c.fingerprint
ON CONFLICT (fingerprint) WHERE state = 'firing' DO UPDATE SET
    -- a replayed older round must not overwrite a newer report
    level = CASE WHEN EXCLUDED.last_fired_at >= a.last_fired_at
                 THEN EXCLUDED.level ELSE a.level END,
    message = CASE WHEN EXCLUDED.last_fired_at >= a.last_fired_at
                   THEN EXCLUDED.message ELSE a.message END,
    value = CASE WHEN EXCLUDED.last_fired_at >= a.last_fired_at
                 THEN EXCLUDED.value ELSE a.value END,
    threshold = CASE WHEN EXCLUDED.last_fired_at >= a.last_fired_at
                     THEN EXCLUDED.threshold ELSE a.threshold END,
    last_fired_at = GREATEST(a.last_fired_at, EXCLUDED.last_fired_at),
    reporters = a.reporters || jsonb_build_object(
        $10::text, GREATEST(COALESCE((a.reporters ->> $10::text)::float8, $11), $11))
"""

# This instance no longer sees these: drop its report; resolve when no fresh report remains.
_CLEAR = """
WITH cleared AS (
    SELECT x.id,
           EXISTS (SELECT 1 FROM jsonb_each_text(x.reporters - $1::text) r
                   WHERE r.value::float8 >= $3) AS held
    FROM infrawatch.alerts x
    WHERE x.state = 'firing' AND x.rule = ANY($4::text[]) AND x.fingerprint <> ALL($5::text[])
)
UPDATE infrawatch.alerts AS a SET
    reporters = a.reporters - $1::text,
    state = CASE WHEN c.held THEN 'firing' ELSE 'resolved' END,
    resolved_at = CASE WHEN c.held THEN NULL ELSE GREATEST($2, a.last_fired_at) END
FROM cleared c
WHERE a.id = c.id AND (a.reporters ? $1::text OR NOT c.held)
"""

# Far above rules x subjects; keeps one answer bounded regardless.
_FIRING = """
SELECT * FROM infrawatch.alerts WHERE state = 'firing'
ORDER BY first_fired_at DESC, id DESC LIMIT 10000
"""

_LIST = """
SELECT * FROM infrawatch.alerts
WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR level = $2)
  AND ($3::boolean IS NULL OR (acknowledged_at IS NOT NULL) = $3)
ORDER BY first_fired_at DESC, id DESC LIMIT $4 OFFSET $5
"""

_COUNT = """
SELECT count(*) FROM infrawatch.alerts
WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR level = $2)
  AND ($3::boolean IS NULL OR (acknowledged_at IS NOT NULL) = $3)
"""

_ACKNOWLEDGE = """
UPDATE infrawatch.alerts SET acknowledged_by = $2, acknowledged_at = $3, note = $4
WHERE id = $1 AND acknowledged_at IS NULL
RETURNING *
"""

_GET = "SELECT * FROM infrawatch.alerts WHERE id = $1"

# --- the outbox: events written in the transaction of the change they report ---

_FIRING_NOW = "SELECT * FROM infrawatch.alerts WHERE state = 'firing' FOR UPDATE"

_GET_MANY = "SELECT * FROM infrawatch.alerts WHERE id = ANY($1::uuid[])"

_INSTANCES = """
SELECT alert_id, payload ->> 'instance' AS instance FROM infrawatch.alert_events
WHERE alert_id = ANY($1::uuid[]) AND kind = 'fired'
"""

_EVENTS = """
INSERT INTO infrawatch.alert_events (id, alert_id, kind, at, payload)
SELECT e.id, e.alert_id, e.kind, e.at, e.payload
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::jsonb[])
     WITH ORDINALITY AS e(id, alert_id, kind, at, payload, n)
ORDER BY e.n
"""

_DELIVERIES = """
INSERT INTO infrawatch.alert_deliveries (event_seq, target, alert_id)
SELECT e.seq, t.target, e.alert_id
FROM infrawatch.alert_events e CROSS JOIN unnest($2::text[]) AS t(target)
WHERE e.id = ANY($1::uuid[])
"""


class PostgresStore:
    durable = True

    def __init__(
        self, cluster: PostgresCluster, *, targets: Sequence[str] = (), instance: str = ""
    ) -> None:
        """``targets``: where each event is to be delivered (none: no events are written);
        ``instance``: the ``instance`` label of the occurrences this instance fires."""
        self._cluster = cluster
        self._schema_ready = False
        self._outbox = OutboxWriter(tuple(targets), instance)

    async def ensure_schema(self) -> list[int]:
        """Apply pending migrations (once per process; again after a failed attempt)."""
        if self._schema_ready:
            return []
        applied = await self._call("-- alert store: migrate", migrate)
        self._schema_ready = True
        return applied

    async def reconcile(self, round_: Round) -> list[AlertRecord]:
        await self.ensure_schema()
        return await self._call(_FIRE, _reconcile, round_, self._outbox)

    async def firing(self) -> list[AlertRecord]:
        await self.ensure_schema()
        return await self._call(_FIRING, _firing)

    async def page(self, query: AlertQuery) -> tuple[list[AlertRecord], int]:
        await self.ensure_schema()
        return await self._call(_LIST, _list, query)

    async def acknowledge(
        self, alert_id: str, by: str, at: datetime, note: str | None
    ) -> AlertRecord:
        await self.ensure_schema()
        return await self._call(_ACKNOWLEDGE, _acknowledge, alert_id, by, at, note, self._outbox)

    async def _call(self, sql: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(connection, *args)`` on the primary; ``sql`` names it in the statistics."""
        cluster = self._cluster
        try:
            return await cluster.alert_store.run(sql, lambda conn: fn(conn, *args))
        except PoolExhausted as exc:
            # Its own pool busy (an acknowledgement beside a replay): the book waits, retries.
            raise Unavailable(f"alert store busy: {exc.message}") from exc
        except SqlError as exc:
            if exc.sqlstate.startswith(_TRANSIENT_CLASS):
                raise Unavailable(f"alert store: {exc.message}", detail=exc.detail) from exc
            raise StoreRejected(f"alert store refused: {exc.message}", detail=exc.detail) from exc


@dataclass(frozen=True, slots=True)
class OutboxWriter:
    """Where this store's events go, and the ``instance`` label of what it fires."""

    targets: tuple[str, ...]
    instance: str

    async def round(
        self,
        conn: asyncpg.Connection,
        before: dict[str, AlertRecord],
        firing: list[AlertRecord],
        at: datetime,
    ) -> None:
        """Events for what a round changed (inside its transaction)."""
        now = {r.id for r in firing}
        gone = [uuid.UUID(i) for i in before if i not in now]
        resolved = [_record(row) for row in await conn.fetch(_GET_MANY, gone)] if gone else []
        changed = [r for r in firing if r.id not in before or before[r.id].level != r.level]
        if not resolved and not changed:
            return
        ids = [uuid.UUID(r.id) for r in [*resolved, *changed]]
        rows = await conn.fetch(_INSTANCES, ids)
        labels = {str(row["alert_id"]): row["instance"] for row in rows}
        await self.write(conn, round_events(before, changed, resolved, at, labels, self.instance))

    async def acknowledged(self, conn: asyncpg.Connection, record: AlertRecord) -> None:
        assert record.acknowledged_at is not None
        row = await conn.fetchrow(_INSTANCES, [uuid.UUID(record.id)])
        label = row["instance"] if row is not None else self.instance
        await self.write(conn, [event("acknowledged", record, record.acknowledged_at, label)])

    async def write(self, conn: asyncpg.Connection, events: list[AlertEvent]) -> None:
        if not events:
            return
        ids = [uuid.UUID(e.id) for e in events]
        await conn.execute(
            _EVENTS,
            ids,
            [uuid.UUID(e.alert_id) for e in events],
            [e.kind for e in events],
            [e.at for e in events],
            [orjson.dumps(e.payload).decode() for e in events],
        )
        await conn.execute(_DELIVERIES, ids, list(self.targets))


async def _reconcile(
    conn: asyncpg.Connection, round_: Round, outbox: OutboxWriter
) -> list[AlertRecord]:
    conditions = sorted(round_.conditions, key=lambda c: c.fingerprint)
    async with conn.transaction():
        # One round at a time across instances: no deadlock between one's inserts and
        # another's resolutions, and every round sees the last one's reporters.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RECONCILE_LOCK)
        before: dict[str, AlertRecord] = {}
        if outbox.targets:  # what the round changes, for the outbox: only when it has targets
            before = {str(row["id"]): _record(row) for row in await conn.fetch(_FIRING_NOW)}
        if conditions:
            await conn.execute(
                _FIRE,
                [uuid.UUID(round_.proposed_id(c.fingerprint)) for c in conditions],
                [c.fingerprint for c in conditions],
                [c.rule for c in conditions],
                [c.subject for c in conditions],
                [c.level for c in conditions],
                [c.message for c in conditions],
                [c.value for c in conditions],
                [c.threshold for c in conditions],
                round_.at,
                round_.instance,
                round_.at.timestamp(),
            )
        if round_.evaluated:
            await conn.execute(
                _CLEAR,
                round_.instance,
                round_.at,
                round_.stale_before,
                sorted(round_.evaluated),
                [c.fingerprint for c in conditions],
            )
        firing = [_record(row) for row in await conn.fetch(_FIRING)]
        if outbox.targets:
            await outbox.round(conn, before, firing, round_.at)
    return firing


async def _firing(conn: asyncpg.Connection) -> list[AlertRecord]:
    return [_record(row) for row in await conn.fetch(_FIRING)]


async def _list(conn: asyncpg.Connection, query: AlertQuery) -> tuple[list[AlertRecord], int]:
    args = (query.state, query.level, query.acknowledged)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_LIST, *args, query.limit, query.offset)
        total = await conn.fetchval(_COUNT, *args)
    return [_record(row) for row in rows], total


async def _acknowledge(
    conn: asyncpg.Connection,
    alert_id: str,
    by: str,
    at: datetime,
    note: str | None,
    outbox: OutboxWriter,
) -> AlertRecord:
    try:
        key = uuid.UUID(alert_id)
    except ValueError:
        raise not_found(alert_id) from None
    async with conn.transaction():
        row = await conn.fetchrow(_ACKNOWLEDGE, key, by, at, note)
        if row is not None and outbox.targets:  # this call acknowledged it: tell the targets
            await outbox.acknowledged(conn, _record(row))
    if row is None:  # acknowledged before (the first stands), or no such alert
        row = await conn.fetchrow(_GET, key)
    if row is None:
        raise not_found(alert_id)
    return _record(row)


def _record(row: asyncpg.Record) -> AlertRecord:
    return AlertRecord(
        id=str(row["id"]),
        fingerprint=row["fingerprint"],
        rule=row["rule"],
        subject=row["subject"],
        level=row["level"],
        state=row["state"],
        message=row["message"],
        value=row["value"],
        threshold=row["threshold"],
        first_fired_at=row["first_fired_at"],
        last_fired_at=row["last_fired_at"],
        resolved_at=row["resolved_at"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        note=row["note"],
        reporters=orjson.loads(row["reporters"]),
    )
