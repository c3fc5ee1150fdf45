"""``/metrics`` and ``/health*``, and ``install``: what observability adds to an app.

Who may read what:

- ``/health``, ``/health/live``, ``/health/ready``, ``/health/db``, ``/health/redis``: anyone
  (load balancers, orchestrators); no hosts, versions or error texts in them.
- ``/health/detailed``: anyone, unless ``READ_TOKENS_REQUIRED``: then an operator's Bearer
  token. Only an operator's token gets hosts, versions and error texts (the alert store's
  ``last_error`` included); anyone else gets the figures and the errors' kinds.
- ``/metrics``: anyone, unless ``METRICS_BASIC_AUTH`` (then basic auth with that user and
  password) or ``READ_TOKENS_REQUIRED`` (then an operator's Bearer token); with both, either
  credential opens it. Every comparison is constant-time, and wrong credentials count against
  the client's address (``AUTH_FAILURE_LIMIT``: then 429 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web

from server import background
from server.auth import Authenticator
from server.errors import ErrorCode, RpcError, Throttled
from server.observability.breaker_metrics import MERGE as BREAKER_MERGE
from server.observability.breaker_metrics import BreakerCollector
from server.observability.exposition import Exposition
from server.observability.health import Health, HealthReport
from server.observability.http_metrics import ACCESS_LOG_CLASS, HttpMetrics
from server.observability.metrics import Metrics
from server.observability.rpc_metrics import RpcMetrics
from server.resilience.registry import BreakerRegistry
from server.rpc.cost import Coalescer
from server.wire.http import error_response

_NO_STORE = {"Cache-Control": "no-store"}


def install(
    app: web.Application,
    *,
    metrics: Metrics,
    breakers: BreakerRegistry,
    health: Health,
    auth: Authenticator,
    metrics_basic_auth: tuple[str, str] | None,
    read_tokens_required: bool,
    metrics_refresh_timeout: float,
    metrics_sync_interval: float,
    metrics_refresh_ttl: float = 0.0,
) -> RpcMetrics:
    """Add the HTTP families' access-log class, the breaker collector, the routes and the
    ``--workers`` sync task to ``app``; returns the RPC observer for the router."""
    # Counted and timed by aiohttp when the runner passes this class (server/runner.py).
    app[ACCESS_LOG_CLASS] = HttpMetrics(metrics).access_log_class()
    rpc = RpcMetrics(metrics)
    metrics.add_collector(
        BreakerCollector(breakers), merge={"infrawatch_breaker_state": BREAKER_MERGE}
    )
    app.cleanup_ctx.append(metrics_sync_ctx(metrics, metrics_sync_interval))
    scrape = Scrape(
        metrics,
        auth,
        metrics_basic_auth,
        read_tokens_required,
        metrics_refresh_timeout,
        metrics_refresh_ttl,
    )
    probes = Probes(health, auth, read_tokens_required)
    app.router.add_get("/metrics", scrape.handle)
    app.router.add_get("/health", probes.health)
    app.router.add_get("/health/live", probes.live)
    app.router.add_get("/health/ready", probes.ready)
    app.router.add_get("/health/db", probes.db)
    app.router.add_get("/health/redis", probes.redis)
    app.router.add_get("/health/detailed", probes.detailed)
    return rpc


def metrics_sync_ctx(
    metrics: Metrics, interval: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """With ``--workers``, copy this worker's pulled figures to the shared files on an interval."""

    async def sync(app: web.Application) -> AsyncIterator[None]:
        task = None
        if metrics.multiprocess:
            task = asyncio.create_task(metrics.sync_forever(interval), name="metrics-sync")
        yield
        if task is not None:
            await background.stop(task)

    return sync


