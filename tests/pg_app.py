"""Helpers of the PostgreSQL tests: the real app started by aiohttp's test client, procedure
calls through its router, and polling a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient

from server.app import create_app
from server.appkeys import ROUTER, SERVICES
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.rpc.router import Caller, Context
from server.services import Services

T = TypeVar("T")
ClientFactory = Callable[..., Awaitable[TestClient]]


class PgApp:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    @property
    def services(self) -> Services:
        return self.client.app[SERVICES]

    @property
    def cluster(self) -> PostgresCluster:
        cluster = self.services.postgres
        assert cluster is not None
        return cluster

    async def call(self, path: str, inp: Any = None) -> Any:
        """The procedure through the app's router, as the dashboard calls it."""
        ctx = Context(services=self.services, caller=Caller("tester"))
        return await self.client.app[ROUTER].call(path, inp, ctx)


async def start_app(aiohttp_client: ClientFactory, settings: Settings) -> PgApp:
    """The whole app with its cleanup contexts running; stopped by the fixture's teardown."""
    return PgApp(await aiohttp_client(create_app(settings)))


def database_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    what: str,
    within: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Call ``probe`` until ``accept`` takes its answer; AssertionError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {within:g}s; last answer: {value!r}")
        await asyncio.sleep(interval)
