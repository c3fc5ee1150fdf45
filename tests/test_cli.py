"""The commands a user types: `infrawatch serve`, `infrawatch call`, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from server.client import RpcCallError, RpcClient
from tests.stack.ports import is_listening
from tests.waiting import wait_until

TOKEN = "ops-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {**os.environ, "AUTH_TOKENS": f"ops:{TOKEN}", "LOG_LEVEL": "INFO"}
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Until it listens, or has exited (the test then fails on what it says).
        wait_until(
            lambda: is_listening(port, timeout=0.2) or proc.poll() is not None,
            what="`infrawatch serve` listening",
            within=30,
        )
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        log.close()


async def test_client_calls_and_batches(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = served
    async with RpcClient(url, token=TOKEN) as rpc:
        health = await rpc.call("monitoring.unifiedHealth")
        assert health["status"] == "healthy"
        first, second = await rpc.batch([("monitoring.unifiedHealth", None), ("no.such", {"a": 1})])
        assert first["components"][0]["name"] == "database"
        assert isinstance(second, RpcCallError) and second.code == "NOT_FOUND"
        with pytest.raises(RpcCallError) as info:
            await rpc.call("monitoring.unifiedHealth", {"unexpected": 1})
        assert info.value.number == -32602


async def test_served_long_urls(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    """`serve` runs server/runner.py: long batched GETs pass, longer ones get a JSON error."""
    url, _ = served
    paths = ",".join(["monitoring.unifiedHealth"] * 20)
    async with aiohttp.ClientSession() as session:
        padding = "x" * 1000  # 20 escaped inputs of ~1 KB: a request line of ~21 KB
        query = orjson.dumps({str(i): {"padding": padding} for i in range(20)}).decode()
        async with session.get(
            f"{url}/trpc/{paths}", params={"batch": "1", "input": query}
        ) as resp:
            assert 20_000 < len(str(resp.url)) < 65_536
            assert resp.status == 400
            answers = await resp.json()
        # every call reached its procedure, which refuses the padding
        assert [a["error"]["data"]["path"] for a in answers] == ["monitoring.unifiedHealth"] * 20
        async with session.get(f"{url}/trpc/{paths}", params={"input": "y" * 70_000}) as resp:
            assert resp.status == 413
            assert resp.content_type == "application/json"
            error = (await resp.json())["error"]
        assert error["data"] == {"code": "PAYLOAD_TOO_LARGE", "httpStatus": 413}


async def test_call_command_prints_json(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = served
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "call",
        "monitoring.unifiedHealth",
        "--url",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert orjson.loads(out)["status"] == "healthy"

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "call",
        "no.such",
        "{}",
        "--url",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert orjson.loads(err)["error"]["data"]["code"] == "NOT_FOUND"


def test_sigterm_stops_gracefully(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, proc = served
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
