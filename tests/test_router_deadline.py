"""The router's call timeout (one timer for every call in flight): slow calls get TIMEOUT,
fast ones are untouched, and a cancellation from outside stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from server.config import Settings
from server.rpc.errors import ErrorCode, RpcError
from server.rpc.router import Context, NoInput, Router, query
from server.services import Services


async def sleeper(_ctx: Context, _: NoInput) -> str:
    await asyncio.sleep(3600)
    return "never"


async def quick(_ctx: Context, _: NoInput) -> str:
    await asyncio.sleep(0)
    return "done"


async def swallow(_ctx: Context, _: NoInput) -> str:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        return "swallowed"
    return "never"


@pytest.fixture
def router() -> Router:
    procs = [query("t.slow", sleeper), query("t.quick", quick), query("t.swallow", swallow)]
    return Router(procs, timeout=0.05)


def ctx() -> Context:
    return Context(services=Services(Settings()))


async def test_slow_calls_time_out_and_fast_ones_finish(router: Router) -> None:
    calls = [router.call("t.slow", None, ctx()) for _ in range(5)]
    calls += [router.call("t.quick", None, ctx()) for _ in range(5)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, RpcError) and o.code is ErrorCode.TIMEOUT for o in outcomes[:5])
    assert outcomes[5:] == ["done"] * 5
    # The task is not left cancelled: it goes on awaiting normally.
    assert await router.call("t.quick", None, ctx()) == "done"


async def test_outside_cancellation_is_not_a_timeout(router: Router) -> None:
    task = asyncio.create_task(router.call("t.slow", None, ctx()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_handler_that_swallows_the_deadline_returns_normally(router: Router) -> None:
    assert await router.call("t.swallow", None, ctx()) == "swallowed"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
