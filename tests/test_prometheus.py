"""A real Prometheus (Debian's ``prometheus``) scrapes the running service on loopback."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.appkeys import BREAKERS
from server.config import Settings
from tests.conftest import OPERATOR_TOKEN
from tests.served import started_as_served
from tests.stack.ports import free_port
from tests.waiting import until_accepted

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

FAMILIES = (
    "infrawatch_http_requests_total",
    "infrawatch_rpc_calls_total",
    "infrawatch_rpc_call_duration_seconds_count",
    "infrawatch_rpc_errors_total",
    "infrawatch_breaker_state",
    "infrawatch_breaker_failures_total",
    "infrawatch_breaker_rejections_total",
    "infrawatch_breaker_timeouts_total",
    "process_cpu_seconds_total",
    "python_info",
)


class Prometheus:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    async def api(self, session: aiohttp.ClientSession, path: str, **params: str) -> Any:
        async with session.get(self.url + path, params=params) as resp:
            body = await resp.json()
        assert body["status"] == "success", body
        return body["data"]


@pytest.fixture
async def service(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> TestClient:
    # A real TCP server on 127.0.0.1 (TestServer binds a free loopback port).
    app = create_app(make_settings(read_tokens_required=True))
    client: TestClient = await aiohttp_client(await started_as_served(app))
    return client


@pytest.fixture
async def prometheus(service: TestClient, tmp_path: Path) -> AsyncIterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "the prometheus package is not installed"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: infrawatch\n"
        "    authorization:\n"
        f"      credentials: {OPERATOR_TOKEN}\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{service.server.port}']\n"
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Prometheus(proc, f"http://127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


async def test_prometheus_scrapes_the_service(service: TestClient, prometheus: Prometheus) -> None:
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    call = {"jsonrpc": "2.0", "method": "monitoring.unifiedHealth", "id": 1}
    for _ in range(5):
        assert (await service.post("/rpc", json=call, headers=auth)).status == 200
    await service.post("/rpc", json={**call, "method": "no.such"}, headers=auth)
    service.app[BREAKERS].get("database-query")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def first_target() -> dict[str, Any]:
            assert prometheus.proc.returncode is None, f"prometheus exited; log: {prometheus.log}"
            try:
                targets = await prometheus.api(session, "/api/v1/targets")
            except aiohttp.ClientError:
                targets = {"activeTargets": []}  # Prometheus still starting
            return next(iter(targets["activeTargets"]), {})

        target = await until_accepted(
            first_target,
            lambda found: found.get("health") == "up",
            what="target up",
            within=deadline - loop.time(),
            interval=0.2,
        )
        assert target["labels"]["job"] == "infrawatch"
        assert target["lastError"] == ""

        missing = set(FAMILIES)

        async def still_missing() -> list[str]:
            for name in sorted(missing):
                data = await prometheus.api(session, "/api/v1/query", query=name)
                if data["result"]:
                    missing.discard(name)
            return sorted(missing)

        await until_accepted(
            still_missing,
            lambda names: not names,
            what="every family seen by Prometheus",
            within=deadline - loop.time(),
            interval=0.2,
        )

        # protocol named: the alert evaluator's in-process reads are a series of their own.
        ok = (
            "infrawatch_rpc_calls_total"
            '{procedure="monitoring.unifiedHealth",protocol="jsonrpc",code="OK"}'
        )
        data = await prometheus.api(session, "/api/v1/query", query=ok)
        assert float(data["result"][0]["value"][1]) == 5
        up = await prometheus.api(session, "/api/v1/query", query='up{job="infrawatch"}')
        assert up["result"][0]["value"][1] == "1"
