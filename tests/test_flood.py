"""A flood against the real stack: 150 anonymous clients for 10 s, from a process of their own
(``bench/flood.py``), against ``infrawatch serve`` in another, over real PostgreSQL and Redis.

Meanwhile this process polls ``/health/ready`` and has an operator acknowledge alerts, timing
each answer. Readiness must answer 200 within 2 s in every poll, every acknowledgement within
2 s; every flood answer must be well formed (answered, or shed with the protocol's
TOO_MANY_REQUESTS), no 5xx; the database breakers closed afterwards; RSS growth bounded.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis

from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN, SESSION_SECRET
from tests.stack.ports import free_port, is_listening
from tests.waiting import until_accepted, wait_until

ROOT = Path(__file__).resolve().parent.parent
FLOOD_SECONDS = 10.0
CLIENTS = 150
POLL_EVERY = 0.25
ACK_EVERY = 0.5
BOUND = 2.0
KEYS = 20_000

_INSERT = """
INSERT INTO infrawatch.alerts
    (id, fingerprint, rule, subject, level, state, message, value, threshold,
     first_fired_at, last_fired_at, reporters)
SELECT gen_random_uuid(), 'flood:' || n, 'flood', n::text, 'warning', 'firing', 'flood test',
       1, 0, now(), now(), '{}'::jsonb
FROM generate_series(1, $1) AS n
RETURNING id
"""


@pytest.fixture
def served(pg_dsn: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": pg_dsn,
        "REDIS_URL": redis_url,
        "AUTH_TOKENS": f"{OPERATOR_NAME}:{OPERATOR_TOKEN}",
        "SESSION_SECRET": SESSION_SECRET,
        "ALERT_EVALUATION_INTERVAL": "1",
        "LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: is_listening(port, timeout=0.2) or proc.poll() is not None,
            what="`infrawatch serve` listening",
            within=30,
        )
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def rpc(session: aiohttp.ClientSession, url: str, method: str, params: Any = None) -> Any:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method}
    if params is not None:
        body["params"] = params
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with session.post(f"{url}/rpc", json=body, headers=headers) as resp:
        return orjson.loads(await resp.read())


async def poll_ready(url: str, until: float) -> list[tuple[int, float]]:
    polls: list[tuple[int, float]] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < until:
            began = time.monotonic()
            try:
                async with session.get(f"{url}/health/ready") as resp:
                    await resp.read()
                    polls.append((resp.status, time.monotonic() - began))
            except (aiohttp.ClientError, TimeoutError):
                polls.append((0, time.monotonic() - began))
            await asyncio.sleep(max(0.0, POLL_EVERY - (time.monotonic() - began)))
    return polls


async def acknowledge_all(url: str, ids: list[str], until: float) -> list[tuple[Any, float]]:
    acks: list[tuple[Any, float]] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for alert_id in ids:
            if time.monotonic() >= until:
                break
            began = time.monotonic()
            try:
                answer = await rpc(session, url, "alerts.acknowledge", {"id": alert_id})
            except (aiohttp.ClientError, TimeoutError) as exc:
                answer = {"transport": repr(exc)}
            acks.append((answer, time.monotonic() - began))
            await asyncio.sleep(max(0.0, ACK_EVERY - (time.monotonic() - began)))
    return acks


async def alert_ids(pg_dsn: str, count: int) -> list[str]:
    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        # The server migrates the alert store at start-up.
        await until_accepted(
            lambda: conn.fetchval("SELECT to_regclass('infrawatch.alerts') IS NOT NULL"),
            lambda ready: ready is True,
            what="the alert store's schema",
        )
        return [str(row["id"]) for row in await conn.fetch(_INSERT, count)]
    finally:
        await conn.close()


async def test_a_flood_leaves_readiness_and_acknowledgements_answering(
    served: tuple[str, int], pg_dsn: str, redis_url: str
) -> None:
    url, pid = served
    client = redis.Redis.from_url(redis_url)
    with client.pipeline(transaction=False) as pipe:
        for n in range(KEYS):
            pipe.set(f"app:session:{n}", "x")
        pipe.execute()
    client.close()
    ids = await alert_ids(pg_dsn, int(FLOOD_SECONDS / ACK_EVERY) + 10)
    async with aiohttp.ClientSession() as session:  # warm: the first calls connect the pools
        for method in ("monitoring.unifiedMetrics", "monitoring.circuitBreakerStatus"):
            await rpc(session, url, method)
    rss_before = rss_bytes(pid)

    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "flood.py"),
        url,
        str(FLOOD_SECONDS),
        str(CLIENTS),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)  # the flood under way
    until = time.monotonic() + FLOOD_SECONDS - 1.5
    polls, acks = await asyncio.gather(poll_ready(url, until), acknowledge_all(url, ids, until))
    out, _ = await asyncio.wait_for(flood.communicate(), timeout=120)
    assert flood.returncode == 0
    summary = orjson.loads(out)
    rss_after = rss_bytes(pid)

    # The flood was one: many calls, a good share of them shed rather than queued for ever.
    assert summary["answered"] + summary["shed"] > 500, summary
    assert summary["shed"] > 0, summary
    assert summary["malformed"] == [], summary
    assert summary["errors"] == {}, summary
    assert not [s for s in summary["statuses"] if s.startswith("5")], summary

    assert len(polls) >= 20
    slow_or_failed = [(status, round(s, 3)) for status, s in polls if status != 200 or s > BOUND]
    assert slow_or_failed == [], (slow_or_failed, max(s for _, s in polls))

    assert len(acks) >= 10
    for answer, seconds in acks:
        assert "result" in answer, answer
        assert answer["result"]["acknowledged_by"] == OPERATOR_NAME
        assert seconds < BOUND, (seconds, answer)

    async with aiohttp.ClientSession() as session:
        status = await rpc(session, url, "monitoring.circuitBreakerStatus")
    states = {b["name"]: b for b in status["result"]["breakers"]}
    for name in ("database-query", "database-write", "database-health", "alert-store"):
        if name in states:
            assert states[name]["state"] == "closed", states[name]
    assert states["database-health"]["totals"]["failures"] == 0
    assert states["alert-store"]["totals"]["failures"] == 0

    print(
        f"\nflood: {summary}\nready polls: {len(polls)}, slowest "
        f"{max(s for _, s in polls):.3f}s; acks: {len(acks)}, slowest "
        f"{max(s for _, s in acks):.3f}s; RSS {rss_before / 1e6:.1f} -> {rss_after / 1e6:.1f} MB"
    )
    assert rss_after - rss_before < 80_000_000
