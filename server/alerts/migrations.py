"""infrawatch's own schema (``infrawatch``), versioned, applied at start-up.

Each migration runs once, in order, recorded in ``infrawatch.schema_migrations``. All pending
ones apply in one transaction that first takes a transaction-scoped advisory lock: instances
starting together queue on the lock, and each one after the first finds nothing left to do.
A migration is never edited once released; a change is a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# pg_advisory_xact_lock keys: fixed, so every version of infrawatch agrees on them.
MIGRATION_LOCK = 0x1F_A1E7_0001  # schema changes
RECONCILE_LOCK = 0x1F_A1E7_0002  # one alert evaluation applied at a time (book.py)
EVALUATOR_LOCK = 0x1F_A1E7_0003  # session lock: held by the one evaluating instance


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "alerts",
        """
        CREATE TABLE infrawatch.alerts (
            id uuid PRIMARY KEY,
            fingerprint text NOT NULL,
            rule text NOT NULL,
            subject text NOT NULL,
            level text NOT NULL CHECK (level IN ('warning', 'critical')),
            state text NOT NULL CHECK (state IN ('firing', 'resolved')),
            message text NOT NULL,
            value double precision,
            threshold double precision,
            first_fired_at timestamptz NOT NULL,
            last_fired_at timestamptz NOT NULL,
            resolved_at timestamptz,
            acknowledged_by text,
            acknowledged_at timestamptz,
            note text CHECK (char_length(note) <= 1000),
            -- instance id -> epoch seconds of its last report; see models.Round
            reporters jsonb NOT NULL DEFAULT '{}',
            CHECK ((state = 'firing') = (resolved_at IS NULL)),
            CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))
        );
        -- Two instances firing the same condition meet here and make one alert.
        CREATE UNIQUE INDEX alerts_one_firing_per_fingerprint
            ON infrawatch.alerts (fingerprint) WHERE state = 'firing';
        CREATE INDEX alerts_newest_first ON infrawatch.alerts (first_fired_at DESC, id DESC);
        """,
    ),
    Migration(
        2,
        "alert delivery outbox",
        """
        -- One row per change of an alert, written in the transaction that made the change.
        CREATE TABLE infrawatch.alert_events (
            seq bigserial PRIMARY KEY,  -- delivery order
            id uuid NOT NULL UNIQUE,  -- the receivers' idempotency key
            alert_id uuid NOT NULL,
            kind text NOT NULL
                CHECK (kind IN ('fired', 'level_changed', 'acknowledged', 'resolved')),
            at timestamptz NOT NULL,
            payload jsonb NOT NULL
        );
        CREATE INDEX alert_events_by_alert ON infrawatch.alert_events (alert_id, seq);
        CREATE INDEX alert_events_by_time ON infrawatch.alert_events (at);
        -- One row per event and target: each target is served on its own, in order per alert.
        CREATE TABLE infrawatch.alert_deliveries (
            event_seq bigint NOT NULL
                REFERENCES infrawatch.alert_events (seq) ON DELETE CASCADE,
            target text NOT NULL,
            alert_id uuid NOT NULL,
            state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            leased_until timestamptz,
            last_error text,
            done_at timestamptz,
            PRIMARY KEY (event_seq, target)
        );
        CREATE INDEX alert_deliveries_pending ON infrawatch.alert_deliveries
            (target, alert_id, event_seq) WHERE state = 'pending';
        CREATE INDEX alert_deliveries_sent ON infrawatch.alert_deliveries
            (target, alert_id, event_seq) WHERE state = 'sent';
        -- The figures count refused events every few seconds: never a scan of the history.
        CREATE INDEX alert_deliveries_failed ON infrawatch.alert_deliveries (target)
            WHERE state = 'failed';
        -- Per target, across instances and restarts: what alerts.deliveries reports.
        CREATE TABLE infrawatch.delivery_targets (
            target text PRIMARY KEY,
            sent bigint NOT NULL DEFAULT 0,
            failures bigint NOT NULL DEFAULT 0,
            last_success_at timestamptz,
            last_error text,
            last_error_at timestamptz
        );
        """,
    ),
)


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the pending migrations; returns the versions this call applied."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            """
            CREATE SCHEMA IF NOT EXISTS infrawatch;
            CREATE TABLE IF NOT EXISTS infrawatch.schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """
        )
        rows = await conn.fetch("SELECT version FROM infrawatch.schema_migrations")
        done = {row["version"] for row in rows}
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO infrawatch.schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
        return applied
