"""The router's hot path: the call timeout (one timer for every call in flight: slow calls get
TIMEOUT, fast ones are untouched, an outside cancellation stays one), and the outermost
middleware's synchronous peek."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from server.errors import ErrorCode, RpcError
from server.rpc.router import (
    NO_ANSWER,
    Context,
    Middleware,
    Next,
    NoInput,
    Peek,
    Procedure,
    Router,
    mutation,
    query,
)


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
    return Context()


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


class Peeking:
    """A middleware with a synchronous fast path (a ``FastPath``) that says what it was asked."""

    def __init__(self, answers: dict[str, str], seen: list[str]) -> None:
        self.answers = answers
        self.seen = seen

    async def __call__(self, ctx: Context, proc: Procedure, inp: BaseModel, nxt: Next) -> Any:
        self.seen.append(f"chain {proc.path}")
        return await nxt(ctx, inp)

    def peeker(self, proc: Procedure) -> Peek:
        def peek(ctx: Context, inp: BaseModel) -> Any:
            self.seen.append(f"peek {proc.path}")
            return self.answers.get(proc.path, NO_ANSWER)

        return peek


def peeking(answers: dict[str, str], seen: list[str]) -> Middleware:
    return Peeking(answers, seen)


async def test_outermost_peek_answers_before_the_chain() -> None:
    seen: list[str] = []
    procs = [query("t.quick", quick), mutation("t.change", quick)]
    router = Router(procs, middleware=[peeking({"t.quick": "peeked", "t.change": "x"}, seen)])

    assert await router.call("t.quick", None, ctx()) == "peeked"
    assert seen == ["peek t.quick"]
    # Authorization comes first: an anonymous mutation is refused, whatever peek would say.
    with pytest.raises(RpcError) as refused:
        await router.call("t.change", None, ctx())
    assert refused.value.code is ErrorCode.UNAUTHORIZED
    assert seen == ["peek t.quick"]

    no_answer = Router([query("t.quick", quick)], middleware=[peeking({}, seen)])
    assert await no_answer.call("t.quick", None, ctx()) == "done"
    assert seen[-2:] == ["peek t.quick", "chain t.quick"]


async def test_only_the_outermost_middleware_may_peek() -> None:
    seen: list[str] = []

    async def outer(ctx: Context, proc: Procedure, inp: BaseModel, nxt: Next) -> Any:
        seen.append("outer")
        return await nxt(ctx, inp)

    router = Router([query("t.quick", quick)], middleware=[outer, peeking({"t.quick": "x"}, seen)])
    assert await router.call("t.quick", None, ctx()) == "done"
    assert seen == ["outer", "chain t.quick"]


def test_answers_resolve_and_answer_as_answer_now_does_over_each_wire() -> None:
    seen: list[str] = []
    observed: list[tuple[str, str, ErrorCode | None]] = []
    procs = [
        query("t.quick", quick),
        query("t.json_only", quick, protocols=frozenset({"jsonrpc"})),
        mutation("t.change", quick),
    ]
    router = Router(
        procs,
        middleware=[peeking({"t.quick": "peeked", "t.json_only": "json"}, seen)],
        observer=lambda path, protocol, code, _s: observed.append((path, protocol, code)),
    )
    trpc = Context(protocol="trpc")
    answers = router.answers("trpc")
    assert answers["t.quick"](None, trpc) == "peeked"
    assert router.answers("jsonrpc")["t.json_only"](None, Context(protocol="jsonrpc")) == "json"
    # A path the wire does not offer is not found; a path no procedure has is observed under
    # the label nobody can mint.
    for path in ("t.json_only", "t.nothing"):
        with pytest.raises(RpcError) as missing:
            answers[path]
        assert missing.value.code is ErrorCode.NOT_FOUND
    # Authorization and input are checked before the peek, as in answer_now.
    with pytest.raises(RpcError) as refused:
        answers["t.change"](None, trpc)
    assert refused.value.code is ErrorCode.UNAUTHORIZED
    with pytest.raises(RpcError) as invalid:
        answers["t.quick"]({"unexpected": 1}, trpc)
    assert invalid.value.code is ErrorCode.BAD_REQUEST
    assert seen == ["peek t.quick", "peek t.json_only"]
    # A miss is not kept: the next lookup of that path is observed again.
    assert "t.nothing" not in answers
    assert observed == [
        ("t.quick", "trpc", None),
        ("t.json_only", "jsonrpc", None),
        ("t.json_only", "trpc", ErrorCode.NOT_FOUND),
        ("unknown", "trpc", ErrorCode.NOT_FOUND),
        ("t.change", "trpc", ErrorCode.UNAUTHORIZED),
        ("t.quick", "trpc", ErrorCode.BAD_REQUEST),
    ]
