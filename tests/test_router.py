"""The protocol-free router: registration checks, middleware order, timeouts, paths, input.

The kind a wire implies (tRPC: GET is a query) is checked by its adapter: tests/test_trpc.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from server.errors import ErrorCode, InvalidInput, ProcedureNotFound, RpcError
from server.rpc.router import (
    ANONYMOUS,
    Caller,
    Context,
    Next,
    NoInput,
    Procedure,
    Router,
    query,
)


class Echo(BaseModel):
    text: str
    times: int = 1


async def echo(_ctx: Context, inp: Echo) -> str:
    return inp.text * inp.times


async def slow(_ctx: Context, _: NoInput) -> None:
    await asyncio.sleep(5)


def ctx(caller: Caller = ANONYMOUS) -> Context:
    return Context(caller=caller)


def test_duplicate_paths_are_refused() -> None:
    with pytest.raises(ValueError, match=r"duplicate procedure path 'a\.b'"):
        Router([query("a.b", echo), query("a.b", echo)])


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a."])
def test_paths_must_be_dotted_names(path: str) -> None:
    with pytest.raises(ValueError, match="not a dotted name"):
        Router([query(path, echo)])


async def test_middleware_runs_outermost_first() -> None:
    order: list[str] = []

    def tracer(name: str) -> Any:
        async def mw(c: Context, proc: Procedure, inp: BaseModel, nxt: Next) -> Any:
            order.append(f"{name}>")
            result = await nxt(c, inp)
            order.append(f"<{name}")
            return result

        return mw

    router = Router(
        [query("e.cho", echo, input=Echo, middleware=(tracer("own"),))],
        middleware=[tracer("outer"), tracer("inner")],
    )
    assert await router.call("e.cho", {"text": "ab", "times": 2}, ctx()) == "abab"
    assert order == ["outer>", "inner>", "own>", "<own", "<inner", "<outer"]


async def test_timeout_becomes_timeout_error() -> None:
    router = Router([query("s.low", slow)], timeout=0.05)
    with pytest.raises(RpcError) as info:
        await router.call("s.low", None, ctx())
    assert info.value.code is ErrorCode.TIMEOUT


async def test_unknown_and_protocol_restricted_paths() -> None:
    router = Router([query("only.internal", echo, input=Echo, protocols=frozenset({"internal"}))])
    with pytest.raises(ProcedureNotFound):
        await router.call("nope", None, ctx())
    c = ctx()
    c.protocol = "trpc"
    with pytest.raises(ProcedureNotFound):
        await router.call("only.internal", {"text": "x"}, c)


async def test_input_errors_list_every_field() -> None:
    router = Router([query("e.cho", echo, input=Echo)])
    with pytest.raises(InvalidInput) as info:
        await router.call("e.cho", {"times": "many"}, ctx())
    paths = [issue["path"] for issue in (info.value.details or {})["issues"]]
    assert paths == ["text", "times"]
