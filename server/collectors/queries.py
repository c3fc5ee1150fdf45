"""Query statistics as ``monitoring.queryStats`` answers them (``QueryStats`` keeps the data)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from server.datastores.query_stats import QueryStats


class SlowQuery(BaseModel):
    statement: str = Field(description="normalised text: literals as ?, never parameters")
    calls: int = Field(description="executions slower than the threshold")
    max_ms: float = Field(description="slowest execution")
    mean_ms: float = Field(description="mean of the slow executions")
    total_ms: float = Field(description="sum of the slow executions")
    last_ms: float = Field(description="the latest slow execution")
    last_at: datetime | None = Field(description="when it finished")
    last_node: str = Field(description="where it ran")


class QueryTotals(BaseModel):
    """Statements since start, by outcome."""

    ok: int = Field(default=0, description="statements that succeeded")
    error: int = Field(
        default=0, description="statements that failed (SQL error or node unavailable)"
    )
    timeout: int = Field(default=0, description="statements or acquires that ran out of time")
    rejected: int = Field(default=0, description="calls an open breaker refused")


class QueryStatsReport(BaseModel):
    scope: Literal["self"] = Field(
        default="self",
        description="infrawatch's own statements only; the application's are database.topQueries",
    )
    window_seconds: float = Field(description="span of the rolling window")
    count: int = Field(description="statements in the window, whether they ran or not")
    qps: float = Field(description="statements per second over the window")
    executed: int = Field(description="statements in the window that reached a server")
    errors: int = Field(description="executed statements that failed")
    timeouts: int = Field(description="executed statements that timed out")
    not_executed: int = Field(
        description="calls rejected by a breaker or left without a connection"
    )
    p50_ms: float | None = Field(description="execution time percentiles; None without samples")
    p95_ms: float | None = Field(description="95th percentile execution time")
    p99_ms: float | None = Field(description="99th percentile execution time")
    mean_ms: float | None = Field(description="mean execution time")
    samples: int = Field(description="execution times in the window")
    slow_threshold_ms: float = Field(description="SLOW_QUERY_MS")
    slow_total: int = Field(description="slow executions since start")
    slow_queries: list[SlowQuery] = Field(description="slowest statements by total slow time")
    totals: QueryTotals = Field(description="since start, by outcome")


def query_stats_report(stats: QueryStats, limit: int = 20) -> QueryStatsReport:
    snap = stats.snapshot(limit)
    latency = snap.latency
    return QueryStatsReport(
        window_seconds=snap.window_seconds,
        count=snap.count,
        qps=round(snap.qps, 3),
        executed=snap.executed,
        errors=snap.errors,
        timeouts=snap.timeouts,
        not_executed=snap.not_executed,
        p50_ms=latency.p50_ms,
        p95_ms=latency.p95_ms,
        p99_ms=latency.p99_ms,
        mean_ms=latency.mean_ms,
        samples=latency.samples,
        slow_threshold_ms=snap.slow_threshold_ms,
        slow_total=snap.slow_total,
        slow_queries=[
            SlowQuery(
                statement=s.statement,
                calls=s.calls,
                max_ms=_ms(s.max_seconds),
                mean_ms=_ms(s.total_seconds / s.calls),
                total_ms=_ms(s.total_seconds),
                last_ms=_ms(s.last_seconds),
                last_at=s.last_at,
                last_node=s.last_node,
            )
            for s in snap.slow_statements
        ],
        totals=QueryTotals(**snap.totals),
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
