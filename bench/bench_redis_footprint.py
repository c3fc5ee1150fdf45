"""infrawatch's own load on the watched Redis: commands per second at default intervals.

Run: ``.venv/bin/python bench/bench_redis_footprint.py [seconds]`` (default 120).

A real master and replica (``redis-server``), queues of all three libraries on the master
(RQ, BullMQ and Celery key layouts, named in ``QUEUE_NAMES``) and the whole app at its default
intervals: the alert evaluator every ``ALERT_EVALUATION_INTERVAL`` (15 s; it reads every
procedure a rule needs, ``monitoring.redisHealth`` and ``monitoring.queueStats`` included), the
cache's hot tier and warmer, and a Prometheus scrape of ``/metrics`` every 15 s (the compose
file's ``scrape_interval``). No application traffic: every command counted is infrawatch's.

Counted from each node's ``INFO commandstats`` deltas (no MONITOR, which would itself load
Redis): on the master every command except replication's own (REPLCONF, PSYNC, SYNC, sent by
the replica); on the replica only what a client sends it (INFO, CLIENT, HELLO, PING from
clients cannot be told from the master's PING, so PING is left out there and reported apart);
the bench's own first INFO commandstats per node is taken off. Target: <= 50 commands/s
(``../shared/PERFORMANCE.md``). Exits 1 past the target.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.app import create_app  # noqa: E402
from server.config import Settings  # noqa: E402
from tests.stack import RedisServer  # noqa: E402
from tests.stack.process import make_workdir, remove_workdir  # noqa: E402

TARGET = 50.0
SCRAPE_INTERVAL = 15.0
REPLICATION = {"replconf", "psync", "sync"}
# What a client (not the replication stream) sends a replica.
CLIENT_ONLY = {"info", "client", "hello", "auth", "command", "cluster", "config"}
QUEUE_NAMES = "rq:mail,bullmq:render,celery:celery"


def commandstats(server: RedisServer) -> Counter[str]:
    with server.client() as client:
        info: dict[str, Any] = client.info("commandstats")
    return Counter(
        {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}
    )


def seed_queues(server: RedisServer) -> None:
    """A few jobs in each library's layout, so that every state key is read as in production."""
    with server.client() as r:
        r.sadd("rq:queues", "rq:queue:mail")
        r.rpush("rq:queue:mail", "job-1", "job-2")
        r.hset("rq:job:job-1", "enqueued_at", "2026-01-01T00:00:00.000000Z")
        r.lpush("bull:render:wait", "1")
        r.hset("bull:render:1", "timestamp", str(int(time.time() * 1000)))
        r.hset("bull:render:meta", "opts.maxLenEvents", "10000")
        r.lpush("celery", '{"body": "", "headers": {}, "properties": {}}')


async def run(seconds: float) -> int:
    workdir = make_workdir()
    try:
        with (
            RedisServer(workdir, name="master") as master,
            RedisServer(workdir, replica_of=master, name="replica") as replica,
        ):
            replica.wait_for_sync()
            seed_queues(master)
            settings = Settings(redis_url=master.url, queue_names=QUEUE_NAMES)
            client = TestClient(TestServer(create_app(settings)))
            await client.start_server()
            try:
                return await measure(client, master, replica, seconds)
            finally:
                await client.close()
    finally:
        remove_workdir(workdir)


async def measure(
    client: TestClient, master: RedisServer, replica: RedisServer, seconds: float
) -> int:
    # Let start-up (the first evaluation round, the first discovery) pass: steady state only.
    await asyncio.sleep(SCRAPE_INTERVAL)
    before = {"master": commandstats(master), "replica": commandstats(replica)}
    started = time.monotonic()
    scrapes = 0
    while (elapsed := time.monotonic() - started) < seconds:
        response = await client.get("/metrics")
        await response.read()
        scrapes += 1
        await asyncio.sleep(min(SCRAPE_INTERVAL, max(0.0, seconds - elapsed)))
    span = time.monotonic() - started
    after = {"master": commandstats(master), "replica": commandstats(replica)}

    master_calls = after["master"] - before["master"]
    replica_calls = after["replica"] - before["replica"]
    ours: Counter[str] = Counter()
    for name, calls in master_calls.items():
        if name not in REPLICATION:
            ours[f"master {name}"] += calls
    for name, calls in replica_calls.items():
        if name in CLIENT_ONLY:
            ours[f"replica {name}"] += calls
    ours["master info"] -= 1  # the bench's own first INFO commandstats
    ours["replica info"] -= 1
    total = sum(ours.values())
    rate = total / span
    print(f"window {span:.1f} s, {scrapes} scrapes of /metrics, evaluator every 15 s")
    print(f"infrawatch's commands: {total} = {rate:.2f}/s (target <= {TARGET:g}/s)")
    for name, calls in ours.most_common():
        if calls:
            print(f"  {name:<32} {calls:>6}  {calls / span:6.2f}/s")
    pings = replica_calls.get("ping", 0)
    print(f"  (replica PING, master's and clients' together, not counted: {pings})")
    return 0 if rate <= TARGET else 1


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    return asyncio.run(run(seconds))


if __name__ == "__main__":
    raise SystemExit(main())
