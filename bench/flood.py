"""A flood of anonymous clients against a running infrawatch, from a process of its own.

Run: ``python bench/flood.py URL SECONDS CLIENTS`` (tests/test_flood.py runs it; so does
``bench/soak.py`` for its load phases). Each client is an aiohttp task that loops over the
costly requests an anonymous caller may make: key statistics with a large sample, queue
rediscovery, unified metrics, pool statistics, partition counts, a JSON-RPC batch of key
statistics with distinct inputs, a tRPC batch, ``/metrics`` and the dashboard page.

Every answer is checked for its protocol's shape (a JSON-RPC response or error object, a tRPC
envelope, Prometheus text, an HTML page); one printed JSON line at the end counts answers by
status, shed calls (TOO_MANY_REQUESTS), malformed answers and transport errors, with examples.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson

REQUEST_TIMEOUT = 30.0
EXPENSIVE = (
    ("monitoring.cacheKeyStats", {"sample": 100_000}),
    ("monitoring.queueStats", {"rediscover": True}),
    ("monitoring.unifiedMetrics", None),
    ("monitoring.connectionPoolStats", None),
    ("monitoring.partitionMetrics", None),
    ("monitoring.partitionTableStats", None),
    ("database.info", None),
)


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.shed = 0
        self.answered = 0
        self.malformed: list[str] = []
        self.errors: Counter[str] = Counter()

    def bad(self, what: str) -> None:
        if len(self.malformed) < 20:
            self.malformed.append(what[:300])
        else:
            self.malformed.append("...")
            del self.malformed[20:]


def _jsonrpc_member(answer: Any, tally: Tally) -> None:
    if not isinstance(answer, dict) or answer.get("jsonrpc") != "2.0" or "id" not in answer:
        tally.bad(f"jsonrpc member {answer!r}")
        return
    if "result" in answer:
        tally.answered += 1
        return
    error = answer.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        tally.bad(f"jsonrpc error {answer!r}")
        return
    code = (error.get("data") or {}).get("code")
    if code == "TOO_MANY_REQUESTS":
        tally.shed += 1
    else:
        tally.bad(f"jsonrpc error {code}: {error.get('message')}")


def _trpc_item(item: Any, tally: Tally) -> None:
    if isinstance(item, dict) and isinstance(item.get("result"), dict):
        tally.answered += 1
        return
    error = item.get("error") if isinstance(item, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("data"), dict):
        tally.bad(f"trpc item {item!r}")
        return
    if error["data"].get("code") == "TOO_MANY_REQUESTS":
        tally.shed += 1
    else:
        tally.bad(f"trpc error {error['data'].get('code')}: {error.get('message')}")


async def jsonrpc_one(session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
    method, params = random.choice(EXPENSIVE)
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": random.randrange(1 << 30), "method": method}
    if params is not None:
        body["params"] = params
    async with session.post(f"{url}/rpc", json=body) as resp:
        tally.statuses[str(resp.status)] += 1
        _jsonrpc_member(orjson.loads(await resp.read()), tally)


async def jsonrpc_batch(session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
    batch = [
        {
            "jsonrpc": "2.0",
            "id": n,
            "method": "monitoring.cacheKeyStats",
            "params": {"sample": 50_000 + random.randrange(50_000)},
        }
        for n in range(20)
    ]
    async with session.post(f"{url}/rpc", json=batch) as resp:
        tally.statuses[str(resp.status)] += 1
        answers = orjson.loads(await resp.read())
        if not isinstance(answers, list):
            tally.bad(f"batch answer {answers!r}")
            return
        for answer in answers:
            _jsonrpc_member(answer, tally)


async def trpc_batch(session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
    paths = "monitoring.queueStats,monitoring.connectionPoolStats,monitoring.unifiedMetrics"
    inputs = orjson.dumps({"0": {"rediscover": True}}).decode()
    async with session.get(f"{url}/trpc/{paths}", params={"batch": "1", "input": inputs}) as resp:
        tally.statuses[str(resp.status)] += 1
        if resp.status == 429 and "Retry-After" not in resp.headers:
            tally.bad("trpc 429 without Retry-After")
        items = orjson.loads(await resp.read())
        if not isinstance(items, list):
            tally.bad(f"trpc batch answer {items!r}")
            return
        for item in items:
            _trpc_item(item, tally)


async def scrape(session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
    async with session.get(f"{url}/metrics") as resp:
        tally.statuses[str(resp.status)] += 1
        text = await resp.text()
        if resp.status == 200 and "# TYPE" in text:
            tally.answered += 1
        else:
            tally.bad(f"/metrics {resp.status}: {text[:100]}")


async def page(session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
    async with session.get(f"{url}/") as resp:
        tally.statuses[str(resp.status)] += 1
        text = await resp.text()
        if resp.status == 200 and "<html" in text.lower():
            tally.answered += 1
        elif resp.status == 429:
            tally.shed += 1
        else:
            tally.bad(f"page {resp.status}: {text[:100]}")


KINDS = (
    (jsonrpc_one, 5),
    (jsonrpc_batch, 1),
    (trpc_batch, 2),
    (scrape, 1),
    (page, 1),
)


async def client(url: str, until: float, tally: Tally) -> None:
    kinds = [k for k, weight in KINDS for _ in range(weight)]
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < until:
            kind = random.choice(kinds)
            try:
                await kind(session, url, tally)
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                tally.errors[f"{kind.__name__}: {type(exc).__name__}"] += 1


async def flood(url: str, seconds: float, clients: int) -> dict[str, Any]:
    tally = Tally()
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(*(client(url, until, tally) for _ in range(clients)))
    return {
        "seconds": round(time.monotonic() - started, 3),
        "clients": clients,
        "statuses": dict(tally.statuses),
        "answered": tally.answered,
        "shed": tally.shed,
        "malformed": tally.malformed,
        "errors": dict(tally.errors),
    }


if __name__ == "__main__":
    target, duration, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    print(orjson.dumps(asyncio.run(flood(target, duration, count))).decode(), flush=True)
