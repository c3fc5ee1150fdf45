"""``ReplicaSet``: the read replicas, which of them take reads, and what was routed where.

A replica enters the read rotation only after passing a health check and leaves it when a
check fails, when a read on it fails for want of a connection, or while its breaker is open.
Reads go round-robin over the replicas in rotation; with none, to the primary (a failover).
``reads_routed`` counts by node name, ``"primary"`` included.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from server.datastores.node import Node
from server.resilience.models import BreakerState

log = logging.getLogger("server.datastores.replicas")

_UNSAFE = re.compile(r"[^a-z0-9.]+")
_OUT_OF_SERVICE = (BreakerState.OPEN, BreakerState.FORCED_OPEN)


def replica_name(url: str, taken: set[str]) -> str:
    """``host-port`` of the URL, lowercased, only ``[a-z0-9.-]``; ``-2``... when taken.

    Stable across restarts (it depends only on the URL), and safe in a breaker name and a
    Prometheus label value.
    """
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    base = _UNSAFE.sub("-", f"{host}-{parts.port or 5432}".lower()).strip("-")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


@dataclass(slots=True)
class ReplicaHealth:
    healthy: bool = False
    error: str | None = "not checked yet"
    last_check: datetime | None = None
    last_ok: datetime | None = None
    check_ms: float | None = None
    in_recovery: bool | None = None
    consecutive_failures: int = 0
    changed_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class ReplicaLag:
    name: str
    up: bool
    lag_seconds: float | None
    lag_bytes: int | None
    in_recovery: bool | None = None
    replay_paused: bool | None = None
    primary_lsn: str | None = None
    receive_lsn: str | None = None
    replay_lsn: str | None = None
    last_replay_at: datetime | None = None
    measured_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    error: str | None = None


class Replica:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.health = ReplicaHealth()

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def in_rotation(self) -> bool:
        return self.health.healthy and self.node.breaker.state not in _OUT_OF_SERVICE

    def __repr__(self) -> str:
        return f"<Replica {self.name} {'in' if self.in_rotation else 'out of'} rotation>"


class ReplicaSet:
    def __init__(self, replicas: list[Replica]) -> None:
        self._replicas = replicas
        self._next = 0
        self.reads_routed: Counter[str] = Counter()
        self.failovers = 0

    def __iter__(self) -> Iterator[Replica]:
        return iter(self._replicas)

    def __len__(self) -> int:
        return len(self._replicas)

    def __bool__(self) -> bool:
        return bool(self._replicas)

    def find(self, name: str) -> Replica | None:
        return next((r for r in self._replicas if r.name == name), None)

    def choose(self) -> Replica | None:
        """The next replica in rotation, round-robin; None when none is."""
        candidates = [r for r in self._replicas if r.in_rotation]
        if not candidates:
            return None
        self._next += 1
        return candidates[self._next % len(candidates)]

    def routed(self, node: str) -> None:
        self.reads_routed[node] += 1

    def passed(self, replica: Replica, *, in_recovery: bool, seconds: float) -> None:
        health = replica.health
        now = datetime.now(UTC)
        if not health.healthy:
            log.info("replica %s passed its health check: back in the read rotation", replica.name)
            health.changed_at = now
        health.healthy = True
        health.error = None
        health.last_check = health.last_ok = now
        health.check_ms = round(seconds * 1000, 3)
        health.in_recovery = in_recovery
        health.consecutive_failures = 0

    def failed(self, replica: Replica, error: Exception) -> None:
        health = replica.health
        now = datetime.now(UTC)
        if health.healthy:
            log.warning("replica %s out of the read rotation: %s", replica.name, error)
            health.changed_at = now
        health.healthy = False
        health.error = str(error)
        health.last_check = now
        health.check_ms = None
        health.consecutive_failures += 1
