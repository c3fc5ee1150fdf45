"""The rules on the watched PostgreSQL: what the application does to its database.

They read ``database.activity`` (every client session of each server, PgBouncer's queue) and
``database.topQueries`` (``pg_stat_statements`` less infrawatch's own role), never infrawatch's
own pool or statements. Every threshold is a setting (``AlertSettings``; docs/alerts.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.alerts.rule import Rule, levels
from server.alerts.sample import Extractor, Sample
from server.config import AlertSettings

ACTIVITY = "database.activity"
TOP_QUERIES = "database.topQueries"


def _up_nodes(out: Any) -> Iterable[Any]:
    return (node for node in out["nodes"] if node["up"])


def _connections(out: Any) -> Iterable[Sample]:
    for node in _up_nodes(out):
        c = node["connections"]
        yield Sample(
            str(node["node"]),
            c["used_percent"],
            f"{c['used']} of {c['available']} client connections",
        )


def _idle_in_transaction(out: Any) -> Iterable[Sample]:
    for node in _up_nodes(out):
        yield Sample(
            str(node["node"]),
            node["oldest_idle_in_transaction_seconds"],
            f"{node['idle_in_transaction']} session(s) idle in a transaction",
        )


def _blocked(out: Any) -> Iterable[Sample]:
    for node in _up_nodes(out):
        blocked = node["blocked"]
        detail = ""
        if blocked:
            first = blocked[0]
            detail = f"pid {first['pid']} waits for pid(s) {first['blocked_by']}"
        yield Sample(str(node["node"]), node["longest_blocked_seconds"], detail)


def _bouncer_waiting(out: Any) -> Iterable[Sample]:
    bouncer = out["pgbouncer"]
    if bouncer is None or not bouncer["up"]:
        return
    for pool in bouncer["pools"]:
        waiting = pool["cl_waiting"]
        yield Sample(
            f"{pool['database']}/{pool['user']}",
            pool["maxwait_seconds"] if waiting else None,
            f"{waiting} client(s) waiting",
        )


def _slow_statements(min_calls: int) -> Extractor:
    def extract(out: Any) -> Iterable[Sample]:
        if not out["available"]:
            return
        for statement in out["slow"]:
            calls = statement["window_calls"] or 0
            # A single slow run (a report, a migration) is not a trend.
            yield Sample(
                f"{statement['database']}:{statement['role']}:{statement['queryid']}",
                statement["window_mean_ms"] if calls >= min_calls else None,
                f"{calls} calls: {statement['query'][:200]}",
            )

    return extract


def watched_postgres_rules(s: AlertSettings, *, slow_query_ms: float) -> list[Rule]:
    """The rules, thresholds from ``s``; ``slow_query_ms`` is SLOW_QUERY_MS."""
    return [
        *levels(
            "db_connections",
            ACTIVITY,
            _connections,
            ">=",
            "node",
            "PostgreSQL {subject}: {value:.0f}% of its client connections in use, {detail} "
            "(threshold {threshold:g}%)",
            ("warning", s.db_connections_warning, "ALERT_DB_CONNECTIONS_WARNING"),
            ("critical", s.db_connections_critical, "ALERT_DB_CONNECTIONS_CRITICAL"),
        ),
        *levels(
            "idle_in_transaction",
            ACTIVITY,
            _idle_in_transaction,
            ">",
            "node",
            "PostgreSQL {subject}: a session has been idle in a transaction for {value:.0f}s, "
            "{detail} (threshold {threshold:g}s)",
            ("warning", s.idle_in_transaction_seconds, "ALERT_IDLE_IN_TRANSACTION_SECONDS"),
        ),
        *levels(
            "blocked_session",
            ACTIVITY,
            _blocked,
            ">",
            "node",
            "PostgreSQL {subject}: a session has waited {value:.0f}s for a lock, {detail} "
            "(threshold {threshold:g}s)",
            ("warning", s.blocked_session_seconds, "ALERT_BLOCKED_SESSION_SECONDS"),
        ),
        *levels(
            "pgbouncer_waiting",
            ACTIVITY,
            _bouncer_waiting,
            ">=",
            "pool",
            "PgBouncer pool {subject}: {detail}, the oldest for {value:.1f}s "
            "(threshold {threshold:g}s)",
            ("warning", s.pgbouncer_maxwait_warning, "ALERT_PGBOUNCER_MAXWAIT_WARNING"),
            ("critical", s.pgbouncer_maxwait_critical, "ALERT_PGBOUNCER_MAXWAIT_CRITICAL"),
        ),
        *levels(
            "slow_statement",
            TOP_QUERIES,
            _slow_statements(s.slow_statement_min_calls),
            ">=",
            "statement",
            "statement {subject} takes {value:.0f} ms on average over the window, {detail} "
            "(threshold {threshold:g} ms)",
            ("warning", slow_query_ms, "SLOW_QUERY_MS"),
        ),
    ]
