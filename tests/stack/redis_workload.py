"""Job queues in Redis shaped as BullMQ, RQ and Celery shape them, without those libraries.

Each helper issues the commands the library itself issues for that step (BullMQ's Lua
scripts ``addStandardJob``/``addDelayedJob``/``addPrioritizedJob``/``moveToActive``/
``moveToFinished``, RQ's ``Queue.enqueue``/``Worker.dequeue``/registries, kombu's Redis
transport ``_put``/``_brpop``/``QoS.append``), so ``monitoring.queueStats`` reads them as it
would read the real thing. Tests build exact states with them; ``run_workload`` keeps two
queues moving for ``make run``'s demo.

Usage (the dashboard's demo calls it every few seconds, in a thread: it is synchronous)::

    from tests.stack.redis_workload import run_workload
    result = run_workload("redis://127.0.0.1:6379/0", rounds=20, seconds=2.0, seed=1)
    result.pushed, result.completed  # what this burst did

Every call is one bounded burst (at most ``rounds`` rounds and ``seconds`` seconds, no
sleeping); finished jobs are trimmed to the last ``keep``, as BullMQ's ``removeOnComplete``
and RQ's result TTL would, so repeated bursts do not grow Redis without bound.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass

import redis

BULL = "bull"
CELERY_SEP = "\x06\x16"


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- BullMQ (v5 key layout: bull:<queue>:<suffix>) ---


def bullmq_add(
    r: redis.Redis,
    queue: str,
    *,
    delay_ms: int = 0,
    priority: int = 0,
    prefix: str = BULL,
    name: str = "job",
) -> str:
    """``Queue.add``: a job hash, then the wait list, the delayed or the prioritized set."""
    base = f"{prefix}:{queue}"
    job_id = str(r.incr(f"{base}:id"))
    now = _now_ms()
    opts = {"delay": delay_ms, "priority": priority, "attempts": 1}
    r.hset(
        f"{base}:{job_id}",
        mapping={"name": name, "data": "{}", "opts": json.dumps(opts), "timestamp": now},
    )
    r.hsetnx(f"{base}:meta", "opts.maxLenEvents", 10000)
    if delay_ms:
        # getDelayedScore: the timestamp in the high bits, the job counter in the low 12.
        r.zadd(f"{base}:delayed", {job_id: (now + delay_ms) * 0x1000 + int(job_id) % 0x1000})
        event = "delayed"
    elif priority:
        counter = int(r.incr(f"{base}:pc"))
        r.zadd(f"{base}:prioritized", {job_id: priority * 0x100000000 + counter})
        event = "waiting"
    else:
        r.lpush(f"{base}:wait", job_id)
        event = "waiting"
    r.zadd(f"{base}:marker", {"0": 0})
    r.xadd(f"{base}:events", {"event": event, "jobId": job_id}, maxlen=10000, approximate=True)
    return job_id


def bullmq_take(r: redis.Redis, queue: str, *, prefix: str = BULL) -> str | None:
    """A worker's ``moveToActive``: the oldest waiting job moves to the active list."""
    base = f"{prefix}:{queue}"
    job_id = r.lmove(f"{base}:wait", f"{base}:active", "RIGHT", "LEFT")
    return None if job_id is None else _text(job_id)


def bullmq_finish(
    r: redis.Redis, queue: str, job_id: str, *, failed: bool = False, prefix: str = BULL
) -> None:
    """``moveToFinished``: out of the active list, into completed or failed, scored by time."""
    base = f"{prefix}:{queue}"
    r.lrem(f"{base}:active", -1, job_id)
    r.zadd(f"{base}:{'failed' if failed else 'completed'}", {job_id: _now_ms()})


def bullmq_wait_for_children(
    r: redis.Redis, queue: str, job_id: str, *, prefix: str = BULL
) -> None:
    r.zadd(f"{prefix}:{queue}:waiting-children", {job_id: _now_ms()})


