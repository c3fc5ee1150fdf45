"""Alert rules as data, and the pure function that turns readings into conditions.

A ``Rule`` reads one procedure's output (``source``), extracts ``(subject, value)`` samples
from it, and holds for a sample whose value compares with its threshold. A rule name has a
rule per level (``cache_hit_rate`` warning below 70, critical below 50): a subject that matches
both fires once, at the higher level. ``docs/alerts.md`` lists the built-in set; every
threshold comes from ``AlertSettings``.

Extractors index the contract's field names directly (``out["pairs"]``): an output that breaks
the contract makes that rule fail loudly (logged, and not evaluated this round) rather than go
quiet. A figure that is ``None`` (no data yet) yields no alert.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.alerts.models import Condition, fingerprint, rank
from server.alerts.rule import Rule, levels
from server.alerts.sample import Extractor, Sample
from server.alerts.watched_postgres import watched_postgres_rules
from server.alerts.watched_redis import watched_redis_rules
from server.config import AlertSettings, RedisWatchSettings
from server.rpc.reading import Reading

log = logging.getLogger(__name__)

# Breaker states that reject calls. Half-open counts: the breaker has not closed yet, and
# resolving on it would start a new occurrence at every failed trial.
BREAKER_OPEN_STATES = frozenset({"open", "half_open", "forced_open"})

PARTITIONS = "monitoring.partitionMetrics"
CACHE_STATS = "monitoring.cacheStats"
INVALIDATIONS = "monitoring.cacheInvalidationMetrics"
REPLICA_LAG = "database.replicaLag"
POOLS = "monitoring.connectionPoolStats"
QUERIES = "monitoring.queryStats"
BREAKERS = "monitoring.circuitBreakerStatus"
HEALTH = "monitoring.unifiedHealth"


__all__ = ["Extractor", "Rule", "Sample", "Verdict", "default_rules", "evaluate"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one round found: the conditions, and which rule names were read to find them."""

    conditions: tuple[Condition, ...]
    evaluated: frozenset[str]
    failed: Mapping[str, str]  # rule name -> why it could not be evaluated


def evaluate(rules: Sequence[Rule], readings: Mapping[str, Reading]) -> Verdict:
    """Apply every rule to its source's reading. A rule whose source is absent, failing or
    slow is skipped (its alerts stay as they are); one whose extractor raises is skipped and
    logged; neither stops the others."""
    best: dict[str, Condition] = {}
    evaluated: set[str] = set()
    failed: dict[str, str] = {}
    for rule in rules:
        reading = readings.get(rule.source)
        if reading is None or reading.outcome != "ok":
            if (
                reading is not None
                and reading.outcome == "unavailable"
                and rule.unavailable_subject
            ):
                detail = reading.error.message if reading.error else "unavailable"
                _keep(best, rule.condition(rule.unavailable_subject, None, detail))
                evaluated.add(rule.name)
            continue
        try:
            found = [
                rule.condition(s.subject, s.value, s.detail)
                for s in rule.extractor(reading.output)
                if s.value is not None and rule.holds(s.value)
            ]
        except Exception as exc:
            log.exception("alert rule %s (%s) failed on %s", rule.name, rule.level, rule.source)
            failed[rule.name] = f"{type(exc).__name__}: {exc}"
            continue
        evaluated.add(rule.name)
        for condition in found:
            _keep(best, condition)
    # A rule that failed at one level is not evaluated: resolving on half a reading is wrong.
    names = frozenset(evaluated - set(failed))
    conditions = tuple(c for c in best.values() if c.rule in names)
    return Verdict(conditions, names, failed)


def _keep(best: dict[str, Condition], condition: Condition) -> None:
    key = fingerprint(condition.rule, condition.subject)
    held = best.get(key)
    if held is None or rank(condition.level) > rank(held.level):
        best[key] = condition


# --- extractors: contract field names (COMMON.md) ---


def _partition_deltas(out: Any) -> Iterable[Sample]:
    for pair in out["pairs"]:
        delta = pair["delta"]
        # Either table ahead of the other is a divergence.
        yield Sample(str(pair["pair"]), abs(delta) if delta is not None else None)


def _get_p95(out: Any) -> Iterable[Sample]:
    yield Sample("cache", out["latency"]["get"]["p95_ms"])


def _invalidation_failure_rate(out: Any) -> Iterable[Sample]:
    yield Sample("cache", out["failure_rate"])


def _replica_lags(out: Any) -> Iterable[Sample]:
    for replica in out["replicas"]:
        yield Sample(str(replica["name"]), replica["lag_seconds"])


def _pool_utilization(out: Any) -> Iterable[Sample]:
    for node in out["nodes"]:
        yield Sample(str(node["node"]), node["utilization"])


def _query_p99(out: Any) -> Iterable[Sample]:
    yield Sample("queries", out["p99_ms"])


