"""``create_app(settings)``: a pure factory. No I/O here; resources start in cleanup contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from server.appkeys import AUTH, ROUTER, SERVICES, SETTINGS
from server.auth import Authenticator
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import RedisClient
from server.observability import routes as observability
from server.procedures import catalogue
from server.rpc.jsonrpc import handle_rpc
from server.rpc.openrpc import discover_procedure
from server.rpc.router import Procedure, Router
from server.services import Services


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    if services.settings.database_url is None:
        yield
        return
    cluster = PostgresCluster(services.settings)
    await cluster.start()
    services.postgres = cluster
    try:
        yield
    finally:
        services.postgres = None
        await cluster.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    if services.settings.redis_url is None:
        yield
        return
    client = RedisClient(services.settings)
    services.redis = client
    try:
        yield
    finally:
        services.redis = None
        await client.close()


async def _mark_shutting_down(app: web.Application) -> None:
    app[SERVICES].shutting_down = True


def create_app(
    settings: Settings, *, procedures: Sequence[Procedure] | None = None
) -> web.Application:
    """The whole service; ``procedures`` replaces the catalogue (tests of the wire adapters)."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # Batched tRPC GETs put every input in the URL: allow request lines up to our own limit.
        handler_args={
            "max_line_size": settings.max_url_bytes,
            "max_field_size": settings.max_url_bytes,
        },
    )
    services = Services(settings)
    app[SETTINGS] = settings
    app[SERVICES] = services
    app[AUTH] = Authenticator(settings.auth_tokens)
    # /metrics, /health*, the HTTP middleware; the router reports each call to rpc_metrics.
    rpc_metrics = observability.install(app, services)
    procs = list(catalogue() if procedures is None else procedures)
    app[ROUTER] = Router(
        [*procs, discover_procedure(procs)],
        timeout=settings.rpc_timeout,
        queries_need_caller=settings.read_tokens_required,
        observer=rpc_metrics.observe,
    )
    app.cleanup_ctx.extend([postgres_ctx, redis_ctx])
    app.on_shutdown.append(_mark_shutting_down)
    app.router.add_post("/rpc", handle_rpc)
    return app
