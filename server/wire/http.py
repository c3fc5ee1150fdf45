"""The JSON error of the plain HTTP routes (``/health/detailed``, ...): the code name and
message of an ``RpcError`` under ``error``, with the table's HTTP status."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from server.errors import RpcError
from server.wire.trpc import error_shape


def error_response(exc: RpcError, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"code": exc.code.value, "message": exc.message}}),
        status=exc.info.http_status,
        content_type="application/json",
        headers=headers,
    )


def either_wire_error(exc: RpcError, headers: Mapping[str, str] | None = None) -> web.Response:
    """A refusal before the request's wire is known (an unparseable request, a foreign Host):
    tRPC's error shape (message, code, data) is also a JSON-RPC error object, so a JSON-RPC
    response with ``id: null`` is read by both clients as their own error."""
    body = {"jsonrpc": "2.0", "error": error_shape(exc), "id": None}
    return web.Response(
        body=orjson.dumps(body),
        status=exc.info.http_status,
        content_type="application/json",
        headers=headers,
    )
