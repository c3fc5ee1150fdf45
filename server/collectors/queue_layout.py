"""Where BullMQ, RQ and Celery keep their jobs in Redis, read from each library's own source.

BullMQ (``src/classes/queue-keys.ts``, ``queue-getters.ts``, ``commands/getCounts-1.lua``):
``<prefix>:<queue>:<state>`` with prefix ``bull`` by default; ``wait`` and ``active`` are lists,
``paused`` a list before v5 (v5 marks a paused queue with field ``paused`` of the ``meta`` hash
instead), ``prioritized``, ``delayed``, ``waiting-children``, ``completed`` and ``failed`` are
sorted sets. Queue names cannot contain ``:`` (``queue-base.ts`` refuses them). A v4 wait list may
end with a ``0:<ts>`` marker entry that is not a job; getCounts leaves it out, and so do we.

RQ (``rq/queue.py``, ``rq/registry.py``, ``rq/intermediate_queue.py``): the queue is the list
``rq:queue:<q>``, every queue's key is in the set ``rq:queues``; jobs a worker popped but has not
started sit in the list ``rq:queue:<q>:intermediate``; the registries are sorted sets
``rq:wip:<q>`` (started), ``rq:scheduled:``, ``rq:deferred:``, ``rq:ready:``, ``rq:finished:``,
``rq:failed:``, ``rq:canceled:``.

Celery on kombu's Redis transport (``kombu/transport/redis.py``): a queue is a list named after
it, plus one list per priority step ``<q>\\x06\\x16<step>`` (steps 1-9; step 0 is the plain
name); ``_kombu.binding.<exchange>`` sets hold ``routing_key\\x06\\x16pattern\\x06\\x16queue``; the
hash ``unacked`` holds ``[message, exchange, routing_key]`` for every task a worker holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.config import QueueName

Kind = Literal["bullmq", "rq", "celery"]
Structure = Literal["list", "zset"]

BULLMQ_PREFIX = "bull"
# (state, structure, counts toward depth): depth is what waits to start, now or later.
BULLMQ_STATES: tuple[tuple[str, Structure, bool], ...] = (
    ("wait", "list", True),
    ("paused", "list", True),
    ("prioritized", "zset", True),
    ("delayed", "zset", True),
    ("waiting-children", "zset", True),
    ("active", "list", False),
    ("completed", "zset", False),
    ("failed", "zset", False),
)
# Keys every BullMQ queue may have besides its states: they mark a queue during discovery.
BULLMQ_MARKERS = frozenset({state for state, _, _ in BULLMQ_STATES} | {"meta", "id", "events"})
BULLMQ_LEGACY_MARKER = "0:"
# A job's hash (queue-keys.ts: <prefix>:<queue>:<id>) holds when it was added, in ms.
BULLMQ_TIMESTAMP = "timestamp"

RQ_QUEUES_SET = "rq:queues"
# A job's hash (rq/job.py: rq:job:<id>) holds when it was enqueued, ISO 8601 in UTC.
RQ_JOB_PREFIX = "rq:job:"
RQ_ENQUEUED_AT = "enqueued_at"
RQ_QUEUE_PREFIX = "rq:queue:"
RQ_INTERMEDIATE = ":intermediate"
# (state, key template, structure, counts toward depth)
RQ_STATES: tuple[tuple[str, str, Structure, bool], ...] = (
    ("queued", "rq:queue:{}", "list", True),
    ("scheduled", "rq:scheduled:{}", "zset", True),
    ("deferred", "rq:deferred:{}", "zset", True),
    ("ready", "rq:ready:{}", "zset", True),
    ("intermediate", "rq:queue:{}:intermediate", "list", False),
    ("started", "rq:wip:{}", "zset", False),
    ("finished", "rq:finished:{}", "zset", False),
    ("failed", "rq:failed:{}", "zset", False),
    ("canceled", "rq:canceled:{}", "zset", False),
)
# Registry keys name their queue after a fixed prefix: "rq:wip:", "rq:failed:", ...
RQ_REGISTRY_PREFIXES = tuple(t.removesuffix("{}") for _, t, kind, _ in RQ_STATES if kind == "zset")

CELERY_SEP = "\x06\x16"
CELERY_PRIORITY_STEPS = range(10)
CELERY_BINDING_PREFIX = "_kombu.binding."
CELERY_UNACKED = "unacked"
# Exchanges of Celery's own plumbing (remote control, events): fanout, never job queues.
CELERY_PLUMBING = (".pidbox", "celeryev")


@dataclass(frozen=True, slots=True)
class StateKey:
    state: str
    key: str
    structure: Structure
    pending: bool  # counts toward the queue's depth


def state_keys(queue: QueueName) -> list[StateKey]:
    """The keys holding each state of ``queue`` (whose kind is known)."""
    if queue.kind == "bullmq":
        base = f"{queue.prefix or BULLMQ_PREFIX}:{queue.name}"
        return [StateKey(s, f"{base}:{s}", kind, pending) for s, kind, pending in BULLMQ_STATES]
    if queue.kind == "rq":
        return [StateKey(s, t.format(queue.name), kind, p) for s, t, kind, p in RQ_STATES]
    return [StateKey("waiting", key, "list", True) for key in celery_lists(queue.name)]


def job_hash(queue: QueueName, job_id: str) -> tuple[str, str]:
    """The hash of a BullMQ or RQ job, and its field saying when the job was added."""
    if queue.kind == "bullmq":
        return f"{queue.prefix or BULLMQ_PREFIX}:{queue.name}:{job_id}", BULLMQ_TIMESTAMP
    return f"{RQ_JOB_PREFIX}{job_id}", RQ_ENQUEUED_AT


def bullmq_meta_key(queue: QueueName) -> str:
    return f"{queue.prefix or BULLMQ_PREFIX}:{queue.name}:meta"


def celery_lists(name: str) -> list[str]:
    """kombu's ``_q_for_pri``: the plain name for step 0, ``name<sep><step>`` for the others."""
    return [name if step == 0 else f"{name}{CELERY_SEP}{step}" for step in CELERY_PRIORITY_STEPS]


