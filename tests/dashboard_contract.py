"""Procedure outputs in the shapes COMMON.md fixes, for checking the dashboard's templates.

Each dict is what the named procedure returns over the wire (JSON-ready). The figures are
distinctive so that a test can find each one on the page. ``standins()`` serves them under
the real paths, for procedures not yet in the catalogue and for error cases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from server.errors import ErrorCode, RpcError
from server.procedures.database import TopQueriesInput
from server.rpc.router import Context, NoInput, Procedure, mutation, query
from tests.assembly import Edit, replacing

NOW = datetime.now(UTC)


def _at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat()


CACHE_STATS: dict[str, Any] = {
    "backend": "redis",
    "enabled": True,
    "redis_available": True,
    "hits": 12345,
    "misses": 1766,
    "hit_rate": 87.48,
    "stale_served": 3,
    "latency": {
        "get": {"samples": 14111, "mean_ms": 0.41, "p50_ms": 0.35, "p95_ms": 0.93, "p99_ms": 1.87},
        "set": {"samples": 1766, "mean_ms": 0.52, "p50_ms": 0.47, "p95_ms": 1.11, "p99_ms": 2.05},
        "delete": {"samples": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None, "p99_ms": None},
    },
    "namespaces": [{"namespace": "rpc", "hits": 12000, "misses": 1700, "hit_rate": 87.59}],
    "redis": {
        "version": "7.0.15",
        "role": "master",
        "used_memory_bytes": 3 * 1024 * 1024,
        "maxmemory_bytes": 0,
        "eviction_policy": "noeviction",
        "evicted_keys": 0,
        "keyspace_hits": 999,
        "keyspace_misses": 11,
        "connected_clients": 4,
        "connected_replicas": 1,
    },
}
INVALIDATION: dict[str, Any] = {"invalidations": 17, "failures": 1, "failure_rate": 5.88}
QUEUES: dict[str, Any] = {
    "queues": [
        {
            "name": "emails",
            "kind": "bullmq",
            "depth": 42,
            "states": {"wait": 40, "active": 2, "failed": 5},
        },
        {"name": "reports", "kind": "rq", "depth": 3, "states": {"queued": 3, "started": 1}},
    ]
}
POOLS: dict[str, Any] = {
    "nodes": [
        {
            "node": "primary",
            "role": "primary",
            "min_size": 1,
            "max_size": 10,
            "size": 4,
            "idle": 1,
            "in_use": 3,
            "waiting": 0,
            "utilization": 30.0,
        },
        {
            "node": "replica-1",
            "role": "replica",
            "min_size": 1,
            "max_size": 20,
            "size": 17,
            "idle": 0,
            "in_use": 17,
            "waiting": 2,
            "utilization": 85.0,
        },
    ],
    "pgbouncer": {
        "pools": [
            {"database": "appdb", "user": "app", "cl_active": 7, "cl_waiting": 0, "sv_idle": 3}
        ],
        "total_xact_count": 98765,
    },
}
QUERIES: dict[str, Any] = {
    "window_seconds": 60.0,
    "count": 900,
    "qps": 15.0,
    "p50_ms": 1.2,
    "p95_ms": 8.5,
    "p99_ms": 612.0,
    "slow_threshold_ms": 100.0,
    "slow_queries": [
        {
            "statement": "SELECT * FROM big WHERE x = $1",
            "calls": 4,
            "max_ms": 750.0,
            "mean_ms": 420.5,
        }
    ],
}
PARTITIONS: dict[str, Any] = {
    "pairs": [
        {
            "pair": "events_legacy:events",
            "legacy": "events_legacy",
            "partitioned": "events",
            "legacy_rows": 10007,
            "partitioned_rows": 10000,
            "delta": 7,
            "partition_count": 12,
            "triggers_enabled": True,
            "recent_writes": {"legacy": 5, "partitioned": 5},
            "ready": False,
            "checks": [
                {"name": "row_delta", "ok": False, "detail": "7 rows differ"},
                {"name": "dual_write_trigger", "ok": True, "detail": "trigger enabled"},
            ],
            "checked_at": _at(8),
        }
    ],
    "checked_at": _at(8),
}
REPLICA_HEALTH: dict[str, Any] = {
    "replicas": [
        {
            "name": "replica-1",
            "healthy": True,
            "in_rotation": True,
            "last_check": _at(4),
            "error": None,
        },
        {
            "name": "replica-2",
            "healthy": False,
            "in_rotation": False,
            "last_check": _at(4),
            "error": "connection refused",
        },
    ]
}
REPLICA_LAG: dict[str, Any] = {
    "replicas": [
        {"name": "replica-1", "up": True, "lag_seconds": 1.25, "lag_bytes": 2048},
        {"name": "replica-2", "up": False, "lag_seconds": None, "lag_bytes": None},
    ]
}


def _session(pid: int, seconds: float, query: str, state: str = "active") -> dict[str, Any]:
    return {
        "pid": pid,
        "user": "shop_app",
        "database": "shop",
        "application": "checkout",
        "state": state,
        "seconds": seconds,
        "query": query,
        "normalised_by": "pg_stat_statements",
    }


ACTIVITY: dict[str, Any] = {
    "nodes": [
        {
            "node": "primary",
            "role": "primary",
            "up": True,
            "error": None,
            "connections": {
                "used": 83,
                "max_connections": 100,
                "reserved": 3,
                "available": 97,
                "used_percent": 85.57,
                "self_connections": 2,
                "hidden": 0,
            },
            "by_state": {"active": 11, "idle": 70, "idle in transaction": 2},
            "by_database": {"shop": 83},
            "by_application": {"checkout": 81, "infrawatch": 2},
            "by_user": {"shop_app": 81, "postgres": 2},
            "idle_in_transaction": 2,
            "oldest_idle_in_transaction_seconds": 73.5,
            "longest_query": _session(4711, 12.5, "SELECT pg_sleep($1)"),
            "longest_transaction": _session(4712, 95.0, "UPDATE carts SET total = $1", "idle"),
            "blocked": [
                _session(4713, 31.25, "UPDATE carts SET total = $1 WHERE id = $2")
                | {"blocked_by": [4712]}
            ],
            "longest_blocked_seconds": 31.25,
            "blockers": [_session(4712, 95.0, "UPDATE carts SET total = $1", "idle")],
        },
        {"node": "replica-1", "role": "replica", "up": False, "error": "connection refused"},
    ],
    "pgbouncer": {"up": True, "error": None, "cl_waiting": 6, "maxwait_seconds": 2.75, "pools": []},
    "checked_at": _at(1),
}
TOP_QUERIES: dict[str, Any] = {
    "available": True,
    "reason": None,
    "how_to_enable": None,
    "order_by": "time_per_s",
    "limit": 15,
    "window_setting_seconds": 60.0,
    "window_seconds": 59.5,
    "excluded": {"roles": ["infrawatch"], "reason": "infrawatch connects as 'infrawatch'"},
    "statements_seen": 1,
    "statements": [
        {
            "queryid": "-4213",
            "query": "SELECT * FROM orders WHERE customer_id = $1",
            "role": "shop_app",
            "database": "shop",
            "toplevel": True,
            "calls": 90210,
            "total_ms": 123456.7,
            "mean_ms": 1.37,
            "max_ms": 812.5,
            "stddev_ms": 4.2,
            "rows": 180420,
            "shared_hit_ratio": 99.25,
            "temp_blocks": 0,
            "window_calls": 1190,
            "calls_per_s": 20.0,
            "time_ms_per_s": 27.4,
            "window_mean_ms": 1.37,
        }
    ],
    "slow_threshold_ms": 100.0,
    "slow": [],
    "checked_at": _at(1),
}
UNIFIED_METRICS: dict[str, Any] = {
    "status": "degraded",
    "reasons": ["cache hit rate 45.0 % is below 50 %"],
}


def _alert(number: int, level: str, state: str, **extra: Any) -> dict[str, Any]:
    alert = {
        "id": number,
        "fingerprint": f"rule-{number}:subject-{number}",
        "rule": f"rule_{number}",
        "subject": f"subject-{number}",
        "level": level,
        "state": state,
        "message": f"message of alert {number}",
        "value": 100.0 + number,
        "threshold": 100.0,
        "first_fired_at": _at(600 + number),
        "last_fired_at": _at(number),
        "resolved_at": _at(1) if state == "resolved" else None,
        "acknowledged": False,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "note": None,
    }
    return alert | extra


# Newest first, as alerts.list returns them: the warning is newer than the critical ones.
ALERTS: dict[str, Any] = {
    "alerts": [
        _alert(1, "warning", "firing"),
        _alert(2, "critical", "firing"),
        _alert(
            3,
            "critical",
            "firing",
            acknowledged=True,
            acknowledged_by="bob",
            acknowledged_at=_at(30),
            note="<script>alert('note')</script> on it",
        ),
        _alert(4, "warning", "resolved", subject="<img src=x onerror=alert(1)>"),
    ],
    "total": 4,
}

DELIVERIES: dict[str, Any] = {
    "durable": True,
    "available": True,
    "last_error": None,
    "targets": [
        {
            "target": "alertmanager:http://alertmanager:9093",
            "kind": "alertmanager",
            "configured": True,
            "pending": 0,
            "oldest_pending_seconds": None,
            "sent": 1234,
            "failures": 2,
            "dead": 0,
            "last_success_at": _at(3),
            "last_error": None,
            "last_error_at": None,
        },
        {
            "target": "webhook:https://hooks.example/<b>x</b>",
            "kind": "webhook",
            "configured": True,
            "pending": 7,
            "oldest_pending_seconds": 95.0,
            "sent": 40,
            "failures": 9,
            "dead": 0,
            "last_success_at": _at(300),
            "last_error": "POST: HTTP 503",
            "last_error_at": _at(2),
        },
    ],
    "evaluation": {
        "instance": "web-2",
        "elected": True,
        "evaluating": False,
        "evaluator": "web-1",
        "since": None,
        "database_reachable": True,
        "last_error": None,
    },
}


def _node(address: str, role: str, **over: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "address": address,
        "role": role,
        "status": "up",
        "error": None,
        "version": "7.0.15",
        "uptime_seconds": 86400,
        "used_memory_bytes": 3 * 1024 * 1024,
        "maxmemory_bytes": 4 * 1024 * 1024,
        "memory_used_percent": 75.0,
        "maxmemory_policy": "allkeys-lru",
        "mem_fragmentation_ratio": 1.21,
        "evicted_keys": 42,
        "expired_keys": 7,
        "evicted_keys_per_second": 0.25,
        "expired_keys_per_second": 0.0,
        "keyspace_hits": 900,
        "keyspace_misses": 100,
        "keyspace_hit_rate": 90.0,
        "window_seconds": 60.0,
        "connected_clients": 23,
        "maxclients": 10000,
        "clients_used_percent": 0.23,
        "blocked_clients": 2,
        "rejected_connections": 0,
        "rejected_connections_per_second": 0.0,
        "master_address": None,
        "master_link_status": None,
        "master_last_io_seconds": None,
        "master_link_down_seconds": None,
        "replication_lag_bytes": None,
        "replicas": [],
        "cluster_state": None,
        "cluster_slots_assigned": None,
        "cluster_slots_ok": None,
        "cluster_slots_pfail": None,
        "cluster_slots_fail": None,
        "cluster_flags": [],
        "sentinel_quorum_ok": None,
        "sentinel_quorum_message": None,
    }
    return node | over


REDIS_HEALTH: dict[str, Any] = {
    "redis_configured": True,
    "mode": "sentinel",
    "window": 60.0,
    "nodes": [
        _node(
            "10.0.0.1:6379",
            "master",
            replicas=[
                {
                    "address": "10.0.0.2:6379",
                    "state": "online",
                    "offset": 1000,
                    "lag_bytes": 2048,
                    "lag_seconds": 0,
                }
            ],
        ),
        _node(
            "10.0.0.2:6379",
            "replica",
            master_address="10.0.0.1:6379",
            master_link_status="down",
            replication_lag_bytes=2048,
        ),
        _node("10.0.0.9:26379", "sentinel", status="down", error="<b>connection refused</b>"),
    ],
    "keyspace": {
        "scope": "application",
        "hits": 6543,
        "misses": 3457,
        "lookups": 10000,
        "hit_rate": 65.43,
        "window_seconds": 60.0,
        "own_hits": 12,
        "own_misses": 30,
    },
    "sentinel": {
        "master_name": "mymaster",
        "master_address": "10.0.0.1:6379",
        "sentinels": 1,
        "reachable": 0,
        "quorum_ok": False,
        "reason": "no sentinel answered",
    },
    "cluster": None,
    "warnings": [],
}

OUTPUTS: dict[str, dict[str, Any]] = {
    "monitoring.redisHealth": REDIS_HEALTH,
    "monitoring.cacheStats": CACHE_STATS,
    "monitoring.cacheInvalidationMetrics": INVALIDATION,
    "monitoring.queueStats": QUEUES,
    "monitoring.connectionPoolStats": POOLS,
    "database.activity": ACTIVITY,
    "database.topQueries": TOP_QUERIES,
    "monitoring.queryStats": QUERIES,
    "monitoring.partitionMetrics": PARTITIONS,
    "database.replicaHealth": REPLICA_HEALTH,
    "database.replicaLag": REPLICA_LAG,
    "monitoring.unifiedMetrics": UNIFIED_METRICS,
    "alerts.list": ALERTS,
    "alerts.deliveries": DELIVERIES,
}


class AlertQuery(BaseModel):
    """alerts.list's filters (COMMON.md: state, level, acknowledged; paged)."""

    model_config = ConfigDict(extra="forbid")

    state: str | None = None
    level: str | None = None
    acknowledged: bool | None = None
    limit: int = 50
    offset: int = 0