class Scrape:
    """``/metrics``."""

    def __init__(
        self,
        metrics: Metrics,
        auth: Authenticator,
        basic_auth: tuple[str, str] | None,
        read_tokens_required: bool,
        refresh_timeout: float,
        refresh_ttl: float = 0.0,
    ) -> None:
        self.metrics = metrics
        self.auth = auth
        self.basic_auth = basic_auth
        self.read_tokens_required = read_tokens_required
        self.refresh_timeout = refresh_timeout
        self._refreshes: Coalescer[None] = Coalescer(refresh_ttl)
        self._expositions: Coalescer[Exposition] = Coalescer(0.0)

    async def _refresh(self) -> None:
        await self.metrics.refresh(self.refresh_timeout)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        client = self.auth.client_of(request)
        if "Authorization" in request.headers:
            wait = self.auth.throttle.retry_after(client) if self.auth.throttle else None
            if wait is not None:
                return web.Response(
                    status=429,
                    text="too many failed attempts\n",
                    headers={"Retry-After": str(wait)},
                )
        if not self._may_scrape(request):
            if "Authorization" in request.headers:
                self.auth.failed(client)
            scheme = "Basic" if self.basic_auth is not None else "Bearer"
            # Plain text, as Prometheus shows a failed scrape's body.
            return web.Response(
                status=401,
                text="credentials required\n",
                headers={"WWW-Authenticate": f'{scheme} realm="infrawatch metrics"'},
            )
        accept = request.headers.get("Accept")
        encoding = request.headers.get("Accept-Encoding")
        # A flood of scrapes: the awaited figures (Redis INFO, SHOW POOLS) are read once per
        # RPC_COALESCE_TTL, and concurrent scrapes of one kind share one render. A scrape that
        # follows another still renders anew: pushed counters are always current.
        await self._refreshes.run("refresh", self._refresh)
        exposition = await self._expositions.run(
            f"{accept}\n{encoding}",
            lambda: self.metrics.expose(accept, encoding, refresh_timeout=None),
        )
        headers = {
            "Content-Type": exposition.content_type,
            "Vary": "Accept, Accept-Encoding",
            **_NO_STORE,
        }
        if exposition.content_encoding:
            headers["Content-Encoding"] = exposition.content_encoding
        return web.Response(body=exposition.body, headers=headers)

    def _may_scrape(self, request: web.Request) -> bool:
        basic = self.basic_auth
        if basic is None and not self.read_tokens_required:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        scheme = scheme.lower()
        if basic is not None and scheme == "basic":
            return basic_auth_matches(credentials.strip(), basic)
        if self.read_tokens_required and scheme == "bearer" and credentials.strip():
            return self.auth.caller_for_token(credentials.strip()) is not None
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


def _answer(report: HealthReport) -> web.Response:
    return web.Response(
        body=orjson.dumps(report.model_dump(mode="json")),
        status=report.http_status,
        content_type="application/json",
        headers=_NO_STORE,
    )


class Probes:
    """``/health*``."""

    def __init__(self, health: Health, auth: Authenticator, read_tokens_required: bool) -> None:
        self._health = health
        self._auth = auth
        self._operators_only = read_tokens_required

    async def health(self, request: web.Request) -> web.StreamResponse:
        return _answer(await self._health.report())

    async def live(self, request: web.Request) -> web.StreamResponse:
        # Liveness: the process answers. Never a dependency: a database outage must not get
        # every instance restarted.
        return _answer(self._health.finish("healthy", [], []))

    async def ready(self, request: web.Request) -> web.StreamResponse:
        if self._health.shutting_down:
            return _answer(self._health.finish("unhealthy", ["shutting down"], []))
        return _answer(await self._health.report(["database"]))

    async def db(self, request: web.Request) -> web.StreamResponse:
        return _answer(await self._health.report(["database"], scoped=True))

    async def redis(self, request: web.Request) -> web.StreamResponse:
        return _answer(await self._health.report(["redis"], scoped=True))

    async def detailed(self, request: web.Request) -> web.StreamResponse:
        try:
            caller = self._auth.caller_for_header(
                request.headers.get("Authorization"), self._auth.client_of(request)
            )
        except RpcError as exc:
            return _refusal(exc)
        if self._operators_only and not caller.authenticated:
            return _refusal(
                RpcError(ErrorCode.UNAUTHORIZED, "this endpoint needs an operator's Bearer token")
            )
        operator = caller.authenticated
        report = await self._health.report(show_details=operator, with_process=True)
        if not operator and report.alert_store is not None:
            # The store's last error names the database's host and user: operators only.
            store = report.alert_store.model_copy(update={"last_error": None})
            report = report.model_copy(update={"alert_store": store})
        return _answer(report)


def _refusal(exc: RpcError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="infrawatch"', **_NO_STORE}
    if isinstance(exc, Throttled):
        headers["Retry-After"] = exc.retry_after_header
    return error_response(exc, headers=headers)
