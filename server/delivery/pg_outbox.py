"""``PostgresOutbox``: the outbox in ``infrawatch.alert_events`` and
``infrawatch.alert_deliveries`` (written by the alert store, migration 2), shared by every
instance on the database.

A claim takes the due rows ``FOR UPDATE SKIP LOCKED`` and leases them in the same statement:
two senders never take one row, and a row stays taken (its lease) while it is being sent,
after the claim's transaction has ended. A sender that dies leaves its lease to run out; the
row is then claimed again (a receiver may then see an event twice: the event id is its
idempotency key). Only the oldest pending event of an alert is claimable for a target, so each
target gets an alert's events in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson

from server.datastores.postgres import PostgresCluster
from server.delivery.models import Delivery, Outcome, TargetFigures

T = TypeVar("T")

_CLAIM = """
WITH due AS (
    SELECT d.event_seq, d.target
    FROM infrawatch.alert_deliveries d
    WHERE d.state = 'pending' AND d.target = ANY($1::text[])
      AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until < now())
      AND NOT EXISTS (
          SELECT 1 FROM infrawatch.alert_deliveries p
          WHERE p.target = d.target AND p.alert_id = d.alert_id AND p.state = 'pending'
            AND p.event_seq < d.event_seq)
    ORDER BY d.event_seq
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE infrawatch.alert_deliveries x
SET leased_until = now() + make_interval(secs => $3)
FROM due JOIN infrawatch.alert_events e ON e.seq = due.event_seq
WHERE x.event_seq = due.event_seq AND x.target = due.target
RETURNING x.event_seq, x.target, x.alert_id, x.attempts, e.kind, e.payload
"""

_SENT = """
WITH d AS (
    UPDATE infrawatch.alert_deliveries
    SET state = 'sent', attempts = attempts + 1, leased_until = NULL, done_at = now()
    WHERE event_seq = $1 AND target = $2
    RETURNING target
)
INSERT INTO infrawatch.delivery_targets AS t (target, sent, last_success_at)
SELECT target, 1, now() FROM d
ON CONFLICT (target) DO UPDATE SET sent = t.sent + 1, last_success_at = now()
"""

_FAILED = """
WITH d AS (
    UPDATE infrawatch.alert_deliveries
    SET state = CASE WHEN $3 THEN 'failed' ELSE 'pending' END,
        attempts = attempts + 1, leased_until = NULL, last_error = $4,
        next_attempt_at = now() + make_interval(secs => $5),
        done_at = CASE WHEN $3 THEN now() END
    WHERE event_seq = $1 AND target = $2
    RETURNING target
)
INSERT INTO infrawatch.delivery_targets AS t (target, failures, last_error, last_error_at)
SELECT target, 1, $4, now() FROM d
ON CONFLICT (target) DO UPDATE
SET failures = t.failures + 1, last_error = $4, last_error_at = now()
"""

_RELEASE = """
UPDATE infrawatch.alert_deliveries SET leased_until = NULL
WHERE event_seq = $1 AND target = $2 AND state = 'pending'
"""

# The last event delivered to the target for each alert firing now, unless more is pending.
_FIRING = """
SELECT DISTINCT ON (d.alert_id) e.payload
FROM infrawatch.alert_deliveries d JOIN infrawatch.alert_events e ON e.seq = d.event_seq
WHERE d.target = $1 AND d.state = 'sent'
  AND d.alert_id IN (SELECT id FROM infrawatch.alerts WHERE state = 'firing')
  AND NOT EXISTS (SELECT 1 FROM infrawatch.alert_deliveries p
                  WHERE p.target = d.target AND p.alert_id = d.alert_id AND p.state = 'pending')
ORDER BY d.alert_id, d.event_seq DESC
"""

# Delivered (or refused) and old, of an alert no longer firing: the deliveries go with them.
_PRUNE = """
DELETE FROM infrawatch.alert_events e
WHERE e.at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM infrawatch.alert_deliveries d
                  WHERE d.event_seq = e.seq AND d.state = 'pending')
  AND NOT EXISTS (SELECT 1 FROM infrawatch.alerts a
                  WHERE a.id = e.alert_id AND a.state = 'firing')
"""

_FIGURES = """
SELECT target, COALESCE(p.pending, 0) AS pending, p.oldest AS oldest_pending_at,
       COALESCE(t.sent, 0) AS sent, COALESCE(t.failures, 0) AS failures,
       COALESCE(f.dead, 0) AS dead, t.last_success_at, t.last_error, t.last_error_at
FROM (SELECT target FROM infrawatch.delivery_targets
      UNION SELECT DISTINCT target FROM infrawatch.alert_deliveries WHERE state = 'pending') k
LEFT JOIN infrawatch.delivery_targets t USING (target)
LEFT JOIN (SELECT target, count(*) AS pending, min(created_at) AS oldest
           FROM infrawatch.alert_deliveries WHERE state = 'pending' GROUP BY target) p
     USING (target)
LEFT JOIN (SELECT target, count(*) AS dead
           FROM infrawatch.alert_deliveries WHERE state = 'failed' GROUP BY target) f
     USING (target)
"""


class PostgresOutbox:
    durable = True

    def __init__(self, cluster: PostgresCluster) -> None:
        self._cluster = cluster

    async def claim(self, targets: Sequence[str], limit: int, lease: float) -> list[Delivery]:
        rows = await self._run(_CLAIM, lambda c: c.fetch(_CLAIM, list(targets), limit, lease))
        deliveries = [
            Delivery(
                seq=row["event_seq"],
                target=row["target"],
                alert_id=str(row["alert_id"]),
                kind=row["kind"],
                attempts=row["attempts"],
                payload=orjson.loads(row["payload"]),
            )
            for row in rows
        ]
        return sorted(deliveries, key=lambda d: d.seq)

    async def settle(
        self, delivery: Delivery, outcome: Outcome, *, error: str | None, retry_in: float
    ) -> None:
        key = (delivery.seq, delivery.target)
        if outcome == "sent":
            await self._run(_SENT, lambda c: c.execute(_SENT, *key))
        elif outcome == "released":
            await self._run(_RELEASE, lambda c: c.execute(_RELEASE, *key))
        else:
            dead = outcome == "failed"
            await self._run(_FAILED, lambda c: c.execute(_FAILED, *key, dead, error, retry_in))

    async def firing(self, target: str) -> list[dict[str, Any]]:
        rows = await self._run(_FIRING, lambda c: c.fetch(_FIRING, target))
        return [orjson.loads(row["payload"]) for row in rows]

    async def prune(self, retention: float) -> int:
        status: str = await self._run(_PRUNE, lambda c: c.execute(_PRUNE, retention))
        return int(status.split()[-1])

    async def figures(self) -> dict[str, TargetFigures]:
        rows = await self._run(_FIGURES, lambda c: c.fetch(_FIGURES))
        return {
            row["target"]: TargetFigures(
                pending=row["pending"],
                oldest_pending_at=row["oldest_pending_at"],
                sent=row["sent"],
                failures=row["failures"],
                dead=row["dead"],
                last_success_at=row["last_success_at"],
                last_error=row["last_error"],
                last_error_at=row["last_error_at"],
            )
            for row in rows
        }

    async def _run(self, sql: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        cluster = self._cluster
        return await cluster.primary.run(sql, fn, breaker=cluster.write_breaker)
