"""The RPC routes answered without aiohttp's router (server/exact_routes.py): which requests
take the shortcut, and that what a client sees is the same either way, request by request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from server.app import create_app
from server.config import Settings
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, mutation, query
from tests.served import RunnerTestServer, started_as_served
from web.headers import add_security_headers

TOKEN = "alice-token-0123456789"


class Text(BaseModel):
    text: str


async def echo(_ctx: Context, inp: Text) -> str:
    return inp.text


async def hello(_ctx: Context, _: NoInput) -> str:
    return "hello"


PROCEDURES: list[Procedure] = [
    query("echo.text", echo, input=Text, options=(Cost.CHEAP,)),
    query("data.hello", hello, options=(Cost.CHEAP,)),
    mutation("notes.touch", hello, options=(Cost.OPERATOR,)),
]


def make_app(**settings: Any) -> web.Application:
    return create_app(Settings(auth_tokens={"alice": TOKEN}, **settings), procedures=PROCEDURES)


def counting_resolves(app: web.Application) -> list[str]:
    """Every path the app's router resolves from now on."""
    resolved: list[str] = []
    resolve = app.router.resolve

    async def counted(request: web.Request) -> Any:
        resolved.append(request.raw_path)
        return await resolve(request)

    app.router.resolve = counted  # type: ignore[method-assign]
    return resolved


async def exchange(client: TestClient, head: bytes, body: bytes = b"") -> bytes:
    """``head`` (without its blank line) sent as written, on a connection of its own; with a
    ``body``, that is sent after the server's ``100 Continue``. The answer, whole."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n")
        if body:
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 Continue")  # the router's expect handler
            writer.write(body)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


CALL = '{"jsonrpc":"2.0","method":"echo.text","params":{"text":"hi"},"id":1}'
HELLO = "/trpc/data.hello"


async def test_rpc_requests_skip_the_router_and_others_do_not(aiohttp_client: Any) -> None:
    app = make_app()
    resolved = counting_resolves(app)
    client: TestClient = await aiohttp_client(app)

    resp = await client.post("/rpc", data=CALL)
    assert (resp.status, await resp.json()) == (200, {"jsonrpc": "2.0", "result": "hi", "id": 1})
    resp = await client.get(
        "/trpc/data.hello,echo.text?batch=1&input=%7B%221%22%3A%7B%22text%22%3A%22x%22%7D%7D"
    )
    assert resp.status == 200
    assert [item["result"]["data"] for item in await resp.json()] == ["hello", "x"]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    resp = await client.post("/trpc/notes.touch", headers=headers)
    assert resp.status == 200
    assert resolved == []  # all three answered without the router

    # Everything else is routed as before, and answered as the router answers it.
    resp = await client.get("/health/live")
    assert resp.status == 200
    resp = await client.post("/rpc?x=1", data=CALL)  # a query string: not the exact path
    assert resp.status == 200
    resp = await client.get("/rpc")
    assert (resp.status, resp.headers["Allow"]) == (405, "POST")
    # Sent as written (aiohttp's client would decode the escape): the router decodes it.
    answer = await exchange(client, b"GET /trpc/data%2Ehello HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(b'{"result":{"data":"hello"}}')
    assert resolved == ["/health/live", "/rpc?x=1", "/rpc", "/trpc/data%2Ehello"]


async def test_expect_100_continue_goes_through_the_router(aiohttp_client: Any) -> None:
    app = make_app()
    resolved = counting_resolves(app)
    client: TestClient = await aiohttp_client(app)
    head = (
        f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(CALL)}\r\nExpect: 100-continue\r\n"
    )
    answer = await exchange(client, head.encode(), CALL.encode())
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(b'{"jsonrpc":"2.0","result":"hi","id":1}')
    assert resolved == ["/rpc"]


async def test_an_app_with_middlewares_routes_every_request(aiohttp_client: Any) -> None:
    # ALLOWED_HOSTS adds the host check as a middleware: the shortcut must not skip it.
    app = make_app(allowed_hosts=["infrawatch.example"])
    resolved = counting_resolves(app)
    client: TestClient = await aiohttp_client(app)
    resp = await client.post("/rpc", data=CALL, headers={"Host": "evil.example"})
    assert resp.status == 400
    resp = await client.get(HELLO, headers={"Host": "evil.example"})
    assert resp.status == 400
    resp = await client.post("/rpc", data=CALL, headers={"Host": "infrawatch.example"})
    assert resp.status == 200
    assert resolved == ["/rpc", HELLO, "/rpc"]


async def test_metrics_label_shortcut_requests_with_their_route(aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(await started_as_served(make_app()))
    assert (await client.post("/rpc", data=CALL)).status == 200
    assert (await client.get(HELLO)).status == 200
    text = await (await client.get("/metrics")).text()
    assert 'infrawatch_http_requests_total{method="POST",route="/rpc",status="200"} 1.0' in text
    assert (
        'infrawatch_http_requests_total{method="GET",route="/trpc/{path}",status="200"} 1.0' in text
    )


def test_the_only_response_signal_is_the_one_json_answers_skip() -> None:
    """The shortcut sends no ``on_response_prepare`` signal (its match info belongs to no app):
    right only while every receiver leaves the JSON API's answers alone. A new receiver must be
    looked at with server/exact_routes.py in mind before it is added to this list."""
    app = create_app(Settings())
    assert list(app.on_response_prepare) == [add_security_headers]


Send = Callable[[TestClient], Awaitable[Any]]


def _post(path: str, body: str, **headers: str) -> Send:
    return lambda client: client.post(path, data=body, headers=headers)


def _get(path: str, **headers: str) -> Send:
    return lambda client: client.get(path, headers=headers)


REQUESTS: dict[str, Send] = {
    "a call": _post("/rpc", CALL),
    "a batch": _post("/rpc", f'[{CALL},{{"jsonrpc":"2.0","method":"data.hello","id":2}}]'),
    "a notification": _post("/rpc", '{"jsonrpc":"2.0","method":"data.hello"}'),
    "unparseable": _post("/rpc", "{"),
    "an unknown method": _post("/rpc", '{"jsonrpc":"2.0","method":"nope","id":1}'),
    "a bad token": _post("/rpc", CALL, Authorization="Bearer wrong-token-0123456789"),
    "a mutation without a token": _post("/trpc/notes.touch", ""),
    "a tRPC query": _get(HELLO),
    "a tRPC query with input": _get('/trpc/echo.text?input={"text":"x"}'),
    "a tRPC batch": _get("/trpc/data.hello,data.hello?batch=1&input={}"),
    "a tRPC unknown procedure": _get("/trpc/nope"),
    "a tRPC query as POST": _post(HELLO, "{}", **{"Content-Type": "application/json"}),
    "a tRPC path ending in a slash": _get(HELLO + "/"),
    "an empty tRPC path": _get("/trpc/"),
}
# What may differ between two answers of one server anyway.
UNSTABLE = {"Date"}


async def _answer(client: TestClient, send: Send) -> tuple[int, dict[str, str], bytes]:
    resp = await send(client)
    headers = {k: v for k, v in resp.headers.items() if k not in UNSTABLE}
    return resp.status, headers, await resp.read()


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_the_same_answer_with_and_without_the_shortcut(
    aiohttp_client: Any, name: str
) -> None:
    send = REQUESTS[name]
    shortcut: TestClient = await aiohttp_client(RunnerTestServer(make_app()))
    routed: TestClient = await aiohttp_client(TestServer(make_app()))  # aiohttp's plain runner
    assert await _answer(shortcut, send) == await _answer(routed, send)
