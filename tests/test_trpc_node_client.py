"""The unmodified npm ``@trpc/client`` v11 (httpLink and httpBatchLink) against a real server:
our app on a TCP port, on real Postgres and Redis, called by ``tests/trpc_client/check.mjs``."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web

from server.app import create_app
from server.appkeys import BREAKERS
from server.config import Settings
from server.runner import AppRunner

CLIENT_DIR = Path(__file__).resolve().parent / "trpc_client"
NODE = shutil.which("node")
NPM = shutil.which("npm")
NPM_INSTALL_TIMEOUT = 180
CHECK_TIMEOUT = 120
# Forced open to exercise the reset mutation: one nothing in the health query goes through.
BREAKER = "pgbouncer-admin"

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are not installed: cannot run @trpc/client"
)


@pytest.fixture(scope="session")
def trpc_client_dir() -> Path:
    """``npm install`` of the pinned @trpc/client (package-lock.json); node_modules is kept."""
    assert NPM is not None
    try:
        done = subprocess.run(
            [NPM, "install", "--no-audit", "--no-fund"],
            cwd=CLIENT_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"npm install took more than {NPM_INSTALL_TIMEOUT}s in {CLIENT_DIR}")
    if done.returncode != 0:
        pytest.fail(f"npm install failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return CLIENT_DIR


async def run_check(directory: Path, base_url: str, token: str) -> dict[str, Any]:
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        "check.mjs",
        base_url,
        token,
        BREAKER,
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=CHECK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"node check.mjs took more than {CHECK_TIMEOUT}s")
    assert proc.returncode == 0, stderr.decode()
    summary: dict[str, Any] = json.loads(stdout)
    return summary


async def serve_and_check(settings: Settings, directory: Path, token: str) -> dict[str, Any]:
    app = create_app(settings)
    # What the operator's reset is for: a breaker someone forced open.
    app[BREAKERS].get(BREAKER).force_open("test: forced open")
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)  # the kernel picks a free port
        await site.start()
        host, port = runner.addresses[0][:2]
        result = await run_check(directory, f"http://{host}:{port}", token)
        result["breakerStateAfter"] = app[BREAKERS].get(BREAKER).state.value
        return result
    finally:
        await runner.cleanup()


def only(step: dict[str, Any]) -> dict[str, Any]:
    [outcome] = step["outcomes"]
    result: dict[str, Any] = outcome
    return result


def error_of(step: dict[str, Any]) -> dict[str, Any]:
    outcome = only(step)
    assert not outcome["ok"], outcome
    assert outcome["error"]["kind"] == "TRPCClientError"
    error: dict[str, Any] = outcome["error"]
    return error


def batched_paths(request: dict[str, Any]) -> list[str]:
    parts = urlsplit(request["url"])
    assert parse_qs(parts.query)["batch"] == ["1"]
    return parts.path.removeprefix("/trpc/").split(",")


def check_versions_are_v11(summary: dict[str, Any]) -> None:
    assert summary["versions"]["client"].startswith("11.")
    assert summary["versions"]["client"] == summary["versions"]["server"]


def check_query(summary: dict[str, Any], link: str) -> None:
    outcome = only(summary[link]["query"])
    assert outcome["ok"], outcome
    assert outcome["data"]["status"] == "healthy", outcome["data"]
    assert {c["name"]: c["status"] for c in outcome["data"]["components"]} == {
        "database": "up",
        "redis": "up",
    }


def check_batch_link_sends_several_queries_in_one_request(summary: dict[str, Any]) -> None:
    step = summary["httpBatchLink"]["severalQueries"]
    assert all(o["ok"] for o in step["outcomes"]), step
    health, breakers, again = (o["data"] for o in step["outcomes"])
    assert health["status"] == again["status"] == "healthy"
    assert BREAKER in [b["name"] for b in breakers["breakers"]]
    [request] = step["requests"]
    assert request["method"] == "GET"
    assert batched_paths(request) == [
        "monitoring.unifiedHealth",
        "monitoring.circuitBreakerStatus",
        "monitoring.unifiedHealth",
    ]
    assert request["status"] == 200


def check_http_link_sends_one_request_per_query(summary: dict[str, Any]) -> None:
    step = summary["httpLink"]["severalQueries"]
    assert all(o["ok"] for o in step["outcomes"]), step
    assert len(step["requests"]) == 3
    assert all("batch=" not in r["url"] for r in step["requests"])


def check_batch_with_mixed_outcomes(summary: dict[str, Any]) -> None:
    step = summary["httpBatchLink"]["mixedOutcomes"]
    ok, missing, bad = step["outcomes"]
    assert ok["ok"] and ok["data"]["status"] == "healthy"
    assert (missing["error"]["code"], missing["error"]["path"]) == ("NOT_FOUND", "nope.nothing")
    assert (bad["error"]["code"], bad["error"]["httpStatus"]) == ("BAD_REQUEST", 400)
    [request] = step["requests"]
    assert request["status"] == 207


def check_mutation_with_operator_token(summary: dict[str, Any], link: str) -> None:
    step = summary[link]["mutationWithToken"]
    outcome = only(step)
    assert outcome["ok"], outcome
    assert (outcome["data"]["name"], outcome["data"]["state"]) == (BREAKER, "closed")
    [request] = step["requests"]
    assert request["method"] == "POST"
    assert summary["breakerStateAfter"] == "closed"


def check_mutation_without_token_is_unauthorized(summary: dict[str, Any], link: str) -> None:
    error = error_of(summary[link]["mutationWithoutToken"])
    assert (error["code"], error["httpStatus"], error["jsonrpcCode"]) == (
        "UNAUTHORIZED",
        401,
        -32001,
    )
    assert error["path"] == "monitoring.resetCircuitBreaker"
    assert error["responseStatus"] == 401


def check_unknown_procedure_is_not_found(summary: dict[str, Any], link: str) -> None:
    error = error_of(summary[link]["unknownProcedure"])
    assert (error["code"], error["httpStatus"], error["jsonrpcCode"]) == ("NOT_FOUND", 404, -32004)
    assert error["message"] == 'No procedure found on path "nope.nothing"'


def check_bad_input_is_bad_request(summary: dict[str, Any], link: str) -> None:
    error = error_of(summary[link]["badInput"])
    assert (error["code"], error["httpStatus"], error["jsonrpcCode"]) == (
        "BAD_REQUEST",
        400,
        -32600,
    )
    assert error["path"] == "monitoring.resetCircuitBreaker"


def check_long_batched_url_reaches_the_procedures(summary: dict[str, Any]) -> None:
    step = summary["longUrls"]["about20k"]
    [request] = step["requests"]
    assert 20_000 < len(request["url"]) < Settings().max_url_bytes
    # Parsed and dispatched: each call's own answer, the procedure refusing the padding.
    assert [o["error"]["code"] for o in step["outcomes"]] == ["BAD_REQUEST"] * 10
    assert {o["error"]["path"] for o in step["outcomes"]} == {"monitoring.unifiedHealth"}


def check_url_over_the_limit_is_a_typed_error(summary: dict[str, Any]) -> None:
    step = summary["longUrls"]["over64k"]
    [request] = step["requests"]
    assert len(request["url"]) > Settings().max_url_bytes
    assert request["status"] == 413
    # One JSON error for the whole batch, which the client gives every call.
    for outcome in step["outcomes"]:
        assert not outcome["ok"]
        error = outcome["error"]
        assert (error["kind"], error["code"], error["httpStatus"]) == (
            "TRPCClientError",
            "PAYLOAD_TOO_LARGE",
            413,
        )
        assert error["path"] is None


LINK_CHECKS = [
    check_query,
    check_mutation_with_operator_token,
    check_mutation_without_token_is_unauthorized,
    check_unknown_procedure_is_not_found,
    check_bad_input_is_bad_request,
]
CHECKS = [
    check_versions_are_v11,
    check_batch_link_sends_several_queries_in_one_request,
    check_http_link_sends_one_request_per_query,
    check_batch_with_mixed_outcomes,
    check_long_batched_url_reaches_the_procedures,
    check_url_over_the_limit_is_a_typed_error,
]


async def test_trpc_client_against_real_server(
    trpc_client_dir: Path, make_settings: Callable[..., Settings], operator_token: str
) -> None:
    # One server and one node run for every check: each check names what failed.
    summary = await serve_and_check(make_settings(), trpc_client_dir, operator_token)
    for link in ("httpLink", "httpBatchLink"):
        for link_check in LINK_CHECKS:
            link_check(summary, link)
    for check in CHECKS:
        check(summary)
