"""``RedisClient``: the one Redis client of an app, standalone, Sentinel or Cluster.

Which mode comes from ``Settings``: ``REDIS_SENTINEL_HOSTS`` (+ ``REDIS_MASTER_NAME``) is
Sentinel, ``REDIS_CLUSTER_ENABLED`` with ``REDIS_URL`` naming a seed node is Cluster, and
``REDIS_URL`` alone is a standalone server. Every connection has the connect and command
timeouts of the settings, retries connection errors and timeouts ``REDIS_RETRIES`` times with
exponential backoff and jitter, and checks a connection idle for ``REDIS_HEALTH_CHECK_INTERVAL``
seconds with PING before using it. At most ``REDIS_MAX_CONNECTIONS`` calls run at once; the
others wait their turn.

Sentinel: the connection pool asks the sentinels for the master's address whenever it opens a
connection, but connections already open stay with the old master, which may go on accepting
writes for many seconds after a failover before Sentinel demotes it. So ``watch_master()`` (a
task the app runs in Sentinel mode) listens for Sentinel's ``+switch-master`` announcement, and
asks for the master's address every ``REDIS_HEALTH_CHECK_INTERVAL`` seconds as well; when the
address changes it closes every pooled connection (commands in flight fail and are retried,
reconnecting to the new master) and tells its listeners (the cache's tracker) to reconnect.
Asking the sentinels does not go through the breaker: the breaker guards the master, and a
master that dies is what trips it, so the calls that find the new one must not wait for it to
half-open (with the default 30 s reset, writes once resumed 31 s after the master was killed).
The breaker is closed when the master moves: what it counted failing is gone.

Calling Redis
-------------
Every call goes through the ``redis-cache`` breaker and comes out as our own error:

    value = await client.execute(client.raw.get, key)        # any coroutine function
    value = await client.command("HGETALL", key)             # a raw command
    async for keys in client.scan_pages(match="bull:*"):     # SCAN, page by page
        ...

``execute`` raises ``server.errors.Unavailable`` when Redis fails (connection, timeout,
error reply), when the breaker rejects the call (``CircuitOpen``) or when it runs past the
breaker's call timeout (``CallTimeout``). ``client.raw`` is the redis-py client
(``redis.asyncio.Redis`` or ``RedisCluster``) and ``client.breaker`` the breaker, for code that
needs a pipeline: ``await client.execute(pipeline_function)`` where the function builds and
runs the pipeline. Never await ``client.raw`` outside ``execute``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError

from server.config import RedisSettings
from server.datastores.redis_lookups import OwnLookups
from server.errors import Unavailable
from server.resilience.breaker import Breaker
from server.resilience.models import BreakerState

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

Mode = Literal["standalone", "sentinel", "cluster"]
MasterListener = Callable[[], Awaitable[None]]
BREAKER = "redis-cache"
SWITCH_MASTER = "+switch-master"  # Sentinel's pub/sub channel announcing a failover
# The backoff of redis-py's retries: 50 ms doubling, at most 1 s, with full jitter.
BACKOFF_BASE = 0.05
BACKOFF_CAP = 1.0


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a Redis call raises when Redis, not our code, is at fault."""
    return (RedisError, OSError)


