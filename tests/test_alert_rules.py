"""The built-in rules against outputs shaped as the contract (COMMON.md) says, and their
settings. ``evaluate`` is pure: readings in, conditions out."""

from __future__ import annotations

from typing import Any

import pytest

from server.alerts.rules import Rule, Sample, default_rules, evaluate
from server.config import ConfigError, Settings
from server.rpc.reading import Reading, SectionError

SETTINGS = Settings(redis_url="redis://127.0.0.1:1/0")
RULES = default_rules(SETTINGS.alerts, redis_cache=True)


def ok(path: str, output: Any) -> dict[str, Reading]:
    return {path: Reading(path, "ok", output=output)}


def found(readings: dict[str, Reading], rules: tuple[Rule, ...] = RULES) -> dict[str, str]:
    """fingerprint -> level of every condition."""
    return {c.fingerprint: c.level for c in evaluate(rules, readings).conditions}


def partitions(*deltas: int | None) -> dict[str, Reading]:
    pairs = [
        {
            "pair": f"orders:orders_p{i}",
            "legacy": "orders",
            "partitioned": f"orders_p{i}",
            "legacy_rows": 1000,
            "partitioned_rows": None if d is None else 1000 - d,
            "delta": d,
            "partition_count": 4,
            "triggers_enabled": True,
            "recent_writes": 3,
            "ready": d == 0,
            "checks": [],
        }
        for i, d in enumerate(deltas)
    ]
    return ok("monitoring.partitionMetrics", {"pairs": pairs})


def test_partition_delta_per_pair_at_its_highest_level() -> None:
    assert found(partitions(0, 10, 11, 100, 101, -500, None)) == {
        "partition_row_delta:orders:orders_p2": "warning",
        "partition_row_delta:orders:orders_p3": "warning",
        "partition_row_delta:orders:orders_p4": "critical",
        "partition_row_delta:orders:orders_p5": "critical",  # either table ahead
    }


def test_one_condition_per_fingerprint_with_its_figures() -> None:
    [condition] = evaluate(RULES, partitions(250)).conditions
    assert condition.level == "critical"
    assert condition.value == 250
    assert condition.threshold == 100
    assert condition.message == (
        "partition pair orders:orders_p0: the tables differ by 250 rows (threshold 100)"
    )


def cache_stats(hits: int, misses: int, hit_rate: float | None, **over: Any) -> dict[str, Any]:
    latency = {"samples": 10, "mean_ms": 1.0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0}
    return {
        "backend": "redis",
        "enabled": True,
        "redis_available": True,
        "hits": hits,
        "misses": misses,
        "hit_rate": hit_rate,
        "stale_served": 0,
        "latency": {"get": dict(latency), "set": dict(latency), "delete": dict(latency)},
        "namespaces": [],
        "redis": None,
    } | over


@pytest.mark.parametrize(
    ("hits", "misses", "rate", "level"),
    [
        (80, 20, 80.0, None),
        (70, 30, 70.0, None),  # "below 70": 70 itself is fine
        (69, 31, 69.0, "warning"),
        (50, 50, 50.0, "warning"),
        (49, 51, 49.0, "critical"),
        (0, 99, 0.0, None),  # fewer lookups than ALERT_CACHE_MIN_LOOKUPS: no verdict yet
        (0, 0, None, None),
    ],
)
def test_cache_hit_rate(hits: int, misses: int, rate: float | None, level: str | None) -> None:
    """The application's keyspace hit rate over the window (monitoring.redisHealth)."""
    result = found(ok("monitoring.redisHealth", redis_health(keyspace(hits, misses, rate))))
    assert result.get("cache_hit_rate:keyspace") == level


def test_infrawatchs_own_cache_figures_raise_no_hit_rate_alert() -> None:
    """A quiet deployment: infrawatch's own procedure cache missing every read is no alert."""
    assert found(ok("monitoring.cacheStats", cache_stats(0, 5000, 0.0))) == {}
    own_rules = [r for r in RULES if r.source == "monitoring.cacheStats"]
    assert {r.name for r in own_rules} <= {"cache_get_latency", "redis_unavailable"}
    for rule in own_rules:
        if rule.name == "cache_get_latency":
            assert rule.message.startswith("infrawatch's own procedure cache")


def keyspace(hits: int, misses: int, rate: float | None) -> dict[str, Any]:
    return {
        "scope": "application",
        "hits": hits,
        "misses": misses,
        "lookups": hits + misses,
        "hit_rate": rate,
        "window_seconds": 60.0,
        "own_hits": 3,
        "own_misses": 40,
    }


