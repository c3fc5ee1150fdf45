"""infrawatch's own footprint on the database it watches, at its default intervals.

Run: ``.venv/bin/python bench/bench_footprint.py [seconds]`` (default 120).

A real stack (tests/stack): PostgreSQL 15 with ``pg_stat_statements`` preloaded, a streaming
replica, PgBouncer and Redis. infrawatch runs in this process as its own role ``infrawatch``
(``pg_monitor``, owner of database ``app``), with the replica, PgBouncer's console, Redis and two
partition pairs configured, every interval at its default (alert evaluation every 15 s,
replica health every 30 s), and ``/metrics`` scraped every 15 s as Prometheus would. The
application's statements (300 shapes, role ``demo_app``) are in ``pg_stat_statements`` so that
``database.topQueries`` reads a view of a realistic size.

After a warm-up the statistics are reset on both servers; at the end, the rows of role
``infrawatch`` in ``pg_stat_statements`` give its database time (execution, plus planning when
tracked) per second of wall time, as a percentage of one core: the target is at most 1 %.
The CPU time the server processes serving ``infrawatch``'s connections used over the same
span (``/proc/<pid>/stat``, every backend seen) is reported beside it: it includes what the
statement statistics leave out (connection start, protocol, parse).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: this checkout's server and tests

import aiohttp  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

from server.app import create_app  # noqa: E402
from server.config import Settings  # noqa: E402
from tests.stack import (  # noqa: E402
    PgBouncer,
    PostgresServer,
    RedisServer,
    make_workdir,
    remove_workdir,
)
from tests.stack.demo import create_demo_schema  # noqa: E402

ROLE = "infrawatch"
APP_SHAPES = 300
WARMUP_SECONDS = 20.0
SCRAPE_INTERVAL = 15.0
TARGET_PERCENT = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

SETUP_SQL = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'infrawatch') THEN
        CREATE ROLE infrawatch LOGIN;
    END IF;
END
$$;
GRANT pg_monitor TO infrawatch;
CREATE DATABASE app OWNER infrawatch;
"""

SECOND_PAIR_SQL = """
CREATE TABLE IF NOT EXISTS demo.events_legacy (
    id bigserial PRIMARY KEY, kind text NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS demo.events (
    id bigint NOT NULL, kind text NOT NULL, created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE IF NOT EXISTS demo.events_default PARTITION OF demo.events DEFAULT;
INSERT INTO demo.events_legacy (kind) SELECT 'seed' FROM generate_series(1, 500);
INSERT INTO demo.events SELECT id, kind, created_at FROM demo.events_legacy;
GRANT SELECT ON ALL TABLES IN SCHEMA demo TO infrawatch;
GRANT USAGE ON SCHEMA demo TO infrawatch;
"""

OWN_TIME_SQL = """
SELECT coalesce(sum(s.total_exec_time + s.total_plan_time), 0)::float8 AS ms,
       coalesce(sum(s.calls), 0)::int8 AS calls
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
WHERE r.rolname = 'infrawatch'
"""

OWN_TOP_SQL = """
SELECT s.calls, round((s.total_exec_time + s.total_plan_time)::numeric, 1) AS ms,
       regexp_replace(left(s.query, 90), '\\s+', ' ', 'g') AS query
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
WHERE r.rolname = 'infrawatch'
ORDER BY s.total_exec_time + s.total_plan_time DESC LIMIT 8
"""

OWN_BACKENDS_SQL = "SELECT pid FROM pg_stat_activity WHERE usename = 'infrawatch'"


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


