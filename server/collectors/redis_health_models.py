"""What ``monitoring.redisHealth`` answers: the watched Redis node by node (the models of
``RedisHealthCollector``, ``redis_health.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Role = Literal["master", "replica", "sentinel"]


class ReplicaLink(BaseModel):
    address: str = Field(description="The replica as its master lists it (ip:port).")
    state: str | None = Field(description="online, wait_bgsave, send_bulk...")
    offset: int | None = Field(description="Replication offset the replica acknowledged.")
    lag_bytes: int | None = Field(description="master_repl_offset minus that offset.")
    lag_seconds: int | None = Field(description="Seconds since the replica's last ack.")


class RedisNodeHealth(BaseModel):
    address: str
    role: Role | None = Field(description="master, replica or sentinel (last known when down).")
    status: Literal["up", "down"]
    error: str | None = Field(None, description="Why the node could not be read.")
    version: str | None = None
    uptime_seconds: int | None = None
    used_memory_bytes: int | None = None
    maxmemory_bytes: int | None = Field(None, description="0: no limit.")
    memory_used_percent: float | None = Field(
        None, description="used_memory against maxmemory; null without a limit."
    )
    maxmemory_policy: str | None = None
    mem_fragmentation_ratio: float | None = None
    evicted_keys: int | None = Field(None, description="Since the node started.")
    expired_keys: int | None = Field(None, description="Since the node started.")
    evicted_keys_per_second: float | None = Field(None, description="Over window_seconds.")
    expired_keys_per_second: float | None = Field(None, description="Over window_seconds.")
    keyspace_hits: int | None = Field(None, description="Over window_seconds, every client.")
    keyspace_misses: int | None = Field(None, description="Over window_seconds, every client.")
    keyspace_hit_rate: float | None = Field(None, description="Percent, over window_seconds.")
    window_seconds: float | None = Field(None, description="Span of this node's rates.")
    connected_clients: int | None = None
    maxclients: int | None = None
    clients_used_percent: float | None = None
    blocked_clients: int | None = None
    rejected_connections: int | None = Field(None, description="Since the node started.")
    rejected_connections_per_second: float | None = None
    master_address: str | None = Field(None, description="A replica's master.")
    master_link_status: str | None = Field(None, description="A replica's link: up or down.")
    master_last_io_seconds: int | None = None
    master_link_down_seconds: int | None = None
    replication_lag_bytes: int | None = Field(
        None, description="A replica: its master's offset minus its own."
    )
    replicas: list[ReplicaLink] = Field(default_factory=list, description="A master: its replicas.")
    cluster_state: str | None = None
    cluster_slots_assigned: int | None = None
    cluster_slots_ok: int | None = None
    cluster_slots_pfail: int | None = None
    cluster_slots_fail: int | None = None
    cluster_flags: list[str] = Field(
        default_factory=list, description="Cluster: the node's flags in CLUSTER NODES."
    )
    sentinel_quorum_ok: bool | None = Field(None, description="A sentinel: SENTINEL CKQUORUM.")
    sentinel_quorum_message: str | None = None


class ApplicationKeyspace(BaseModel):
    scope: Literal["application"] = "application"
    hits: int = Field(description="Keyspace hits over the window, infrawatch's own left out.")
    misses: int = Field(description="Keyspace misses over the window, infrawatch's left out.")
    lookups: int
    hit_rate: float | None = Field(description="Percent; null without lookups.")
    window_seconds: float
    own_hits: int = Field(description="infrawatch's own lookups that hit, left out.")
    own_misses: int = Field(description="infrawatch's own lookups that missed, left out.")


class SentinelSummary(BaseModel):
    master_name: str
    master_address: str | None
    sentinels: int = Field(description="Sentinels known.")
    reachable: int = Field(description="Sentinels that answered.")
    quorum_ok: bool = Field(
        description="A sentinel that answered says quorum and failover authorisation can be "
        "reached (SENTINEL CKQUORUM); false when none answered."
    )
    reason: str | None = None


class ClusterSummary(BaseModel):
    state: str | None = Field(description="ok, or fail when any node that answered says fail.")
    slots_assigned: int | None = None
    slots_ok: int | None = None
    slots_pfail: int | None = None
    slots_fail: int | None = None
    known_nodes: int | None = None
    size: int | None = None
    failing_nodes: list[str] = Field(default_factory=list)
    reason: str | None = None


class RedisHealth(BaseModel):
    redis_configured: bool
    mode: str
    window: float = Field(description="REDIS_HEALTH_WINDOW, seconds.")
    nodes: list[RedisNodeHealth]
    keyspace: ApplicationKeyspace | None = Field(
        description="The application's keyspace hit rate over the window; null until two "
        "readings of the same nodes exist."
    )
    sentinel: SentinelSummary | None
    cluster: ClusterSummary | None
    warnings: list[str]
