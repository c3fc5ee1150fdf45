"""Read replicas: health and rotation (from the health checks), lag (measured on request),
and what the router sent where."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from server.collectors.pools import NodePoolStats, node_pool_stats
from server.datastores.postgres import PostgresCluster
from server.datastores.replicas import ReplicaLag


class ReplicaHealthEntry(BaseModel):
    name: str = Field(description="host-port of the replica's URL, label-safe")
    url: str = Field(description="password masked")
    healthy: bool = Field(description="the last health check passed")
    in_rotation: bool = Field(description="healthy and its breaker not open: takes reads")
    last_check: datetime | None = Field(description="when health was last assessed")
    last_ok: datetime | None = Field(description="when a check last passed")
    check_ms: float | None = Field(description="round trip of the last passing check")
    in_recovery: bool | None = Field(description="pg_is_in_recovery() at the last check")
    consecutive_failures: int = Field(description="failed checks in a row")
    state_since: datetime = Field(description="when healthy last changed")
    breaker: str = Field(description="the replica's breaker")
    breaker_state: str = Field(description="its state; open takes the replica out of rotation")
    error: str | None = Field(description="why it is unhealthy")


class ReplicaHealthReport(BaseModel):
    interval_seconds: float = Field(description="REPLICA_HEALTH_INTERVAL")
    replicas: list[ReplicaHealthEntry] = Field(
        description="each configured replica, in DATABASE_REPLICA_URLS order"
    )


class ReplicaLagEntry(BaseModel):
    name: str = Field(description="the replica's name (host-port)")
    up: bool = Field(description="the replica answered the lag query")
    lag_seconds: float | None = Field(
        description="0 when replayed up to the primary's current position, else the age of "
        "the last replayed commit; None when unknown"
    )
    lag_bytes: int | None = Field(
        description="pg_wal_lsn_diff(primary pg_current_wal_lsn(), replica "
        "pg_last_wal_replay_lsn()); None when unknown"
    )
    in_recovery: bool | None = Field(description="pg_is_in_recovery()")
    replay_paused: bool | None = Field(description="pg_is_wal_replay_paused()")
    primary_lsn: str | None = Field(description="the primary's pg_current_wal_lsn(), read first")
    receive_lsn: str | None = Field(description="pg_last_wal_receive_lsn()")
    replay_lsn: str | None = Field(description="pg_last_wal_replay_lsn()")
    last_replay_at: datetime | None = Field(description="pg_last_xact_replay_timestamp()")
    measured_at: datetime = Field(description="when measured")
    error: str | None = Field(description="why a figure is None")


class ReplicaLagReport(BaseModel):
    replicas: list[ReplicaLagEntry] = Field(description="each configured replica")


class ReplicaRouting(BaseModel):
    name: str = Field(description="the replica's name")
    reads_routed: int = Field(description="read-only statements sent to this replica")
    healthy: bool = Field(description="the last health check passed")
    in_rotation: bool = Field(description="takes reads now")
    pool: NodePoolStats = Field(description="the replica's pool (server: None)")


class ReplicaStatsReport(BaseModel):
    reads_routed: dict[str, int] = Field(
        description='read-only statements sent to each node, "primary" included'
    )
    primary_reads: int = Field(description="read-only statements the primary served")
    failovers: int = Field(
        description="reads sent to the primary because no replica was in rotation or the "
        "chosen one failed"
    )
    replicas_in_rotation: int = Field(description="replicas taking reads now")
    replicas: list[ReplicaRouting] = Field(description="each configured replica")


def replica_health(cluster: PostgresCluster, interval: float) -> ReplicaHealthReport:
    entries = []
    for replica in cluster.replicas:
        health = replica.health
        node = replica.node
        entries.append(
            ReplicaHealthEntry(
                name=replica.name,
                url=node.url,
                healthy=health.healthy,
                in_rotation=replica.in_rotation,
                last_check=health.last_check,
                last_ok=health.last_ok,
                check_ms=health.check_ms,
                in_recovery=health.in_recovery,
                consecutive_failures=health.consecutive_failures,
                state_since=health.changed_at,
                breaker=node.breaker.name,
                breaker_state=node.breaker.state.value,
                error=health.error,
            )
        )
    return ReplicaHealthReport(interval_seconds=interval, replicas=entries)


async def replica_lag(cluster: PostgresCluster) -> ReplicaLagReport:
    return ReplicaLagReport(replicas=[_lag_entry(lag) for lag in await cluster.measure_lag()])


def _lag_entry(lag: ReplicaLag) -> ReplicaLagEntry:
    return ReplicaLagEntry(
        name=lag.name,
        up=lag.up,
        lag_seconds=None if lag.lag_seconds is None else round(lag.lag_seconds, 3),
        lag_bytes=lag.lag_bytes,
        in_recovery=lag.in_recovery,
        replay_paused=lag.replay_paused,
        primary_lsn=lag.primary_lsn,
        receive_lsn=lag.receive_lsn,
        replay_lsn=lag.replay_lsn,
        last_replay_at=lag.last_replay_at,
        measured_at=lag.measured_at,
        error=lag.error,
    )


async def replica_stats(cluster: PostgresCluster) -> ReplicaStatsReport:
    routed = cluster.replicas.reads_routed
    replicas = [
        ReplicaRouting(
            name=replica.name,
            reads_routed=routed[replica.name],
            healthy=replica.health.healthy,
            in_rotation=replica.in_rotation,
            pool=await node_pool_stats(replica.node, ask_server=False),
        )
        for replica in cluster.replicas
    ]
    return ReplicaStatsReport(
        reads_routed={node.name: routed[node.name] for node in cluster.nodes},
        primary_reads=routed[cluster.primary.name],
        failovers=cluster.replicas.failovers,
        replicas_in_rotation=sum(r.in_rotation for r in replicas),
        replicas=replicas,
    )
