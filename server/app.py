"""``create_app(settings)``: a pure factory. No I/O here; resources start in cleanup contexts.

Assembly, in one place: each resource is built over its settings and the resources it needs,
published under its own ``web.AppKey`` (``appkeys.py``), and started and stopped by its own
cleanup context; the procedure catalogue is built over the resources, the router over the
catalogue, and the wire adapters, probes and dashboard over the router.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

from server import appkeys, background
from server.alerts import (
    AlertBook,
    AlertEvent,
    Evaluator,
    FiringCollector,
    build_book,
    default_rules,
)
from server.alerts.election import Election, standalone_status
from server.auth import Authenticator
from server.cache.cache import Cache
from server.cache.metrics import CacheCollector
from server.cache.middleware import CacheMiddleware, Warmer
from server.collectors import pg_metrics, watched_pg_metrics
from server.collectors.partitions import PartitionWatch
from server.collectors.queue_metrics import export_queue_depths
from server.collectors.redis_health import RedisHealthCollector
from server.collectors.redis_health_metrics import export_redis_health
from server.collectors.redis_queues import QueueCollector
from server.collectors.top_queries import TopQueries
from server.config import AlertSettings, Settings
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import BREAKER as REDIS_BREAKER
from server.datastores.redis import RedisClient
from server.datastores.redis_gate import RedisGate
from server.datastores.redis_nodes import RedisNodes
from server.delivery import (
    DeliveryCollector,
    MemoryOutbox,
    Sender,
    Session,
    build_outbox,
    build_sender,
    targets_of,
)
from server.observability import routes as observability
from server.observability.health import Health, database_check, redis_check
from server.observability.metrics import Metrics
from server.procedures import catalogue
from server.resilience.registry import BreakerRegistry
from server.rpc.cost import Admission
from server.rpc.openrpc import discover_procedure
from server.rpc.router import Procedure, Router
from server.throttle import FailureThrottle
from server.wire.hosts import AllowedHosts
from server.wire.jsonrpc import rpc_handler
from server.wire.trpc import trpc_handler
from web import setup_dashboard

Context = Callable[[web.Application], AsyncIterator[None]]


def postgres_ctx(cluster: PostgresCluster) -> Context:
    async def run(app: web.Application) -> AsyncIterator[None]:
        await cluster.start()  # opens the pools without connecting: a database down is no failure
        try:
            yield
        finally:
            await cluster.close()

    return run


def replica_health_ctx(cluster: PostgresCluster, interval: float) -> Context:
    """Checks every replica at once and then every REPLICA_HEALTH_INTERVAL seconds."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(cluster.watch_replicas(interval), name="replica-health")
        try:
            yield
        finally:
            await background.stop(task)

    return run


def redis_ctx(client: RedisClient) -> Context:
    async def run(app: web.Application) -> AsyncIterator[None]:
        # No I/O to start: redis-py connects on first use, so a Redis that is down delays nothing.
        watch = None
        if client.mode == "sentinel":
            watch = asyncio.create_task(client.watch_master(), name="redis-sentinel-watch")
        try:
            yield
        finally:
            if watch is not None:
                await background.stop(watch)
            await client.close()

    return run


def redis_nodes_ctx(nodes: RedisNodes) -> Context:
    async def run(app: web.Application) -> AsyncIterator[None]:
        # No I/O to start: a node is connected to when first asked.
        try:
            yield
        finally:
            await nodes.close()

    return run


def cache_ctx(cache: Cache, redis: RedisClient | None, warmer: Warmer) -> Context:
    """The cache's background tasks: the hot tier's tracker and the warmer."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        tracker = cache.attach(redis)
        tasks = []
        if tracker is not None:
            tasks.append(asyncio.create_task(tracker.run(), name="cache-tracking"))
        if warmer.procedures and cache.enabled:
            tasks.append(asyncio.create_task(warmer.run(), name="cache-warmer"))
        try:
            yield
        finally:
            await asyncio.gather(*(background.stop(task) for task in tasks))
            cache.detach()

    return run


def alerts_ctx(
    book: AlertBook, evaluator: Evaluator, settings: AlertSettings, election: Election | None
) -> Context:
    """The alert store (migrated now if the database answers), the election among instances
    (its first check before the first round) and the evaluator task."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        await book.start()
        campaign = None
        if election is not None:
            await election.check()
            campaign = asyncio.create_task(election.run(), name="alert-election")
        task = (
            asyncio.create_task(evaluator.run(), name="alert-evaluator")
            if settings.evaluation_enabled
            else None
        )
        try:
            yield
        finally:
            if task is not None:
                await background.stop(task)
            if campaign is not None and election is not None:
                await background.stop(campaign)
                await election.close()
            # Rounds queued during an outage: one bounded last try to write them.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(settings.evaluation_timeout):
                    await book.flush()

    return run


