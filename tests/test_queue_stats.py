"""``monitoring.queueStats`` and ``infrawatch_queue_depth`` against a real Redis, called through
``POST /rpc`` as a client would.

The depth of every state is tested with the real libraries (``tests/test_queue_libraries.py``:
RQ, Celery and BullMQ enqueue, run and fail real jobs). What stays here needs layouts no
current library writes, or many queues at once: BullMQ v4's marker entry, a key of the wrong
type, bounds, detection of plain names and prefixes, Redis down, the metrics family. Those
queues are written with ``tests/stack/redis_workload.py``, which follows each library's source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.appkeys import METRICS
from server.config import Settings
from tests.stack import RedisServer
from tests.stack.redis_workload import (
    bullmq_add,
    bullmq_finish,
    bullmq_take,
    bullmq_wait_for_children,
    celery_declare,
    celery_publish,
    celery_reserve,
    rq_defer,
    rq_enqueue,
    rq_finish,
    rq_schedule,
    rq_take,
    run_workload,
)

MakeSettings = Callable[..., Settings]


@pytest.fixture
def r(redis_url: str, redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A harness client on the test's (emptied) Redis."""
    with redis_server.client() as client:
        yield client


def queue_names(text: str) -> Any:
    return Settings.from_env({"QUEUE_NAMES": text}).queues.names


