"""``QueryMetrics``: the pushed Prometheus families of the statements the datastore layer runs.

``infrawatch_db_queries_total{node,operation,status}`` counts every statement (status ok,
error, timeout or rejected); ``infrawatch_db_query_duration_seconds{node,operation}`` times
those that reached the server. Labels stay bounded: nodes are configured, operations come
from a fixed set (``query_stats.operation_of``), statuses are four.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from server.datastores.query_stats import Status

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class QueryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "infrawatch_db_queries",
            "infrawatch's own statements (its datastore layer), by node, operation and outcome.",
            ["node", "operation", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "infrawatch_db_query_duration_seconds",
            "Execution time of infrawatch's own statements (acquire wait excluded).",
            ["node", "operation"],
            buckets=BUCKETS,
            registry=registry,
        )

    def observe(self, node: str, operation: str, status: Status, seconds: float | None) -> None:
        self.queries.labels(node, operation, status).inc()
        if seconds is not None:
            self.duration.labels(node, operation).observe(seconds)
