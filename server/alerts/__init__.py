"""Alerting: rules over the watched systems (and, marked as such, infrawatch's own figures), an
evaluator task, and a store where alerts fire, resolve and are acknowledged (PostgreSQL, or
memory without ``DATABASE_URL``).

    rule.py              Rule (data): what it reads, how it compares, its message
    rules.py             default_rules() + evaluate(): readings -> conditions
    watched_postgres.py  the rules on the watched PostgreSQL (database.activity, topQueries)
    watched_redis.py     the rules on the watched Redis and its queues (redisHealth, queueStats)
    sample.py            Sample: one (subject, value) an extractor reads
    evaluator.py     Evaluator: the background round (read, evaluate, record)
    book.py          AlertBook: the store the rest of the service talks to
    memory_store.py  MemoryStore: in-process alerts (and the book's mirror)
    pg_store.py      PostgresStore: every SQL statement of alerting
    migrations.py    schema ``infrawatch``, applied under an advisory lock
    events.py        AlertEvent: what changed, for the delivery outbox
    election.py      Election: one evaluator among instances (a PostgreSQL advisory lock)
    exposition.py    infrawatch_alerts_firing{level}
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from server.alerts.book import AlertBook
from server.alerts.evaluator import Evaluator
from server.alerts.events import AlertEvent
from server.alerts.exposition import FiringCollector
from server.alerts.memory_store import MemoryStore
from server.alerts.pg_store import PostgresStore
from server.alerts.rules import default_rules
from server.config import AlertSettings
from server.datastores.postgres import PostgresCluster

__all__ = ["AlertBook", "AlertEvent", "Evaluator", "FiringCollector", "build_book", "default_rules"]


def build_book(
    postgres: PostgresCluster | None,
    settings: AlertSettings,
    *,
    targets: Sequence[str] = (),
    label: str = "",
    on_events: Callable[[list[AlertEvent]], None] | None = None,
) -> AlertBook:
    """The book for this app: durable when ``DATABASE_URL`` is set. ``targets`` are where its
    events go (an outbox in PostgreSQL; ``on_events`` without a database); ``label`` is the
    ``instance`` label of what this instance fires."""
    # Long enough that a live instance always reports again in time (one round late at most).
    stale_after = 3 * settings.evaluation_interval + settings.evaluation_timeout
    durable = (
        PostgresStore(postgres, targets=targets, instance=label) if postgres is not None else None
    )
    return AlertBook(
        instance=uuid.uuid4().hex,
        stale_after=stale_after,
        durable=durable,
        memory=MemoryStore(),
        on_events=on_events if durable is None and targets else None,
        label=label,
    )