async def list_alerts(_ctx: Context, inp: AlertQuery) -> dict[str, Any]:
    alerts = [
        a
        for a in ALERTS["alerts"]
        if (inp.state is None or a["state"] == inp.state)
        and (inp.level is None or a["level"] == inp.level)
        and (inp.acknowledged is None or a["acknowledged"] == inp.acknowledged)
    ]
    return {"alerts": alerts[inp.offset : inp.offset + inp.limit], "total": len(alerts)}


class AckInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    note: str | None = None


def _answer(value: dict[str, Any]) -> Any:
    async def handler(_ctx: Context, _inp: Any) -> dict[str, Any]:
        return value

    return handler


# The inputs of the procedures the page calls with one (web/sections.py).
INPUTS: dict[str, type[BaseModel]] = {"database.topQueries": TopQueriesInput}


def standins(
    outputs: dict[str, dict[str, Any]] = OUTPUTS, acknowledged: list[dict[str, Any]] | None = None
) -> list[Procedure]:
    """Procedures answering ``outputs`` under their real paths, and an ``alerts.acknowledge``
    that records each call in ``acknowledged`` (NOT_FOUND for an id not in ``ALERTS``)."""
    procs = [
        query(path, list_alerts, input=AlertQuery)
        if path == "alerts.list"
        else query(path, _answer(value), input=INPUTS.get(path, NoInput))
        for path, value in outputs.items()
    ]
    if acknowledged is not None:

        async def acknowledge(ctx: Context, inp: AckInput) -> dict[str, Any]:
            known = {a["id"] for a in ALERTS["alerts"]}
            if inp.id not in known:
                raise RpcError(ErrorCode.NOT_FOUND, f"no alert with id {inp.id}")
            acknowledged.append({"id": inp.id, "note": inp.note, "by": ctx.caller.name})
            return {"id": inp.id, "acknowledged": True}

        procs.append(mutation("alerts.acknowledge", acknowledge, input=AckInput))
    return procs


def failing(path: str, error: BaseException) -> Procedure:
    async def handler(_ctx: Context, _inp: Any) -> None:
        raise error

    return query(path, handler)


def slow(path: str, seconds: float) -> Procedure:
    async def handler(_ctx: Context, _inp: Any) -> dict[str, Any]:
        await asyncio.sleep(seconds)  # the procedure under test is slow, not the test waiting
        return OUTPUTS[path]

    return query(path, handler)


def with_catalogue(extra: Iterable[Procedure], *, without: Collection[str] = ()) -> Edit:
    """The real catalogue, with ``extra`` in place of any procedure of the same path and the
    paths in ``without`` left out (``tests.assembly.create_app_with`` applies it)."""
    return replacing(extra, without=without)