def node(address: str, role: str = "master", **over: Any) -> dict[str, Any]:
    return {
        "address": address,
        "role": role,
        "status": "up",
        "error": None,
        "memory_used_percent": None,
        "maxmemory_policy": "noeviction",
        "evicted_keys_per_second": 0.0,
        "master_address": None,
        "master_link_status": "up" if role == "replica" else None,
        "replication_lag_bytes": 0 if role == "replica" else None,
    } | over


def redis_health(
    keyspace: dict[str, Any] | None = None,
    nodes: list[dict[str, Any]] | None = None,
    sentinel: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "redis_configured": True,
        "mode": "standalone",
        "window": 60.0,
        "nodes": nodes or [],
        "keyspace": keyspace,
        "sentinel": sentinel,
        "cluster": cluster,
        "warnings": [],
    }


def test_rules_on_the_watched_redis_nodes() -> None:
    out = redis_health(
        nodes=[
            node("m:1", memory_used_percent=90.0, maxmemory_policy="allkeys-lru"),
            node("m:2", memory_used_percent=89.9, evicted_keys_per_second=0.5),
            node("r:1", "replica", master_link_status="down", master_address="m:1"),
            node("r:2", "replica", replication_lag_bytes=16 * 1024 * 1024 + 1),
            node("r:3", "replica", status="down", error="refused"),
            node("s:1", "sentinel", memory_used_percent=99.0),
        ],
        sentinel={"master_name": "mymaster", "quorum_ok": False, "reason": "NOQUORUM 1"},
        cluster={"state": "fail", "reason": "cluster_state:fail", "failing_nodes": ["m:3"]},
    )
    verdict = evaluate(RULES, ok("monitoring.redisHealth", out))
    levels = {c.fingerprint: c.level for c in verdict.conditions}
    assert levels == {
        "redis_memory:m:1": "warning",  # >= 90 %
        "redis_evictions:m:2": "warning",
        "redis_replica_link:r:1": "critical",
        "redis_replica_link:r:3": "critical",
        "redis_replica_lag:r:2": "critical",
        "redis_sentinel_quorum:mymaster": "critical",
        "redis_cluster_state:cluster": "critical",
    }
    messages = {c.fingerprint: c.message for c in verdict.conditions}
    assert "m:1 link down" in messages["redis_replica_link:r:1"]
    assert "refused" in messages["redis_replica_link:r:3"]
    assert "NOQUORUM 1" in messages["redis_sentinel_quorum:mymaster"]
    assert "failing: m:3" in messages["redis_cluster_state:cluster"]


def test_queue_backlog_and_failed_jobs_per_queue() -> None:
    rules = default_rules(
        SETTINGS.alerts,
        redis_cache=False,
        redis_watch=Settings(
            alert_queue_backlog_warning=10, alert_queue_failed_warning=2
        ).redis_watch,
    )
    out = {
        "queues": [
            {"name": "mail", "kind": "rq", "depth": 11, "states": {"failed": 2}},
            {"name": "render", "kind": "bullmq", "depth": 10, "states": {"failed": 3}},
        ]
    }
    assert found(ok("monitoring.queueStats", out), rules) == {
        "queue_backlog:rq:mail": "warning",
        "queue_failed:bullmq:render": "warning",
    }


@pytest.mark.parametrize(("p95", "level"), [(50.0, None), (50.1, "warning"), (100.5, "critical")])
def test_cache_get_p95(p95: float, level: str | None) -> None:
    out = cache_stats(100, 0, 100.0)
    out["latency"]["get"]["p95_ms"] = p95
    assert found(ok("monitoring.cacheStats", out)).get("cache_get_latency:cache") == level


@pytest.mark.parametrize(("rate", "level"), [(5.0, None), (5.5, "warning"), (10.1, "critical")])
def test_invalidation_failure_rate(rate: float, level: str | None) -> None:
    out = {"invalidations": 200, "failures": 11, "failure_rate": rate}
    result = found(ok("monitoring.cacheInvalidationMetrics", out))
    assert result.get("cache_invalidation_failures:cache") == level


def test_replica_lag_per_replica() -> None:
    out = {
        "replicas": [
            {"name": "r1", "up": True, "lag_seconds": 0.2, "lag_bytes": 0},
            {"name": "r2", "up": True, "lag_seconds": 12.0, "lag_bytes": 10},
            {"name": "r3", "up": True, "lag_seconds": 31.0, "lag_bytes": 10},
            {"name": "r4", "up": False, "lag_seconds": None, "lag_bytes": None},
        ]
    }
    assert found(ok("database.replicaLag", out)) == {
        "replica_lag:r2": "warning",
        "replica_lag:r3": "critical",
    }


