"""``create_app(settings)``: a pure factory. No I/O here; resources start in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from server.appkeys import AUTH, ROUTER, SERVICES, SETTINGS
from server.auth import Authenticator
from server.cache.metrics import register_cache_metrics
from server.cache.middleware import Warmer, cached
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import BREAKER as REDIS_BREAKER
from server.datastores.redis import RedisClient
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
    if not services.settings.redis_configured:
        yield
        return
    # No I/O here: redis-py connects on first use, so a Redis that is down delays nothing.
    client = RedisClient(services.settings, services.breakers.get(REDIS_BREAKER))
    services.redis = client
    watch = None
    if client.mode == "sentinel":
        watch = asyncio.create_task(client.watch_master(), name="redis-sentinel-watch")
    try:
        yield
    finally:
        services.redis = None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        await client.close()


def cache_ctx(warmer: Warmer) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cache's background tasks: the hot tier's tracker and the warmer."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES]
        tracker = services.cache.attach(services.redis)
        tasks = []
        if tracker is not None:
            tasks.append(asyncio.create_task(tracker.run(), name="cache-tracking"))
        if warmer.procedures and services.cache.enabled:
            tasks.append(asyncio.create_task(warmer.run(), name="cache-warmer"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            services.cache.detach()

    return run


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
    procs = list(catalogue() if procedures is None else procedures)
    router = app[ROUTER] = Router(
        [*procs, discover_procedure(procs)],
        middleware=[cached(services.cache)],
        timeout=settings.rpc_timeout,
        queries_need_caller=settings.read_tokens_required,
    )
    register_cache_metrics(services)
    warmer = Warmer(router, services, settings.cache_warm_interval)
    app.cleanup_ctx.extend([postgres_ctx, redis_ctx, cache_ctx(warmer)])
    app.on_shutdown.append(_mark_shutting_down)
    app.router.add_post("/rpc", handle_rpc)
    return app
