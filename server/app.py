"""``create_app(settings)``: a pure factory. No I/O here; resources start in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from server import background
from server.alerts import Evaluator, FiringCollector, build_book, default_rules
from server.appkeys import AUTH, ROUTER, SERVICES, SETTINGS
from server.auth import Authenticator
from server.cache.metrics import register_cache_metrics
from server.cache.middleware import Warmer, cached
from server.collectors import pg_metrics
from server.collectors.partitions import PartitionWatch
from server.collectors.queue_metrics import watch_queues
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import BREAKER as REDIS_BREAKER
from server.datastores.redis import RedisClient
from server.observability import routes as observability
from server.procedures import catalogue
from server.rpc.jsonrpc import rpc_handler
from server.rpc.openrpc import discover_procedure
from server.rpc.router import Procedure, Router
from server.rpc.trpc import handle_trpc
from server.services import Services
from web import setup_dashboard


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings = services.settings
    if settings.database_url is None:
        yield
        return
    cluster = PostgresCluster(settings, services.breakers, services.metrics.registry)
    await cluster.start()  # opens the pools without connecting: a database down is no failure
    services.postgres = cluster
    services.partitions = PartitionWatch(cluster.primary, settings)
    pg_metrics.register(services.metrics, cluster, services.partitions)
    try:
        yield
    finally:
        services.postgres = None
        services.partitions = None
        await cluster.close()


async def replica_health_ctx(app: web.Application) -> AsyncIterator[None]:
    """Checks every replica at once and then every REPLICA_HEALTH_INTERVAL seconds."""
    services = app[SERVICES]
    cluster = services.postgres
    if cluster is None or not cluster.replicas:
        yield
        return
    task = asyncio.create_task(
        cluster.watch_replicas(services.settings.replica_health_interval),
        name="replica-health",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
            await background.stop(watch)
        await client.close()


async def alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    """The alert store (migrated now if the database answers) and the evaluator task."""
    services = app[SERVICES]
    settings = services.settings
    book = build_book(services)
    await book.start()
    evaluator = Evaluator(
        default_rules(settings),
        book,
        app[ROUTER],
        services,
        interval=settings.alert_evaluation_interval,
        timeout=settings.alert_evaluation_timeout,
        section_timeout=settings.section_timeout,
    )
    services.alerts, services.alert_evaluator = book, evaluator
    services.metrics.add_collector(FiringCollector(book))
    task = (
        asyncio.create_task(evaluator.run(), name="alert-evaluator")
        if settings.alert_evaluation_enabled
        else None
    )
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Rounds queued during an outage: one bounded last try to write them.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(settings.alert_evaluation_timeout):
                await book.flush()


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
            await asyncio.gather(*(background.stop(task) for task in tasks))
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
    watch_queues(services)
    app[SETTINGS] = settings
    app[SERVICES] = services
    app[AUTH] = Authenticator(settings.auth_tokens)
    # /metrics, /health*, the HTTP middleware; the router reports each call to rpc_metrics.
    rpc_metrics = observability.install(app, services)
    procs = list(catalogue() if procedures is None else procedures)
    router = app[ROUTER] = Router(
        [*procs, discover_procedure(procs)],
        # Outermost, alone: a cache hit is answered by its synchronous peek (see Router).
        middleware=[cached(services.cache)],
        timeout=settings.rpc_timeout,
        queries_need_caller=settings.read_tokens_required,
        observer=rpc_metrics.observe,
    )
    services.router = router
    register_cache_metrics(services)
    warmer = Warmer(router, services, settings.cache_warm_interval)
    # alerts_ctx last: its evaluator stops before the pools and the cache it reads close.
    app.cleanup_ctx.extend(
        [postgres_ctx, replica_health_ctx, redis_ctx, cache_ctx(warmer), alerts_ctx]
    )
    app.on_shutdown.append(_mark_shutting_down)
    app.router.add_post("/rpc", rpc_handler(router, services, app[AUTH]))
    # Every method: v11 answers HEAD, refuses the others with its own JSON errors.
    app.router.add_route("*", "/trpc/{path:.*}", handle_trpc)
    setup_dashboard(app)
    return app
