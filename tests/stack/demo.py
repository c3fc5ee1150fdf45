"""``make run``'s demo: a partition migration in progress and a small, steady workload.

``create_demo_schema`` builds, in the primary's database:

- ``demo.orders_legacy``: the table being migrated away from;
- ``demo.orders``: its successor, range-partitioned by day on ``created_at`` (yesterday to a
  week ahead, plus a default partition);
- ``demo.orders_dual_write``: an AFTER INSERT/UPDATE/DELETE row trigger on the legacy table that
  mirrors each change into the successor, the usual way such a migration keeps both in step.

``DemoWorkload`` then runs in a thread, one tick per ``interval`` seconds, until stopped: each
tick inserts a few orders (mirrored by the trigger), now and then slips some past the trigger
(``session_replication_role = replica`` silences it, as a bulk load or a hand-run fix would), and
every ``backfill_every`` ticks copies the missing rows over, so the partition delta, its alert
and the readiness checks move both ways. It also reads on the primary and on the replica, calls
the running service's procedures over JSON-RPC (cache hits and misses, the service's own query
statistics, now and then a cache invalidation as the demo operator) and pushes and works jobs
on BullMQ- and RQ-shaped queues in Redis. Every tick does a bounded amount of work and the
thread ends after ``max_seconds`` at most.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from redis.exceptions import RedisError

from tests.stack.redis_workload import run_workload

LEGACY = "demo.orders_legacy"
PARTITIONED = "demo.orders"
BULLMQ_QUEUE, RQ_QUEUE = "emails", "default"
# QUEUE_NAMES with their kinds: nothing to detect.
QUEUES = (f"bullmq:{BULLMQ_QUEUE}", f"rq:{RQ_QUEUE}")
OPERATOR = "demo"
# The application's own role and name: what infrawatch watches is somebody else's traffic
# (its own role is left out of database.topQueries).
APP_ROLE = "demo_app"
APP_NAME = "demo-shop"
STATEMENT_TIMEOUT_MS = 5000

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS demo;

CREATE TABLE IF NOT EXISTS demo.orders_legacy (
    id          bigserial PRIMARY KEY,
    customer_id integer NOT NULL,
    amount      numeric(10, 2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS demo.orders (
    id          bigint NOT NULL,
    customer_id integer NOT NULL,
    amount      numeric(10, 2) NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE IF NOT EXISTS demo.orders_default PARTITION OF demo.orders DEFAULT;

DO $$
DECLARE
    day date;
BEGIN
    FOR offset_days IN -1..7 LOOP
        day := current_date + offset_days;
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS demo.%I PARTITION OF demo.orders '
            'FOR VALUES FROM (%L) TO (%L)',
            'orders_' || to_char(day, 'YYYYMMDD'), day, day + 1
        );
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION demo.orders_dual_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Mirror every change of demo.orders_legacy into demo.orders.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM demo.orders WHERE id = OLD.id AND created_at = OLD.created_at;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO demo.orders (id, customer_id, amount, created_at)
        VALUES (NEW.id, NEW.customer_id, NEW.amount, NEW.created_at);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS orders_dual_write ON demo.orders_legacy;
CREATE TRIGGER orders_dual_write
    AFTER INSERT OR UPDATE OR DELETE ON demo.orders_legacy
    FOR EACH ROW EXECUTE FUNCTION demo.orders_dual_write();

-- The application's role, and what database.topQueries reads.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'demo_app') THEN
        CREATE ROLE demo_app LOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA demo TO demo_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA demo TO demo_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA demo TO demo_app;
-- insert_untracked's way past the trigger, without making the application a superuser.
GRANT SET ON PARAMETER session_replication_role TO demo_app;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
"""

INSERT_SQL = "INSERT INTO demo.orders_legacy (customer_id, amount) VALUES (%s, %s)"
BACKFILL_SQL = """
INSERT INTO demo.orders (id, customer_id, amount, created_at)
SELECT l.id, l.customer_id, l.amount, l.created_at
FROM demo.orders_legacy l
WHERE NOT EXISTS (SELECT 1 FROM demo.orders o WHERE o.id = l.id AND o.created_at = l.created_at)
"""
DELTA_SQL = "SELECT (SELECT count(*) FROM demo.orders_legacy) - (SELECT count(*) FROM demo.orders)"
READ_SQL = """
SELECT count(*), coalesce(sum(amount), 0)
FROM demo.orders_legacy
WHERE created_at > now() - interval '5 minutes'
"""

