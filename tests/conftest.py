"""Fixtures: real services per session, isolated per test.

Servers start once per session, on first use (the replica, the Sentinel group and the Redis
Cluster only for the tests that ask for them). Each test gets its own database and an empty
Redis. A test may stop a session server to see how the app copes; the next test finds it running
again.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp.plugin import AiohttpClient

from server.config import Settings
from tests.pg_app import AppFactory, Apps
from tests.served import RunnerTestServer
from tests.stack import (
    PgBouncer,
    PostgresServer,
    RedisCluster,
    RedisSentinelGroup,
    RedisServer,
    StackServer,
    make_workdir,
    remove_workdir,
)

OPERATOR_NAME = "alice"
OPERATOR_TOKEN = "alice-token-0123456789"
SESSION_SECRET = "test-session-secret-0123456789"


# Session servers in the order they started, so a primary comes back before its replica.
_session_servers: list[StackServer] = []


def pytest_configure(config: pytest.Config) -> None:
    # A cancelled CI job or a `timeout` sends SIGTERM, which by default ends Python without
    # running fixture teardowns or atexit: treat it as Ctrl-C so no server outlives the run.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _ensure_running(server: StackServer) -> None:
    if not server.is_running():
        server.start()


# --- the app under test, served as `infrawatch serve` serves it ---


@pytest.fixture
def aiohttp_client(aiohttp_client: AiohttpClient) -> AiohttpClient:
    """pytest-aiohttp's, with an app served as ``infrawatch serve`` serves it (our runner), not
    on aiohttp's plain one: every test of the RPC routes goes through their shortcut."""

    async def go(param: Any, *, server_kwargs: Any = None, **kwargs: Any) -> Any:
        if isinstance(param, web.Application):
            param = RunnerTestServer(param, **(server_kwargs or {}))
        return await aiohttp_client(param, **kwargs)

    return go  # type: ignore[return-value]


# --- real services, one per session ---


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    path = make_workdir()
    yield path
    remove_workdir(path)


@pytest.fixture(scope="session")
def postgres(stack_dir: Path) -> Iterator[PostgresServer]:
    with PostgresServer(stack_dir) as server:
        _session_servers.append(server)
        yield server


@pytest.fixture(scope="session")
def postgres_replica(postgres: PostgresServer, stack_dir: Path) -> Iterator[PostgresServer]:
    with postgres.make_replica(stack_dir) as replica:
        _session_servers.append(replica)
        yield replica


@pytest.fixture(scope="session")
def pgbouncer(postgres: PostgresServer, stack_dir: Path) -> Iterator[PgBouncer]:
    with PgBouncer(stack_dir, postgres) as bouncer:
        _session_servers.append(bouncer)
        yield bouncer


@pytest.fixture(scope="session")
def redis_server(stack_dir: Path) -> Iterator[RedisServer]:
    with RedisServer(stack_dir) as server:
        _session_servers.append(server)
        yield server


@pytest.fixture(scope="session")
def redis_sentinel_group(stack_dir: Path) -> Iterator[RedisSentinelGroup]:
    with RedisSentinelGroup(stack_dir) as group:
        # Members, not the group: restarting one must not wait for a sync that a failover
        # may have turned around.
        _session_servers.extend(group.servers)
        yield group


@pytest.fixture(scope="session")
def redis_cluster(stack_dir: Path) -> Iterator[RedisCluster]:
    with RedisCluster(stack_dir) as cluster:
        # Members, as for Sentinel: a stopped node comes back alone, with its slots.
        _session_servers.extend(cluster.nodes)
        yield cluster


@pytest.fixture(autouse=True)
def _restart_stopped_servers() -> None:
    """Bring back any session server an earlier test stopped."""
    for server in _session_servers:
        _ensure_running(server)


# --- isolation per test ---


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database on the primary (replicas see it too), dropped after the test."""
    name = postgres.create_database(f"test_{uuid.uuid4().hex}")
    yield postgres.dsn(database=name)
    _ensure_running(postgres)
    postgres.drop_database(name)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, emptied for this test."""
    redis_server.cli("FLUSHALL")
    return redis_server.url


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The session cluster's seed URL, every node up again and emptied for this test."""
    # A node an earlier test stopped is running again but may not be accepted back yet.
    redis_cluster.wait_until_ok()
    redis_cluster.flushall()
    return redis_cluster.seed_url


@pytest.fixture
def operator_token() -> str:
    return OPERATOR_TOKEN


@pytest.fixture
def make_settings(pg_dsn: str, redis_url: str) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: Settings wired to this test's database and Redis."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": pg_dsn,
            "redis_url": redis_url,
            "auth_tokens": {OPERATOR_NAME: OPERATOR_TOKEN},
            "session_secret": SESSION_SECRET,
            # Tests read figures right after changing them: no micro-cache of expensive reads
            # (coalescing stays); tests/test_cost.py and tests/test_flood.py test it.
            "rpc_coalesce_ttl": 0.0,
        }
        return Settings(**(values | overrides))

    return make


# --- the application under test (make_app, client) ---


@pytest.fixture
async def make_app(pg_dsn: str) -> AsyncIterator[AppFactory]:
    """``await make_app(settings)``: the real app, started (see ``tests/pg_app.py``), with
    procedure calls through its router; every app stops when the test ends."""
    # pg_dsn first: the apps (and their pools) stop before the test database is dropped.
    async with Apps() as apps:
        yield apps.start