async def start(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


async def call(client: TestClient, method: str, params: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        body["params"] = params
    resp = await client.post("/rpc", data=orjson.dumps(body))
    assert resp.status == 200
    payload: dict[str, Any] = orjson.loads(await resp.read())
    return payload


async def result(client: TestClient, method: str, params: Any = None) -> Any:
    payload = await call(client, method, params)
    assert "error" not in payload, payload
    return payload["result"]


def by_key(out: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(q["kind"], q["name"]): q for q in out["queues"]}


def make_bullmq_emails(r: redis.Redis) -> None:
    """wait 2, prioritized 2, delayed 1, waiting-children 1, active 1, completed 1, failed 1."""
    for _ in range(5):
        bullmq_add(r, "emails")
    bullmq_add(r, "emails", priority=3)
    bullmq_add(r, "emails", priority=1)
    bullmq_add(r, "emails", delay_ms=60_000)
    taken = [bullmq_take(r, "emails") for _ in range(3)]
    assert None not in taken
    bullmq_finish(r, "emails", str(taken[0]))
    bullmq_finish(r, "emails", str(taken[1]), failed=True)
    bullmq_wait_for_children(r, "emails", "parent-1")


def make_rq_default(r: redis.Redis) -> None:
    """queued 1, intermediate 1, scheduled 2, deferred 1, started 1, finished 1, failed 1."""
    for _ in range(5):
        rq_enqueue(r, "default")
    rq_schedule(r, "default")
    rq_schedule(r, "default", in_seconds=3600)
    rq_defer(r, "default")
    taken = [rq_take(r, "default") for _ in range(3)]
    assert None not in taken
    rq_finish(r, "default", str(taken[0]))
    rq_finish(r, "default", str(taken[1]), failed=True)
    # A worker popped this one and died before it started: it stays in the intermediate list.
    assert r.lmove("rq:queue:default", "rq:queue:default:intermediate", "LEFT", "RIGHT")


def make_celery(r: redis.Redis) -> None:
    """celery: waiting 4 (2 at priority 0, 2 at priority 6), one unacked."""
    celery_declare(r, "celery")
    for _ in range(3):
        celery_publish(r, "celery")
    for _ in range(2):
        celery_publish(r, "celery", priority=6)
    assert celery_reserve(r, "celery") is not None


BULLMQ_EMAILS = {
    "wait": 2,
    "paused": 0,
    "prioritized": 2,
    "delayed": 1,
    "waiting-children": 1,
    "active": 1,
    "completed": 1,
    "failed": 1,
}
RQ_DEFAULT = {
    "queued": 1,
    "scheduled": 2,
    "deferred": 1,
    "ready": 0,
    "intermediate": 1,
    "started": 1,
    "finished": 1,
    "failed": 1,
    "canceled": 0,
}


async def test_plain_names_are_detected_and_prefixes_honoured(
    aiohttp_client: Any, make_settings: MakeSettings, r: redis.Redis
) -> None:
    make_bullmq_emails(r)
    rq_enqueue(r, "reports")
    r.sadd("rq:queues", "rq:queue:idle")  # registered, no job yet
    for _ in range(3):
        bullmq_add(r, "billing", prefix="myapp")
    celery_publish(r, "mail")
    r.set("ghost-cache", "1")  # exists, but no queue of any kind
    names = "emails,reports,idle,mail,ghost-cache,nothing,bullmq:myapp:billing"
    client = await start(
        aiohttp_client, make_settings(database_url=None, queue_names=queue_names(names))
    )

    out = await result(client, "monitoring.queueStats")

    queues = by_key(out)
    assert set(queues) == {
        ("bullmq", "emails"),
        ("bullmq", "billing"),
        ("rq", "reports"),
        ("rq", "idle"),
        ("celery", "mail"),
    }
    assert queues[("bullmq", "emails")]["states"] == BULLMQ_EMAILS
    billing = queues[("bullmq", "billing")]
    assert (billing["key_prefix"], billing["depth"], billing["states"]["wait"]) == ("myapp", 3, 3)
    assert queues[("rq", "reports")]["depth"] == 1
    assert queues[("rq", "idle")]["depth"] == 0
    assert queues[("celery", "mail")]["states"] == {"waiting": 1, "unacked": 0}
    assert out["not_found"] == ["ghost-cache", "nothing"]


async def test_bullmq_v4_marker_is_not_a_job(
    aiohttp_client: Any, make_settings: MakeSettings, r: redis.Redis
) -> None:
    bullmq_add(r, "legacy")
    r.rpush("bull:legacy:wait", "0:1700000000000")  # v4's delay marker at the consuming end
    client = await start(
        aiohttp_client, make_settings(database_url=None, queue_names=queue_names("bullmq:legacy"))
    )
    out = await result(client, "monitoring.queueStats")
    assert out["queues"][0]["states"]["wait"] == 1
    assert out["queues"][0]["depth"] == 1


async def test_wrong_key_type_is_a_warning_not_an_error(
    aiohttp_client: Any, make_settings: MakeSettings, r: redis.Redis
) -> None:
    r.set("bull:odd:wait", "not a list")
    bullmq_add(r, "odd", delay_ms=1000)
    client = await start(
        aiohttp_client, make_settings(database_url=None, queue_names=queue_names("bullmq:odd"))
    )
    out = await result(client, "monitoring.queueStats")
    odd = out["queues"][0]
    assert (odd["states"]["wait"], odd["states"]["delayed"], odd["depth"]) == (0, 1, 1)
    assert len(out["warnings"]) == 1
    assert out["warnings"][0].startswith("bull:odd:wait: WRONGTYPE")


async def test_discovery_by_scan_finds_every_kind(
    aiohttp_client: Any, make_settings: MakeSettings, r: redis.Redis
) -> None:
    make_bullmq_emails(r)
    make_rq_default(r)
    make_celery(r)
    r.sadd("rq:queues", "rq:queue:idle")
    # Celery's own plumbing (remote control, events) is bound too, but is not a job queue.
    r.sadd("_kombu.binding.celery.pidbox", "\x06\x16\x06\x16worker1@host.celery.pidbox")
    r.sadd("_kombu.binding.celeryev", "worker.#\x06\x16\x06\x16celeryev.1234")
    with r.pipeline() as pipe:
        for i in range(3000):
            pipe.set(f"rpc:cache:{i}", "x")
        pipe.execute()
    client = await start(aiohttp_client, make_settings(database_url=None))

    out = await result(client, "monitoring.queueStats")

    assert out["discovered"] is True
    assert out["scan_complete"] is True
    assert out["scanned_keys"] == r.dbsize()
    assert out["truncated"] is False
    queues = by_key(out)
    assert list(queues) == [
        ("bullmq", "emails"),
        ("celery", "celery"),
        ("rq", "default"),
        ("rq", "idle"),
    ]
    assert queues[("bullmq", "emails")]["states"] == BULLMQ_EMAILS
    assert queues[("rq", "default")]["states"] == RQ_DEFAULT
    assert queues[("celery", "celery")]["states"] == {"waiting": 4, "unacked": 1}

    # The discovery is kept for QUEUE_DISCOVERY_INTERVAL: a new queue shows up on request.
    rq_enqueue(r, "late")
    again = await result(client, "monitoring.queueStats")
    assert ("rq", "late") not in by_key(again)
    assert again["discovered_at"] == out["discovered_at"]
    fresh = await result(client, "monitoring.queueStats", {"rediscover": True})
    assert by_key(fresh)[("rq", "late")]["depth"] == 1


async def test_discovery_stops_at_its_key_budget(
    aiohttp_client: Any, make_settings: MakeSettings, r: redis.Redis
) -> None:
    with r.pipeline() as pipe:
        for i in range(2000):
            pipe.set(f"noise:{i}", "x")
        pipe.execute()
    client = await start(aiohttp_client, make_settings(database_url=None, queue_scan_max_keys=100))
    out = await result(client, "monitoring.queueStats")
    assert out["scan_complete"] is False
    # COUNT is a hint: one reply may overshoot it, but the walk stops at the first past 100.
    assert 100 <= out["scanned_keys"] < 2000


async def test_without_redis_the_answer_says_so(
    aiohttp_client: Any, make_settings: MakeSettings
) -> None:
    client = await start(aiohttp_client, make_settings(database_url=None, redis_url=None))
    out = await result(client, "monitoring.queueStats")
    assert out["redis_configured"] is False
    assert out["queues"] == []
    keys = await result(client, "monitoring.cacheKeyStats")
    assert (keys["redis_configured"], keys["dbsize"], keys["namespaces"]) == (False, 0, [])


async def test_redis_down_is_service_unavailable_and_the_service_stays_up(
    aiohttp_client: Any, make_settings: MakeSettings, r: redis.Redis, redis_server: RedisServer
) -> None:
    make_rq_default(r)
    client = await start(aiohttp_client, make_settings(database_url=None))
    assert by_key(await result(client, "monitoring.queueStats"))[("rq", "default")]["depth"] == 4

    redis_server.stop()

    for method in ("monitoring.queueStats", "monitoring.cacheKeyStats"):
        payload = await call(client, method, {"rediscover": True} if "queue" in method else None)
        error = payload["error"]
        assert error["data"]["code"] == "SERVICE_UNAVAILABLE"
        assert error["data"]["httpStatus"] == 503
        assert error["code"] == -32603
        assert "redis" in error["message"]
    health = await result(client, "monitoring.unifiedHealth")
    assert health["status"] == "degraded"
    breakers = await result(client, "monitoring.circuitBreakerStatus")
    redis_cache = {b["name"]: b for b in breakers["breakers"]}["redis-cache"]
    assert redis_cache["totals"]["failures"] >= 2


def depth_samples(text: str) -> dict[tuple[str, str, str], float]:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {
        (s.labels["queue"], s.labels["kind"], s.labels["state"]): s.value
        for s in families["infrawatch_queue_depth"].samples
    }


async def test_metrics_family_exposes_the_depths(
    aiohttp_client: Any, make_settings: MakeSettings, r: redis.Redis, redis_server: RedisServer
) -> None:
    make_bullmq_emails(r)
    make_rq_default(r)
    make_celery(r)
    client = await start(aiohttp_client, make_settings(database_url=None))
    metrics = client.app[METRICS]

    await metrics.refresh(10.0)
    samples = depth_samples(generate_latest(metrics.registry).decode())

    expected = {("emails", "bullmq", s): float(n) for s, n in BULLMQ_EMAILS.items()}
    expected |= {("default", "rq", s): float(n) for s, n in RQ_DEFAULT.items()}
    expected |= {("celery", "celery", "waiting"): 4.0, ("celery", "celery", "unacked"): 1.0}
    assert samples == expected

    redis_server.stop()
    await metrics.refresh(10.0)
    # A depth that cannot be read is dropped, not repeated.
    assert depth_samples(generate_latest(metrics.registry).decode()) == {}


async def test_demo_workload_moves_both_queues(
    aiohttp_client: Any, make_settings: MakeSettings, redis_url: str
) -> None:
    done = run_workload(redis_url, rounds=30, seconds=20.0, seed=7, keep=5)
    assert done.rounds == 30
    assert done.pushed > 0
    client = await start(aiohttp_client, make_settings(database_url=None))
    out = by_key(await result(client, "monitoring.queueStats"))
    emails, default = out[("bullmq", "emails")], out[("rq", "default")]
    finished = emails["states"]["completed"] + emails["states"]["failed"]
    finished += default["states"]["finished"] + default["states"]["failed"]
    assert 0 < finished <= 4 * 5  # trimmed to `keep` per set
    in_flight = emails["depth"] + emails["states"]["active"] + default["depth"]
    assert in_flight + done.completed + done.failed == done.pushed


async def test_bounds_on_queues_listed_and_unacked_attributed(
    aiohttp_client: Any, make_settings: MakeSettings, r: redis.Redis
) -> None:
    r.sadd("rq:queues", *(f"rq:queue:q{i:03d}" for i in range(101)))
    celery_declare(r, "celery")
    r.hset("unacked", mapping={f"tag{i}": '[{}, "celery", "celery"]' for i in range(1001)})
    client = await start(aiohttp_client, make_settings(database_url=None))

    out = await result(client, "monitoring.queueStats")

    assert out["truncated"] is True
    names = [(q["kind"], q["name"]) for q in out["queues"]]
    assert len(names) == 100
    assert names[0] == ("celery", "celery")
    assert names[-1] == ("rq", "q098")  # sorted by kind then name; q099 and q100 left out
    # Too many unacked tasks to parse each: the total only, no per-queue figure.
    assert out["celery_unacked"] == 1001
    assert by_key(out)[("celery", "celery")]["states"] == {"waiting": 0}
