"""``QueueCollector``: the depth of Redis-backed job queues (BullMQ, RQ, Celery).

Which queues: the ones named in ``QUEUE_NAMES`` (``kind:name``; a plain name's kind is
detected from the keys present), or, when it is unset, the ones a SCAN of the keyspace finds.
Discovery reads at most ``QUEUE_SCAN_MAX_KEYS`` key names, ``BATCH`` per SCAN call, never KEYS,
and is kept for ``QUEUE_DISCOVERY_INTERVAL`` seconds: a scrape or a dashboard refresh costs one
pipeline of LLEN/ZCARD, not a walk of the keyspace. The SCAN walks with no MATCH: a MATCH
filter does not spare Redis the walk, and only an unfiltered walk tells exactly how many keys
were looked at, and one walk serves all three libraries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field

from server.collectors.queue_layout import (
    BULLMQ_LEGACY_MARKER,
    BULLMQ_TIMESTAMP,
    CELERY_UNACKED,
    RQ_QUEUE_PREFIX,
    RQ_QUEUES_SET,
    Binding,
    Kind,
    StateKey,
    bullmq_meta_key,
    classify,
    detection_keys,
    job_hash,
    parse_binding,
    state_keys,
)
from server.config import QueueName, QueueSettings
from server.datastores.redis_gate import BATCH, RedisGate

# Each queue is a few Prometheus series per state: bound how many one answer (and one scrape)
# may carry.
MAX_QUEUES = 100
# Binding sets read after a discovery walk (one per Celery exchange).
MAX_BINDING_SETS = 100
# Unacked Celery tasks are attributed to their queue only up to this many (each is parsed).
MAX_UNACKED_ATTRIBUTED = 1000


class QueueStatsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rediscover: bool = Field(
        False,
        description="Walk the keyspace again now instead of reusing the last discovery "
        "(kept for QUEUE_DISCOVERY_INTERVAL seconds). No effect when QUEUE_NAMES is set.",
    )


class QueueInfo(BaseModel):
    name: str = Field(description="Queue name as its library knows it.")
    kind: Kind = Field(description="The library whose key layout the queue uses.")
    depth: int = Field(
        description="Jobs waiting to start, now or later. BullMQ: wait + paused + prioritized "
        "+ delayed + waiting-children. RQ: queued + scheduled + deferred + ready. Celery: "
        "waiting (every priority list)."
    )
    states: dict[str, int] = Field(
        description="Jobs per state. BullMQ: wait, paused, prioritized, delayed, "
        "waiting-children, active, completed, failed. RQ: queued, scheduled, deferred, ready, "
        "intermediate, started, finished, failed, canceled. Celery: waiting, and unacked "
        "(tasks workers hold) when the unacked hash is small enough to attribute."
    )
    key_prefix: str | None = Field(
        None, description="BullMQ key prefix (default 'bull'); null for RQ and Celery."
    )
    paused: bool | None = Field(
        None, description="BullMQ: the queue is paused (meta hash); null for RQ and Celery."
    )
    oldest_waiting_age_seconds: float | None = Field(
        None,
        description="Age of the job next in line, from when it was added: BullMQ the job "
        "hash's timestamp of the wait list's tail, RQ the enqueued_at of the queue's head; "
        "null when none waits, and always for Celery (kombu records no enqueue time).",
    )


class QueueStats(BaseModel):
    redis_configured: bool = Field(
        description="False when no Redis is configured: nothing to watch, every list is empty."
    )
    queues: list[QueueInfo] = Field(description="Watched queues, by kind then name.")
    discovered: bool = Field(
        description="True: queues found by SCAN (QUEUE_NAMES unset); false: named in QUEUE_NAMES."
    )
    scanned_keys: int = Field(description="Key names the discovery walk read (0 when named).")
    scan_complete: bool | None = Field(
        description="The discovery walk reached the end of the keyspace (false: it stopped at "
        "QUEUE_SCAN_MAX_KEYS, so queues may be missing); null when queues are named."
    )
    discovered_at: datetime | None = Field(
        description="When the discovery used for this answer ran; null when queues are named."
    )
    truncated: bool = Field(
        description=f"More than {MAX_QUEUES} queues were found; the first by kind and name "
        "are listed."
    )
    not_found: list[str] = Field(
        description="QUEUE_NAMES entries of no detected kind: no key of BullMQ, RQ or Celery "
        "exists for them."
    )
    celery_unacked: int | None = Field(
        description="Tasks Celery workers hold unacknowledged, all queues together (size of "
        "kombu's 'unacked' hash); null when no Celery queue is watched."
    )
    warnings: list[str] = Field(
        description="Keys where a queue state should be but of another type (left out)."
    )


@dataclass(slots=True)
class Discovery:
    queues: list[QueueName]
    bindings: list[Binding]
    scanned_keys: int
    complete: bool
    truncated: bool
    at: datetime
    taken: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Plan:
    """One pipeline: for each queue, its commands and where their replies land."""

    commands: list[tuple[Any, ...]] = field(default_factory=list)
    rows: list[tuple[QueueName, list[tuple[StateKey, int, int | None]], int | None]] = field(
        default_factory=list
    )
    # per queue: where the reply naming its next job lands (LINDEX), for its age
    heads: dict[int, int] = field(default_factory=dict)

    def add(self, *command: Any) -> int:
        self.commands.append(command)
        return len(self.commands) - 1


class QueueCollector:
    """One per app: holds the last discovery."""

    def __init__(self, gate: RedisGate, settings: QueueSettings) -> None:
        self._gate = gate
        self._settings = settings
        self._discovery: Discovery | None = None
        self._discovering = asyncio.Lock()

    async def stats(self, rediscover: bool = False) -> QueueStats:
        if not self._gate.configured:
            return _empty(configured=False)
        named = self._settings.names
        discovery = None
        if named:
            queues, not_found = await self._detect(named)
            bindings: list[Binding] = []
        else:
            discovery = await self._discover(rediscover)
            queues, not_found, bindings = discovery.queues, [], discovery.bindings
        infos, warnings, unacked = await self._measure(queues, bindings)
        return QueueStats(
            redis_configured=True,
            queues=infos,
            discovered=discovery is not None,
            scanned_keys=discovery.scanned_keys if discovery else 0,
            scan_complete=discovery.complete if discovery else None,
            discovered_at=discovery.at if discovery else None,
            truncated=bool(discovery and discovery.truncated),
            not_found=not_found,
            celery_unacked=unacked,
            warnings=warnings,
        )

    # --- which queues ---

    async def _detect(self, named: Iterable[QueueName]) -> tuple[list[QueueName], list[str]]:
        """Named queues as they are; a plain name gets every kind whose keys exist for it."""
        known = [q for q in named if q.kind is not None]
        plain = [q.name for q in named if q.kind is None]
        commands: list[tuple[Any, ...]] = []
        for name in plain:
            keys = detection_keys(name)
            commands += [
                ("EXISTS", *keys["bullmq"]),
                ("EXISTS", *keys["rq"]),
                ("EXISTS", *keys["celery"]),
                ("SISMEMBER", RQ_QUEUES_SET, f"{RQ_QUEUE_PREFIX}{name}"),
                ("TYPE", name),
            ]
        replies = await self._gate.pipeline(commands) if commands else []
        found: list[QueueName] = []
        missing: list[str] = []
        for i, name in enumerate(plain):
            bullmq, rq, celery, listed, key_type = replies[5 * i : 5 * i + 5]
            kinds: list[Kind] = []
            if _int(bullmq) > 0:
                kinds.append("bullmq")
            if _int(rq) > 0 or _int(listed) > 0:
                kinds.append("rq")
            if _int(celery) > 0 or _text(key_type) == "list":
                kinds.append("celery")
            found += [QueueName(kind, name) for kind in kinds]
            if not kinds:
                missing.append(name)
        return _bounded(known + found)[0], missing

    async def _discover(self, rediscover: bool) -> Discovery:
        async with self._discovering:  # one walk at a time; waiters reuse its result
            last = self._discovery
            fresh = last is not None and (
                time.monotonic() - last.taken < self._settings.discovery_interval
            )
            if last is not None and fresh and not rediscover:
                return last
            self._discovery = await self._walk()
            return self._discovery

    async def _walk(self) -> Discovery:
        limit = self._settings.scan_max_keys
        queues: set[QueueName] = set()
        binding_keys: set[str] = set()
        cursor, scanned = 0, 0
        # every primary in Cluster mode, one after the other, within one key budget
        nodes = await self._gate.scan_nodes()
        for walked, node in enumerate(nodes, 1):
            cursor = 0
            while True:
                cursor, keys = await self._gate.scan(cursor, min(BATCH, limit), node)
                scanned += len(keys)
                for key in _texts(keys):
                    found = classify(key)
                    if isinstance(found, QueueName):
                        queues.add(found)
                    elif found is not None:
                        binding_keys.add(found)
                if cursor == 0 or scanned >= limit:
                    break
            if scanned >= limit:
                if cursor == 0 and walked < len(nodes):
                    cursor = -1  # nodes left unwalked: the walk did not reach the end
                break
        queues.update(await self._registered_rq_queues())
        bindings = await self._read_bindings(sorted(binding_keys)[:MAX_BINDING_SETS])
        queues.update(QueueName("celery", b.queue) for b in bindings)
        listed, truncated = _bounded(queues)
        return Discovery(
            queues=listed,
            bindings=bindings,
            scanned_keys=scanned,
            complete=cursor == 0,
            truncated=truncated,
            at=datetime.now(UTC),
        )

    async def _registered_rq_queues(self) -> set[QueueName]:
        """Members of ``rq:queues``: an RQ queue with no job has no list, but is listed."""
        found: set[QueueName] = set()
        cursor = 0
        # Bounded like the walk: a set of more queue keys than we would list is not read on.
        for _ in range(MAX_QUEUES):
            cursor, members = await self._gate.sscan(RQ_QUEUES_SET, cursor)
            for member in _texts(members):
                if member.startswith(RQ_QUEUE_PREFIX) and len(member) > len(RQ_QUEUE_PREFIX):
                    found.add(QueueName("rq", member[len(RQ_QUEUE_PREFIX) :]))
            if cursor == 0 or len(found) > MAX_QUEUES:
                break
        return found

    async def _read_bindings(self, keys: list[str]) -> list[Binding]:
        if not keys:
            return []
        replies = await self._gate.pipeline([("SMEMBERS", key) for key in keys])
        bindings = []
        for key, members in zip(keys, replies, strict=True):
            if isinstance(members, Exception):
                continue  # not a set after all: not kombu's
            for member in sorted(_texts(members)):
                binding = parse_binding(key, member)
                if binding is not None:
                    bindings.append(binding)
        return bindings

    # --- how deep ---

    async def _measure(
        self, queues: list[QueueName], bindings: list[Binding]
    ) -> tuple[list[QueueInfo], list[str], int | None]:
        plan = _Plan()
        for queue in queues:
            slots = []
            for sk in state_keys(queue):
                count = plan.add("LLEN" if sk.structure == "list" else "ZCARD", sk.key)
                legacy = None
                if queue.kind == "bullmq" and sk.structure == "list" and sk.state != "active":
                    legacy = plan.add("LINDEX", sk.key, -1)
                    if sk.state == "wait":
                        plan.heads[len(plan.rows)] = legacy  # workers take from the tail
                if queue.kind == "rq" and sk.state == "queued":
                    plan.heads[len(plan.rows)] = plan.add("LINDEX", sk.key, 0)  # LPOP side
                slots.append((sk, count, legacy))
            meta = None
            if queue.kind == "bullmq":
                meta = plan.add("HGET", bullmq_meta_key(queue), "paused")
            plan.rows.append((queue, slots, meta))
        has_celery = any(q.kind == "celery" for q in queues)
        unacked_at = plan.add("HLEN", CELERY_UNACKED) if has_celery else None
        replies = await self._gate.pipeline(plan.commands) if plan.commands else []

        warnings: list[str] = []
        infos = [_info(q, slots, meta, replies, warnings) for q, slots, meta in plan.rows]
        await self._ages(plan, replies, infos)
        unacked = None
        if unacked_at is not None:
            unacked = _reply_int(replies[unacked_at], CELERY_UNACKED, warnings)
            if 0 < unacked <= MAX_UNACKED_ATTRIBUTED:
                await self._attribute_unacked(infos, bindings)
            elif unacked == 0:
                for info in infos:
                    if info.kind == "celery":
                        info.states["unacked"] = 0
        return infos, warnings, unacked

    async def _ages(self, plan: _Plan, replies: list[Any], infos: list[QueueInfo]) -> None:
        """One more pipeline: the added-at time of each queue's next job, from its hash."""
        asked: list[tuple[QueueInfo, str]] = []
        commands: list[tuple[Any, ...]] = []
        for row, at in plan.heads.items():
            job_id = _text(replies[at])
            queue = plan.rows[row][0]
            if not job_id or job_id.startswith(BULLMQ_LEGACY_MARKER):
                continue
            key, field = job_hash(queue, job_id)
            commands.append(("HGET", key, field))
            asked.append((infos[row], field))
        if not commands:
            return
        stamps = await self._gate.pipeline(commands)
        now = time.time()
        for (info, field), stamp in zip(asked, stamps, strict=True):
            added = _added_at(field, _text(stamp))
            if added is not None:
                info.oldest_waiting_age_seconds = round(max(0.0, now - added), 3)

    async def _attribute_unacked(self, infos: list[QueueInfo], bindings: list[Binding]) -> None:
        """Count each unacked task against its queue, routed as kombu restores it: by the
        exchange's bindings, or (default exchange, no binding known) by routing key."""
        celery = {info.name: info for info in infos if info.kind == "celery"}
        routes = {(b.exchange, b.routing_key): b.queue for b in bindings}
        counts = dict.fromkeys(celery, 0)
        cursor, seen = 0, 0
        while seen < MAX_UNACKED_ATTRIBUTED:
            cursor, entries = await self._gate.hscan(CELERY_UNACKED, cursor)
            for value in entries.values():
                seen += 1
                queue = _unacked_queue(value, routes)
                if queue in counts:
                    counts[queue] += 1
            if cursor == 0:
                break
        if cursor != 0:
            return  # the hash outgrew the bound while we read it: no partial figures
        for name, count in counts.items():
            celery[name].states["unacked"] = count


