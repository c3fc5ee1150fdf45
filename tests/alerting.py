"""What the alert tests share: starting an app whose evaluator has finished its first round,
JSON-RPC calls over HTTP, and polling with a deadline."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.alerts import AlertBook, Evaluator
from server.app import create_app
from server.appkeys import ALERTS, BREAKERS, EVALUATOR
from server.config import Settings
from server.resilience.registry import BreakerRegistry
from tests.waiting import eventually

BOB_NAME = "bob"
BOB_TOKEN = "bob-token-0123456789abcdef"
DEADLINE = 30.0


async def start_app(aiohttp_client: Any, settings: Settings) -> TestClient:
    """A running app; returns once the evaluator's start-up round is done, so that a test's
    own ``run_once`` is the only round in flight (its settings' interval keeps it so). An
    instance that another one's evaluation stands by for counts as started."""
    client: TestClient = await aiohttp_client(create_app(settings))
    await eventually(
        lambda: (
            evaluator(client).rounds >= 1
            or evaluator(client).failed_rounds >= 1
            or evaluator(client).standing_by
        ),
        what="the start-up evaluation round",
        timeout=DEADLINE,
    )
    return client


def app_of(client: TestClient) -> web.Application:
    app = client.app
    assert app is not None
    return app


def evaluator(client: TestClient) -> Evaluator:
    return app_of(client)[EVALUATOR]


def book(client: TestClient) -> AlertBook:
    return app_of(client)[ALERTS]


def breakers(client: TestClient) -> BreakerRegistry:
    return app_of(client)[BREAKERS]


async def call(
    client: TestClient, method: str, params: Any = None, token: str | None = None
) -> dict[str, Any]:
    """One JSON-RPC call; the whole response object (``result`` or ``error``)."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.post("/rpc", data=orjson.dumps(body), headers=headers)
    payload: dict[str, Any] = orjson.loads(await resp.read())
    payload["http_status"] = resp.status
    return payload


def result(payload: dict[str, Any]) -> Any:
    assert "error" not in payload, payload
    return payload["result"]


def error_code(payload: dict[str, Any]) -> str:
    assert "error" in payload, payload
    code: str = payload["error"]["data"]["code"]
    return code