def bullmq_pause(r: redis.Redis, queue: str, *, prefix: str = BULL) -> None:
    """v5 ``pause``: a flag in the meta hash (jobs stay in the wait list)."""
    r.hset(f"{prefix}:{queue}:meta", "paused", 1)


# --- RQ (rq:queue:<queue> and its registries) ---


def rq_enqueue(r: redis.Redis, queue: str, *, at_front: bool = False) -> str:
    """``Queue.enqueue``: a job hash, the queue registered in rq:queues, the id pushed."""
    job_id = str(uuid.uuid4())
    r.hset(
        f"rq:job:{job_id}",
        mapping={"status": "queued", "origin": queue, "created_at": time.time()},
    )
    r.sadd("rq:queues", f"rq:queue:{queue}")
    (r.lpush if at_front else r.rpush)(f"rq:queue:{queue}", job_id)
    return job_id


def rq_schedule(r: redis.Redis, queue: str, *, in_seconds: float = 60) -> str:
    """``Queue.enqueue_in``: the job waits in the scheduled registry, scored by its time."""
    job_id = str(uuid.uuid4())
    r.hset(f"rq:job:{job_id}", mapping={"status": "scheduled", "origin": queue})
    r.sadd("rq:queues", f"rq:queue:{queue}")
    r.zadd(f"rq:scheduled:{queue}", {job_id: time.time() + in_seconds})
    return job_id


def rq_defer(r: redis.Redis, queue: str) -> str:
    """A job enqueued with ``depends_on`` an unfinished job: the deferred registry."""
    job_id = str(uuid.uuid4())
    r.hset(f"rq:job:{job_id}", mapping={"status": "deferred", "origin": queue})
    r.sadd("rq:queues", f"rq:queue:{queue}")
    r.zadd(f"rq:deferred:{queue}", {job_id: time.time()})
    return job_id


def rq_take(r: redis.Redis, queue: str) -> str | None:
    """``Worker.dequeue`` then ``prepare_execution``: through the intermediate list into
    the started registry (rq:wip), whose members are ``<job_id>:<execution_id>``."""
    key = f"rq:queue:{queue}"
    job_id = r.lmove(key, f"{key}:intermediate", "LEFT", "RIGHT")
    if job_id is None:
        return None
    job = _text(job_id)
    pipe = r.pipeline()
    pipe.lrem(f"{key}:intermediate", 1, job)
    pipe.zadd(f"rq:wip:{queue}", {f"{job}:{uuid.uuid4().hex[:8]}": time.time() + 180})
    pipe.hset(f"rq:job:{job}", "status", "started")
    pipe.execute()
    return job


def rq_finish(r: redis.Redis, queue: str, job_id: str, *, failed: bool = False) -> None:
    """Out of rq:wip into the finished or failed registry."""
    for member in r.zrange(f"rq:wip:{queue}", 0, -1):
        if _text(member).startswith(f"{job_id}:"):
            r.zrem(f"rq:wip:{queue}", member)
    registry = "failed" if failed else "finished"
    r.zadd(f"rq:{registry}:{queue}", {job_id: time.time() + 500})
    r.hset(f"rq:job:{job_id}", "status", registry)


# --- Celery on kombu's Redis transport ---


def celery_declare(r: redis.Redis, queue: str, *, exchange: str | None = None) -> None:
    """``Queue.declare``: the binding ``routing_key<sep>pattern<sep>queue`` in
    ``_kombu.binding.<exchange>`` (Celery's default: exchange and routing key = queue name)."""
    exchange = exchange or queue
    r.sadd(f"_kombu.binding.{exchange}", CELERY_SEP.join([queue, "", queue]))


