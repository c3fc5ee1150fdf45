"""A request body, whole or still arriving, on both wires (``server/wire/body.py``).

A body that came with its headers is taken without a coroutine (``body.arrived``); one that
is still arriving (a slow client, ``Expect: 100-continue``, more than the parser buffers) is
awaited through aiohttp's own ``request.read()``. Both must answer alike, and both must refuse
a body over ``MAX_BODY_BYTES`` with the wire's own 413. The bodies here are written over a raw
socket, in pieces, so which path a request takes is under the test's control.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.errors import RpcError
from server.wire import body
from tests.test_jsonrpc import PROCEDURES

LIMIT = 4096
TOKEN = "alice-token-0123456789"


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    settings = Settings(auth_tokens={"alice": TOKEN}, max_body_bytes=LIMIT)
    return await aiohttp_client(create_app(settings, procedures=PROCEDURES))


async def exchange(
    client: TestClient, head: str, parts: list[bytes], *, pause: float = 0.2
) -> tuple[int, bytes]:
    """Sends ``head`` and then each part after ``pause``; returns (status, body) of the answer
    (a ``100 Continue`` before it is read past)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head.encode())
        await writer.drain()
        for part in parts:
            await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            while status_line.startswith(b"HTTP/1.1 100"):
                await reader.readline()  # the blank line after the interim answer
                status_line = await reader.readline()
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            answer = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(status_line.split()[1]), answer


def post_head(path: str, length: int, *extra: str) -> str:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        f"Authorization: Bearer {TOKEN}",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


CALL = orjson.dumps({"jsonrpc": "2.0", "method": "math.subtract", "params": [42, 23], "id": 7})
NOTE = orjson.dumps({"text": "written in pieces"})


@pytest.mark.parametrize("split", [0, 1, len(CALL) // 2, len(CALL) - 1])
async def test_jsonrpc_body_whole_or_in_pieces(client: TestClient, split: int) -> None:
    parts = [CALL[split:]] if split else []
    head = post_head("/rpc", len(CALL)) + CALL[:split].decode()
    if not split:  # the whole body with its headers: the synchronous path
        head += CALL.decode()
    status, answer = await exchange(client, head, parts)
    assert status == 200
    assert orjson.loads(answer) == {"jsonrpc": "2.0", "result": 19, "id": 7}


async def test_jsonrpc_body_after_100_continue(client: TestClient) -> None:
    head = post_head("/rpc", len(CALL), "Expect: 100-continue")
    status, answer = await exchange(client, head, [CALL])
    assert (status, orjson.loads(answer)["result"]) == (200, 19)


async def test_trpc_mutation_body_in_pieces(client: TestClient) -> None:
    head = post_head("/trpc/notes.record", len(NOTE)) + NOTE[:5].decode()
    status, answer = await exchange(client, head, [NOTE[5:10], NOTE[10:]])
    assert status == 200
    assert orjson.loads(answer)["result"]["data"] == {"by": "alice", "text": "written in pieces"}


@pytest.mark.parametrize("size", [LIMIT + 1, 1_000_000])
@pytest.mark.parametrize("pieces", [1, 3])
async def test_oversized_body_is_refused_on_either_path(
    client: TestClient, size: int, pieces: int
) -> None:
    """Just over the limit and whole (taken at once), or a megabyte (more than the parser
    buffers before the handler reads), in one write or three: 413 on both wires."""
    text = "x" * (size - len(b'{"text":""}'))
    payload = orjson.dumps({"text": text})
    assert len(payload) == size
    step = -(-size // pieces)
    chunks = [payload[i : i + step] for i in range(0, size, step)]
    for path in ("/rpc", "/trpc/notes.record"):
        status, answer = await exchange(
            client, post_head(path, size), chunks, pause=0.05 if pieces > 1 else 0
        )
        assert status == 413, path
        error = orjson.loads(answer)["error"]
        assert error["data"]["code"] == "PAYLOAD_TOO_LARGE", path


async def test_compressed_body_is_limited_after_decompression(client: TestClient) -> None:
    """aiohttp inflates a gzip body into the stream: a small one is answered, and one that
    inflates past the limit (a few hundred bytes on the wire) is refused on both wires."""
    small = gzip.compress(CALL)
    head = post_head("/rpc", len(small), "Content-Encoding: gzip")
    status, answer = await exchange(client, head, [small], pause=0)
    assert (status, orjson.loads(answer)["result"]) == (200, 19)
    bomb = gzip.compress(orjson.dumps({"text": "x" * (LIMIT * 64)}))
    assert len(bomb) < LIMIT // 4
    for path in ("/rpc", "/trpc/notes.record"):
        head = post_head(path, len(bomb), "Content-Encoding: gzip")
        status, answer = await exchange(client, head, [bomb], pause=0)
        assert status == 413, path
        assert orjson.loads(answer)["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE", path


async def test_arrived_tells_a_whole_body_from_one_still_arriving(aiohttp_client: Any) -> None:
    """``arrived`` itself, in a real aiohttp server: bytes when the body came with its
    headers, None while it is still coming (then ``read`` gets the rest), ``too_large``
    beyond the limit."""
    seen: list[Any] = []

    async def probe(request: web.Request) -> web.Response:
        try:
            got = body.arrived(request, 64)
        except RpcError as exc:
            seen.append(exc.code.value)
            return web.Response(text="refused")
        if got is None:
            got = await body.read(request, 64)
            seen.append(("read", got))
        else:
            seen.append(("arrived", got))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/probe", probe)
    client = await aiohttp_client(app)
    short = b'{"a":1}'
    await exchange(client, post_head("/probe", len(short)) + short.decode(), [])
    await exchange(client, post_head("/probe", len(short)) + short[:3].decode(), [short[3:]])
    big = b"y" * 65
    await exchange(client, post_head("/probe", len(big)) + big.decode(), [])
    assert seen == [("arrived", short), ("read", short), "PAYLOAD_TOO_LARGE"]
