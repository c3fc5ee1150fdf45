"""The outbox: every alert event, and per target whether it was delivered.

``Outbox`` is what the sender needs of one; ``MemoryOutbox`` keeps it in this process (no
``DATABASE_URL``: lost at restart, and ``/health/detailed`` says so); ``PostgresOutbox``
(``pg_outbox.py``) keeps it in the tables the alert store writes in the transaction of each
change.

Both follow the same rules: a delivery is claimed with a lease (another sender skips it until
the lease ends), only the oldest pending event of an alert is claimable for a target (order per
alert), and a failed attempt is retried after the delay the sender gives.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from server.alerts import AlertEvent
from server.delivery.models import Delivery, Outcome, TargetFigures

# Without a database, what memory may hold: past it the oldest delivered events go first, then
# (logged by the sender's figures as "dead") the oldest undelivered.
MEMORY_EVENT_LIMIT = 10_000


class Outbox(Protocol):
    durable: bool

    async def claim(self, targets: Sequence[str], limit: int, lease: float) -> list[Delivery]: ...

    async def settle(
        self, delivery: Delivery, outcome: Outcome, *, error: str | None, retry_in: float
    ) -> None: ...

    async def firing(self, target: str) -> list[dict[str, Any]]:
        """The last delivered payload of each alert still firing, with nothing pending for
        ``target`` (what an Alertmanager gets again, so that it keeps the alert open)."""
        ...

    async def prune(self, retention: float) -> int: ...

    async def figures(self) -> dict[str, TargetFigures]: ...


@dataclass(slots=True)
class _Row:
    seq: int
    target: str
    alert_id: str
    created_at: datetime
    state: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    leased_until: datetime | None = None
    done_at: datetime | None = None


class MemoryOutbox:
    durable = False

    def __init__(self, targets: Sequence[str], *, limit: int = MEMORY_EVENT_LIMIT) -> None:
        self._targets = tuple(targets)
        self._events: dict[int, AlertEvent] = {}
        self._rows: dict[tuple[int, str], _Row] = {}
        self._seq = itertools.count(1)
        self._figures: dict[str, TargetFigures] = {t: TargetFigures() for t in self._targets}
        self._limit = limit

    def add(self, events: Sequence[AlertEvent]) -> None:
        """The book's events (called in the same step as the change, on the event loop)."""
        now = datetime.now(UTC)
        for event in events:
            seq = next(self._seq)
            self._events[seq] = event
            for target in self._targets:
                self._rows[(seq, target)] = _Row(seq, target, event.alert_id, now)
        while len(self._events) > self._limit:
            self._drop(min(self._events))

    def _drop(self, seq: int) -> None:
        del self._events[seq]
        for target in self._targets:
            row = self._rows.pop((seq, target), None)
            if row is not None and row.state == "pending":
                self._figures[target].dead += 1

    async def claim(self, targets: Sequence[str], limit: int, lease: float) -> list[Delivery]:
        now = datetime.now(UTC)
        wanted = set(targets)
        blocked: set[tuple[str, str]] = set()  # (target, alert) with an older pending event
        out: list[Delivery] = []
        for key in sorted(self._rows):
            row = self._rows[key]
            if row.state != "pending" or row.target not in wanted:
                continue
            order = (row.target, row.alert_id)
            if order in blocked:
                continue
            blocked.add(order)
            if row.next_attempt_at > now or (row.leased_until and row.leased_until > now):
                continue
            row.leased_until = now + timedelta(seconds=lease)
            event = self._events[row.seq]
            out.append(
                Delivery(row.seq, row.target, row.alert_id, event.kind, row.attempts, event.payload)
            )
            if len(out) >= limit:
                break
        return out

    async def settle(
        self, delivery: Delivery, outcome: Outcome, *, error: str | None, retry_in: float
    ) -> None:
        row = self._rows.get((delivery.seq, delivery.target))
        if row is None:
            return
        now = datetime.now(UTC)
        figures = self._figures[delivery.target]
        row.leased_until = None
        if outcome == "released":
            return
        row.attempts += 1
        if outcome == "sent":
            row.state, row.done_at = "sent", now
            figures.sent += 1
            figures.last_success_at = now
            return
        figures.failures += 1
        figures.last_error, figures.last_error_at = error, now
        if outcome == "failed":
            row.state, row.done_at = "failed", now
            figures.dead += 1
        else:
            row.next_attempt_at = now + timedelta(seconds=retry_in)

    async def firing(self, target: str) -> list[dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}
        pending: set[str] = set()
        for key in sorted(self._rows):
            row = self._rows[key]
            if row.target != target:
                continue
            if row.state == "pending":
                pending.add(row.alert_id)
            elif row.state == "sent":
                last[row.alert_id] = self._events[row.seq].payload
        return [
            payload
            for alert_id, payload in last.items()
            if alert_id not in pending and payload["alert"]["state"] == "firing"
        ]

    async def prune(self, retention: float) -> int:
        before = datetime.now(UTC) - timedelta(seconds=retention)
        firing = {
            alert_id
            for target in self._targets
            for alert_id in {p["alert"]["id"] for p in await self.firing(target)}
        }
        old = [
            seq
            for seq, event in self._events.items()
            if event.at < before
            and event.alert_id not in firing
            and all(
                (row := self._rows.get((seq, t))) is None or row.state != "pending"
                for t in self._targets
            )
        ]
        for seq in old:
            self._drop(seq)
        return len(old)

    async def figures(self) -> dict[str, TargetFigures]:
        out = {t: _copy(f) for t, f in self._figures.items()}
        for row in self._rows.values():
            if row.state == "pending":
                figures = out[row.target]
                figures.pending += 1
                if figures.oldest_pending_at is None or row.created_at < figures.oldest_pending_at:
                    figures.oldest_pending_at = row.created_at
        return out


def _copy(figures: TargetFigures) -> TargetFigures:
    return TargetFigures(**{name: getattr(figures, name) for name in TargetFigures.__slots__})
