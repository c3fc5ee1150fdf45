"""The pulled Prometheus families of the database part, read at scrape time.

Pool gauges come straight from the pools (no I/O). Replica lag and partition readiness need
queries, so ``register`` adds awaited refresh hooks that measure them before each scrape is
rendered; ``collect()`` then reads what the last measurement left. Replica up/down is the
health checker's verdict. (The pushed families, per statement, are in
``datastores/query_metrics.py``.)
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.collectors.partitions import PartitionWatch
from server.datastores.postgres import PostgresCluster
from server.observability.metrics import Metrics


class PostgresCollector(Collector):
    def __init__(self, cluster: PostgresCluster, partitions: PartitionWatch | None) -> None:
        self._cluster = cluster
        self._partitions = partitions

    def collect(self) -> Iterator[Metric]:
        yield from self._pools()
        yield from self._replicas()
        yield from self._partition_gauges()

    def _pools(self) -> Iterator[Metric]:
        families = {
            "size": GaugeMetricFamily(
                "infrawatch_db_pool_size",
                "Open connections in infrawatch's own pool.",
                labels=["node"],
            ),
            "idle": GaugeMetricFamily(
                "infrawatch_db_pool_idle",
                "Idle connections in infrawatch's own pool.",
                labels=["node"],
            ),
            "in_use": GaugeMetricFamily(
                "infrawatch_db_pool_in_use",
                "Connections of infrawatch's own pool handed out.",
                labels=["node"],
            ),
            "waiting": GaugeMetricFamily(
                "infrawatch_db_pool_waiting",
                "infrawatch callers waiting to acquire a connection of its own pool.",
                labels=["node"],
            ),
            "max": GaugeMetricFamily(
                "infrawatch_db_pool_max",
                "Most connections infrawatch's own pool may open.",
                labels=["node"],
            ),
            "utilization": GaugeMetricFamily(
                "infrawatch_db_pool_utilization_ratio",
                "Connections in use over infrawatch's own pool maximum (0..1).",
                labels=["node"],
            ),
        }
        for node in self._cluster.nodes:
            snap = node.pool.snapshot()
            labels = [node.name]
            families["size"].add_metric(labels, snap.size)
            families["idle"].add_metric(labels, snap.idle)
            families["in_use"].add_metric(labels, snap.in_use)
            families["waiting"].add_metric(labels, snap.waiting)
            families["max"].add_metric(labels, snap.max_size)
            families["utilization"].add_metric(labels, snap.utilization / 100)
        yield from families.values()

    def _replicas(self) -> Iterator[Metric]:
        replicas = self._cluster.replicas
        up = GaugeMetricFamily(
            "infrawatch_replica_up",
            "1 when the replica passed its last health check, else 0.",
            labels=["replica"],
        )
        lag_seconds = GaugeMetricFamily(
            "infrawatch_replica_lag_seconds",
            "Replay lag behind the primary; 0 when replayed up to its current position.",
            labels=["replica"],
        )
        lag_bytes = GaugeMetricFamily(
            "infrawatch_replica_lag_bytes",
            "WAL bytes between the primary's current position and the replica's replay.",
            labels=["replica"],
        )
        for replica in replicas:
            up.add_metric([replica.name], 1 if replica.health.healthy else 0)
            lag = self._cluster.lag.get(replica.name)
            if lag is not None and lag.lag_seconds is not None:
                lag_seconds.add_metric([replica.name], lag.lag_seconds)
            if lag is not None and lag.lag_bytes is not None:
                lag_bytes.add_metric([replica.name], lag.lag_bytes)
        routed = CounterMetricFamily(
            "infrawatch_db_reads_routed",
            "Read-only statements routed to each node.",
            labels=["node"],
        )
        for node in self._cluster.nodes:
            routed.add_metric([node.name], replicas.reads_routed[node.name])
        failovers = CounterMetricFamily(
            "infrawatch_db_read_failovers",
            "Reads sent to the primary because no replica was in rotation or one failed.",
        )
        failovers.add_metric([], replicas.failovers)
        yield from (up, lag_seconds, lag_bytes, routed, failovers)

    def _partition_gauges(self) -> Iterator[Metric]:
        delta = GaugeMetricFamily(
            "infrawatch_partition_row_delta",
            "|legacy rows - partitioned rows| of a partition-migration pair.",
            labels=["pair"],
        )
        ready = GaugeMetricFamily(
            "infrawatch_partition_ready",
            "1 when every switchover check of the pair passed, else 0.",
            labels=["pair"],
        )
        if self._partitions is not None:
            for name, pair in self._partitions.last.items():
                if pair.delta is not None:
                    delta.add_metric([name], pair.delta)
                ready.add_metric([name], 1 if pair.ready else 0)
        yield from (delta, ready)


def register(metrics: Metrics, cluster: PostgresCluster, partitions: PartitionWatch | None) -> None:
    """Add the collector and the refresh hooks of the queries it needs."""
    metrics.add_collector(PostgresCollector(cluster, partitions))
    if cluster.replicas:

        async def refresh_lag() -> None:
            await cluster.measure_lag()

        metrics.add_refresh("postgres-replica-lag", refresh_lag)
    if partitions is not None and partitions.pairs:

        async def refresh_partitions() -> None:
            await partitions.metrics()

        metrics.add_refresh("postgres-partitions", refresh_partitions)
