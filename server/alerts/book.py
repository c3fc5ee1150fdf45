"""``AlertBook``: where alerts are recorded, read and acknowledged.

Without ``DATABASE_URL`` it is a ``MemoryStore`` (``durable`` is False). With one, PostgreSQL
is the record and a ``MemoryStore`` mirrors this instance's evaluations beside it, so that:

- evaluation never waits on, or fails with, the database. Each round is applied to the mirror
  and queued; the queue is written to PostgreSQL in order, and what could not be written stays
  queued (bounded) until the database answers again. Replaying is safe: every statement is an
  idempotent upsert, and an older round never overwrites a newer report.
- ``list`` answers from the mirror, marked ``source: "memory"``, while PostgreSQL cannot.
- ``acknowledge`` is never answered from memory. An acknowledgement is an operator's action:
  it is written to PostgreSQL at once, or refused with SERVICE_UNAVAILABLE, never accepted and
  then lost. It never waits behind the queue (up to ``JOURNAL_LIMIT`` rounds after an outage):
  an alert that fired during the outage, and so is not in PostgreSQL yet, is written first on
  its own (one idempotent upsert, from the oldest queued round that fired it), then
  acknowledged; the queue's later replay updates that same row.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from server.alerts.events import AlertEvent, event, round_events
from server.alerts.memory_store import MemoryStore
from server.alerts.models import (
    AlertPage,
    AlertQuery,
    AlertRecord,
    Condition,
    Level,
    Round,
    Source,
    StoreStatus,
)
from server.alerts.pg_store import PostgresStore
from server.errors import ErrorCode, RpcError, StoreRejected, Unavailable

log = logging.getLogger(__name__)

JOURNAL_LIMIT = 5000  # rounds kept for the database; at 15 s, about 20 hours of changes


class AlertBook:
    def __init__(
        self,
        *,
        instance: str,
        stale_after: float,
        durable: PostgresStore | None = None,
        memory: MemoryStore | None = None,
        journal_limit: int = JOURNAL_LIMIT,
        on_events: Callable[[list[AlertEvent]], None] | None = None,
        label: str = "",
    ) -> None:
        """``on_events`` receives the events of each change when the book is in memory (with
        PostgreSQL, the store writes them to its outbox); ``label`` is the ``instance`` label
        of what this instance fires."""
        self.instance = instance
        self._on_events = on_events
        self.label = label or instance
        self.stale_after = stale_after
        self._memory = memory or MemoryStore()
        self._durable = durable
        self._journal: deque[Round] = deque()
        self._journal_limit = journal_limit
        self._dropped = 0
        self._flushing = asyncio.Lock()
        self._firing: list[AlertRecord] = []
        self._available = durable is not None
        self._last_error: str | None = None

    @property
    def durable(self) -> bool:
        """PostgreSQL holds the alerts; False means they live in this process only."""
        return self._durable is not None

    async def start(self) -> None:
        """Apply the schema migrations now, if the database answers; otherwise the first
        operation that reaches it will."""
        if self._durable is None:
            return
        try:
            applied = await self._durable.ensure_schema()
        except Unavailable as exc:
            self._failed(exc)
            log.warning(
                "alert store: schema not checked at start-up (%s); will retry", exc.described
            )
            return
        if applied:
            log.info("alert store: applied migrations %s", applied)

    # --- evaluation ---

    async def record(
        self, conditions: Sequence[Condition], evaluated: frozenset[str], at: datetime
    ) -> None:
        """One evaluation round's verdict. Never raises for an unreachable database."""
        round_ = Round(
            at=at,
            instance=self.instance,
            conditions=tuple(conditions),
            evaluated=evaluated,
            stale_after=self.stale_after,
        )
        before = {r.id: r for r in self._memory.firing()} if self._on_events else {}
        self._memory.apply(round_)
        firing = self._memory.firing()
        if self._durable is None:
            self._firing = firing
            if self._on_events is not None:
                self._tell(before, firing, at)
            return
        self._enqueue(round_.with_ids({r.fingerprint: r.id for r in firing}))
        try:
            await self.flush()
        except Unavailable:
            self._firing = self._memory.firing()

    def _tell(
        self, before: dict[str, AlertRecord], firing: list[AlertRecord], at: datetime
    ) -> None:
        assert self._on_events is not None
        now = {r.id for r in firing}
        resolved = [r for i in before if i not in now if (r := self._memory.get(i)) is not None]
        changed = [r for r in firing if r.id not in before or before[r.id].level != r.level]
        events = round_events(before, changed, resolved, at, {}, self.label)
        if events:
            self._on_events(events)

    def _enqueue(self, round_: Round) -> None:
        journal = self._journal
        # A run of rounds that change nothing but figures keeps its first (when things
        # started) and its latest (the figures now); the middle says nothing new.
        if (
            len(journal) >= 2
            and _same_shape(journal[-1], round_)
            and _same_shape(journal[-2], round_)
        ):
            journal[-1] = round_
            return
        if len(journal) >= self._journal_limit:
            journal.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                log.error(
                    "alert store: %d evaluation rounds dropped while the database is "
                    "unreachable (limit %d)",
                    self._dropped,
                    self._journal_limit,
                )
        journal.append(round_)

    async def flush(self) -> None:
        """Write the queued rounds to PostgreSQL, oldest first; raises ``Unavailable`` (and
        keeps the rest queued) when it cannot."""
        if self._durable is None or not self._journal:
            return
        async with self._flushing:
            while self._journal:
                round_ = self._journal[0]
                try:
                    firing = await self._durable.reconcile(round_)
                except StoreRejected as exc:
                    # Not an outage: this round can never be written. Keep the rest moving.
                    log.error("alert store: dropping a round it refuses: %s", exc.described)
                    self._dropped += 1
                    self._done(round_)
                    continue
                except Unavailable as exc:
                    self._failed(exc)
                    raise
                self._done(round_)
                self._memory.adopt(firing, round_.at)
                self._firing = firing
                self._succeeded()

    def _done(self, round_: Round) -> None:
        # The bound may have pushed it out while it was being written.
        if self._journal and self._journal[0] is round_:
            self._journal.popleft()

    # --- reading and acknowledging ---

    async def page(self, query: AlertQuery) -> AlertPage:
        source: Source = "memory"
        if self._durable is None:
            records, total = await self._memory.page(query)
        else:
            try:
                await self.flush()
                records, total = await self._durable.page(query)
                source = "database"
                self._succeeded()
            except Unavailable as exc:
                self._failed(exc)
                records, total = await self._memory.page(query)
        end = query.offset + len(records)
        return AlertPage(
            alerts=[r.model() for r in records],
            total=total,
            limit=query.limit,
            offset=query.offset,
            next_offset=end if end < total else None,
            source=source,
            durable=self.durable,
        )

    async def acknowledge(self, alert_id: str, by: str, note: str | None) -> AlertRecord:
        """Record who acknowledged, when, and their note; the first acknowledgement stands
        and a repeat returns it. NOT_FOUND for an unknown id; SERVICE_UNAVAILABLE when the
        database cannot record it (nothing is recorded then)."""
        at = datetime.now(UTC)
        if self._durable is None:
            record = await self._memory.acknowledge(alert_id, by, at, note)
            if self._on_events is not None and record.acknowledged_at == at:
                self._on_events([event("acknowledged", record, at, self.label)])
        else:
            try:
                record = await self._acknowledge_now(self._durable, alert_id, by, at, note)
            except Unavailable as exc:
                self._failed(exc)
                raise Unavailable(
                    f"the acknowledgement was not recorded: {exc.message}; try again"
                ) from exc
            self._succeeded()
            self._memory.absorb(record)
        self._firing = [record if r.id == record.id else r for r in self._firing]
        return record

    async def _acknowledge_now(
        self, store: PostgresStore, alert_id: str, by: str, at: datetime, note: str | None
    ) -> AlertRecord:
        try:
            return await store.acknowledge(alert_id, by, at, note)
        except RpcError as exc:
            if exc.code is not ErrorCode.NOT_FOUND:
                raise
            pending = self._queued_firing(alert_id)
            if pending is None:
                raise
        await store.reconcile(pending)
        return await store.acknowledge(alert_id, by, at, note)

    def _queued_firing(self, alert_id: str) -> Round | None:
        """The oldest queued round that fired ``alert_id``, cut down to that one condition and
        no resolutions: writing it creates the alert as it first fired, and nothing else."""
        for round_ in self._journal:
            for condition in round_.conditions:
                if round_.ids.get(condition.fingerprint) == alert_id:
                    return replace(round_, conditions=(condition,), evaluated=frozenset())
        return None

    # --- figures ---

    def firing_counts(self) -> dict[Level, int]:
        """Firing alerts by level, as of the last round (every instance's, when durable)."""
        counts: dict[Level, int] = {"warning": 0, "critical": 0}
        for record in self._firing:
            counts[record.level] += 1
        return counts

    def firing(self) -> list[AlertRecord]:
        """Firing alerts as of the last round, newest first."""
        return list(self._firing)

    def status(self) -> StoreStatus:
        return StoreStatus(
            durable=self.durable,
            available=self._available,
            pending_rounds=len(self._journal),
            dropped_rounds=self._dropped,
            last_error=self._last_error,
        )

    def _failed(self, exc: Unavailable) -> None:
        if self._available:
            log.warning("alert store unavailable, evaluating in memory: %s", exc.described)
        self._available = False
        self._last_error = exc.message

    def _succeeded(self) -> None:
        if not self._available:
            log.info("alert store reachable again; %d rounds left to write", len(self._journal))
        self._available = True


def _same_shape(a: Round, b: Round) -> bool:
    return a.evaluated == b.evaluated and {(c.fingerprint, c.level) for c in a.conditions} == {
        (c.fingerprint, c.level) for c in b.conditions
    }
