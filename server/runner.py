"""Serving the app: aiohttp's ``AppRunner``, except that a request its HTTP parser refuses gets a
JSON error instead of a plain-text page.

A batched tRPC GET carries every input in its URL. aiohttp checks the request line and each
header against ``max_line_size``/``max_field_size`` (``create_app`` raises both to
``MAX_URL_BYTES``) while parsing, before any handler or middleware runs, and a longer one is
answered by ``RequestHandler.handle_error`` with ``400`` and text. That method is the only hook
on this path (aiohttp 3.x ``web_protocol.py``: ``data_received`` turns the parser's
``HttpProcessingError`` into an error message that ``_make_error_handler`` hands to
``handle_error``), and ``web.Server`` makes plain ``RequestHandler``s, so the runner here builds
a ``Server`` that makes ours. Everything else is aiohttp's own.

The body is an error both wires read as their own (``wire/http.py`` ``either_wire_error``).
Too long is
``PAYLOAD_TOO_LARGE`` (413): tRPC's table has no 414 or 431, a client must read
``data.httpStatus`` equal to the HTTP status, and the remedy is the same as for a large body:
send less per request (httpBatchLink's ``maxURLLength`` splits batches). Any other parse error
is ``BAD_REQUEST`` (400), as aiohttp itself says.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from server.errors import ErrorCode, RpcError
from server.wire.http import either_wire_error
from server.wire.trpc import BASE_HEADERS

log = logging.getLogger(__name__)

# run_app's default; AppRunner alone would keep idle connections for an hour.
KEEPALIVE_TIMEOUT = 75.0


def parse_error(exc: HttpProcessingError) -> RpcError:
    if isinstance(exc, LineTooLong):
        limit = exc.args[1]  # LineTooLong(line, limit, actual_size)
        return RpcError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The request line or a header is longer than {limit} bytes (MAX_URL_BYTES): "
            "send fewer or smaller inputs per request",
        )
    return RpcError(ErrorCode.BAD_REQUEST, f"Malformed HTTP request: {exc.message}")


class JsonErrorRequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        # The client's mistake, not ours: no traceback in the log.
        log.info("refused an unparseable request from %s: %s", request.remote, exc.message)
        error = parse_error(exc)
        # aiohttp hands this method a stand-in request (path "/"): which wire was meant is
        # unknown, so the body is an error both read as their own.
        resp = either_wire_error(error, headers={"Vary": BASE_HEADERS["Vary"]})
        # What is left of the request cannot be parsed: the connection must not be reused.
        resp.force_close()
        return resp


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        # web.Server.__call__ does the same with RequestHandler.
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # starts the app, as AppRunner does
        return _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool,
    shutdown_timeout: float,
    on_listening: Callable[[], Any],
) -> None:
    """``web.run_app`` with our runner: serve until SIGINT or SIGTERM, then stop gracefully.

    The stop is run_app's: on_shutdown, in-flight requests get ``shutdown_timeout`` to finish,
    then the cleanup contexts close their resources in reverse order.
    """
    asyncio.run(_serve(app, host, port, reuse_port, shutdown_timeout, on_listening))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    reuse_port: bool,
    shutdown_timeout: float,
    on_listening: Callable[[], Any],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before start-up, as run_app does: a signal while pools connect still stops cleanly.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = AppRunner(
        app,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        on_listening()
        await stop.wait()
    finally:
        await runner.cleanup()
