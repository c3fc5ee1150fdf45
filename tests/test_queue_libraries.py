"""``monitoring.queueStats`` against queues the real libraries made: RQ and Celery (PyPI) and
BullMQ (npm, ``tests/bullmq_client``) enqueue jobs, a real worker of each runs them (one
completes, one fails), more jobs are left waiting and delayed; each figure is compared with
the library's own API, never with a key layout written by hand."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient
from celery import Celery
from celery.contrib.testing.worker import start_worker
from rq import Queue, SimpleWorker
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
)

from server.config import Settings
from tests import queue_jobs
from tests.alerting import call, evaluator, result, start_app
from tests.stack import RedisServer

# Celery's Redis result backend still calls redis-py's deprecated SETEX: the library's doing,
# not ours (filterwarnings=error would otherwise stop its worker).
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")

BULLMQ_DIR = Path(__file__).resolve().parent / "bullmq_client"
NODE = shutil.which("node")
NPM = shutil.which("npm")
NPM_INSTALL_TIMEOUT = 300
# An age measured at two moments (the library's, then ours) differs by the time between them.
AGE_SLACK = 5.0


def settings(redis_url: str, queue_names: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        queue_names=queue_names,
        alert_evaluation_interval=3600.0,
        alert_cache_get_p95_warning=3_600_000.0,
        alert_cache_get_p95_critical=7_200_000.0,
        rpc_coalesce_ttl=0.0,
    )


async def queue_of(client: TestClient, kind: str, name: str) -> dict[str, Any]:
    stats = result(await call(client, "monitoring.queueStats"))
    [queue] = [q for q in stats["queues"] if (q["kind"], q["name"]) == (kind, name)]
    found: dict[str, Any] = queue
    return found


@pytest.fixture
def conn(redis_url: str, redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The application's own connection, as RQ wants it (bytes, no decoding)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --- RQ ---


async def test_rq_jobs_run_fail_wait_and_are_scheduled(
    aiohttp_client: Any, redis_url: str, conn: redis.Redis
) -> None:
    queue = Queue("mail", connection=conn)
    queue.enqueue(queue_jobs.double, 21)
    queue.enqueue(queue_jobs.explode)
    # in this thread: RQ's worker installs signal handlers (the app is not started yet)
    SimpleWorker([queue], connection=conn).work(burst=True)
    waiting = [queue.enqueue(queue_jobs.double, i) for i in range(3)]
    queue.enqueue_in(timedelta(minutes=10), queue_jobs.double, 99)
    queue.enqueue(queue_jobs.double, 5, depends_on=waiting[0])  # deferred until it runs

    client = await start_app(aiohttp_client, settings(redis_url, "rq:mail"))
    seen = await queue_of(client, "rq", "mail")
    states = seen["states"]
    assert states["queued"] == queue.count == 3
    assert states["failed"] == FailedJobRegistry(queue=queue).count == 1
    assert states["finished"] == FinishedJobRegistry(queue=queue).count == 1
    assert states["scheduled"] == ScheduledJobRegistry(queue=queue).count == 1
    assert states["deferred"] == DeferredJobRegistry(queue=queue).count == 1
    assert seen["depth"] == 3 + 1 + 1  # queued + scheduled + deferred
    head = queue.jobs[0]
    assert head.enqueued_at is not None
    age = (datetime.now(UTC) - head.enqueued_at.replace(tzinfo=UTC)).total_seconds()
    assert abs(seen["oldest_waiting_age_seconds"] - age) < AGE_SLACK


async def test_rq_discovered_without_queue_names(
    aiohttp_client: Any, redis_url: str, conn: redis.Redis
) -> None:
    queue = Queue("reports", connection=conn)
    queue.enqueue(queue_jobs.double, 1)
    client = await start_app(aiohttp_client, settings(redis_url, ""))
    seen = await queue_of(client, "rq", "reports")
    assert seen["depth"] == queue.count == 1


# --- BullMQ ---


@pytest.fixture(scope="module")
def bullmq_dir() -> Path:
    """``npm install`` of the pinned BullMQ (package-lock.json); node_modules is kept."""
    if NODE is None or NPM is None:
        pytest.skip("node and npm are not installed: cannot run BullMQ")
    try:
        done = subprocess.run(
            [NPM, "install", "--no-audit", "--no-fund"],
            cwd=BULLMQ_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"npm install took more than {NPM_INSTALL_TIMEOUT}s in {BULLMQ_DIR}")
    if done.returncode != 0:
        pytest.fail(f"npm install failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return BULLMQ_DIR


async def bullmq_jobs(directory: Path, server: RedisServer, name: str, waiting: int) -> Any:
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        "jobs.mjs",
        server.host,
        str(server.port),
        name,
        str(waiting),
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return orjson.loads(out.splitlines()[-1])


async def test_bullmq_jobs_in_every_state(
    aiohttp_client: Any, redis_url: str, redis_server: RedisServer, bullmq_dir: Path
) -> None:
    own = await bullmq_jobs(bullmq_dir, redis_server, "render", 4)
    counts = own["counts"]
    # every state holds a job: 4 waiting + the child of the flow, one of each other
    assert counts == {
        "wait": 5,
        "paused": 0,  # BullMQ 5 and later mark a paused queue in its meta hash instead
        "prioritized": 1,
        "delayed": 1,
        "waiting-children": 1,
        "active": 1,
        "completed": 1,
        "failed": 1,
    }

    client = await start_app(aiohttp_client, settings(redis_url, "bullmq:render"))
    seen = await queue_of(client, "bullmq", "render")
    for state, count in counts.items():
        assert seen["states"][state] == count, state
    pending = ("wait", "paused", "prioritized", "delayed", "waiting-children")
    assert seen["depth"] == sum(counts[s] for s in pending) == 8
    assert seen["paused"] is own["paused"] is True
    age = time.time() - own["oldest_timestamp_ms"] / 1000
    assert abs(seen["oldest_waiting_age_seconds"] - age) < AGE_SLACK

    # discovered by SCAN too, with the same figures
    client = await start_app(aiohttp_client, settings(redis_url, ""))
    found = await queue_of(client, "bullmq", "render")
    assert found["states"] == seen["states"]


# --- Celery ---


@pytest.fixture
def celery_app(redis_url: str, redis_server: RedisServer) -> Iterator[Celery]:
    """The application's Celery on the test Redis: broker and result backend."""
    app = Celery("infrawatch-tests", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_default_queue="jobs",
        worker_hijack_root_logger=False,
    )
    app.task(name="tests.queue_jobs.double")(queue_jobs.double)
    app.task(name="tests.queue_jobs.explode")(queue_jobs.explode)
    yield app
    app.close()