def delivery_ctx(sender: Sender, session: Session, release_within: float) -> Context:
    """The sender task and its HTTP session (only when targets are configured); at the end,
    what it had claimed and not finished goes back to the outbox."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        session.open()
        task = asyncio.create_task(sender.run(), name="alert-delivery")
        try:
            yield
        finally:
            await background.stop(task)
            await sender.release(release_within)
            await session.close()

    return run


# What a test may serve instead of the catalogue: its own procedures (the wire adapters'
# tests), or an edit of the real catalogue, built over this app's own resources.
CatalogueEdit = Callable[[list[Procedure]], Sequence[Procedure]]


def create_app(
    settings: Settings, *, procedures: Sequence[Procedure] | CatalogueEdit | None = None
) -> web.Application:
    """The whole service; ``procedures`` replaces or edits the catalogue (tests)."""
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        # Batched tRPC GETs put every input in the URL: allow request lines up to our own limit.
        handler_args={
            "max_line_size": settings.server.max_url_bytes,
            "max_field_size": settings.server.max_url_bytes,
        },
    )
    # Resources: built here without I/O, each started by its cleanup context below.
    metrics = Metrics()
    breakers = BreakerRegistry.from_settings(settings.breakers)
    auth = Authenticator(
        settings.auth.tokens,
        FailureThrottle(settings.auth.failure_limit, settings.auth.failure_window),
        settings.auth.trusted_proxies,
    )
    postgres = (
        PostgresCluster(
            settings.database,
            breakers,
            metrics.registry,
            close_timeout=settings.server.shutdown_timeout,
        )
        if settings.database.url
        else None
    )
    partitions = (
        PartitionWatch(
            postgres.primary,
            settings.partitions,
            # A count must end before the statement's own timeout and its breaker's.
            call_timeout_ms=min(settings.database.timeout_ms, settings.breakers.call_timeout_ms),
        )
        if postgres is not None
        else None
    )
    # One per app: the window of database.topQueries lives in it (/metrics reads it too).
    top_queries = TopQueries.over(postgres, settings.database) if postgres is not None else None
    redis = (
        RedisClient(settings.redis, breakers.get(REDIS_BREAKER))
        if settings.redis.configured
        else None
    )
    cache = Cache(settings.cache)
    queues = QueueCollector(RedisGate(redis), settings.queues)
    # Alert delivery: the outbox (PostgreSQL, or memory), the targets' clients, the sender.
    targets = targets_of(settings.delivery)
    outbox = build_outbox(postgres, targets)
    session = Session()
    sender = build_sender(
        settings.delivery,
        outbox,
        session,
        sent=metrics.counter(
            "alert_deliveries_sent_total", "Alert events delivered, by target.", ["target"]
        ),
        failed=metrics.counter(
            "alert_deliveries_failed_total",
            "Failed alert delivery attempts (each retried unless refused), by target.",
            ["target"],
        ),
    )

    def to_memory_outbox(events: list[AlertEvent]) -> None:
        if isinstance(outbox, MemoryOutbox):
            outbox.add(events)
            sender.wake()

    instance_id = settings.delivery.instance_id
    book = build_book(
        postgres,
        settings.alerts,
        targets=[t.name for t in targets],
        label=instance_id,
        on_events=to_memory_outbox,
    )
    election = (
        Election(
            settings.delivery.election_database_url or settings.database.url,
            instance_id,
            check_interval=settings.alerts.evaluation_interval / 4,
            timeout=settings.database.timeout_ms / 1000,
        )
        if settings.database.url and settings.alerts.evaluation_enabled
        else None
    )
    evaluation = (
        election.status
        if election is not None
        else lambda: standalone_status(instance_id, settings.alerts.evaluation_enabled)
    )
    redis_nodes = RedisNodes(settings.redis) if redis is not None else None
    redis_health = RedisHealthCollector(
        redis,
        redis_nodes,
        master_name=settings.redis.master_name,
        window=settings.redis_watch.health_window,
    )
    health = Health(
        [database_check(postgres, settings.database.url), redis_check(redis, settings.redis.url)],
        timeout=settings.health.check_timeout,
        store_status=book.status,
        delivery_status=sender.snapshot,
        evaluator_status=evaluation,
    )

    # Their figures for /metrics, pulled at scrape time.
    if postgres is not None:
        pg_metrics.register(metrics, postgres, partitions)
    if postgres is not None and top_queries is not None:
        watched_pg_metrics.register(metrics, postgres, top_queries)
    export_queue_depths(metrics, queues)
    if redis is not None:
        export_redis_health(metrics, redis_health)
    cache_figures = CacheCollector(cache, redis)
    metrics.add_collector(cache_figures)
    metrics.add_refresh("redis", cache_figures.refresh)
    metrics.add_collector(FiringCollector(book))
    metrics.add_collector(DeliveryCollector(sender))
    if targets:
        metrics.add_refresh("alert-delivery", sender.refresh)
    # /metrics, /health*, the HTTP response counter; the router reports each call to rpc_metrics.
    rpc_metrics = observability.install(
        app,
        metrics=metrics,
        breakers=breakers,
        health=health,
        auth=auth,
        metrics_basic_auth=settings.metrics.basic_auth,
        read_tokens_required=settings.auth.read_tokens_required,
        metrics_refresh_timeout=settings.metrics.refresh_timeout,
        metrics_sync_interval=settings.metrics.sync_interval,
        metrics_refresh_ttl=settings.rpc.coalesce_ttl,
    )

    if procedures is None or callable(procedures):
        real = catalogue(
            settings,
            health_checks=health,
            breaker_registry=breakers,
            procedure_cache=cache,
            redis=redis,
            queue_collector=queues,
            postgres=postgres,
            partitions=partitions,
            book=book,
            sender=sender,
            evaluation=evaluation,
            top_queries=top_queries,
            redis_health=redis_health,
        )
        procedures = real if procedures is None else procedures(real)
    admission = Admission(
        cheap=settings.rpc.cheap_concurrency,
        expensive=settings.rpc.expensive_concurrency,
        operator=settings.rpc.operator_concurrency,
        queue_wait=settings.rpc.queue_wait,
        coalesce_ttl=settings.rpc.coalesce_ttl,
    )
    router = Router(
        [*procedures, discover_procedure(procedures)],
        # Outermost: a cache hit is answered by its synchronous peek (see Router), before cost
        # control, which bounds and coalesces what does run (server/rpc/cost.py).
        middleware=[CacheMiddleware(cache), admission],
        timeout=settings.rpc.timeout,
        queries_need_caller=settings.auth.read_tokens_required,
        observer=rpc_metrics.observe,
    )
    evaluator = Evaluator(
        default_rules(
            settings.alerts,
            redis_cache=redis is not None and cache.enabled,
            slow_query_ms=settings.database.slow_query_ms,
            redis_watch=settings.redis_watch,
        ),
        book,
        router,
        interval=settings.alerts.evaluation_interval,
        timeout=settings.alerts.evaluation_timeout,
        section_timeout=settings.rpc.section_timeout,
        gate=(lambda: election.leading) if election is not None else None,
    )

    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = metrics
    app[appkeys.BREAKERS] = breakers
    app[appkeys.AUTH] = auth
    app[appkeys.POSTGRES] = postgres
    app[appkeys.PARTITIONS] = partitions
    app[appkeys.REDIS] = redis
    app[appkeys.CACHE] = cache
    app[appkeys.QUEUES] = queues
    app[appkeys.ALERTS] = book
    app[appkeys.HEALTH] = health
    app[appkeys.ROUTER] = router
    app[appkeys.ADMISSION] = admission
    app[appkeys.EVALUATOR] = evaluator
    app[appkeys.DELIVERY] = sender
    app[appkeys.ELECTION] = election

    # Started in this order, stopped in reverse: alerts last, so its evaluator stops before the
    # pools and the cache it reads close.
    contexts: list[Context] = []
    if postgres is not None:
        contexts.append(postgres_ctx(postgres))
        if postgres.replicas:
            interval = settings.database.replica_health_interval
            contexts.append(replica_health_ctx(postgres, interval))
    if redis is not None:
        contexts.append(redis_ctx(redis))
    if redis_nodes is not None:
        contexts.append(redis_nodes_ctx(redis_nodes))
    contexts.append(cache_ctx(cache, redis, Warmer(router, settings.cache.warm_interval)))
    contexts.append(alerts_ctx(book, evaluator, settings.alerts, election))
    if targets:  # after the store: the outbox's tables are migrated by then
        contexts.append(delivery_ctx(sender, session, settings.delivery.timeout))
    app.cleanup_ctx.extend(contexts)

    async def mark_shutting_down(app: web.Application) -> None:
        health.shutting_down = True

    app.on_shutdown.append(mark_shutting_down)
    allowed_hosts = AllowedHosts(settings.server.allowed_hosts)
    if not allowed_hosts.any:  # unset: no middleware on the hot path at all
        app.middlewares.append(allowed_hosts.middleware())
    limits = {
        "max_body_bytes": settings.server.max_body_bytes,
        "max_batch_size": settings.rpc.max_batch_size,
    }
    app.router.add_post("/rpc", rpc_handler(router, auth, **limits))
    # Every method: v11 answers HEAD, refuses the others with its own JSON errors.
    # [\s\S]*, not .*: a path holding %0A must reach the adapter (NOT_FOUND in JSON), not miss
    # the route (aiohttp's plain-text 404).
    app.router.add_route("*", "/trpc/{path:[\\s\\S]*}", trpc_handler(router, auth, **limits))
    setup_dashboard(app)
    return app