def test_pool_utilization_per_node_and_query_p99() -> None:
    node = {"min_size": 1, "max_size": 10, "size": 10, "idle": 0, "waiting": 0}
    pools = {
        "nodes": [
            node | {"node": "primary", "role": "primary", "in_use": 9, "utilization": 90.0},
            node | {"node": "r1", "role": "replica", "in_use": 8, "utilization": 80.0},
        ],
        "pgbouncer": None,
    }
    queries = {
        "window_seconds": 60,
        "count": 10,
        "qps": 1.0,
        "p50_ms": 1.0,
        "p95_ms": 300.0,
        "p99_ms": 501.0,
        "slow_threshold_ms": 100,
        "slow_queries": [],
    }
    readings = ok("monitoring.connectionPoolStats", pools) | ok("monitoring.queryStats", queries)
    assert found(readings) == {
        "pool_utilization:primary": "warning",
        "query_latency:queries": "warning",
    }


def test_breakers_open_half_open_and_forced_open_are_critical() -> None:
    states = ["closed", "open", "half_open", "forced_open", "disabled"]
    out = {"breakers": [{"name": f"b-{s}", "state": s} for s in states]}
    verdict = evaluate(RULES, ok("monitoring.circuitBreakerStatus", out))
    by_fp = {c.fingerprint: c for c in verdict.conditions}
    assert set(by_fp) == {
        "breaker_open:b-open",
        "breaker_open:b-half_open",
        "breaker_open:b-forced_open",
    }
    assert by_fp["breaker_open:b-forced_open"].message == (
        "circuit breaker b-forced_open is forced open: calls to its dependency are refused"
    )
    assert "breaker_open" in verdict.evaluated


def test_redis_unavailable_from_health_or_from_the_cache_failing() -> None:
    health = {
        "status": "degraded",
        "reasons": [],
        "components": [
            {"name": "database", "status": "up"},
            {"name": "redis", "status": "down", "error": "connection refused"},
        ],
    }
    assert found(ok("monitoring.unifiedHealth", health)) == {"redis_unavailable:redis": "critical"}
    health["components"][1] = {"name": "redis", "status": "up"}
    cache_down = {
        "monitoring.cacheStats": Reading(
            "monitoring.cacheStats",
            "unavailable",
            error=SectionError(code="SERVICE_UNAVAILABLE", message="redis unreachable"),
        )
    }
    readings = ok("monitoring.unifiedHealth", health) | cache_down
    verdict = evaluate(RULES, readings)
    assert [c.fingerprint for c in verdict.conditions] == ["redis_unavailable:redis"]
    assert "redis unreachable" in verdict.conditions[0].message
    # Only the Redis rule reads an outage as a condition; the other cache rules wait.
    assert "cache_get_latency" not in verdict.evaluated


def test_redis_rule_on_cache_stats_only_when_redis_is_configured() -> None:
    no_redis = default_rules(Settings().alerts, redis_cache=False)
    assert all(
        r.source != "monitoring.cacheStats" or r.name != "redis_unavailable" for r in no_redis
    )


def test_absent_or_failing_sources_leave_their_rules_unevaluated() -> None:
    readings = {
        "monitoring.queryStats": Reading("monitoring.queryStats", "timeout"),
        "monitoring.partitionMetrics": Reading("monitoring.partitionMetrics", "absent"),
    } | ok("monitoring.circuitBreakerStatus", {"breakers": []})
    verdict = evaluate(RULES, readings)
    assert verdict.conditions == ()
    assert verdict.evaluated == {"breaker_open"}


def test_a_contract_break_fails_its_rule_only() -> None:
    readings = ok("database.replicaLag", {"replica": []}) | ok(  # misspelt field
        "monitoring.circuitBreakerStatus", {"breakers": [{"name": "x", "state": "open"}]}
    )
    verdict = evaluate(RULES, readings)
    assert "replica_lag" in verdict.failed
    assert "replica_lag" not in verdict.evaluated
    assert [c.fingerprint for c in verdict.conditions] == ["breaker_open:x"]


def test_thresholds_come_from_settings() -> None:
    rules = default_rules(
        Settings(alert_replica_lag_warning=1, alert_replica_lag_critical=2).alerts,
        redis_cache=False,
    )
    out = {"replicas": [{"name": "r1", "up": True, "lag_seconds": 1.5, "lag_bytes": 0}]}
    assert found(ok("database.replicaLag", out), rules) == {"replica_lag:r1": "warning"}
    settings = {r.setting: r.threshold for r in rules if r.name == "replica_lag"}
    assert settings == {"ALERT_REPLICA_LAG_WARNING": 1, "ALERT_REPLICA_LAG_CRITICAL": 2}