# Queries of the running service the workload calls (those this build lacks answer "Method not
# found", which the workload counts and moves past). Not monitoring.partitionMetrics: its exact
# counts scan both tables, and the alert evaluator and the dashboard already read it.
RPC_QUERIES = (
    "monitoring.partitionTableStats",
    "database.replicaStats",
    "monitoring.connectionPoolStats",
    "monitoring.queueStats",
    "monitoring.cacheKeyStats",
    "database.replicaLag",
    "database.replicaHealth",
    "database.info",
)


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=5,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
    )


def as_application(dsn: str) -> str:
    """``dsn`` as the application connects: its role and its application_name."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    query = "&".join(q for q in (parts.query, f"application_name={APP_NAME}") if q)
    return urlunsplit(parts._replace(netloc=f"{APP_ROLE}@{host}", query=query))


def create_demo_schema(dsn: str, *, seed_rows: int = 200) -> None:
    """The legacy table, its partitioned successor and the trigger; ``seed_rows`` orders."""
    with connect(dsn) as conn:
        conn.execute(SCHEMA_SQL)
        rng = random.Random(6)
        with conn.cursor() as cur:
            cur.executemany(INSERT_SQL, [_order(rng) for _ in range(seed_rows)])


def demo_environment() -> dict[str, str]:
    """What the demo adds to the stack's environment; the operator token is new each run."""
    return {
        "PARTITION_PAIRS": f"{LEGACY}:{PARTITIONED}",
        "QUEUE_NAMES": ",".join(QUEUES),
        "AUTH_TOKENS": f"{OPERATOR}:{secrets.token_urlsafe(24)}",
        "SESSION_SECRET": secrets.token_urlsafe(32),
        "ALERT_EVALUATION_INTERVAL": "5",
        "DASHBOARD_REFRESH_INTERVAL": "5",
    }


def operator_token(env: dict[str, str]) -> str:
    name, _, token = env["AUTH_TOKENS"].partition(":")
    assert name == OPERATOR
    return token


