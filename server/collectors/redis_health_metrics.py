"""``infrawatch_redis_*``: the watched Redis for Prometheus, per node, read at scrape time.

One ``RedisHealthCollector.health()`` before each scrape (an awaited refresh hook: ``collect()``
is synchronous). Counters of the nodes themselves (evicted, expired, rejected) are exported as
the node reports them, for ``rate()``; the application's keyspace hit ratio is exported as the
collector computes it over ``REDIS_HEALTH_WINDOW`` (infrawatch's own lookups left out), since
Prometheus cannot take ours out of the node's counters. A node that could not be read exports
``infrawatch_redis_node_up 0`` and nothing else: a stale figure would look like a calm node.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.collectors.redis_health import RedisHealthCollector
from server.collectors.redis_health_models import RedisHealth
from server.observability.metrics import PREFIX, Metrics

P = f"{PREFIX}_redis"
_NODE_GAUGES = (
    ("used_memory_bytes", "memory_used_bytes", "Memory the node uses (INFO used_memory)."),
    ("maxmemory_bytes", "maxmemory_bytes", "The node's maxmemory; 0: no limit."),
    ("mem_fragmentation_ratio", "memory_fragmentation_ratio", "INFO mem_fragmentation_ratio."),
    ("connected_clients", "connected_clients", "Clients connected to the node."),
    ("maxclients", "maxclients", "The node's maxclients."),
    ("blocked_clients", "blocked_clients", "Clients blocked on a blocking command."),
    (
        "replication_lag_bytes",
        "replication_lag_bytes",
        "A replica: bytes its master's replication offset is ahead of its own.",
    ),
)
_NODE_COUNTERS = (
    ("evicted_keys", "evicted_keys", "Keys the node evicted (maxmemory), since it started."),
    ("expired_keys", "expired_keys", "Keys that expired on the node, since it started."),
    (
        "rejected_connections",
        "rejected_connections",
        "Connections the node refused (maxclients), since it started.",
    ),
)


class RedisHealthGauges(Collector):
    def __init__(self) -> None:
        self._health: RedisHealth | None = None

    def update(self, health: RedisHealth | None) -> None:
        self._health = health

    def describe(self) -> Iterator[Metric]:
        # Without describe(), registering would call collect() before any refresh ran.
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._health)

    def _families(self, health: RedisHealth | None) -> Iterator[Metric]:
        labels = ["node", "role"]
        up = GaugeMetricFamily(
            f"{P}_node_up", "1 when the Redis node answered INFO.", labels=labels
        )
        gauges = {
            field: GaugeMetricFamily(f"{P}_{name}", doc, labels=["node"])
            for field, name, doc in _NODE_GAUGES
        }
        counters = {
            field: CounterMetricFamily(f"{P}_{name}", doc, labels=["node"])
            for field, name, doc in _NODE_COUNTERS
        }
        link = GaugeMetricFamily(
            f"{P}_replica_link_up",
            "A replica: 1 when its link to its master is up, 0 when down or unreachable.",
            labels=["node"],
        )
        ratio = GaugeMetricFamily(
            f"{P}_keyspace_hit_ratio",
            "The application's keyspace hit ratio (0..1) over REDIS_HEALTH_WINDOW, "
            "infrawatch's own lookups left out; absent without lookups.",
        )
        lookups = GaugeMetricFamily(
            f"{P}_keyspace_lookups",
            "The application's keyspace lookups over REDIS_HEALTH_WINDOW (own left out).",
        )
        quorum = GaugeMetricFamily(
            f"{P}_sentinel_quorum_ok",
            "Sentinel: 1 when a sentinel says quorum can be reached (SENTINEL CKQUORUM).",
            labels=["master"],
        )
        cluster = GaugeMetricFamily(
            f"{P}_cluster_state_ok", "Cluster: 1 when every node that answered says ok."
        )
        slots = GaugeMetricFamily(
            f"{P}_cluster_slots", "Cluster: slots per state (CLUSTER INFO).", labels=["state"]
        )
        if health is not None:
            for node in health.nodes:
                role = node.role or "unknown"
                up.add_metric([node.address, role], 1.0 if node.status == "up" else 0.0)
                if node.role == "replica":
                    ok = node.status == "up" and node.master_link_status == "up"
                    link.add_metric([node.address], 1.0 if ok else 0.0)
                if node.status != "up":
                    continue
                for field, family in gauges.items():
                    value = getattr(node, field)
                    if value is not None:
                        family.add_metric([node.address], float(value))
                for field, counter in counters.items():
                    value = getattr(node, field)
                    if value is not None:
                        counter.add_metric([node.address], float(value))
            keyspace = health.keyspace
            if keyspace is not None:
                lookups.add_metric([], float(keyspace.lookups))
                if keyspace.hit_rate is not None:
                    ratio.add_metric([], keyspace.hit_rate / 100.0)
            if health.sentinel is not None:
                sentinel = health.sentinel
                quorum.add_metric([sentinel.master_name], 1.0 if sentinel.quorum_ok else 0.0)
            if health.cluster is not None:
                state = health.cluster
                cluster.add_metric([], 1.0 if state.state == "ok" else 0.0)
                for name in ("assigned", "ok", "pfail", "fail"):
                    value = getattr(state, f"slots_{name}")
                    if value is not None:
                        slots.add_metric([name], float(value))
        yield up
        yield from gauges.values()
        yield from counters.values()
        yield from (link, ratio, lookups, quorum, cluster, slots)


def export_redis_health(metrics: Metrics, collector: RedisHealthCollector) -> None:
    """Export the collector's figures to ``metrics`` (no I/O until a scrape)."""
    gauges = RedisHealthGauges()

    async def refresh() -> None:
        try:
            health = await collector.health()
        except BaseException:
            gauges.update(None)
            raise
        gauges.update(health if health.redis_configured else None)

    metrics.add_collector(gauges)
    metrics.add_refresh("redis_health", refresh)