def _open_breakers(out: Any) -> Iterable[Sample]:
    for breaker in out["breakers"]:
        state = str(breaker["state"])
        yield Sample(
            str(breaker["name"]),
            1.0 if state in BREAKER_OPEN_STATES else 0.0,
            state.replace("_", " "),
        )


def _redis_health(out: Any) -> Iterable[Sample]:
    for component in out["components"]:
        if component["name"] == "redis":
            down = component["status"] == "down"
            yield Sample("redis", 1.0 if down else 0.0, component.get("error") or "down")


def _redis_cache_stats(out: Any) -> Iterable[Sample]:
    yield Sample("redis", 0.0 if out["redis_available"] else 1.0, "the cache cannot reach it")


def default_rules(
    s: AlertSettings,
    *,
    redis_cache: bool,
    slow_query_ms: float = 100.0,
    redis_watch: RedisWatchSettings | None = None,
) -> tuple[Rule, ...]:
    """The built-in rule set (docs/alerts.md), thresholds from ``s`` (and ``redis_watch``, the
    rules on the watched Redis); ``redis_cache``: the cache runs over Redis, so its losing Redis
    is an alert; ``slow_query_ms``: SLOW_QUERY_MS, the slow-statement rule's threshold."""
    rules = [
        *levels(
            "partition_row_delta",
            PARTITIONS,
            _partition_deltas,
            ">",
            "pair",
            "partition pair {subject}: the tables differ by {value:g} rows "
            "(threshold {threshold:g})",
            ("warning", s.partition_delta_warning, "ALERT_PARTITION_DELTA_WARNING"),
            ("critical", s.partition_delta_critical, "ALERT_PARTITION_DELTA_CRITICAL"),
        ),
        *watched_redis_rules(s, redis_watch or RedisWatchSettings()),
        *levels(
            "replica_lag",
            REPLICA_LAG,
            _replica_lags,
            ">",
            "replica",
            "replica {subject} is {value:.1f}s behind the primary (threshold {threshold:g}s)",
            ("warning", s.replica_lag_warning, "ALERT_REPLICA_LAG_WARNING"),
            ("critical", s.replica_lag_critical, "ALERT_REPLICA_LAG_CRITICAL"),
        ),
        *levels(
            "cache_get_latency",
            CACHE_STATS,
            _get_p95,
            ">",
            "cache",
            "infrawatch's own procedure cache: GET p95 is {value:.1f} ms "
            "(threshold {threshold:g} ms)",
            ("warning", s.cache_get_p95_warning, "ALERT_CACHE_GET_P95_WARNING"),
            ("critical", s.cache_get_p95_critical, "ALERT_CACHE_GET_P95_CRITICAL"),
        ),
        *levels(
            "cache_invalidation_failures",
            INVALIDATIONS,
            _invalidation_failure_rate,
            ">",
            "cache",
            "infrawatch's own procedure cache: {value:.1f}% of its invalidations fail "
            "(threshold {threshold:g}%)",
            (
                "warning",
                s.invalidation_failure_rate_warning,
                "ALERT_INVALIDATION_FAILURE_RATE_WARNING",
            ),
            (
                "critical",
                s.invalidation_failure_rate_critical,
                "ALERT_INVALIDATION_FAILURE_RATE_CRITICAL",
            ),
        ),
        Rule(
            "breaker_open",
            "critical",
            BREAKERS,
            _open_breakers,
            "==",
            1.0,
            "breaker",
            "circuit breaker {subject} is {detail}: calls to its dependency are refused",
        ),
        Rule(
            "redis_unavailable",
            "critical",
            HEALTH,
            _redis_health,
            "==",
            1.0,
            "redis",
            "Redis is unavailable ({detail}); the cache is degraded to its in-memory tier",
        ),
        *levels(
            "pool_utilization",
            POOLS,
            _pool_utilization,
            ">",
            "node",
            # infrawatch's own pool: the server's connections are db_connections.
            "infrawatch's own connection pool to {subject} is {value:.0f}% in use "
            "(threshold {threshold:g}%); the application's connections are db_connections",
            ("warning", s.pool_utilization_warning, "ALERT_POOL_UTILIZATION_WARNING"),
        ),
        *levels(
            "query_latency",
            QUERIES,
            _query_p99,
            ">",
            "queries",
            # infrawatch's own statements: the application's are slow_statement.
            "infrawatch's own query p99 is {value:.0f} ms (threshold {threshold:g} ms); the "
            "application's statements are slow_statement",
            ("warning", s.query_p99_warning, "ALERT_QUERY_P99_WARNING"),
        ),
    ]
    rules += watched_postgres_rules(s, slow_query_ms=slow_query_ms)
    if redis_cache:
        # The cache's own view of Redis, and its stats failing outright, say the same thing.
        rules.append(
            Rule(
                "redis_unavailable",
                "critical",
                CACHE_STATS,
                _redis_cache_stats,
                "==",
                1.0,
                "redis",
                "Redis is unavailable ({detail}); the cache is degraded to its in-memory tier",
                unavailable_subject="redis",
            )
        )
    return tuple(rules)
