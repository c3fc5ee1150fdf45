"""The application's side of the watched-PostgreSQL tests: its own role, its own connections.

infrawatch connects as ``postgres`` with ``application_name=infrawatch``; the load here comes
from ``APP_ROLE`` with ``application_name=APP_NAME``, as a real application's would, so that
what the tests see is what infrawatch reports about somebody else.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

APP_ROLE = "shop_app"
APP_NAME = "shop"

_CREATE_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shop_app') THEN
        CREATE ROLE shop_app LOGIN;
    END IF;
END
$$;
"""


async def prepare(dsn: str, *, statements: bool = True) -> None:
    """The application role on the server of ``dsn``; in its database, a table ``items`` the
    role may use and (``statements``) the pg_stat_statements extension."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(_CREATE_ROLE)
        await conn.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text)")
        await conn.execute(f"GRANT ALL ON items TO {APP_ROLE}")
        if statements:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await conn.close()


def app_dsn(dsn: str) -> str:
    """``dsn`` with the application's role in place of ``postgres``."""
    return dsn.replace("//postgres@", f"//{APP_ROLE}@", 1)


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    return await asyncpg.connect(
        dsn, timeout=10, server_settings={"application_name": APP_NAME}, **kwargs
    )


@contextlib.asynccontextmanager
async def connections(dsn: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """A list the test fills with the application's connections; all closed at the end."""
    held: list[asyncpg.Connection] = []
    try:
        yield held
    finally:
        for conn in held:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