def test_a_custom_rule_is_just_data() -> None:
    rule = Rule(
        "queue_depth",
        "warning",
        "monitoring.queueStats",
        lambda out: (Sample(q["name"], q["depth"]) for q in out["queues"]),
        ">",
        100,
        "queue",
        "queue {subject} holds {value:g} jobs",
    )
    out = {"queues": [{"name": "mail", "kind": "rq", "depth": 101, "states": {}}]}
    assert found(ok("monitoring.queueStats", out), (rule,)) == {"queue_depth:mail": "warning"}


def test_alert_settings_from_env_and_their_checks() -> None:
    settings = Settings.from_env(
        {"ALERT_REPLICA_LAG_WARNING": "5", "ALERT_CACHE_HIT_RATE_CRITICAL": "40"}
    )
    assert settings.alerts.replica_lag_warning == 5
    assert settings.alerts.cache_hit_rate_critical == 40
    with pytest.raises(ConfigError) as err:
        Settings.from_env(
            {"ALERT_REPLICA_LAG_WARNING": "40", "ALERT_CACHE_HIT_RATE_CRITICAL": "80"}
        )
    assert err.value.problems == [
        "ALERT_CACHE_HIT_RATE_CRITICAL: must be less than ALERT_CACHE_HIT_RATE_WARNING (80 vs 70)",
        "ALERT_REPLICA_LAG_CRITICAL: must be greater than ALERT_REPLICA_LAG_WARNING (30 vs 40)",
    ]
    with pytest.raises(ConfigError, match="ALERT_POOL_UTILIZATION_WARNING"):
        Settings.from_env({"ALERT_POOL_UTILIZATION_WARNING": "150"})


def activity(**node: Any) -> dict[str, Any]:
    base = {
        "node": "primary",
        "role": "primary",
        "up": True,
        "connections": {"used": 10, "available": 100, "used_percent": 10.0},
        "idle_in_transaction": 0,
        "oldest_idle_in_transaction_seconds": None,
        "blocked": [],
        "longest_blocked_seconds": None,
    }
    down = {"node": "r1", "role": "replica", "up": False, "error": "refused"}
    return {"nodes": [base | node, down], "pgbouncer": None}


@pytest.mark.parametrize(
    ("percent", "level"), [(79.9, None), (80.0, "warning"), (94.9, "warning"), (95.0, "critical")]
)
def test_db_connections_at_and_above_the_thresholds(percent: float, level: str | None) -> None:
    conns = {"used": 1, "available": 1, "used_percent": percent}
    result = found(ok("database.activity", activity(connections=conns)))
    assert result.get("db_connections:primary") == level


def test_idle_in_transaction_and_blocked_sessions_above_their_seconds() -> None:
    out = activity(
        idle_in_transaction=1,
        oldest_idle_in_transaction_seconds=60.5,
        blocked=[{"pid": 7, "blocked_by": [5]}],
        longest_blocked_seconds=30.0,  # "over 30 s": not yet
    )
    assert found(ok("database.activity", out)) == {"idle_in_transaction:primary": "warning"}
    out["nodes"][0]["longest_blocked_seconds"] = 30.1
    assert found(ok("database.activity", out))["blocked_session:primary"] == "warning"


def test_pgbouncer_waiting_only_with_clients_waiting() -> None:
    pools = [
        {"database": "shop", "user": "app", "cl_waiting": 2, "maxwait_seconds": 1.0},
        {"database": "shop", "user": "batch", "cl_waiting": 1, "maxwait_seconds": 5.2},
        {"database": "crm", "user": "app", "cl_waiting": 0, "maxwait_seconds": 9.0},
    ]
    out = activity() | {"pgbouncer": {"up": True, "pools": pools}}
    assert found(ok("database.activity", out)) == {
        "pgbouncer_waiting:shop/app": "warning",
        "pgbouncer_waiting:shop/batch": "critical",
    }


def test_slow_statement_needs_enough_calls_in_the_window() -> None:
    def statement(calls: int, mean: float) -> dict[str, Any]:
        return {
            "database": "shop",
            "role": "app",
            "queryid": str(calls),
            "query": "SELECT pg_sleep($1)",
            "window_calls": calls,
            "window_mean_ms": mean,
        }

    out = {"available": True, "slow": [statement(10, 150.0), statement(9, 900.0)]}
    assert found(ok("database.topQueries", out)) == {"slow_statement:shop:app:10": "warning"}
    assert found(ok("database.topQueries", {"available": False, "slow": []})) == {}
