"""asyncpg pools for the primary (and, with the PostgreSQL issue, the replicas)."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from server.config import Settings
from server.rpc.errors import Unavailable


class PostgresCluster:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.primary: asyncpg.Pool | None = None

    @property
    def timeout(self) -> float:
        return self._settings.database_timeout_ms / 1000

    async def start(self) -> None:
        # min_size=0: start-up never waits on (or fails for) a database that is down.
        self.primary = await asyncpg.create_pool(
            self._settings.database_url,
            min_size=0,
            max_size=self._settings.database_connection_limit,
            timeout=self.timeout,
            command_timeout=self.timeout,
            statement_cache_size=self._settings.database_statement_cache_size,
        )

    async def close(self) -> None:
        if self.primary is not None:
            try:
                await asyncio.wait_for(self.primary.close(), self._settings.shutdown_timeout)
            except TimeoutError:
                self.primary.terminate()

    async def ping(self) -> float:
        """Round trip of ``SELECT 1`` on the primary, in seconds."""
        if self.primary is None:
            raise Unavailable("no primary database is configured")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await self.primary.fetchval("SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise Unavailable(f"primary database unreachable: {type(exc).__name__}: {exc}") from exc
        return time.perf_counter() - started
