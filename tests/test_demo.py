"""``make run``'s demo: its schema, its trigger, drift and backfill, and a workload that moves
every figure the dashboard shows, against real servers and a real running service."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.config import Settings
from tests.stack import PostgresServer
from tests.stack.demo import (
    LEGACY,
    PARTITIONED,
    DemoWorkload,
    connect,
    create_demo_schema,
    demo_environment,
    operator_token,
)
from tests.stack.ports import HOST

ROOT = Path(__file__).resolve().parent.parent


def _count(dsn: str, table: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - constants
    assert row is not None
    return int(row[0])


def test_schema_has_a_partitioned_successor_and_a_dual_write_trigger(pg_dsn: str) -> None:
    create_demo_schema(pg_dsn, seed_rows=25)

    assert _count(pg_dsn, LEGACY) == _count(pg_dsn, PARTITIONED) == 25
    with connect(pg_dsn) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [PARTITIONED])
        assert kind.fetchone() == ("p",)
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [PARTITIONED]
        ).fetchone()
        assert partitions is not None and partitions[0] == 10  # 9 days and a default
        trigger = conn.execute(
            "SELECT t.tgenabled, position('demo.orders' IN p.prosrc) > 0 FROM pg_trigger t "
            "JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal",
            [LEGACY],
        ).fetchall()
        assert trigger == [("O", True)]

        # The trigger mirrors inserts, updates and deletes.
        new_id = conn.execute(
            "INSERT INTO demo.orders_legacy (customer_id, amount) VALUES (7, 12.5) RETURNING id"
        ).fetchone()
        assert new_id is not None
        conn.execute("UPDATE demo.orders_legacy SET amount = 99 WHERE id = %s", new_id)
        mirrored = conn.execute("SELECT amount FROM demo.orders WHERE id = %s", new_id).fetchone()
        assert mirrored is not None and float(mirrored[0]) == 99.0
        conn.execute("DELETE FROM demo.orders_legacy WHERE id = %s", new_id)
        assert conn.execute("SELECT 1 FROM demo.orders WHERE id = %s", new_id).fetchone() is None

    create_demo_schema(pg_dsn, seed_rows=0)  # again: idempotent
    assert _count(pg_dsn, LEGACY) == _count(pg_dsn, PARTITIONED) == 25


def test_untracked_writes_make_a_delta_that_backfill_closes(pg_dsn: str) -> None:
    create_demo_schema(pg_dsn, seed_rows=5)
    workload = DemoWorkload({"DATABASE_URL": pg_dsn}, "http://127.0.0.1:9", seed=1)
    try:
        workload.insert_untracked(7)
        assert workload.delta() == 7
        assert _count(pg_dsn, PARTITIONED) == 5

        assert workload.backfill() == 7
        assert workload.delta() == 0
        assert workload.counts.drifted == workload.counts.backfilled == 7
    finally:
        workload.close()


def test_demo_environment_is_valid_configuration(pg_dsn: str) -> None:
    env = demo_environment()
    settings = Settings.from_env({"DATABASE_URL": pg_dsn, **env})

    assert [p.name for p in settings.partitions.pairs] == [f"{LEGACY}:{PARTITIONED}"]
    assert [(q.kind, q.name) for q in settings.queues.names] == [
        ("bullmq", "emails"),
        ("rq", "default"),
    ]
    assert settings.auth.tokens == {"demo": operator_token(env)}
    assert len(operator_token(env)) >= 16
    assert settings.alerts.evaluation_interval == 5
    assert demo_environment()["AUTH_TOKENS"] != env["AUTH_TOKENS"]  # new each run


async def test_workload_ticks_reach_primary_replica_service_and_redis(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    pg_dsn: str,
    redis_url: str,
    postgres_replica: PostgresServer,
) -> None:
    create_demo_schema(pg_dsn, seed_rows=10)
    await asyncio.to_thread(postgres_replica.wait_for_replay)
    database = urlsplit(pg_dsn).path.lstrip("/")
    env = {
        "DATABASE_URL": pg_dsn,
        "DATABASE_REPLICA_URLS": postgres_replica.dsn(database=database),
        "REDIS_URL": redis_url,
        **demo_environment(),
    }
    server = await aiohttp_server(create_app(Settings.from_env(env)), host=HOST)
    workload = DemoWorkload(env, str(server.make_url("/")), drift_chance=1.0, backfill_every=3)

    try:
        for _ in range(6):  # bounded: six ticks, each a bounded amount of work
            await asyncio.to_thread(workload.step)
        # The workload is the application, under its own role: what topQueries reports.
        async with aiohttp.ClientSession() as session:
            body = {"jsonrpc": "2.0", "id": 1, "method": "database.topQueries"}
            body["params"] = {"limit": 500}
            async with session.post(server.make_url("/rpc"), json=body) as response:
                top = (await response.json())["result"]
    finally:
        workload.close()
    assert top["available"] is True
    roles = {s["role"] for s in top["statements"] if s["database"] == database}
    assert "demo_app" in roles and "postgres" not in roles

    counts = workload.counts
    assert counts.failures == {}
    assert counts.inserted >= 6 and counts.drifted >= 6
    assert counts.backfilled >= counts.drifted - 8  # the last tick's drift may be unfilled
    assert counts.primary_reads == counts.replica_reads == 6
    assert counts.rpc_ok + counts.rpc_errors >= 6
    assert counts.rpc_ok > 0 or counts.rpc_errors > 0
    legacy, partitioned = _count(pg_dsn, LEGACY), _count(pg_dsn, PARTITIONED)
    assert legacy == 10 + counts.inserted + counts.drifted
    assert legacy - partitioned == counts.drifted - counts.backfilled


def run_stack(options: list[str], probe: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m tests.stack [options] --exec -- python -c probe``, as ``make run`` runs it."""
    argv = [sys.executable, "-m", "tests.stack", *options, "--exec", "--"]
    return subprocess.run(
        [*argv, sys.executable, "-c", probe],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_make_run_stack_prints_the_token_and_has_the_demo_schema() -> None:
    """``python -m tests.stack --demo --exec -- cmd``: the path ``make run`` takes."""
    # Not tmp_path: pytest's base directory is private to root, and the servers run as postgres.
    parent = Path(tempfile.mkdtemp(prefix="infrawatch-demo-test-"))
    parent.chmod(0o755)
    try:
        probe = (
            "import os, psycopg; "
            "conn = psycopg.connect(os.environ['DATABASE_URL'], autocommit=True); "
            "print('rows', conn.execute('SELECT count(*) FROM demo.orders').fetchone()[0]); "
            "print('pairs', os.environ['PARTITION_PAIRS'])"
        )
        done = run_stack(
            ["--demo", "--dir", str(parent), "--url", "http://127.0.0.1:9"], probe, cwd=ROOT
        )

        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        printed = dict(line.split("=", 1) for line in lines if "=" in line and " " not in line)
        token = printed["AUTH_TOKENS"].split(":", 1)[1]
        assert f"sign in with the operator token\n    {token}\n" in done.stderr
        assert "open http://127.0.0.1:9/" in done.stderr
        # The 200 seeded orders, and what the demo workload (already running) added since.
        [rows] = [int(line.split()[1]) for line in lines if line.startswith("rows ")]
        assert rows >= 200, done.stdout
        assert f"pairs {LEGACY}:{PARTITIONED}" in done.stdout
        assert "stack stopped" in done.stderr
        assert not any(parent.iterdir())  # the stack's directory was removed
        with pytest.raises(psycopg.OperationalError):  # and its servers stopped
            psycopg.connect(printed["DATABASE_URL"], connect_timeout=2)
    finally:
        # The stack removes what it made inside; the folder itself is this test's.
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_make_run_stack_works_from_a_private_folder() -> None:
    """``make run`` from a checkout the servers' account cannot enter (root's home, a
    ``mktemp -d``): the stack lives in a private folder under the system's temporary folder,
    removed on exit, and never in the current folder."""
    private = Path(tempfile.mkdtemp(prefix="infrawatch-private-cwd-"))  # mode 0700
    try:
        probe = (
            "import os, psycopg; "
            "conn = psycopg.connect(os.environ['DATABASE_URL'], autocommit=True); "
            "print('answered', conn.execute('SELECT 1').fetchone()[0])"
        )
        done = run_stack([], probe, cwd=private)
        assert done.returncode == 0, done.stderr
        assert "answered 1" in done.stdout
        [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("starting the stack in")]
        workdir = Path(line.removeprefix("starting the stack in "))
        assert workdir.parent == Path(tempfile.gettempdir()).resolve()
        assert not workdir.exists()  # removed on exit
        assert not any(private.iterdir())  # nothing written where it was started
    finally:
        shutil.rmtree(private, ignore_errors=True)
