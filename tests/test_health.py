"""/health*: one shape, Actuator-style aggregation, bounded probes, against the real stack."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.observability.health import ComponentHealth, overall
from tests.conftest import OPERATOR_TOKEN
from tests.stack import PostgresServer, RedisServer
from tests.waiting import until_accepted

ENDPOINTS = ("/health", "/health/live", "/health/ready", "/health/db", "/health/redis")
REPORT_KEYS = {
    "status",
    "reasons",
    "components",
    "checked_at",
    "uptime_seconds",
    "alert_store",
    "alert_delivery",
    "alert_evaluator",
    "version",
    "process",
}
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


async def get(client: TestClient, path: str, **headers: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(path, headers=headers)
    return resp.status, orjson.loads(await resp.read())


def component(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["components"] if c["name"] == name)


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> TestClient:
    result: TestClient = await aiohttp_client(create_app(make_settings()))
    return result


async def test_every_endpoint_answers_one_shape(client: TestClient) -> None:
    for path in (*ENDPOINTS, "/health/detailed"):
        status, report = await get(client, path)
        assert status == 200, (path, report)
        assert set(report) == REPORT_KEYS, path
        assert report["status"] == "healthy"
    _, live = await get(client, "/health/live")
    assert live["components"] == []  # liveness checks nothing outside the process
    _, ready = await get(client, "/health/ready")
    assert [c["name"] for c in ready["components"]] == ["database"]
    _, whole = await get(client, "/health")
    assert [c["name"] for c in whole["components"]] == ["database", "redis"]
    assert all(c["status"] == "up" and c["latency_ms"] >= 0 for c in whole["components"])


async def test_detailed_has_pool_process_and_no_hosts_for_everyone(client: TestClient) -> None:
    status, report = await get(client, "/health/detailed")
    assert status == 200
    db = component(report, "database")
    assert db["pool"]["max_size"] == 10 and db["pool"]["size"] >= 1
    assert 0 <= db["pool"]["utilization"] <= 100
    assert db["details"] is None and component(report, "redis")["details"] is None
    process = report["process"]
    assert process["rss_bytes"] > 0 and process["pid"] > 0 and process["threads"] >= 1
    assert process["cpu_user_seconds"] + process["cpu_system_seconds"] > 0
    assert report["uptime_seconds"] >= 0 and report["version"]
    assert report["alert_store"]["durable"] is True
    assert report["alert_delivery"]["durable"] is True
    evaluation = report["alert_evaluator"]
    assert evaluation["elected"] is True and evaluation["database_reachable"] is True
    assert evaluation["evaluating"] is True and evaluation["evaluator"] == evaluation["instance"]


async def test_detailed_says_when_alerts_live_in_memory_only(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(database_url=None)))
    status, report = await get(client, "/health/detailed")
    assert status == 200
    assert report["alert_store"]["durable"] is False
    # Delivery without a database: the outbox lives in memory, and the report says so.
    assert report["alert_delivery"]["durable"] is False
    assert report["alert_evaluator"]["elected"] is False
    assert component(report, "database")["status"] == "not_configured"


async def test_detailed_needs_an_operator_when_reads_need_tokens(
    aiohttp_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    postgres: PostgresServer,
) -> None:
    client = await aiohttp_client(create_app(make_settings(read_tokens_required=True)))
    assert (await client.get("/health/detailed")).status == 401
    bad = {"Authorization": "Bearer wrong-token-0123456789"}
    assert (await client.get("/health/detailed", headers=bad)).status == 401
    status, report = await get(client, "/health/detailed", **AUTH)
    assert status == 200
    db = component(report, "database")["details"]
    assert db["host"] == "127.0.0.1" and db["port"] == postgres.port
    assert db["server_version"].startswith("15.")
    redis = component(report, "redis")["details"]
    assert redis["server_version"] and redis["host"] == "127.0.0.1"
    # The plain endpoints stay open to load balancers.
    assert (await client.get("/health/ready")).status == 200


async def test_ready_turns_503_within_2s_of_the_primary_stopping(
    client: TestClient, postgres: PostgresServer
) -> None:
    loop = asyncio.get_running_loop()
    assert (await client.get("/health/ready")).status == 200
    await asyncio.to_thread(postgres.stop)
    stopped = loop.time()

    async def ready_and_live() -> tuple[int, dict[str, Any]]:
        answer = await get(client, "/health/ready")
        assert (await client.get("/health/live")).status == 200
        return answer

    status, report = await until_accepted(
        ready_and_live,
        lambda answer: answer[0] == 503,
        what="ready 503 within two seconds of the stop",
        within=2.0,
        interval=0.01,
    )
    assert loop.time() - stopped <= 2.0
    assert report["status"] == "unhealthy"
    assert component(report, "database")["status"] == "down"
    assert "127.0.0.1" not in orjson.dumps(report).decode()  # no host for the public
    status, whole = await get(client, "/health")
    assert status == 503 and whole["status"] == "unhealthy"

    await asyncio.to_thread(postgres.start)
    status, _ = await until_accepted(
        ready_and_live, lambda answer: answer[0] == 200, what="ready back", within=30
    )
    assert status == 200


async def test_redis_down_degrades_but_answers_200(
    client: TestClient, redis_server: RedisServer
) -> None:
    await asyncio.to_thread(redis_server.stop)
    status, report = await get(client, "/health")
    assert status == 200
    assert report["status"] == "degraded"
    assert component(report, "redis")["status"] == "down"
    assert report["reasons"] and report["reasons"][0].startswith("redis is down")
    assert (await client.get("/health/ready")).status == 200  # readiness needs the primary only
    status, alone = await get(client, "/health/redis")
    assert status == 503 and alone["status"] == "unhealthy"  # scoped to Redis: Redis is all
    assert (await client.get("/health/db")).status == 200


async def test_shutting_down_makes_ready_503_and_live_200(client: TestClient) -> None:
    await client.app.shutdown()  # on_shutdown runs, the server still answers
    status, report = await get(client, "/health/ready")
    assert status == 503 and report["reasons"] == ["shutting down"]
    assert (await client.get("/health/live")).status == 200


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word: a hung database."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hung_database_cannot_hold_ready_past_the_bound(
    aiohttp_client: Callable[..., Any],
) -> None:
    async with silent_server() as port:
        settings = Settings(
            database_url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
            database_timeout_ms=30_000,  # the driver alone would wait 30 s
            health_check_timeout=1.0,
        )
        client = await aiohttp_client(create_app(settings))
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, report = await get(client, "/health/ready")
        elapsed = loop.time() - started
        assert status == 503
        assert component(report, "database")["error"] == "no answer within 1s"
        assert elapsed < 2.0
        await client.close()


async def test_unified_health_uses_the_same_report(client: TestClient) -> None:
    resp = await client.post(
        "/rpc", json={"jsonrpc": "2.0", "method": "monitoring.unifiedHealth", "id": 1}
    )
    result = (await resp.json())["result"]
    assert set(result) == REPORT_KEYS
    assert result["status"] == "healthy"
    assert [c["name"] for c in result["components"]] == ["database", "redis"]


def test_aggregation_worst_wins() -> None:
    def c(name: str, status: str, critical: bool = False) -> ComponentHealth:
        return ComponentHealth(name=name, status=status, critical=critical, error="x")  # type: ignore[arg-type]

    assert overall([c("database", "up", True), c("redis", "not_configured")])[0] == "healthy"
    assert overall([c("database", "up", True), c("redis", "down")])[0] == "degraded"
    status, reasons = overall([c("database", "down", True), c("redis", "down")])
    assert status == "unhealthy" and len(reasons) == 2
    assert overall([c("redis", "down"), c("database", "down", True)])[0] == "unhealthy"