def _info(
    queue: QueueName,
    slots: list[tuple[StateKey, int, int | None]],
    meta: int | None,
    replies: list[Any],
    warnings: list[str],
) -> QueueInfo:
    states: dict[str, int] = {}
    depth = 0
    for sk, at, legacy in slots:
        count = _reply_int(replies[at], sk.key, warnings)
        last = replies[legacy] if legacy is not None else None
        if count and (_text(last) or "").startswith(BULLMQ_LEGACY_MARKER):
            count -= 1  # a BullMQ v4 marker entry, not a job
        states[sk.state] = states.get(sk.state, 0) + count
        depth += count if sk.pending else 0
    paused = None
    if meta is not None:
        flag = replies[meta]
        paused = _text(flag) not in (None, "0", "")
    return QueueInfo(
        name=queue.name,
        kind=cast(Kind, queue.kind),  # always set once detected
        depth=depth,
        states=states,
        key_prefix=(queue.prefix or "bull") if queue.kind == "bullmq" else None,
        paused=paused,
    )


def _added_at(field: str, stamp: str | None) -> float | None:
    """Epoch seconds from a job hash's field: BullMQ ms, RQ an ISO time in UTC."""
    if not stamp:
        return None
    try:
        if field == BULLMQ_TIMESTAMP:
            return int(stamp) / 1000
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _reply_int(reply: Any, key: str, warnings: list[str]) -> int:
    if isinstance(reply, Exception):
        warnings.append(f"{key}: {reply}")
        return 0
    return int(reply)


