"""Alert events: what changed about an occurrence (fired, level changed, acknowledged,
resolved), as the outbox keeps it for delivery.

An event's ``payload`` is the JSON the webhooks receive and the Alertmanager push is built
from: the event id (the receivers' idempotency key), its kind and time, the ``instance`` label
of the occurrence (the instance that fired it, kept for its whole life so that Alertmanager
sees one alert), the previous level for a level change, and the alert as ``alerts.list`` shows
it. Events are made where the change is written: in the same transaction with PostgreSQL
(``pg_store.py``), beside the change in memory without it (``book.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from server.alerts.models import AlertRecord

EventKind = Literal["fired", "level_changed", "acknowledged", "resolved"]
EVENT_KINDS: tuple[EventKind, ...] = ("fired", "level_changed", "acknowledged", "resolved")


@dataclass(frozen=True, slots=True)
class AlertEvent:
    id: str
    alert_id: str
    kind: EventKind
    at: datetime
    payload: dict[str, Any]


def event(
    kind: EventKind,
    record: AlertRecord,
    at: datetime,
    instance: str,
    previous_level: str | None = None,
) -> AlertEvent:
    event_id = str(uuid.uuid4())
    payload: dict[str, Any] = {
        "id": event_id,
        "kind": kind,
        "at": at.isoformat(),
        "instance": instance,
        "previous_level": previous_level,
        "alert": record.model().model_dump(mode="json"),
    }
    return AlertEvent(event_id, record.id, kind, at, payload)


def round_events(
    before: Mapping[str, AlertRecord],
    firing: Iterable[AlertRecord],
    resolved: Iterable[AlertRecord],
    at: datetime,
    instance_of: Mapping[str, str],
    instance: str,
) -> list[AlertEvent]:
    """What one evaluation round changed: ``before`` (firing, by id) against the firing alerts
    after it and the ones it resolved. ``instance_of`` holds the ``instance`` label of
    occurrences fired before; a new one takes ``instance``."""
    out: list[AlertEvent] = []
    for record in sorted(resolved, key=lambda r: r.fingerprint):
        label = instance_of.get(record.id, instance)
        out.append(event("resolved", record, record.resolved_at or at, label))
    for record in sorted(firing, key=lambda r: r.fingerprint):
        old = before.get(record.id)
        label = instance_of.get(record.id, instance)
        if old is None:
            out.append(event("fired", record, record.first_fired_at, label))
        elif old.level != record.level:
            out.append(event("level_changed", record, at, label, previous_level=old.level))
    return out
