"""The breaker procedures, called through the router as any client would call them."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from server.app import create_app
from server.appkeys import BREAKERS
from server.config import Settings
from server.errors import CircuitOpen, ErrorCode, InvalidInput, RpcError
from server.procedures.breakers import procedures
from server.resilience import BreakerState
from server.resilience.models import BreakerStatus, BreakerStatusList
from server.resilience.registry import BreakerRegistry
from server.rpc.router import ANONYMOUS, Caller, Context, Router

ALICE = Caller("alice")


class Down(Exception):
    pass


async def ok() -> str:
    return "ok"


async def down() -> None:
    raise Down("connection refused")


@pytest.fixture
def breakers() -> BreakerRegistry:
    return BreakerRegistry.from_settings(
        Settings(
            breaker_reset_timeout=0.05, breaker_failure_threshold=2, breaker_call_timeout_ms=500
        ).breakers
    )


@pytest.fixture
def router(breakers: BreakerRegistry) -> Router:
    return Router(procedures(breakers))


async def call(router: Router, path: str, inp: Any = None, caller: Caller = ALICE) -> Any:
    return await router.call(path, inp, Context(caller=caller))


async def test_status_lists_every_breaker_with_measured_figures(
    router: Router, breakers: BreakerRegistry
) -> None:
    pg = breakers.get("postgres")
    breakers.get("redis", call_timeout=0.1)
    await pg.call(ok)
    for _ in range(2):
        with pytest.raises(Down):
            await pg.call(down)

    out = await call(router, "monitoring.circuitBreakerStatus", caller=ANONYMOUS)

    by_name = {b["name"]: b for b in out["breakers"]}
    assert list(by_name) == ["postgres", "redis"]
    status = by_name["postgres"]
    assert status["state"] == "open"
    assert status["window"]["calls"] == 3
    assert status["window"]["failures"] == 2
    assert status["window"]["error_rate"] == pytest.approx(66.67)
    assert status["latency"]["samples"] == 3
    assert status["latency"]["p50_ms"] is not None
    assert status["last_failure"]["error_type"] == "Down"
    # The exception's own text (hosts, users in real drivers) is for operators only.
    assert status["last_failure"]["message"] == "Down"
    assert status["last_failure"]["detail"] is None
    as_operator = await call(router, "monitoring.circuitBreakerStatus", caller=Caller("alice"))
    assert as_operator["breakers"][0]["last_failure"]["detail"] == "connection refused"
    reopens_at = datetime.fromisoformat(status["reopens_at"])
    assert 0 < (reopens_at - datetime.now(UTC)).total_seconds() <= 0.05
    assert 0 < status["seconds_until_half_open"] <= 0.05
    assert status["totals"] == {
        "calls": 3,
        "successes": 1,
        "failures": 2,
        "timeouts": 0,
        "ignored": 0,
        "rejections": 0,
        "transitions": 1,
    }
    assert status["policy"]["failure_threshold"] == 2
    assert status["policy"]["call_timeout"] == 0.5
    assert by_name["redis"]["state"] == "closed"
    assert by_name["redis"]["policy"]["call_timeout"] == 0.1
    assert by_name["redis"]["reopens_at"] is None


async def test_status_json_is_exactly_what_the_output_model_would_write(
    router: Router, breakers: BreakerRegistry
) -> None:
    """The status is built as JSON without models (docs/performance.md): it must validate as
    ``BreakerStatusList`` and match, field for field, what the model writes, in every state."""
    pg = breakers.get("postgres")
    breakers.get("redis", call_timeout=None)
    held = breakers.get("cache")
    calm = breakers.get("calm")
    await pg.call(ok)
    for _ in range(2):
        with pytest.raises(Down):
            await pg.call(down)
    held.force_open("test")
    calm.disable("test")

    out = await call(router, "monitoring.circuitBreakerStatus", caller=ANONYMOUS)

    model = BreakerStatusList.model_validate(out)
    assert [b.name for b in model.breakers] == ["cache", "calm", "postgres", "redis"]
    for status in out["breakers"]:
        rebuilt = BreakerStatus.model_validate(status).model_dump(mode="json")
        assert rebuilt == status, status["name"]
    assert {b["name"]: b["state"] for b in out["breakers"]} == {
        "cache": "forced_open",
        "calm": "disabled",
        "postgres": "open",
        "redis": "closed",
    }
    assert out["breakers"][2]["reopens_at"].endswith("Z")
    assert out["breakers"][2]["last_failure"]["at"].endswith("Z")
    # snapshot(), the model of mutations' answers, is built from the same JSON.
    assert pg.snapshot().model_dump(mode="json")["totals"] == out["breakers"][2]["totals"]


async def test_status_with_no_breakers(router: Router, breakers: BreakerRegistry) -> None:
    assert await call(router, "monitoring.circuitBreakerStatus") == {"breakers": []}


async def test_reset_closes_and_clears_the_window(
    router: Router, breakers: BreakerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    pg = breakers.get("postgres")
    for _ in range(2):
        with pytest.raises(Down):
            await pg.call(down)
    assert pg.state is BreakerState.OPEN
    caplog.set_level(logging.INFO)

    out = await call(router, "monitoring.resetCircuitBreaker", {"name": "postgres"})

    assert out["state"] == "closed"
    assert out["window"]["calls"] == 0
    assert out["consecutive_failures"] == 0
    assert out["totals"]["failures"] == 2  # cumulative totals survive
    assert await pg.call(ok) == "ok"
    assert "reset by alice" in caplog.text
    assert "open -> closed (reset by operator alice)" in caplog.text


async def test_set_state_open_disabled_closed(router: Router, breakers: BreakerRegistry) -> None:
    pg = breakers.get("postgres")
    path = "monitoring.setCircuitBreakerState"

    out = await call(router, path, {"name": "postgres", "state": "open"})
    assert (out["state"], out["forced_open"], out["disabled"]) == ("forced_open", True, False)
    with pytest.raises(CircuitOpen, match="forced open"):
        await pg.call(ok)
    await asyncio.sleep(0.06)  # past the reset timeout: still held open
    with pytest.raises(CircuitOpen):
        await pg.call(ok)

    out = await call(router, path, ["postgres", "disabled"])  # JSON-RPC array params
    assert (out["state"], out["forced_open"], out["disabled"]) == ("disabled", False, True)
    for _ in range(5):
        with pytest.raises(Down):
            await pg.call(down)
    assert pg.state is BreakerState.DISABLED  # never trips
    out = await call(router, "monitoring.circuitBreakerStatus")
    assert out["breakers"][0]["totals"]["failures"] == 5  # statistics still recorded

    out = await call(router, path, {"name": "postgres", "state": "closed"})
    assert out["state"] == "closed"
    assert await pg.call(ok) == "ok"
    assert out["totals"]["transitions"] == 3


async def test_unknown_breaker_is_not_found(router: Router, breakers: BreakerRegistry) -> None:
    breakers.get("postgres")
    for path, inp in [
        ("monitoring.resetCircuitBreaker", {"name": "postgress"}),
        ("monitoring.setCircuitBreakerState", {"name": "postgress", "state": "open"}),
    ]:
        with pytest.raises(RpcError) as info:
            await call(router, path, inp)
        assert info.value.code is ErrorCode.NOT_FOUND
        assert "postgress" in info.value.message


async def test_bad_state_is_invalid_input(router: Router, breakers: BreakerRegistry) -> None:
    breakers.get("postgres")
    with pytest.raises(InvalidInput, match="state"):
        await call(
            router,
            "monitoring.setCircuitBreakerState",
            {"name": "postgres", "state": "half_open"},
        )


@pytest.mark.parametrize(
    ("path", "inp"),
    [
        ("monitoring.resetCircuitBreaker", {"name": "postgres"}),
        ("monitoring.setCircuitBreakerState", {"name": "postgres", "state": "open"}),
    ],
)
async def test_mutations_need_an_operator(
    router: Router, breakers: BreakerRegistry, path: str, inp: dict[str, str]
) -> None:
    breakers.get("postgres")
    with pytest.raises(RpcError) as info:
        await call(router, path, inp, caller=ANONYMOUS)
    assert info.value.code is ErrorCode.UNAUTHORIZED
    assert breakers.find("postgres").state is BreakerState.CLOSED


def test_every_app_has_its_own_registry() -> None:
    settings = Settings(breaker_reset_timeout=3.0)
    a, b = create_app(settings)[BREAKERS], create_app(settings)[BREAKERS]
    assert a is not b
    assert a.get("pg").config.reset_timeout == 3.0