def _int(reply: Any) -> int:
    return 0 if isinstance(reply, Exception) else int(reply)


def _text(reply: Any) -> str | None:
    if isinstance(reply, bytes):
        return reply.decode(errors="replace")
    return reply if isinstance(reply, str) else None


def _unacked_queue(value: bytes, routes: dict[tuple[str, str], str]) -> str | None:
    try:
        _message, exchange, routing_key = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None  # not kombu's shape
    if not isinstance(exchange, str) or not isinstance(routing_key, str):
        return None
    return routes.get((exchange, routing_key), routing_key)


def _bounded(queues: Iterable[QueueName]) -> tuple[list[QueueName], bool]:
    ordered = sorted(set(queues), key=lambda q: (q.kind or "", q.prefix or "", q.name))
    return ordered[:MAX_QUEUES], len(ordered) > MAX_QUEUES


def _texts(items: Iterable[bytes | str]) -> list[str]:
    """Key names as text; a name that is not UTF-8 is no library's queue and is skipped."""
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(item.decode())
        except UnicodeDecodeError:
            continue
    return out


def _empty(*, configured: bool) -> QueueStats:
    return QueueStats(
        redis_configured=configured,
        queues=[],
        discovered=False,
        scanned_keys=0,
        scan_complete=None,
        discovered_at=None,
        truncated=False,
        not_found=[],
        celery_unacked=None,
        warnings=[],
    )
