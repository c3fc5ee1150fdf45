"""The pulled ``infrawatch_pg_*`` families: the watched PostgreSQL as ``database.activity`` and
``database.topQueries`` see it (every client of the server, every role's statements but
infrawatch's own), not infrawatch's pool (``infrawatch_db_pool_*``).

A refresh hook reads them before a scrape unless a reading younger than ``MAX_AGE`` seconds is
there already (the alert evaluator reads ``database.topQueries`` through the same collector
every round): a scrape adds no statement reading of its own then.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.collectors.activity import ActivityReport, activity
from server.collectors.top_queries import METRICS_LIMIT, TopQueries
from server.datastores.postgres import PostgresCluster
from server.observability.metrics import Metrics

MAX_AGE = 10.0


class WatchedPostgresCollector(Collector):
    def __init__(self, cluster: PostgresCluster, top: TopQueries) -> None:
        self._cluster = cluster
        self._top = top
        self.activity: ActivityReport | None = None
        self._activity_at: float | None = None

    async def refresh(self) -> None:
        now = time.monotonic()
        if self._activity_at is None or now - self._activity_at >= MAX_AGE:
            self.activity = await activity(self._cluster)
            self._activity_at = now
        if self._top.last_at is None or now - self._top.last_at >= MAX_AGE:
            await self._top.report("time_per_s", METRICS_LIMIT)

    def collect(self) -> Iterator[Metric]:
        yield from self._activity()
        yield from self._statements()

    def _activity(self) -> Iterator[Metric]:
        node = ["node"]
        up = GaugeMetricFamily(
            "infrawatch_pg_up", "1 when the watched server answered database.activity.", labels=node
        )
        used = GaugeMetricFamily(
            "infrawatch_pg_connections",
            "Client connections of the watched server, every client (infrawatch's included).",
            labels=node,
        )
        available = GaugeMetricFamily(
            "infrawatch_pg_connections_available",
            "max_connections less the reserved connections: what clients may take.",
            labels=node,
        )
        ratio = GaugeMetricFamily(
            "infrawatch_pg_connections_used_ratio",
            "Client connections over the available ones (0..1+).",
            labels=node,
        )
        by_state = GaugeMetricFamily(
            "infrawatch_pg_connections_by_state",
            "Client connections by pg_stat_activity state.",
            labels=["node", "state"],
        )
        idle_tx = GaugeMetricFamily(
            "infrawatch_pg_idle_in_transaction_sessions",
            "Sessions idle inside an open transaction.",
            labels=node,
        )
        idle_oldest = GaugeMetricFamily(
            "infrawatch_pg_idle_in_transaction_oldest_seconds",
            "How long the oldest session idle in a transaction has been so.",
            labels=node,
        )
        longest_query = GaugeMetricFamily(
            "infrawatch_pg_longest_query_seconds", "The longest running query's age.", labels=node
        )
        longest_tx = GaugeMetricFamily(
            "infrawatch_pg_longest_transaction_seconds",
            "The oldest open transaction's age.",
            labels=node,
        )
        blocked = GaugeMetricFamily(
            "infrawatch_pg_blocked_sessions", "Sessions waiting for a lock.", labels=node
        )
        blocked_longest = GaugeMetricFamily(
            "infrawatch_pg_blocked_longest_seconds",
            "The longest wait for a lock (0 without one).",
            labels=node,
        )
        pool = ["database", "user"]
        waiting = GaugeMetricFamily(
            "infrawatch_pg_bouncer_clients_waiting",
            "PgBouncer clients waiting for a server connection, per pool.",
            labels=pool,
        )
        maxwait = GaugeMetricFamily(
            "infrawatch_pg_bouncer_maxwait_seconds",
            "How long the oldest waiting PgBouncer client has waited, per pool.",
            labels=pool,
        )
        report = self.activity
        for n in report.nodes if report is not None else []:
            labels = [n.node]
            up.add_metric(labels, 1 if n.up else 0)
            if not n.up or n.connections is None:
                continue
            used.add_metric(labels, n.connections.used)
            available.add_metric(labels, n.connections.available)
            ratio.add_metric(labels, n.connections.used_percent / 100)
            for state, count in n.by_state.items():
                by_state.add_metric([n.node, state], count)
            idle_tx.add_metric(labels, n.idle_in_transaction)
            idle_oldest.add_metric(labels, n.oldest_idle_in_transaction_seconds or 0.0)
            query = n.longest_query
            longest_query.add_metric(labels, query.seconds or 0.0 if query else 0.0)
            tx = n.longest_transaction
            longest_tx.add_metric(labels, tx.seconds or 0.0 if tx else 0.0)
            blocked.add_metric(labels, len(n.blocked))
            blocked_longest.add_metric(labels, n.longest_blocked_seconds or 0.0)
        bouncer = report.pgbouncer if report is not None else None
        for p in bouncer.pools if bouncer is not None else []:
            waiting.add_metric([p.database, p.user], p.cl_waiting)
            maxwait.add_metric([p.database, p.user], p.maxwait_seconds)
        yield from (up, used, available, ratio, by_state, idle_tx, idle_oldest)
        yield from (longest_query, longest_tx, blocked, blocked_longest, waiting, maxwait)

    def _statements(self) -> Iterator[Metric]:
        available = GaugeMetricFamily(
            "infrawatch_pg_statements_available",
            "1 when pg_stat_statements could be read (database.topQueries).",
        )
        labels = ["database", "role", "queryid"]
        calls = GaugeMetricFamily(
            "infrawatch_pg_statement_calls_per_second",
            "Calls per second over TOP_QUERIES_WINDOW of the busiest statements.",
            labels=labels,
        )
        busy = GaugeMetricFamily(
            "infrawatch_pg_statement_exec_seconds_per_second",
            "Execution seconds per second over the window (1 = one core's worth).",
            labels=labels,
        )
        mean = GaugeMetricFamily(
            "infrawatch_pg_statement_mean_seconds",
            "Mean execution time within the window.",
            labels=labels,
        )
        last = self._top.last
        if last is not None:
            available.add_metric([], 1 if last.available else 0)
        for s in self._top.last_busiest:
            key = [s.database or "", s.role or "", s.queryid]
            if s.calls_per_s is not None:
                calls.add_metric(key, s.calls_per_s)
            if s.time_ms_per_s is not None:
                busy.add_metric(key, s.time_ms_per_s / 1000)
            if s.window_mean_ms is not None:
                mean.add_metric(key, s.window_mean_ms / 1000)
        yield from (available, calls, busy, mean)


def register(metrics: Metrics, cluster: PostgresCluster, top: TopQueries) -> None:
    collector = WatchedPostgresCollector(cluster, top)
    metrics.add_collector(collector)
    metrics.add_refresh("postgres-watched", collector.refresh)
