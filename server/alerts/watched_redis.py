"""What the rules on the watched Redis read: extractors over ``monitoring.redisHealth`` and
``monitoring.queueStats``, and the rules over them (``watched_redis_rules``; every threshold a
setting, docs/alerts.md).

Every figure here is the watched system's: the application's keyspace hit rate (infrawatch's
own lookups left out), each node's memory, evictions and replication links, Sentinel's quorum,
the Cluster's state, and each job queue. infrawatch's own cache figures (``monitoring.
cacheStats``, ``scope: "self"``) feed none of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.alerts.rule import Rule, levels
from server.alerts.sample import Extractor, Sample
from server.config import AlertSettings, RedisWatchSettings

REDIS_HEALTH = "monitoring.redisHealth"
QUEUE_STATS = "monitoring.queueStats"


def keyspace_hit_rate(min_lookups: int) -> Extractor:
    """The application's hit rate over the window, judged only with ``min_lookups`` lookups
    in it: a quiet window (or a handful of cold misses) says nothing about the cache."""

    def extract(out: Any) -> Iterable[Sample]:
        keyspace = out["keyspace"]
        if keyspace is None:
            return
        enough = keyspace["lookups"] >= max(1, min_lookups)
        detail = f"{keyspace['lookups']} lookups over {keyspace['window_seconds']:g}s"
        yield Sample("keyspace", keyspace["hit_rate"] if enough else None, detail)

    return extract


def _data_nodes(out: Any) -> Iterable[dict[str, Any]]:
    for node in out["nodes"]:
        if node["role"] in ("master", "replica") and node["status"] == "up":
            yield node


def memory_used(out: Any) -> Iterable[Sample]:
    for node in _data_nodes(out):
        policy = node["maxmemory_policy"] or "?"
        yield Sample(node["address"], node["memory_used_percent"], f"policy {policy}")


def evictions(out: Any) -> Iterable[Sample]:
    for node in _data_nodes(out):
        yield Sample(node["address"], node["evicted_keys_per_second"])


def replica_link_down(out: Any) -> Iterable[Sample]:
    """1 for a replica whose link to its master is not up, or that is down itself."""
    for node in out["nodes"]:
        if node["role"] != "replica":
            continue
        if node["status"] == "down":
            yield Sample(node["address"], 1.0, f"the replica does not answer: {node['error']}")
            continue
        status = node["master_link_status"]
        master = node["master_address"] or "its master"
        yield Sample(node["address"], 0.0 if status == "up" else 1.0, f"{master} link {status}")


def replica_lag_bytes(out: Any) -> Iterable[Sample]:
    for node in out["nodes"]:
        if node["role"] == "replica" and node["status"] == "up":
            yield Sample(node["address"], node["replication_lag_bytes"])


def sentinel_quorum_lost(out: Any) -> Iterable[Sample]:
    sentinel = out["sentinel"]
    if sentinel is not None:
        lost = not sentinel["quorum_ok"]
        yield Sample(sentinel["master_name"], 1.0 if lost else 0.0, sentinel["reason"] or "")


def cluster_not_ok(out: Any) -> Iterable[Sample]:
    cluster = out["cluster"]
    if cluster is not None:
        bad = cluster["state"] != "ok"
        detail = cluster["reason"] or ""
        if cluster["failing_nodes"]:
            detail += f" (failing: {', '.join(cluster['failing_nodes'])})"
        yield Sample("cluster", 1.0 if bad else 0.0, detail.strip())


def queue_backlog(out: Any) -> Iterable[Sample]:
    for queue in out["queues"]:
        yield Sample(f"{queue['kind']}:{queue['name']}", queue["depth"])


def queue_failed(out: Any) -> Iterable[Sample]:
    for queue in out["queues"]:
        failed = queue["states"].get("failed")
        yield Sample(f"{queue['kind']}:{queue['name']}", failed)


def watched_redis_rules(s: AlertSettings, w: RedisWatchSettings) -> list[Rule]:
    """The rules, thresholds from ``s`` (the hit rate) and ``w`` (REDIS_WATCH_*)."""
    health, queues = REDIS_HEALTH, QUEUE_STATS
    return [
        *levels(
            "cache_hit_rate",
            health,
            keyspace_hit_rate(s.cache_min_lookups),
            "<",
            "keyspace",
            "the application's Redis keyspace hit rate is {value:.1f}% ({detail}), below "
            "{threshold:g}%",
            ("warning", s.cache_hit_rate_warning, "ALERT_CACHE_HIT_RATE_WARNING"),
            ("critical", s.cache_hit_rate_critical, "ALERT_CACHE_HIT_RATE_CRITICAL"),
        ),
        *levels(
            "redis_memory",
            health,
            memory_used,
            ">=",
            "node",
            "Redis {subject} uses {value:.1f}% of its maxmemory ({detail}; threshold "
            "{threshold:g}%)",
            ("warning", w.memory_warning, "ALERT_REDIS_MEMORY_WARNING"),
        ),
        *levels(
            "redis_evictions",
            health,
            evictions,
            ">",
            "node",
            "Redis {subject} evicts {value:g} keys/s (threshold {threshold:g}/s)",
            ("warning", w.evictions_warning, "ALERT_REDIS_EVICTIONS_WARNING"),
        ),
        Rule(
            "redis_replica_link",
            "critical",
            health,
            replica_link_down,
            "==",
            1.0,
            "node",
            "Redis replica {subject}: {detail}",
        ),
        *levels(
            "redis_replica_lag",
            health,
            replica_lag_bytes,
            ">",
            "node",
            "Redis replica {subject} is {value:.0f} bytes behind its master (threshold "
            "{threshold:g})",
            ("critical", float(w.replica_lag_bytes_critical), "ALERT_REDIS_REPLICA_LAG_BYTES"),
        ),
        Rule(
            "redis_sentinel_quorum",
            "critical",
            health,
            sentinel_quorum_lost,
            "==",
            1.0,
            "master",
            "Sentinel cannot reach quorum for {subject}: a failover could not be authorised "
            "({detail})",
        ),
        Rule(
            "redis_cluster_state",
            "critical",
            health,
            cluster_not_ok,
            "==",
            1.0,
            "cluster",
            "Redis Cluster is not ok: {detail}",
        ),
        *levels(
            "queue_backlog",
            queues,
            queue_backlog,
            ">",
            "queue",
            "queue {subject} holds {value:g} waiting jobs (threshold {threshold:g})",
            ("warning", float(w.queue_backlog_warning), "ALERT_QUEUE_BACKLOG_WARNING"),
        ),
        *levels(
            "queue_failed",
            queues,
            queue_failed,
            ">",
            "queue",
            "queue {subject} holds {value:g} failed jobs (threshold {threshold:g})",
            ("warning", float(w.queue_failed_warning), "ALERT_QUEUE_FAILED_WARNING"),
        ),
    ]