async def test_celery_tasks_run_fail_and_wait(
    aiohttp_client: Any, redis_url: str, celery_app: Celery
) -> None:
    double, explode = (celery_app.tasks[f"tests.queue_jobs.{n}"] for n in ("double", "explode"))
    done = double.apply_async((21,))
    failed = explode.apply_async()
    # a real worker (Celery's own test worker: a WorkController in a thread, solo pool)
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        # in this thread, where the results' consumer was made (the app is not started yet)
        assert done.get(timeout=20) == 42
        with pytest.raises(RuntimeError):
            failed.get(timeout=20, propagate=True)
    assert failed.state == "FAILURE"
    for i in range(3):
        double.apply_async((i,))
    double.apply_async((7,), priority=5)  # kombu keeps another list per priority step

    with celery_app.connection_for_write() as connection:
        declared = connection.default_channel.queue_declare("jobs", passive=True)
    client = await start_app(aiohttp_client, settings(redis_url, "celery:jobs"))
    seen = await queue_of(client, "celery", "jobs")
    assert seen["depth"] == seen["states"]["waiting"] == declared.message_count == 4
    assert seen["states"]["unacked"] == 0  # the worker acknowledged both before it stopped
    assert seen["oldest_waiting_age_seconds"] is None  # kombu records no enqueue time

    # discovered by SCAN (kombu's binding set names the queue) with the same figures
    client = await start_app(aiohttp_client, settings(redis_url, ""))
    found = await queue_of(client, "celery", "jobs")
    assert found["depth"] == 4

    # a consumer holds one message unacknowledged, as a worker does while it runs a task
    connection = celery_app.connection_for_read()
    try:
        channel = connection.default_channel
        held = channel.basic_get("jobs", no_ack=False)
        assert held is not None
        left = channel.queue_declare("jobs", passive=True).message_count
        seen = await queue_of(client, "celery", "jobs")
        assert seen["states"] == {"waiting": left, "unacked": 1}
        assert left == 3
        held.ack()
    finally:
        connection.release()
    seen = await queue_of(client, "celery", "jobs")
    assert seen["states"] == {"waiting": 3, "unacked": 0}


# --- the queue rules, on real RQ jobs ---


async def test_queue_backlog_and_failed_jobs_fire_and_resolve(
    aiohttp_client: Any, redis_url: str, conn: redis.Redis
) -> None:
    queue = Queue("bulk", connection=conn)
    for i in range(6):
        queue.enqueue(queue_jobs.double, i)
    for _ in range(3):
        queue.enqueue(queue_jobs.explode)
    client = await start_app(
        aiohttp_client,
        Settings(
            redis_url=redis_url,
            queue_names="rq:bulk",
            alert_evaluation_interval=3600.0,
            alert_cache_get_p95_warning=3_600_000.0,
            alert_cache_get_p95_critical=7_200_000.0,
            rpc_coalesce_ttl=0.0,
            alert_queue_backlog_warning=5,
            alert_queue_failed_warning=2,
        ),
    )
    alerts = await firing(client)
    backlog = alerts["queue_backlog:rq:bulk"]
    assert (backlog["level"], backlog["value"]) == ("warning", 9)
    assert "queue_failed:rq:bulk" not in alerts  # none has failed yet

    # in this thread: RQ's worker installs signal handlers (the app only waits meanwhile)
    SimpleWorker([queue], connection=conn).work(burst=True)
    assert FailedJobRegistry(queue=queue).count == 3
    alerts = await firing(client)
    assert "queue_backlog:rq:bulk" not in alerts  # drained
    failed = alerts["queue_failed:rq:bulk"]
    assert (failed["level"], failed["value"]) == ("warning", 3)
    assert "holds 3 failed jobs" in failed["message"]

    registry = FailedJobRegistry(queue=queue)
    for job_id in registry.get_job_ids():
        registry.remove(job_id, delete_job=True)
    assert "queue_failed:rq:bulk" not in await firing(client)


async def firing(client: TestClient) -> dict[str, dict[str, Any]]:
    """fingerprint -> alert, of every alert firing after one evaluation round."""
    await evaluator(client).run_once()
    answer = result(await call(client, "alerts.list", {"state": "firing"}))
    return {a["fingerprint"]: a for a in answer["alerts"]}
