"""Helpers of the PostgreSQL tests: the real app started by aiohttp's test client, procedure
calls through its router, and polling a condition with a deadline."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.appkeys import BREAKERS, METRICS, POSTGRES, ROUTER
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.observability.metrics import Metrics
from server.resilience.registry import BreakerRegistry
from server.rpc.router import Caller, Context

AppFactory = Callable[[Settings], Awaitable["PgApp"]]


class PgApp:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    @property
    def app(self) -> web.Application:
        app = self.client.app
        assert app is not None
        return app

    @property
    def cluster(self) -> PostgresCluster:
        cluster = self.app[POSTGRES]
        assert cluster is not None
        return cluster

    @property
    def breakers(self) -> BreakerRegistry:
        return self.app[BREAKERS]

    @property
    def metrics(self) -> Metrics:
        return self.app[METRICS]

    async def call(self, path: str, inp: Any = None) -> Any:
        """The procedure through the app's router, as the dashboard calls it."""
        return await self.app[ROUTER].call(path, inp, Context(caller=Caller("tester")))


class Apps:
    """Apps started for one test (``await apps.start(settings)``), all stopped when the block
    ends. The ``make_app`` fixture (``tests/conftest.py``) wraps it and asks for ``pg_dsn``
    first, so that the apps (and their pools) stop before the test database is dropped under
    them."""

    def __init__(self) -> None:
        self._clients: list[TestClient] = []

    async def start(self, settings: Settings) -> PgApp:
        # These tests count the statements their own calls make (the alert evaluator's
        # background reads would add to them) and read figures right after changing them (a
        # cached answer would hide the change). The cached procedures' policies are tested
        # with the cache on in tests/test_cached_procedures.py.
        # For the same reason, no micro-cache of expensive reads (tests/test_cost.py has it).
        settings = dataclasses.replace(
            settings, alert_evaluation_enabled=False, cache_enabled=False, rpc_coalesce_ttl=0.0
        )
        client: TestClient = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        self._clients.append(client)
        return PgApp(client)

    async def __aenter__(self) -> Apps:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in reversed(self._clients):
            await client.close()


def database_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# A test that ends a session on the server and uses it at once runs this many rounds, until the
# driver's reply it is about shows up: what asyncpg says depends on how far the server's FATAL
# message and the socket's close got, so each round waits a different 0-4 ms first.
ROUNDS_OF_TERMINATION = 200


def termination_pause(round_: int) -> float:
    return (round_ % 20) * 0.0002
