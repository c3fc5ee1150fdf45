"""``RedisNodes``: one connection per Redis node (a server or a sentinel), to ask that node
about itself: INFO, CLUSTER INFO/NODES, SENTINEL ... .

``RedisClient`` talks to *the* Redis (the master, or the cluster as a whole) and hides which
node answers; health is a question to each node in turn, by address. These calls do not go
through the ``redis-cache`` breaker: a replica or a sentinel that is down is what the health
reading reports, not a failure of the cache's Redis, and counting it there would open the
cache's breaker while its master is fine. Each call is bounded instead, by the connect and
command timeouts of ``REDIS_CONNECT_TIMEOUT``/``REDIS_COMMAND_TIMEOUT`` and an overall
``asyncio.timeout``, with no retry: a node that does not answer now is reported so now.

Credentials: a node is reached with the user, password and TLS of ``REDIS_URL`` (every node of
a deployment shares them); sentinels as the Sentinel client reaches them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from server.config import RedisSettings
from server.datastores.redis import connection_errors
from server.errors import Unavailable

Address = tuple[str, int]
# Nodes a deployment may show (cluster primaries and replicas, sentinels): a bound on the
# clients kept, so a topology that churns cannot grow it without end.
MAX_NODES = 128


def address_text(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


class RedisNodes:
    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings
        self._clients: dict[Address, aioredis.Redis] = {}
        self._closed = False
        self._credentials: dict[str, Any] = {}
        if settings.url is not None and not settings.sentinel_hosts:
            found = parse_url(settings.url)
            self._credentials = {
                k: v
                for k, v in found.items()
                if k in ("username", "password", "connection_class") and v is not None
            }
        # connect, then one command: a node that answers neither in time is down
        self._bound = (settings.connect_timeout_ms + settings.command_timeout_ms) / 1000

    def seed(self) -> Address | None:
        """The node ``REDIS_URL`` names (standalone, or the Cluster's seed)."""
        if self._settings.url is None or self._settings.sentinel_hosts:
            return None
        found = parse_url(self._settings.url)
        return str(found.get("host", "localhost")), int(found.get("port", 6379))

    def sentinels(self) -> list[Address]:
        return [(h.host, h.port) for h in self._settings.sentinel_hosts]

    async def command(self, address: Address, *args: Any) -> Any:
        """One command on the node at ``address``; ``Unavailable`` (with the node's address and
        the reason) when it cannot be reached or refuses the command."""
        client = self._client(address)
        try:
            async with asyncio.timeout(self._bound):
                return await client.execute_command(*args)  # type: ignore[no-untyped-call]
        except TimeoutError as exc:
            raise Unavailable(f"redis node: no answer within {self._bound:g}s") from exc
        except connection_errors() as exc:
            # redis-py's text repeats the host and port: operators only (``detail``); the
            # node's address is in the answer beside the error anyway.
            raise Unavailable(
                f"redis node: {type(exc).__name__}", detail=f"{type(exc).__name__}: {exc}"
            ) from exc

    async def info(self, address: Address) -> dict[str, Any]:
        """``INFO`` (default sections) of one node, parsed by redis-py."""
        reply: dict[str, Any] = await self.command(address, "INFO")
        return reply

    async def info_stats(self, address: Address) -> dict[str, Any]:
        """``INFO stats`` of one node: its counters (hits, misses, evictions...)."""
        reply: dict[str, Any] = await self.command(address, "INFO", "stats")
        return reply

    async def ckquorum(self, address: Address, master_name: str) -> tuple[bool, str]:
        """``SENTINEL CKQUORUM`` asked of one sentinel: (quorum reachable, its words). A
        NOQUORUM reply is an answer, not a failure; ``Unavailable`` when it does not answer."""
        try:
            # two words: redis-py's callback for "SENTINEL CKQUORUM" would drop the message
            reply = await self.command(address, "SENTINEL", "CKQUORUM", master_name)
        except Unavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, ResponseError):
                return False, str(cause)
            raise
        return True, str(reply)

    def _client(self, address: Address) -> aioredis.Redis:
        client = self._clients.get(address)
        if client is None:
            if self._closed:
                # A call still running as the app stops: a client made now would never be
                # closed (its connection left to the garbage collector, on a stopped loop).
                raise Unavailable("redis node: the service is stopping")
            if len(self._clients) >= MAX_NODES:
                raise Unavailable(f"redis node: more than {MAX_NODES} nodes known")
            settings = self._settings
            client = aioredis.Redis(
                host=address[0],
                port=address[1],
                socket_connect_timeout=settings.connect_timeout_ms / 1000,
                socket_timeout=settings.command_timeout_ms / 1000,
                retry=Retry(NoBackoff(), 0),
                max_connections=2,
                decode_responses=True,
                **self._credentials,
            )
            self._clients[address] = client
        return client

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
