"""``monitoring.unifiedMetrics``: every section that this build has, each as its own procedure
answers it (or its error), the overall status with reasons, and the alert summary."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from server.alerts import build_book
from server.appkeys import ROUTER
from server.config import Settings
from server.errors import Unavailable
from server.procedures import unified
from server.rpc.router import Caller, Context, NoInput, Router, query
from tests.alerting import app_of, breakers, call, error_code, evaluator, result, start_app
from tests.conftest import OPERATOR_TOKEN
from tests.stack import PostgresServer, RedisServer


async def metrics(client: TestClient, token: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = result(await call(client, "monitoring.unifiedMetrics", token=token))
    return out


async def app(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await start_app(aiohttp_client, settings)


async def test_healthy_with_every_section_this_build_has(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    client = await app(aiohttp_client, make_settings(alert_evaluation_interval=3600))
    out = await metrics(client)
    assert (out["status"], out["reasons"]) == ("healthy", [])  # the reasons, if it is not
    router = app_of(client)[ROUTER]
    installed = {p.path for p in router.procedures}
    assert set(out["sections"]) == set(unified.SECTIONS) & installed
    health = out["sections"]["monitoring.unifiedHealth"]
    assert health["status"] == "ok" and health["data"]["status"] == "healthy"
    assert health["duration_ms"] > 0
    breakers = out["sections"]["monitoring.circuitBreakerStatus"]
    assert "database-write" in {b["name"] for b in breakers["data"]["breakers"]}
    summary = out["alerts"]
    assert summary["firing"] == 0 and summary["by_level"] == {"warning": 0, "critical": 0}
    assert summary["source"] == "database" and summary["store"]["durable"] is True


async def test_redis_down_degrades_with_reasons_and_a_critical_alert(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis_server: RedisServer
) -> None:
    client = await app(aiohttp_client, make_settings(alert_evaluation_interval=3600))
    redis_server.stop()
    try:
        await evaluator(client).run_once()
        out = await metrics(client)
    finally:
        redis_server.start()
    assert out["status"] == "degraded"
    assert any(r.startswith("redis is down") for r in out["reasons"])
    assert any(r.startswith("critical alert: Redis is unavailable") for r in out["reasons"])
    summary = out["alerts"]
    # Redis down has consequences that may fire beside it, and nothing else may: the evaluator's
    # own cached reads fail against it (their redis-cache breaker, their slow failed GETs).
    fingerprints = [a["fingerprint"] for a in summary["recent"]]
    assert "redis_unavailable:redis" in fingerprints
    assert set(fingerprints) <= {
        "redis_unavailable:redis",
        "breaker_open:redis-cache",
        "cache_get_latency:cache",
    }, fingerprints
    assert summary["firing"] == summary["unacknowledged"] == len(fingerprints)
    assert summary["by_level"]["critical"] >= 1
    assert sum(summary["by_level"].values()) == summary["firing"]


async def test_primary_down_is_unhealthy_and_still_answers(
    aiohttp_client: Any, make_settings: Callable[..., Settings], postgres: PostgresServer
) -> None:
    settings = make_settings(alert_evaluation_interval=3600, breaker_reset_timeout=0.2)
    client = await app(aiohttp_client, settings)
    postgres.stop()
    try:
        out = await metrics(client)
    finally:
        postgres.start()
    assert out["status"] == "unhealthy"
    assert any(r.startswith("database is down") for r in out["reasons"])
    assert out["alerts"]["source"] == "memory"
    assert out["alerts"]["store"]["available"] is False


async def test_read_tokens_required_applies_to_the_caller_not_the_evaluator(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(read_tokens_required=True, alert_evaluation_interval=3600)
    client = await app(aiohttp_client, settings)
    assert error_code(await call(client, "monitoring.unifiedMetrics")) == "UNAUTHORIZED"
    out = await metrics(client, OPERATOR_TOKEN)
    assert out["sections"]["monitoring.circuitBreakerStatus"]["status"] == "ok"
    # The evaluator reads as the system caller, which READ_TOKENS_REQUIRED lets through.
    breakers(client).get("pgbouncer-admin").force_open("test")
    verdict = await evaluator(client).run_once()
    assert [c.fingerprint for c in verdict.conditions] == ["breaker_open:pgbouncer-admin"]


async def test_failing_and_slow_sections_are_reported_not_raised() -> None:
    """Stand-ins for collectors on other branches: one whose dependency is down, one that
    hangs. The aggregation, not the collectors, is under test here."""
    never = asyncio.Event()

    async def down(_ctx: Context, _: NoInput) -> None:
        raise Unavailable("redis unreachable")

    async def hang(_ctx: Context, _: NoInput) -> None:
        await never.wait()

    settings = Settings(section_timeout=0.1)
    router = Router(
        [
            query("monitoring.queueStats", down),
            query("monitoring.queryStats", hang),
            *unified.procedures(build_book(None, settings.alerts), settings.rpc.section_timeout),
        ]
    )
    ctx = Context(caller=Caller("alice"))
    out = await router.call("monitoring.unifiedMetrics", None, ctx)
    assert out["status"] == "degraded"
    assert set(out["sections"]) == {"monitoring.queueStats", "monitoring.queryStats"}
    queues = out["sections"]["monitoring.queueStats"]
    assert queues["status"] == "unavailable"
    assert queues["error"] == {"code": "SERVICE_UNAVAILABLE", "message": "redis unreachable"}
    assert out["sections"]["monitoring.queryStats"]["status"] == "timeout"
    assert out["reasons"] == [
        "monitoring.queueStats unavailable: redis unreachable",
        "monitoring.queryStats timeout: no answer within 0.1s",
    ]
    # Alerting not started in this bare service: the summary of its empty in-memory book.
    assert (out["alerts"]["firing"], out["alerts"]["recent"]) == (0, [])
    assert out["alerts"]["source"] == "memory" and out["alerts"]["store"]["durable"] is False