class BackendCpu:
    """CPU ticks of every backend of role ``infrawatch`` seen on one server: first and last
    reading per pid (a backend that ends between two samples loses its last stretch)."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def sample(self) -> None:
        for line in self.server.psql(OWN_BACKENDS_SQL, "app").split():
            pid = int(line)
            ticks = cpu_ticks(pid)
            if ticks is not None:
                self.first.setdefault(pid, ticks)
                self.last[pid] = ticks

    def seconds(self) -> float:
        return sum(self.last[p] - self.first[p] for p in self.last) / CLK_TCK


def prepare(primary: PostgresServer, replica: PostgresServer) -> None:
    primary.psql(SETUP_SQL)
    primary.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", "app")
    create_demo_schema(primary.dsn(database="app"), seed_rows=500)
    primary.psql(SECOND_PAIR_SQL, "app")
    # The application's statements: APP_SHAPES distinct shapes in pg_stat_statements.
    shapes = "\n".join(
        "SELECT " + ", ".join(str(c) for c in range(1, n + 1)) + ";"
        for n in range(1, APP_SHAPES + 1)
    )
    primary.psql(f"SET ROLE demo_app;\n{shapes}", "app")
    replica.wait_for_replay()


def reset(server: PostgresServer) -> None:
    server.psql("SELECT pg_stat_statements_reset()", "app")


def own_time(server: PostgresServer) -> tuple[float, int]:
    ms, calls = server.psql(OWN_TIME_SQL, "app").split("|")
    return float(ms), int(calls)


async def run(seconds: float) -> int:
    workdir = make_workdir()
    try:
        with (
            PostgresServer(workdir) as primary,
            primary.make_replica(workdir) as replica,
            PgBouncer(workdir, primary) as bouncer,
            RedisServer(workdir) as redis_server,
        ):
            await asyncio.to_thread(prepare, primary, replica)
            env = {
                "DATABASE_URL": primary.dsn(user=ROLE, database="app"),
                "DATABASE_REPLICA_URLS": replica.dsn(user=ROLE, database="app"),
                "PGBOUNCER_ADMIN_URL": bouncer.admin_dsn,
                "REDIS_URL": redis_server.url,
                "PARTITION_PAIRS": "demo.orders_legacy:demo.orders,demo.events_legacy:demo.events",
                "LOG_LEVEL": "WARNING",
            }
            settings = Settings.from_env(env)
            return await measure(settings, primary, replica, seconds)
    finally:
        remove_workdir(workdir)


async def measure(
    settings: Settings, primary: PostgresServer, replica: PostgresServer, seconds: float
) -> int:
    server = TestServer(create_app(settings))
    await server.start_server()
    cpu = [BackendCpu(primary), BackendCpu(replica)]
    try:
        async with aiohttp.ClientSession() as session:

            async def scrape() -> None:
                async with session.get(server.make_url("/metrics")) as response:
                    await response.read()

            await scrape()
            await asyncio.sleep(WARMUP_SECONDS)
            for node in (primary, replica):
                await asyncio.to_thread(reset, node)
            for c in cpu:
                await asyncio.to_thread(c.sample)
            started = time.monotonic()
            next_scrape = started
            while (now := time.monotonic()) < started + seconds:
                if now >= next_scrape:
                    await scrape()
                    next_scrape += SCRAPE_INTERVAL
                for c in cpu:
                    await asyncio.to_thread(c.sample)
                await asyncio.sleep(min(1.0, started + seconds - time.monotonic()))
            elapsed = time.monotonic() - started
            for c in cpu:
                await asyncio.to_thread(c.sample)
            results = [await asyncio.to_thread(own_time, node) for node in (primary, replica)]
            top = await asyncio.to_thread(primary.psql, OWN_TOP_SQL, "app")
    finally:
        await server.close()
    code = report(elapsed, results, [c.seconds() for c in cpu])
    print("\ninfrawatch's costliest statements on the primary (calls | ms | statement):")
    print(top)
    return code


def report(elapsed: float, results: list[tuple[float, int]], cpu: list[float]) -> int:
    print(
        f"{elapsed:.0f} s at default intervals (evaluation 15 s, replica health 30 s, "
        f"scrape {SCRAPE_INTERVAL:g} s)"
    )
    print("| server | statements | statements/s | database ms/s | % of one core | backend CPU % |")
    print("| --- | --- | --- | --- | --- | --- |")
    total_ms = 0.0
    for name, (ms, calls), cpu_s in zip(("primary", "replica"), results, cpu, strict=True):
        total_ms += ms
        print(
            f"| {name} | {calls:,} | {calls / elapsed:.2f} | {ms / elapsed:.3f} | "
            f"{ms / elapsed / 10:.3f} | {100 * cpu_s / elapsed:.3f} |"
        )
    percent = total_ms / elapsed / 10  # ms per s -> % of one core
    cpu_percent = 100 * sum(cpu) / elapsed
    print(f"| both | | | {total_ms / elapsed:.3f} | **{percent:.3f}** | {cpu_percent:.3f} |")
    verdict = "met" if percent <= TARGET_PERCENT else "NOT met"
    print(
        f"infrawatch's own database time: {percent:.3f} % of one core "
        f"(target <= {TARGET_PERCENT:g} %): {verdict}"
    )
    return 0 if percent <= TARGET_PERCENT else 1


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    return asyncio.run(run(seconds))


if __name__ == "__main__":
    raise SystemExit(main())