def detection_keys(name: str) -> dict[Kind, list[str]]:
    """Keys whose existence says that a plain ``QUEUE_NAMES`` entry is a queue of that kind."""
    bull = f"{BULLMQ_PREFIX}:{name}"
    return {
        "bullmq": [f"{bull}:{marker}" for marker in sorted(BULLMQ_MARKERS)],
        "rq": [template.format(name) for _, template, _, _ in RQ_STATES],
        "celery": celery_lists(name)[1:],  # the plain name is checked by TYPE: it must be a list
    }


@dataclass(frozen=True, slots=True)
class Binding:
    exchange: str
    routing_key: str
    queue: str


def classify(key: str) -> QueueName | str | None:
    """What a key name found by SCAN says: a queue, a kombu binding set (its name returned as
    a str, to be read), or nothing."""
    if key.startswith(f"{BULLMQ_PREFIX}:"):
        parts = key.split(":")
        if len(parts) == 3 and parts[1] and parts[2] in BULLMQ_MARKERS:
            return QueueName("bullmq", parts[1])
        return None
    if key.startswith(RQ_QUEUE_PREFIX):
        name = key[len(RQ_QUEUE_PREFIX) :].partition(RQ_INTERMEDIATE)[0]
        # rq's compact() works on a temporary rq:queue:_compact:<uuid> list.
        return QueueName("rq", name) if name and not name.startswith("_compact:") else None
    if key.startswith("rq:"):
        for prefix in RQ_REGISTRY_PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                return QueueName("rq", key[len(prefix) :])
        return None
    if key.startswith(CELERY_BINDING_PREFIX):
        exchange = key[len(CELERY_BINDING_PREFIX) :]
        return None if _is_plumbing(exchange) else key
    return None


def parse_binding(binding_key: str, member: str) -> Binding | None:
    """A member of ``_kombu.binding.<exchange>``, or None for Celery's own plumbing."""
    parts = member.split(CELERY_SEP)
    if len(parts) != 3 or not parts[2] or _is_plumbing(parts[2]):
        return None
    exchange = binding_key[len(CELERY_BINDING_PREFIX) :]
    return Binding(exchange, parts[0], parts[2])


def _is_plumbing(name: str) -> bool:
    return name.endswith(CELERY_PLUMBING[0]) or name.startswith(CELERY_PLUMBING[1])
