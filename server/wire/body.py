"""A request's body for the wire adapters, with our size limit and our error.

``request.read()`` is a coroutine that awaits the payload stream's ``readany()`` until it
returns nothing (two turns for a body that has all arrived) and copies the body twice on the
way (bytearray, then bytes): about 4 % of a cached hit's instructions
(``bench/bench_instructions.py``). An RPC request's body nearly always comes in the same read
as its headers, so the parser has fed the whole of it, and the end, before the handler runs:
``arrived`` takes it then without a coroutine; ``read`` is aiohttp's own path for the rest
(a body still arriving, ``Expect: 100-continue``).
"""

from __future__ import annotations

from aiohttp import web

from server.errors import ErrorCode, RpcError


def too_large(max_body_bytes: int) -> RpcError:
    return RpcError(ErrorCode.PAYLOAD_TOO_LARGE, f"The body exceeds {max_body_bytes} bytes")


def arrived(request: web.BaseRequest, max_body_bytes: int) -> bytes | None:
    """The whole body if the parser has already fed all of it, else None (then ``read``).
    ``too_large`` beyond ``max_body_bytes``, as aiohttp's ``client_max_size`` would."""
    content = request.content
    if not content.is_eof():
        return None
    body = content.read_nowait()
    if len(body) > max_body_bytes:
        raise too_large(max_body_bytes)
    return body


async def read(request: web.BaseRequest, max_body_bytes: int) -> bytes:
    """The body, awaited as it comes (when ``arrived`` had none); ``too_large`` beyond
    ``max_body_bytes``, the app's ``client_max_size``, which aiohttp enforces while reading."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(max_body_bytes) from None
