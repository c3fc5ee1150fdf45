"""``MemoryStore``: alerts in this process only.

The whole store when no ``DATABASE_URL`` is set, and, with one, this instance's own view that
answers while PostgreSQL cannot (see ``book.py``). Same semantics as ``PostgresStore``, rule
for rule; the tests run both through the same cases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from server.alerts.models import AlertQuery, AlertRecord, Round
from server.errors import ErrorCode, RpcError


class MemoryStore:
    durable = False

    def __init__(self, *, history_limit: int = 1000) -> None:
        # Insertion order is creation order; only resolved alerts are evicted past the limit.
        self._alerts: dict[str, AlertRecord] = {}
        self._firing: dict[str, str] = {}  # fingerprint -> id
        self._history_limit = history_limit

    async def reconcile(self, round_: Round) -> list[AlertRecord]:
        self.apply(round_)
        return self.firing()

    def apply(self, round_: Round) -> None:
        at, seen = round_.at, round_.at.timestamp()
        current = set()
        for c in round_.conditions:
            current.add(c.fingerprint)
            record = self._firing_record(c.fingerprint)
            if record is None:
                record = AlertRecord(
                    id=round_.proposed_id(c.fingerprint),
                    fingerprint=c.fingerprint,
                    rule=c.rule,
                    subject=c.subject,
                    level=c.level,
                    state="firing",
                    message=c.message,
                    value=c.value,
                    threshold=c.threshold,
                    first_fired_at=at,
                    last_fired_at=at,
                )
                self._alerts[record.id] = record
                self._firing[c.fingerprint] = record.id
            elif at >= record.last_fired_at:
                record.level, record.message = c.level, c.message
                record.value, record.threshold = c.value, c.threshold
                record.last_fired_at = at
            record.reporters[round_.instance] = max(
                seen, record.reporters.get(round_.instance, seen)
            )
        for fp in [fp for fp in self._firing if fp not in current]:
            record = self._alerts[self._firing[fp]]
            if record.rule in round_.evaluated:
                self._clear(record, round_)
        self._evict()

    def _clear(self, record: AlertRecord, round_: Round) -> None:
        record.reporters.pop(round_.instance, None)
        if any(seen >= round_.stale_before for seen in record.reporters.values()):
            return  # another instance still reports it
        record.state = "resolved"
        record.resolved_at = max(round_.at, record.last_fired_at)
        del self._firing[record.fingerprint]

    def _firing_record(self, fingerprint: str) -> AlertRecord | None:
        alert_id = self._firing.get(fingerprint)
        return self._alerts[alert_id] if alert_id is not None else None

    def _evict(self) -> None:
        excess = len(self._alerts) - len(self._firing) - self._history_limit
        if excess <= 0:
            return
        for alert_id in [a.id for a in self._alerts.values() if a.state == "resolved"][:excess]:
            del self._alerts[alert_id]

    def firing(self) -> list[AlertRecord]:
        return _sorted(_copy(self._alerts[i]) for i in self._firing.values())

    async def page(self, query: AlertQuery) -> tuple[list[AlertRecord], int]:
        matching = _sorted(a for a in self._alerts.values() if _matches(a, query))
        page = matching[query.offset : query.offset + query.limit]
        return [_copy(a) for a in page], len(matching)

    async def acknowledge(
        self, alert_id: str, by: str, at: datetime, note: str | None
    ) -> AlertRecord:
        record = self._alerts.get(alert_id)
        if record is None:
            raise not_found(alert_id)
        if record.acknowledged_at is None:  # the first acknowledgement stands
            record.acknowledged_by, record.acknowledged_at, record.note = by, at, note
        return _copy(record)

    def get(self, alert_id: str) -> AlertRecord | None:
        record = self._alerts.get(alert_id)
        return _copy(record) if record is not None else None

    def adopt(self, firing: Iterable[AlertRecord], at: datetime) -> None:
        """Take the durable store's firing alerts as the truth: their ids (another instance
        may have started an occurrence first), acknowledgements and reporters. Ours that it
        no longer holds firing were resolved there."""
        theirs = {r.fingerprint: r for r in firing}
        for fp, alert_id in list(self._firing.items()):
            if fp not in theirs:
                record = self._alerts[alert_id]
                record.state, record.resolved_at = "resolved", max(at, record.last_fired_at)
                del self._firing[fp]
        for fp, record in theirs.items():
            mine = self._firing.get(fp)
            if mine is not None and mine != record.id:
                del self._alerts[mine]
            self._alerts[record.id] = _copy(record)
            self._firing[fp] = record.id

    def absorb(self, record: AlertRecord) -> None:
        """An alert the durable store answered with (an acknowledgement): keep our copy equal."""
        if record.id in self._alerts:
            self._alerts[record.id] = _copy(record)


def not_found(alert_id: str) -> RpcError:
    return RpcError(ErrorCode.NOT_FOUND, f"no alert with id {alert_id!r}", details={"id": alert_id})


def _copy(record: AlertRecord) -> AlertRecord:
    return replace(record, reporters=dict(record.reporters))


def _sorted(records: Iterable[AlertRecord]) -> list[AlertRecord]:
    """Newest occurrence first; the id breaks ties as the SQL ``ORDER BY ... id DESC`` does
    (lower-case hex UUID text sorts as its bytes)."""
    return sorted(records, key=lambda a: (a.first_fired_at, a.id), reverse=True)


def _matches(record: AlertRecord, query: AlertQuery) -> bool:
    return (
        (query.state is None or record.state == query.state)
        and (query.level is None or record.level == query.level)
        and (query.acknowledged is None or record.acknowledged == query.acknowledged)
    )
