"""The JSON error of the plain HTTP routes (``/health/detailed``, ...): the code name and
message of an ``RpcError`` under ``error``, with the table's HTTP status."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from server.errors import RpcError


def error_response(exc: RpcError, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"code": exc.code.value, "message": exc.message}}),
        status=exc.info.http_status,
        content_type="application/json",
        headers=headers,
    )
