"""Every answer says ``Server: infrawatch`` and never the versions of Python and aiohttp
(server/runner.py ``hide_versions``): the RPC routes' answers, which no response signal sees,
aiohttp's own 404, 405 and parse errors, pages, static files, /metrics and health."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, query
from server.runner import SERVER_HEADER


async def hello(_ctx: Context, _: NoInput) -> str:
    return "hello"


def make_app() -> web.Application:
    return create_app(Settings(), procedures=[query("data.hello", hello, options=(Cost.CHEAP,))])


async def raw_answer_head(client: TestClient, request: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers of the answer to ``request`` sent as it is on a connection of its
    own: what aiohttp's parser refuses never reaches a client library."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
    finally:
        writer.close()
    return int(status_line.split()[1]), headers


async def test_every_answer_names_infrawatch_and_no_version(aiohttp_client: object) -> None:
    client: TestClient = await aiohttp_client(make_app())  # type: ignore[operator]
    call = {"jsonrpc": "2.0", "method": "data.hello", "id": 1}
    answers = [
        await client.post("/rpc", json=call),  # the exact route's answer (JsonAnswer)
        await client.post("/rpc", json=[call, call]),  # a batch: web.Response
        await client.post("/rpc", data=b"{not json"),  # a parse error
        await client.get("/trpc/data.hello"),
        await client.get("/trpc/no.such"),
        await client.get("/rpc"),  # aiohttp's own 405
        await client.get("/no/such/page"),  # aiohttp's own 404
        await client.get("/health/live"),
        await client.get("/metrics"),
        await client.get("/"),
    ]
    statuses = [answer.status for answer in answers]
    assert statuses == [200, 200, 200, 200, 404, 405, 404, 200, 200, 200]
    assert [answer.headers.get("Server") for answer in answers] == [SERVER_HEADER] * len(answers)

    # A request line aiohttp's parser refuses: answered by the runner's JSON error handler.
    status, headers = await raw_answer_head(client, b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400
    assert headers.get("server") == SERVER_HEADER
    for answer in answers:
        assert "aiohttp" not in answer.headers.get("Server", "").lower()
        assert "python" not in answer.headers.get("Server", "").lower()
