"""``/metrics`` and ``/health*``, and ``install``: what observability adds to an app.

Who may read what:

- ``/health``, ``/health/live``, ``/health/ready``, ``/health/db``, ``/health/redis``: anyone
  (load balancers, orchestrators); no hosts, versions or error texts in them.
- ``/health/detailed``: anyone, unless ``READ_TOKENS_REQUIRED``: then an operator's Bearer
  token, and the answer carries hosts, versions and full error messages.
- ``/metrics``: anyone, unless ``METRICS_BASIC_AUTH`` (then basic auth with that user and
  password) or ``READ_TOKENS_REQUIRED`` (then an operator's Bearer token); with both, either
  credential opens it. Every comparison is constant-time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from server.appkeys import AUTH, SERVICES
from server.errors import RpcError
from server.observability import health
from server.observability.breaker_metrics import MERGE as BREAKER_MERGE
from server.observability.breaker_metrics import BreakerCollector
from server.observability.http_metrics import HttpMetrics
from server.observability.rpc_metrics import RpcMetrics
from server.services import Services

_NO_STORE = {"Cache-Control": "no-store"}


def install(app: web.Application, services: Services) -> RpcMetrics:
    """Add the HTTP response counter, the breaker collector, the routes and the ``--workers`` sync
    task to ``app``; returns the RPC observer for the router."""
    metrics = services.metrics
    http = HttpMetrics(metrics)
    rpc = RpcMetrics(metrics)
    metrics.add_collector(
        BreakerCollector(services.breakers), merge={"infrawatch_breaker_state": BREAKER_MERGE}
    )
    app.on_response_prepare.append(http.on_response_prepare)
    app.cleanup_ctx.append(metrics_sync_ctx)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/health/live", handle_live)
    app.router.add_get("/health/ready", handle_ready)
    app.router.add_get("/health/db", handle_db)
    app.router.add_get("/health/redis", handle_redis)
    app.router.add_get("/health/detailed", handle_detailed)
    return rpc


async def metrics_sync_ctx(app: web.Application) -> AsyncIterator[None]:
    """With ``--workers``, copy this worker's pulled figures to the shared files on an interval."""
    services = app[SERVICES]
    task = None
    if services.metrics.multiprocess:
        interval = services.settings.metrics_sync_interval
        task = asyncio.create_task(services.metrics.sync_forever(interval))
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- /metrics ---


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    settings = services.settings
    if not _may_scrape(request):
        scheme = "Basic" if settings.metrics_basic_auth is not None else "Bearer"
        return web.Response(
            status=401,
            text="credentials required\n",
            headers={"WWW-Authenticate": f'{scheme} realm="infrawatch metrics"'},
        )
    exposition = await services.metrics.expose(
        request.headers.get("Accept"),
        request.headers.get("Accept-Encoding"),
        refresh_timeout=settings.metrics_refresh_timeout,
    )
    headers = {
        "Content-Type": exposition.content_type,
        "Vary": "Accept, Accept-Encoding",
        **_NO_STORE,
    }
    if exposition.content_encoding:
        headers["Content-Encoding"] = exposition.content_encoding
    return web.Response(body=exposition.body, headers=headers)


def _may_scrape(request: web.Request) -> bool:
    settings = request.app[SERVICES].settings
    basic = settings.metrics_basic_auth
    if basic is None and not settings.read_tokens_required:
        return True
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    scheme = scheme.lower()
    if basic is not None and scheme == "basic":
        return basic_auth_matches(credentials.strip(), basic)
    if settings.read_tokens_required and scheme == "bearer" and credentials.strip():
        return request.app[AUTH].caller_for_token(credentials.strip()) is not None
    return False


def basic_auth_matches(credentials: str, expected: tuple[str, str]) -> bool:
    try:
        decoded = base64.b64decode(credentials.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return False
    user, sep, password = decoded.partition(b":")
    # Both halves compared every time (no short-circuit): timing tells nothing about which.
    user_ok = hmac.compare_digest(user, expected[0].encode())
    password_ok = hmac.compare_digest(password, expected[1].encode())
    return bool(sep) & user_ok & password_ok


# --- /health* ---


def _answer(report: health.HealthReport) -> web.Response:
    return web.Response(
        body=orjson.dumps(report.model_dump(mode="json")),
        status=report.http_status,
        content_type="application/json",
        headers=_NO_STORE,
    )


async def handle_health(request: web.Request) -> web.StreamResponse:
    return _answer(await health.report(request.app[SERVICES]))


async def handle_live(request: web.Request) -> web.StreamResponse:
    # Liveness: the process answers. Never a dependency: a database outage must not get
    # every instance restarted.
    return _answer(health.finish(request.app[SERVICES], "healthy", [], []))


async def handle_ready(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if services.shutting_down:
        return _answer(health.finish(services, "unhealthy", ["shutting down"], []))
    return _answer(await health.report(services, ["database"]))


async def handle_db(request: web.Request) -> web.StreamResponse:
    return _answer(await health.report(request.app[SERVICES], ["database"], scoped=True))


async def handle_redis(request: web.Request) -> web.StreamResponse:
    return _answer(await health.report(request.app[SERVICES], ["redis"], scoped=True))


async def handle_detailed(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    operators_only = services.settings.read_tokens_required
    if operators_only:
        refusal = _refuse_without_token(request)
        if refusal is not None:
            return refusal
    report = await health.report(services, show_details=operators_only, with_process=True)
    return _answer(report)


def _refuse_without_token(request: web.Request) -> web.Response | None:
    header = request.headers.get("Authorization")
    try:
        caller = request.app[AUTH].caller_for_header(header)
    except RpcError as exc:
        message = exc.message
    else:
        if caller.authenticated:
            return None
        message = "this endpoint needs an operator's Bearer token"
    return web.Response(
        body=orjson.dumps({"error": {"code": "UNAUTHORIZED", "message": message}}),
        status=401,
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="infrawatch"', **_NO_STORE},
    )