class RedisClient:
    def __init__(self, settings: RedisSettings, breaker: Breaker) -> None:
        if not settings.configured:
            raise ValueError("RedisClient needs REDIS_URL or REDIS_SENTINEL_HOSTS")
        self.settings = settings
        self.breaker = breaker
        self.mode: Mode = "standalone"
        self._sentinel: Sentinel | None = None
        self._tracking_pool: ConnectionPool | None = None
        # Calls beyond the pool's size wait here rather than fail in redis-py with "Too many
        # connections", which would count against the breaker as if Redis were down.
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._closed = False
        self.master_address: tuple[str, int] | None = None  # Sentinel mode, once known
        self.master_changes = 0
        # Key lookups our own reads cause, for monitoring.redisHealth to leave out.
        self.own_lookups = OwnLookups()
        self._master_listeners: list[MasterListener] = []
        options = self._options(settings)
        self.raw: aioredis.Redis | RedisCluster
        if settings.sentinel_hosts:
            self.mode = "sentinel"
            hosts = [(h.host, h.port) for h in settings.sentinel_hosts]
            self._sentinel = Sentinel(hosts, sentinel_kwargs=options, **options)  # type: ignore[no-untyped-call]
            self.raw = self._sentinel.master_for(settings.master_name)
        elif settings.cluster_enabled:
            self.mode = "cluster"
            assert settings.url is not None
            self.raw = RedisCluster.from_url(settings.url, **options)
        else:
            assert settings.url is not None
            self.raw = aioredis.Redis.from_url(settings.url, **options)

    @staticmethod
    def _options(settings: RedisSettings) -> dict[str, Any]:
        return {
            "socket_connect_timeout": settings.connect_timeout_ms / 1000,
            "socket_timeout": settings.command_timeout_ms / 1000,
            "health_check_interval": settings.health_check_interval,
            "max_connections": settings.max_connections,
            "retry": Retry(
                ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE),
                settings.retries,
            ),
        }

    async def close(self) -> None:
        self._closed = True
        await self._close_clients()

    async def _close_clients(self) -> None:
        await self.raw.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    # --- calls through the breaker ---

    async def execute(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await fn(*args, **kwargs)`` through the ``redis-cache`` breaker; Redis's own errors
        come out as ``Unavailable`` (see the module docstring)."""
        if self._closed:
            # redis-py would open a new connection for a call still running as the app stops,
            # and nobody would close it.
            raise Unavailable(f"redis ({self.mode}): the service is stopping")
        try:
            async with self._slots:
                return await self.breaker.call(fn, *args, **kwargs)
        except connection_errors() as exc:
            raise self.unavailable(exc) from exc
        except Exception as exc:
            if not self._closed:
                raise
            # close() tore the connection down under redis-py while its retry was reconnecting
            # for this call (its writer gone mid-handshake: AttributeError, about 1 run in 15
            # in tests/test_redis_outage.py): the service is stopping, not failing.
            raise Unavailable(f"redis ({self.mode}): the service is stopping") from exc
        finally:
            if self._closed:
                # This call was in flight when close() disconnected its connection, and
                # redis-py's retry connected it again: close what it reopened.
                await self._close_clients()

    def unavailable(self, exc: BaseException) -> Unavailable:
        """Redis's own failure (one of ``connection_errors()``) as ours: this datastore's one
        mapping, used by ``execute`` and by the tracking connection, which lives outside it."""
        # redis-py's text names the host and port: operators only (``detail``).
        return Unavailable(
            f"redis ({self.mode}): {type(exc).__name__}", detail=f"{type(exc).__name__}: {exc}"
        )

    async def command(self, *args: Any) -> Any:
        """One raw command, e.g. ``await client.command("LLEN", "rq:queue:default")``."""
        return await self.execute(self.raw.execute_command, *args)

    async def ping(self) -> float:
        """Round trip of PING, in seconds (``Unavailable`` when Redis cannot be reached)."""
        started = time.perf_counter()
        await self.execute(self.raw.ping)
        return time.perf_counter() - started

    async def info(self) -> dict[str, Any]:
        """``INFO`` as a dict; in Cluster mode, per primary: ``{"host:port": {...}}``."""
        if isinstance(self.raw, RedisCluster):
            result: dict[str, Any] = await self.execute(
                self.raw.info, target_nodes=RedisCluster.PRIMARIES
            )
            return result
        single: dict[str, Any] = await self.execute(self.raw.info)
        return single

    async def scan_pages(
        self, match: str, count: int = 1000, type_: str | None = None
    ) -> AsyncIterator[list[bytes]]:
        """SCAN the whole keyspace (every primary in Cluster mode), one page per iteration.

        Each SCAN is its own call through the breaker, so a long scan never holds a
        connection or a breaker slot for longer than one page, and never blocks Redis as
        KEYS would. Pages may be empty; a key may appear twice (SCAN's own guarantee).
        """
        if isinstance(self.raw, RedisCluster):
            for node in self.raw.get_primaries():
                async for page in self._scan_node(match, count, type_, node):
                    yield page
            return
        async for page in self._scan_node(match, count, type_, None):
            yield page

    async def _scan_node(
        self, match: str, count: int, type_: str | None, node: Any
    ) -> AsyncIterator[list[bytes]]:
        cursor = 0
        while True:
            if node is None:
                cursor, keys = await self.execute(
                    self.raw.scan, cursor, match=match, count=count, _type=type_
                )
            else:
                # RedisCluster.scan answers {node: cursor}, keys for the one node asked.
                cursors: Any
                cursors, keys = await self.execute(
                    self.raw.scan,
                    cursor,
                    match=match,
                    count=count,
                    _type=type_,
                    target_nodes=node,
                )
                cursor = next(iter(cursors.values()))
            yield [k.encode() if isinstance(k, str) else k for k in keys]
            if cursor == 0:
                return

    # --- Sentinel: following the master ---

    def add_master_listener(self, listener: MasterListener) -> None:
        """``await listener()`` after each failover ``watch_master`` has followed."""
        self._master_listeners.append(listener)

    async def watch_master(self) -> None:
        """Sentinel mode: follow the master across failovers until cancelled (see the module
        docstring). Rotates to the next sentinel when one cannot be reached."""
        if self._sentinel is None:
            raise ValueError("watch_master needs Sentinel mode")
        interval = self.settings.health_check_interval or 15.0
        sentinels = self._sentinel.sentinels
        failures = 0
        while True:
            pubsub = sentinels[failures % len(sentinels)].pubsub()
            try:
                await self._ask_sentinels(pubsub.subscribe, SWITCH_MASTER)
                await self.check_master()
                failures = 0
                while True:
                    # Any announcement, or none for a whole interval: ask again.
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=interval)
                    await self.check_master()
            except (Unavailable, RedisError, OSError) as exc:
                failures += 1
                log.warning("redis sentinel watch: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(min(BACKOFF_CAP * failures, interval))
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def check_master(self) -> tuple[str, int]:
        """Ask Sentinel where the master is; follow it if it moved."""
        assert self._sentinel is not None
        host, port = await self._ask_sentinels(
            self._sentinel.discover_master, self.settings.master_name
        )
        address = (str(host), int(port))
        previous, self.master_address = self.master_address, address
        if previous is not None and previous != address:
            self.master_changes += 1
            log.warning("redis sentinel: master moved from %s:%s to %s:%s", *previous, *address)
            if self.breaker.state in (BreakerState.OPEN, BreakerState.HALF_OPEN):
                # Tripped by the old master; an operator's hold (forced open) is left alone.
                self.breaker.reset(f"redis master moved to {address[0]}:{address[1]}")
            # In-use connections too: a command in flight on the old master fails, and redis-py
            # retries it on a new connection, which asks Sentinel for the new master.
            assert isinstance(self.raw, aioredis.Redis)
            await self.raw.connection_pool.disconnect(inuse_connections=True)
            for listener in self._master_listeners:
                await listener()
        return address

    async def _ask_sentinels(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A call to the sentinels, outside the breaker (see the module docstring), bounded by
        one connect and one command timeout per sentinel, as redis-py tries them in turn."""
        settings = self.settings
        per_sentinel = (settings.connect_timeout_ms + settings.command_timeout_ms) / 1000
        try:
            async with asyncio.timeout(per_sentinel * len(settings.sentinel_hosts)):
                return await fn(*args, **kwargs)
        except connection_errors() as exc:  # TimeoutError is an OSError
            raise self.unavailable(exc) from exc

    # --- the tracking connection of the cache's hot tier ---

    def tracking_connection(self, name: str) -> AbstractConnection | None:
        """A new, unconnected RESP3 connection to the master, outside the pool, for a
        long-lived ``CLIENT TRACKING`` listener (``redis_tracking.TrackingConnection``); ``None``
        in Cluster mode (tracking is per node there). Its ``connect()`` is not retried: the
        listener's owner has its own backoff.

        In Sentinel mode the master is looked up when it connects, so a reconnect after a
        failover reaches the new master.
        """
        options = {
            **self._options(self.settings),
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            "protocol": 3,
            "client_name": name,
        }
        if self.mode == "cluster":
            return None
        if self._tracking_pool is None:
            # Only a connection factory: it never holds the connections it makes. Kept for the
            # client's lifetime, as a Sentinel connection refers to its pool by weak reference.
            if self._sentinel is not None:
                self._tracking_pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
                    self.settings.master_name, self._sentinel, **options
                )
            else:
                assert self.settings.url is not None
                self._tracking_pool = ConnectionPool.from_url(self.settings.url, **options)
        conn: AbstractConnection = self._tracking_pool.make_connection()  # type: ignore[no-untyped-call]
        return conn
