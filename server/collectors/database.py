"""``database.info``: what each server is (version, role, limits) and how we are set up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from server.config import Settings
from server.datastores.node import Node
from server.datastores.postgres import PostgresCluster
from server.errors import RpcError

_INFO_SQL = """
SELECT version() AS version,
       current_setting('server_version') AS server_version,
       current_setting('server_version_num')::int AS server_version_num,
       pg_is_in_recovery() AS in_recovery,
       current_setting('max_connections')::int AS max_connections,
       current_database() AS database,
       pg_database_size(current_database()) AS database_size_bytes,
       pg_postmaster_start_time() AS started_at,
       extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_seconds,
       current_setting('shared_buffers') AS shared_buffers,
       current_setting('work_mem') AS work_mem,
       current_setting('wal_level') AS wal_level,
       current_setting('server_encoding') AS server_encoding,
       current_setting('TimeZone') AS timezone
"""


class NodeInfo(BaseModel):
    node: str = Field(description="primary or the replica's name")
    role: str = Field(description="configured role: primary or replica")
    url: str = Field(description="password masked")
    up: bool = Field(description="the server answered")
    error: str | None = Field(default=None, description="why it did not")
    version: str | None = Field(default=None, description="version()")
    server_version: str | None = Field(default=None, description="server_version")
    server_version_num: int | None = Field(default=None, description="server_version_num")
    in_recovery: bool | None = Field(default=None, description="pg_is_in_recovery()")
    max_connections: int | None = Field(default=None, description="max_connections")
    database: str | None = Field(default=None, description="current_database()")
    database_size_bytes: int | None = Field(
        default=None, description="pg_database_size(current_database())"
    )
    started_at: datetime | None = Field(default=None, description="pg_postmaster_start_time()")
    uptime_seconds: float | None = Field(default=None, description="since the postmaster started")
    settings: dict[str, str] = Field(
        default={}, description="shared_buffers, work_mem, wal_level, server_encoding, timezone"
    )


class PgBouncerInfo(BaseModel):
    url: str = Field(description="the console URL, password masked")
    up: bool = Field(description="the console answered")
    version: str | None = Field(default=None, description="SHOW VERSION")
    error: str | None = Field(default=None, description="why it did not answer")


class DatabaseConfiguration(BaseModel):
    """The PostgreSQL settings infrawatch runs with (docs/configuration.md)."""

    connection_limit: int = Field(description="DATABASE_CONNECTION_LIMIT, per pool")
    min_connections: int = Field(description="DATABASE_MIN_CONNECTIONS")
    timeout_ms: int = Field(description="DATABASE_TIMEOUT: connect, acquire, statement")
    statement_cache_size: int = Field(description="DATABASE_STATEMENT_CACHE_SIZE")
    replicas: int = Field(description="entries of DATABASE_REPLICA_URLS")
    replica_health_interval: float = Field(description="REPLICA_HEALTH_INTERVAL, seconds")
    slow_query_ms: float = Field(description="SLOW_QUERY_MS")
    partition_pairs: list[str] = Field(description="PARTITION_PAIRS")
    partition_exact_count_limit: int = Field(description="PARTITION_EXACT_COUNT_LIMIT")
    pgbouncer_configured: bool = Field(description="PGBOUNCER_ADMIN_URL is set")


class DatabaseInfo(BaseModel):
    version: str | None = Field(description="the primary's server_version")
    nodes: list[NodeInfo] = Field(description="the primary, then each replica")
    pgbouncer: PgBouncerInfo | None = Field(description="None when PGBOUNCER_ADMIN_URL is unset")
    configuration: DatabaseConfiguration = Field(description="the settings in use")
    checked_at: datetime = Field(
        description="when the servers were asked (uptime_seconds is as of then); a cached "
        "answer keeps the time of its reading"
    )


async def database_info(cluster: PostgresCluster, settings: Settings) -> DatabaseInfo:
    checked_at = datetime.now(UTC)
    nodes = list(await asyncio.gather(*(_node_info(node) for node in cluster.nodes)))
    bouncer: PgBouncerInfo | None = None
    if cluster.pgbouncer is not None:
        try:
            shown = await cluster.pgbouncer.show("VERSION")
            rows = shown["VERSION"]
            version = str(rows[0]["version"]) if rows else None
            bouncer = PgBouncerInfo(url=cluster.pgbouncer.display_url, up=True, version=version)
        except RpcError as exc:
            bouncer = PgBouncerInfo(url=cluster.pgbouncer.display_url, up=False, error=exc.message)
    return DatabaseInfo(
        version=nodes[0].server_version,
        nodes=nodes,
        pgbouncer=bouncer,
        configuration=DatabaseConfiguration(
            connection_limit=settings.database_connection_limit,
            min_connections=settings.database_min_connections,
            timeout_ms=settings.database_timeout_ms,
            statement_cache_size=settings.database_statement_cache_size,
            replicas=len(settings.database_replica_urls),
            replica_health_interval=settings.replica_health_interval,
            slow_query_ms=settings.slow_query_ms,
            partition_pairs=[pair.name for pair in settings.partition_pairs],
            partition_exact_count_limit=settings.partition_exact_count_limit,
            pgbouncer_configured=settings.pgbouncer_admin_url is not None,
        ),
        checked_at=checked_at,
    )


async def _node_info(node: Node) -> NodeInfo:
    try:
        row = await node.fetchrow(_INFO_SQL)
    except RpcError as exc:
        return NodeInfo(node=node.name, role=node.role, url=node.url, up=False, error=exc.message)
    return NodeInfo(
        node=node.name,
        role=node.role,
        url=node.url,
        up=True,
        version=row["version"],
        server_version=row["server_version"],
        server_version_num=row["server_version_num"],
        in_recovery=row["in_recovery"],
        max_connections=row["max_connections"],
        database=row["database"],
        database_size_bytes=row["database_size_bytes"],
        started_at=row["started_at"],
        uptime_seconds=round(row["uptime_seconds"], 3),
        settings={
            key: row[key]
            for key in ("shared_buffers", "work_mem", "wal_level", "server_encoding", "timezone")
        },
    )
