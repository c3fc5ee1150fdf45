"""``PgBouncerAdmin``: PgBouncer's admin console (``SHOW POOLS``, ``STATS``...), read-only.

The console speaks only the simple query protocol, so asyncpg (always extended protocol) cannot
talk to it; psycopg 3's ``AsyncClientCursor`` sends plain ``Query`` messages. Autocommit,
because the console has no transactions. One short connection per read, every read through the
``pgbouncer-admin`` breaker and bounded by the timeout as a whole.
"""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from typing import Any, LiteralString

import psycopg

from server.config import mask_secrets, mask_url
from server.errors import Unavailable
from server.resilience.breaker import Breaker

# The console commands we send: a fixed set, never text from a caller.
QUERIES = {
    "POOLS": "SHOW POOLS",
    "STATS": "SHOW STATS",
    "DATABASES": "SHOW DATABASES",
    "LISTS": "SHOW LISTS",
    "VERSION": "SHOW VERSION",
}

Rows = list[dict[str, Any]]


class PgBouncerAdmin:
    def __init__(self, url: str, timeout: float, breaker: Breaker) -> None:
        self.url = url
        self.timeout = timeout
        self.breaker = breaker

    @property
    def display_url(self) -> str:
        return mask_url(self.url)

    async def show(self, *what: str) -> dict[str, Rows]:
        """``{"POOLS": [row, ...], ...}`` for each ``SHOW <what>``, read on one connection."""
        unknown = set(what) - set(QUERIES)
        if unknown:
            raise ValueError(f"not a console command we send: {sorted(unknown)}")
        return await self.breaker.call(self._show, what)

    async def _show(self, what: tuple[str, ...]) -> dict[str, Rows]:
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            async with asyncio.timeout(self.timeout):
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    cursor_factory=psycopg.AsyncClientCursor,
                    # libpq counts whole seconds; asyncio.timeout above is the real bound.
                    connect_timeout=max(2, math.ceil(self.timeout)),
                )
                return {command: await _rows(conn, QUERIES[command]) for command in what}
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise Unavailable(
                f"pgbouncer admin console unreachable: {type(exc).__name__}",
                detail=f"{type(exc).__name__}: {mask_secrets(str(exc))}",
            ) from exc
        finally:
            if conn is not None:
                await conn.close()


async def _rows(conn: psycopg.AsyncConnection[Any], query: LiteralString) -> Rows:
    cursor = await conn.execute(query)
    if cursor.description is None:
        return []
    columns = [column.name for column in cursor.description]
    return [
        {name: _plain(value) for name, value in zip(columns, row, strict=True)}
        for row in await cursor.fetchall()
    ]


def _plain(value: Any) -> Any:
    # SHOW STATS answers numeric columns: whole numbers as int, anything else as float.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
