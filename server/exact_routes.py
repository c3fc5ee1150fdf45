"""The RPC endpoints' requests, handed to their handlers without aiohttp's router.

For every request aiohttp's ``Application._handle`` resolves the route (a coroutine per resource
tried, the URL built and decoded), builds and freezes a match info, looks for an ``Expect``
header and awaits the handler in one more coroutine; the response then sends the app's
``on_response_prepare`` signal (two more coroutines and one per receiver). On a cached RPC call
the routing cost about 16,000 instructions a request and the signal about 6,000, of some 236,000
in all (``bench/bench_instructions.py``, docs/performance.md), and more of the clock than that
share (measured: docs/performance.md).

The two RPC routes are known in advance, so ``dispatcher`` answers them directly: a ``POST /rpc``
and a tRPC call whose path is a plain procedure name (or a batch of them) go to their handler with
a match info that says what the router would have said (the same route, the procedure path).
Anything else (another route, a path the router must decode or normalize, ``Expect:
100-continue``, an app with middlewares) goes to ``Application._handle`` as before.

The match info belongs to no app, so aiohttp sends no response signal for these answers. They
are the JSON API's, and the app's one receiver (``web/headers.py``) leaves JSON and bodiless
answers alone; a receiver meant for every answer would need these routes' handlers to do its
work too (tests/test_exact_routes.py fails when one appears). It also means ``request.app`` is not
there: the RPC handlers get their parts bound when they are made (``rpc_handler``,
``trpc_handler``), never from the app per request. The access-log hook reads the route, which
is there, so ``/metrics`` labels these requests as the router would.

aiohttp has no public hook between parsing and routing: the dispatcher replaces the server's
request handler (``server/runner.py``) and sets ``request._match_info`` as ``_handle`` does.
tests/test_exact_routes.py compares both paths request by request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import AbstractRoute, UrlMappingMatchInfo

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

RPC_PATH = "/rpc"
TRPC_PREFIX = "/trpc/"
TRPC_TEMPLATE = "/trpc/{path}"
# A procedure path (``monitoring.cacheStats``) or a batch of them (``a,b``): nothing the
# router would decode (``%``) or normalize (a ``.``/``..`` segment, a ``/``), so the match
# is the text itself.
_PLAIN_PROCEDURES = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,-]*").fullmatch


def _route(app: web.Application, template: str, method: str) -> AbstractRoute | None:
    for resource in app.router.resources():
        if resource.canonical == template:
            for route in resource:
                if route.method in (method, hdrs.METH_ANY):
                    return route
    return None


def _frozen(match: dict[str, str], route: AbstractRoute) -> UrlMappingMatchInfo:
    info = UrlMappingMatchInfo(match, route)
    info.freeze()  # with no app: no response signal (the module's docstring)
    return info


def dispatcher(app: web.Application, handle: Handler) -> Handler:
    """``handle`` (the app's own request handler) with the RPC routes answered directly.
    ``handle`` alone when the app has middlewares (they must see every request) or lacks
    either route."""
    rpc = _route(app, RPC_PATH, hdrs.METH_POST)
    trpc = _route(app, TRPC_TEMPLATE, hdrs.METH_ANY)
    if app.middlewares or rpc is None or trpc is None:
        return handle
    # /rpc's match is empty: one frozen match info serves every request.
    rpc_info = _frozen({}, rpc)
    rpc_handler = rpc.handler
    trpc_handler = trpc.handler

    def dispatch(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        if hdrs.EXPECT in request.headers:  # the router's expect handler answers 100 Continue
            return handle(request)
        path = request.raw_path
        if path == RPC_PATH:
            if request.method != hdrs.METH_POST:
                return handle(request)  # 405 with its Allow header, as the router makes it
            request._match_info = rpc_info  # type: ignore[attr-defined]
            return rpc_handler(request)  # type: ignore[arg-type]
        if path.startswith(TRPC_PREFIX):
            procedures = path[len(TRPC_PREFIX) :].partition("?")[0]
            if _PLAIN_PROCEDURES(procedures):
                request._match_info = _frozen({"path": procedures}, trpc)  # type: ignore[attr-defined]
                return trpc_handler(request)  # type: ignore[arg-type]
        return handle(request)

    return dispatch