def celery_publish(r: redis.Redis, queue: str, *, priority: int = 0) -> str:
    """``_put``: LPUSH onto the queue's list for that priority step (workers BRPOP)."""
    tag = str(uuid.uuid4())
    step = (0, 3, 6, 9)[sum(priority >= s for s in (3, 6, 9))]
    key = queue if step == 0 else f"{queue}{CELERY_SEP}{step}"
    message = {
        "body": "W1tdLCB7fSwge31d",
        "headers": {"task": "demo.task", "id": tag},
        "properties": {"delivery_tag": tag, "priority": priority},
    }
    r.lpush(key, json.dumps(message))
    return tag


def celery_reserve(r: redis.Redis, queue: str, *, exchange: str | None = None) -> str | None:
    """A worker takes a task: BRPOP (here RPOP), then ``QoS.append`` keeps it in ``unacked``
    (and ``unacked_index``) until the ack."""
    raw = r.rpop(queue)
    if raw is None:
        return None
    message = json.loads(raw)
    tag = str(message["properties"]["delivery_tag"])
    route = exchange or queue
    r.zadd("unacked_index", {tag: time.time()})
    r.hset("unacked", tag, json.dumps([message, route, queue]))
    return tag


# --- the demo workload ---


@dataclass
class WorkloadResult:
    rounds: int = 0
    pushed: int = 0
    completed: int = 0
    failed: int = 0


def run_workload(
    url: str,
    *,
    rounds: int = 20,
    seconds: float = 2.0,
    bullmq_queue: str = "emails",
    rq_queue: str = "default",
    keep: int = 100,
    seed: int | None = None,
) -> WorkloadResult:
    """One bounded burst of producer and worker traffic on a BullMQ-shaped and an RQ-shaped
    queue: each round pushes 1-4 jobs to each (now and then a delayed, prioritized or
    scheduled one) and takes 0-3 from each, finishing most and failing about one in ten.
    Producers slightly outpace workers, so the depths wander upward until ``keep`` trims."""
    if rounds < 1 or seconds <= 0:
        raise ValueError("rounds must be >= 1 and seconds > 0")
    rng = random.Random(seed)
    result = WorkloadResult()
    deadline = time.monotonic() + seconds
    with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as r:
        while result.rounds < rounds and time.monotonic() < deadline:
            result.rounds += 1
            for _ in range(rng.randint(1, 4)):
                roll = rng.random()
                bullmq_add(
                    r,
                    bullmq_queue,
                    delay_ms=60_000 if roll < 0.1 else 0,
                    priority=rng.randint(1, 5) if 0.1 <= roll < 0.2 else 0,
                )
                if roll < 0.1:
                    rq_schedule(r, rq_queue)
                else:
                    rq_enqueue(r, rq_queue)
                result.pushed += 2
            for _ in range(rng.randint(0, 3)):
                failed = rng.random() < 0.1
                if (job := bullmq_take(r, bullmq_queue)) is not None:
                    bullmq_finish(r, bullmq_queue, job, failed=failed)
                    result.failed += failed
                    result.completed += not failed
                if (job := rq_take(r, rq_queue)) is not None:
                    rq_finish(r, rq_queue, job, failed=failed)
                    result.failed += failed
                    result.completed += not failed
        _trim(r, bullmq_queue, rq_queue, keep)
    return result


def _trim(r: redis.Redis, bullmq_queue: str, rq_queue: str, keep: int) -> None:
    """Keep the newest ``keep`` finished jobs of each set, deleting the others' job hashes."""
    sets = {
        f"{BULL}:{bullmq_queue}:completed": f"{BULL}:{bullmq_queue}:",
        f"{BULL}:{bullmq_queue}:failed": f"{BULL}:{bullmq_queue}:",
        f"rq:finished:{rq_queue}": "rq:job:",
        f"rq:failed:{rq_queue}": "rq:job:",
    }
    for key, job_prefix in sets.items():
        old = r.zrange(key, 0, -(keep + 1))
        if old:
            r.delete(*(f"{job_prefix}{_text(job)}" for job in old))
            r.zrem(key, *old)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
