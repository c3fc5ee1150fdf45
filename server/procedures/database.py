"""The PostgreSQL procedures: pools, query statistics, partition migration, replicas, info.

Thin: each hands over to a collector. Without ``DATABASE_URL`` every
one of them answers SERVICE_UNAVAILABLE ("no database configured"), never a 500.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from server.cache.policy import CachePolicy
from server.collectors.activity import ActivityReport, activity
from server.collectors.database import DatabaseInfo, database_info
from server.collectors.partitions import (
    PartitionMetricsReport,
    PartitionTableStatsReport,
    PartitionWatch,
)
from server.collectors.pools import ConnectionPoolStats, connection_pool_stats
from server.collectors.queries import QueryStatsReport, query_stats_report
from server.collectors.replicas import (
    ReplicaHealthReport,
    ReplicaLagReport,
    ReplicaStatsReport,
    replica_health,
    replica_lag,
    replica_stats,
)
from server.collectors.top_queries import OrderBy, TopQueries, TopQueriesReport
from server.config import DatabaseSettings, PartitionSettings
from server.datastores.postgres import PostgresCluster
from server.errors import ErrorCode, Unavailable
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, query

_UNAVAILABLE = (ErrorCode.SERVICE_UNAVAILABLE,)

# Three answers are cached (docs/procedures.md, "Cached answers"): figures that cost exact
# counts or a walk of the database's files and change by migration, DDL or restart rather than
# by the second. Each carries ``checked_at``, so a cached answer is not taken for a fresh one.
# Not warmed: the alert evaluator reads partitionMetrics every ALERT_EVALUATION_INTERVAL anyway,
# and warming would run the counts when nobody looks. What operators act on in the moment
# (health, breakers, pools, replicas, alerts, the cache's own figures) stays uncached.
DATABASE_NAMESPACE = "database"
# Never stale: a switchover verdict must not outlive its source, and the page and the alert
# evaluator read it in-process, where no X-Cache: STALE marker reaches them.
PARTITION_METRICS_CACHE = CachePolicy(ttl=10.0, namespace=DATABASE_NAMESPACE, stale_if_error=False)
# An exact count per partition; partitions change only by DDL.
PARTITION_TABLE_STATS_CACHE = CachePolicy(ttl=30.0, namespace=DATABASE_NAMESPACE)
# Versions and settings change with a restart or reload; pg_database_size walks every file.
DATABASE_INFO_CACHE = CachePolicy(ttl=30.0, namespace=DATABASE_NAMESPACE)


class QueryStatsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=200, description="slow statements to list at most")


class TopQueriesInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_by: OrderBy = Field(default="total_time", description="the figure to sort by")
    limit: int = Field(default=20, ge=1, le=500, description="statements to list at most")


class PartitionTableStatsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pair: str | None = Field(
        default=None, description="one configured pair (legacy:partitioned); all when absent"
    )


def procedures(
    postgres: PostgresCluster | None,
    partitions: PartitionWatch | None,
    settings: DatabaseSettings,
    partition_settings: PartitionSettings,
    top: TopQueries | None = None,
) -> list[Procedure]:
    """The database procedures over one app's cluster (``None``: no ``DATABASE_URL``);
    ``top``: the app's ``TopQueries`` (it keeps the window's readings), one of its own when
    not given."""

    def cluster() -> PostgresCluster:
        if postgres is None:
            raise Unavailable("no database configured: DATABASE_URL is not set")
        return postgres

    if top is None and postgres is not None:
        top = TopQueries.over(postgres, settings)

    def top_queries() -> TopQueries:
        if top is None:
            raise Unavailable("no database configured: DATABASE_URL is not set")
        return top

    def watch() -> PartitionWatch:
        if partitions is None:
            raise Unavailable("no database configured: DATABASE_URL is not set")
        return partitions

    async def connection_pool_stats_proc(ctx: Context, _: NoInput) -> ConnectionPoolStats:
        return await connection_pool_stats(cluster())

    async def query_stats_proc(ctx: Context, inp: QueryStatsInput) -> QueryStatsReport:
        return query_stats_report(cluster().stats, inp.limit)

    async def partition_metrics_proc(ctx: Context, _: NoInput) -> PartitionMetricsReport:
        return await watch().metrics()

    async def partition_table_stats_proc(
        ctx: Context, inp: PartitionTableStatsInput
    ) -> PartitionTableStatsReport:
        return await watch().table_stats(inp.pair)

    async def replica_health_proc(ctx: Context, _: NoInput) -> ReplicaHealthReport:
        return replica_health(cluster(), settings.replica_health_interval)

    async def replica_lag_proc(ctx: Context, _: NoInput) -> ReplicaLagReport:
        return await replica_lag(cluster())

    async def replica_stats_proc(ctx: Context, _: NoInput) -> ReplicaStatsReport:
        return await replica_stats(cluster())

    async def top_queries_proc(ctx: Context, inp: TopQueriesInput) -> TopQueriesReport:
        return await top_queries().report(inp.order_by, inp.limit)

    async def activity_proc(ctx: Context, _: NoInput) -> ActivityReport:
        return await activity(cluster())

    async def database_info_proc(ctx: Context, _: NoInput) -> DatabaseInfo:
        return await database_info(cluster(), settings, partition_settings)

    return [
        query(
            "database.topQueries",
            top_queries_proc,
            input=TopQueriesInput,
            output=TopQueriesReport,
            summary="The watched server's statements from pg_stat_statements, every role and "
            "database but infrawatch's own role: calls, calls/s and time/s over "
            "TOP_QUERIES_WINDOW, total/mean/max/stddev ms, rows, shared-buffer hit ratio, "
            "temporary blocks; available: false with the reason and how to enable it.",
            errors=_UNAVAILABLE,
            positional=("order_by", "limit"),
            options=(Cost.EXPENSIVE,),
        ),
        query(
            "database.activity",
            activity_proc,
            output=ActivityReport,
            summary="Per node, every client session: connections against max_connections less "
            "the reserved ones, by state, database, application and user; idle-in-transaction "
            "sessions; the longest query and transaction (normalised text); sessions blocked "
            "on locks and who blocks them; PgBouncer's waiting clients.",
            errors=_UNAVAILABLE,
            options=(Cost.EXPENSIVE,),
        ),
        query(
            "monitoring.connectionPoolStats",
            connection_pool_stats_proc,
            output=ConnectionPoolStats,
            summary="Per node: pool size, idle, in use, callers waiting, utilization, acquire "
            "latency, and the server's pg_stat_activity against max_connections; PgBouncer's "
            "SHOW POOLS, STATS, DATABASES and LISTS.",
            errors=_UNAVAILABLE,
            options=(Cost.EXPENSIVE,),
        ),
        query(
            "monitoring.queryStats",
            query_stats_proc,
            input=QueryStatsInput,
            output=QueryStatsReport,
            summary="p50/p95/p99 execution time and queries per second over a rolling window, "
            "and the slowest normalised statements above SLOW_QUERY_MS.",
            errors=_UNAVAILABLE,
            positional=("limit",),
            options=(Cost.CHEAP,),
        ),
        query(
            "monitoring.partitionMetrics",
            partition_metrics_proc,
            output=PartitionMetricsReport,
            summary="Per PARTITION_PAIRS entry: row counts, delta, partitions and bounds, "
            "dual-write triggers, writes within PARTITION_WRITES_WINDOW, and the switchover "
            "verdict with each check.",
            errors=_UNAVAILABLE,
            options=(Cost.EXPENSIVE, PARTITION_METRICS_CACHE),
        ),
        query(
            "monitoring.partitionTableStats",
            partition_table_stats_proc,
            input=PartitionTableStatsInput,
            output=PartitionTableStatsReport,
            summary="Per partition of each partitioned table: bounds, rows and size.",
            errors=(*_UNAVAILABLE, ErrorCode.NOT_FOUND),
            options=(Cost.EXPENSIVE, PARTITION_TABLE_STATS_CACHE),
            positional=("pair",),
        ),
        query(
            "database.replicaHealth",
            replica_health_proc,
            output=ReplicaHealthReport,
            summary="Each replica: healthy, in the read rotation, last check and why it failed.",
            errors=_UNAVAILABLE,
            options=(Cost.CHEAP,),
        ),
        query(
            "database.replicaLag",
            replica_lag_proc,
            output=ReplicaLagReport,
            summary="Each replica's lag behind the primary in bytes and seconds, measured now.",
            errors=_UNAVAILABLE,
            options=(Cost.EXPENSIVE,),
        ),
        query(
            "database.replicaStats",
            replica_stats_proc,
            output=ReplicaStatsReport,
            summary="Reads routed per node, failovers to the primary, and each replica's pool.",
            errors=_UNAVAILABLE,
            options=(Cost.CHEAP,),
        ),
        query(
            "database.info",
            database_info_proc,
            output=DatabaseInfo,
            summary="Each server's version, role, max_connections and uptime; PgBouncer's "
            "version; the database settings infrawatch runs with.",
            errors=_UNAVAILABLE,
            options=(Cost.EXPENSIVE, DATABASE_INFO_CACHE),
        ),
    ]
