"""The Redis client of one app (standalone here; Sentinel and Cluster come with the cache issue)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.config import Settings
from server.rpc.errors import Unavailable


class RedisClient:
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.raw = aioredis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.redis_connect_timeout_ms / 1000,
            socket_timeout=settings.redis_command_timeout_ms / 1000,
            health_check_interval=settings.redis_health_check_interval,
        )

    async def close(self) -> None:
        await self.raw.aclose()

    async def ping(self) -> float:
        """Round trip of PING, in seconds."""
        started = time.perf_counter()
        try:
            await self.raw.ping()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"redis unreachable: {type(exc).__name__}: {exc}") from exc
        return time.perf_counter() - started
