"""Serving the app: aiohttp's ``AppRunner`` on uvloop when installed, with our own signal
handling (``serve``: a drain before the listener closes, a second signal exits at once),
aiohttp's access-log hook timing each request (``infrawatch_http_request_duration_seconds``),
and a request its HTTP parser refuses answered with a JSON error instead of a plain-text page.

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
import os
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler

from server import exact_routes
from server.errors import ErrorCode, RpcError
from server.observability.http_metrics import ACCESS_LOG_CLASS
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


# The ``Server`` header of every answer. aiohttp's default names its version and Python's
# (``Python/3.11 aiohttp/3.14.5``): a scanner's first finding, and a help to an attacker
# choosing exploits, and of no use to a client.
SERVER_HEADER = "infrawatch"


def hide_versions() -> None:
    """Every response this process serves says ``Server: infrawatch``.

    aiohttp sets the header in ``StreamResponse._prepare_headers`` with
    ``headers.setdefault(SERVER, SERVER_SOFTWARE)``, reading its module's global on each
    response: setting that global costs nothing per request, and it reaches every answer,
    aiohttp's own 404 and 405 and the RPC routes' answers that no signal sees
    (``exact_routes``). tests/test_server_header.py fails if aiohttp stops reading it.
    """
    web_response.SERVER_SOFTWARE = SERVER_HEADER  # type: ignore[attr-defined]


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparseable requests in JSON, whose RPC
    requests skip aiohttp's router (``server/exact_routes.py``), and whose answers do not name
    the versions of Python and aiohttp (``hide_versions``)."""

    async def _make_server(self) -> web.Server:
        hide_versions()
        server = await super()._make_server()  # starts the app, as AppRunner does
        return _Server(
            exact_routes.dispatcher(self.app, server.request_handler),
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
    drain_seconds: float = 0.0,
    on_drain: Callable[[], Any] = lambda: None,
) -> None:
    """Serve until SIGINT or SIGTERM, then drain and stop gracefully.

    ``web.run_app`` closes the listener first and runs ``on_shutdown`` afterwards, so a readiness
    probe never sees the instance going: it sees a refused connection while a load balancer
    still routes here. The stop here, in order:

    1. ``on_drain()`` (``/health/ready`` turns 503), then ``drain_seconds`` during which every
       request is still served, on new connections and kept-alive ones alike;
    2. the listener closes, idle connections close, in-flight requests get
       ``shutdown_timeout`` to finish (the drain's end cancels nothing);
    3. the cleanup contexts stop background work and close resources in reverse order (the
       alert book's queued rounds get their last flush there).

    A second signal at any point exits at once, with the shell's status for it (128 + n).
    """
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(
            _serve(
                app, host, port, reuse_port, shutdown_timeout, on_listening, drain_seconds, on_drain
            )
        )


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (a Linux dependency), else asyncio's own.

    uvloop runs the transports, the HTTP server's I/O and the timers in C (libuv):
    ``docs/performance.md`` measures what it gives a cached call.
    """
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _exit_now(signum: int) -> None:
    log.warning("second signal (%s): exiting at once", signal.Signals(signum).name)
    logging.shutdown()
    # Nothing more may run: not the drain, not the cleanup an operator gave up waiting for.
    os._exit(128 + signum)


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    reuse_port: bool,
    shutdown_timeout: float,
    on_listening: Callable[[], Any],
    drain_seconds: float,
    on_drain: Callable[[], Any],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            _exit_now(signum)
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    # Before start-up, as run_app does: a signal while pools connect still stops cleanly.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    # The access-log hook is how aiohttp hands out each request's duration: the app's class
    # records it for infrawatch_http_request_duration_seconds and writes no log line.
    access_log_class = app.get(ACCESS_LOG_CLASS)
    runner = AppRunner(
        app,
        access_log=None if access_log_class is None else log,
        access_log_class=access_log_class or AccessLogger,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        if stop.is_set():
            return  # stopped while starting: never listened, nothing to drain
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        on_listening()
        await stop.wait()
        on_drain()
        if drain_seconds > 0:
            log.info("draining for %ss: /health/ready answers 503", drain_seconds)
            await asyncio.sleep(drain_seconds)
    finally:
        # Closes the listener, then on_shutdown, in-flight requests, the cleanup contexts.
        closing = loop.time()
        await runner.cleanup()
        # The last line of a clean stop: an operator reading the log knows it was not killed.
        log.info(
            "stopped: listener closed, requests and background work done in %.1fs",
            loop.time() - closing,
        )