@dataclass
class Counts:
    """What the workload has done so far (and what failed)."""

    inserted: int = 0
    drifted: int = 0
    backfilled: int = 0
    primary_reads: int = 0
    replica_reads: int = 0
    rpc_ok: int = 0
    rpc_errors: int = 0
    queue_jobs: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class DemoWorkload:
    """A bounded, rate-limited workload in a thread: ``start()``, ``stop()``; ``step()`` runs
    one tick in the caller's thread (tests)."""

    def __init__(
        self,
        env: dict[str, str],
        service_url: str,
        *,
        interval: float = 1.0,
        drift_chance: float = 0.15,
        backfill_every: int = 45,
        max_seconds: float = 4 * 3600,
        seed: int | None = None,
    ) -> None:
        self.primary_dsn = as_application(env["DATABASE_URL"])
        replicas = [u for u in env.get("DATABASE_REPLICA_URLS", "").split(",") if u]
        self.replica_dsn = as_application(replicas[0]) if replicas else None
        self.redis_url = env.get("REDIS_URL")
        self.service_url = service_url.rstrip("/")
        self.token = operator_token(env) if "AUTH_TOKENS" in env else None
        self.interval = interval
        self.drift_chance = drift_chance
        self.backfill_every = backfill_every
        self.max_seconds = max_seconds
        self.counts = Counts()
        self._rng = random.Random(seed)
        self._ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._primary: psycopg.Connection[Any] | None = None
        self._replica: psycopg.Connection[Any] | None = None
        self._queue_burst = run_workload

    # --- lifecycle ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-workload", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.close()

    def close(self) -> None:
        for conn in (self._primary, self._replica):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
        self._primary = self._replica = None

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        last_report = time.monotonic()
        # Event.wait paces the ticks (and returns at once on stop): a rate limit, not a guess.
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            self.step()
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                print(f"demo workload: {self.counts}", file=sys.stderr, flush=True)
        self.close()

    # --- one tick ---

    def step(self) -> None:
        self._ticks += 1
        self._guard("writes", self._write)
        if self._ticks % self.backfill_every == 0:
            self._guard("backfill", self.backfill)
        self._guard("primary reads", self._read_primary)
        if self.replica_dsn is not None:
            self._guard("replica reads", self._read_replica)
        self._guard("rpc", self._call_service)
        if self.redis_url is not None:
            self._guard("queues", self._work_queues)

    def _write(self) -> None:
        conn = self._primary_conn()
        with conn.cursor() as cur:
            rows = [_order(self._rng) for _ in range(self._rng.randint(1, 3))]
            cur.executemany(INSERT_SQL, rows)
            self.counts.inserted += len(rows)
        if self._rng.random() < self.drift_chance:
            self.insert_untracked(self._rng.randint(1, 8))

    def insert_untracked(self, count: int) -> None:
        """``count`` orders the trigger does not see: the partition delta grows by ``count``."""
        conn = self._primary_conn()
        with conn.transaction(), conn.cursor() as cur:
            # Origin-mode triggers do not fire for a session in replica role.
            cur.execute("SET LOCAL session_replication_role = replica")
            cur.executemany(INSERT_SQL, [_order(self._rng) for _ in range(count)])
        self.counts.drifted += count

    def backfill(self) -> int:
        """Copy the rows the trigger missed; the delta returns to zero."""
        with self._primary_conn().cursor() as cur:
            cur.execute(BACKFILL_SQL)
            copied = cur.rowcount
        self.counts.backfilled += copied
        return copied

    def delta(self) -> int:
        row = self._primary_conn().execute(DELTA_SQL).fetchone()
        assert row is not None
        return int(row[0])

    def _read_primary(self) -> None:
        self._primary_conn().execute(READ_SQL).fetchone()
        self.counts.primary_reads += 1

    def _read_replica(self) -> None:
        if self._replica is None or self._replica.closed:
            assert self.replica_dsn is not None
            self._replica = connect(self.replica_dsn)
        self._replica.execute(READ_SQL).fetchone()
        self.counts.replica_reads += 1

    def _call_service(self) -> None:
        calls: list[dict[str, Any]] = [
            {"jsonrpc": "2.0", "id": i, "method": self._rng.choice(RPC_QUERIES)}
            for i in range(self._rng.randint(1, 3))
        ]
        headers = {"Content-Type": "application/json"}
        if self.token is not None and self._rng.random() < 0.05:
            calls.append(
                {
                    "jsonrpc": "2.0",
                    "id": len(calls),
                    "method": "monitoring.invalidateCache",
                    "params": {"namespace": "rpc"},
                }
            )
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(  # noqa: S310 - our own service, http on loopback
            f"{self.service_url}/rpc", data=json.dumps(calls).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            answers = json.loads(response.read())
        for answer in answers if isinstance(answers, list) else [answers]:
            if "error" in answer:
                self.counts.rpc_errors += 1
            else:
                self.counts.rpc_ok += 1

    def _work_queues(self) -> None:
        assert self.redis_url is not None
        done = self._queue_burst(
            self.redis_url,
            rounds=3,
            seconds=1.0,
            bullmq_queue=BULLMQ_QUEUE,
            rq_queue=RQ_QUEUE,
            seed=self._rng.randint(0, 1 << 30),
        )
        self.counts.queue_jobs += done.pushed

    # --- helpers ---

    def _primary_conn(self) -> psycopg.Connection[Any]:
        if self._primary is None or self._primary.closed:
            self._primary = connect(self.primary_dsn)
        return self._primary

    def _guard(self, what: str, action: Callable[[], object]) -> None:
        """One part failing (the service still starting, a server stopped) skips that part
        for this tick; the 1st, 10th, 100th... failure of each kind is reported."""
        try:
            action()
        except (psycopg.Error, RedisError, OSError, urllib.error.URLError, ValueError) as exc:
            if self._starting(exc):
                return  # the service starts after the workload: not a failure worth a line
            seen = self.counts.failures.get(what, 0) + 1
            self.counts.failures[what] = seen
            if str(seen).strip("0") == "1":
                print(
                    f"demo workload: {what} failed ({seen} so far): {exc!r}",
                    file=sys.stderr,
                    flush=True,
                )
            if isinstance(exc, psycopg.OperationalError):
                self.close()

    def _starting(self, exc: Exception) -> bool:
        """A refused connection before the service has answered once: it is still starting."""
        refused = isinstance(exc, urllib.error.URLError) and isinstance(
            exc.reason, ConnectionRefusedError
        )
        return refused and self.counts.rpc_ok + self.counts.rpc_errors == 0


def _order(rng: random.Random) -> tuple[int, float]:
    return rng.randint(1, 500), round(rng.uniform(5, 500), 2)
