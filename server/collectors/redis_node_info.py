"""One Redis node's reading and what it says: the role, the replicas it lists, its lag
against its master, the Cluster's nodes and state (the parsing behind ``redis_health.py``).

Field names are Redis's own INFO fields (``used_memory``, ``master_link_status``,
``slave0:ip=...,offset=...``, ``master_repl_offset``, ``slave_repl_offset``) and the lines of
``CLUSTER NODES``/``CLUSTER INFO``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.collectors.redis_health_models import (
    ClusterSummary,
    RedisNodeHealth,
    ReplicaLink,
    Role,
)
from server.datastores.redis_nodes import Address, RedisNodes, address_text
from server.errors import Unavailable


@dataclass(slots=True)
class NodeReading:
    address: Address
    role: Role | None
    info: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def read_info(nodes: RedisNodes, node: NodeReading) -> NodeReading:
    try:
        node.info = await nodes.info(node.address)
    except Unavailable as exc:
        node.error = exc.message
    return node


def node_role(info: Mapping[str, Any], known: Role | None) -> Role | None:
    if info.get("redis_mode") == "sentinel" or known == "sentinel":
        return "sentinel"
    role = info.get("role")
    if role == "master":
        return "master"
    if role in ("slave", "replica"):
        return "replica"
    return known


def replica_entries(info: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not info:
        return []
    return [
        v
        for k, v in info.items()
        if k.startswith("slave") and k[5:].isdigit() and isinstance(v, Mapping)
    ]


def listed_replicas(info: Mapping[str, Any] | None) -> list[Address]:
    return [(str(e["ip"]), int(e["port"])) for e in replica_entries(info) if "ip" in e]


def still_broken(replica: NodeReading, master: Address) -> bool:
    """A remembered replica is still reported while down, or following ``master`` (or
    nothing) with its link down."""
    info = replica.info
    if info is None or replica.error is not None:
        return True
    if info.get("role") not in ("slave", "replica"):
        return False
    following = (str(info.get("master_host")), int(info.get("master_port", 0)))
    return following == master or info.get("master_link_status") != "up"


def replica_link(entry: Mapping[str, Any], master_offset: int | None) -> ReplicaLink:
    offset = as_int(entry.get("offset"))
    lag = None
    if offset is not None and master_offset is not None:
        lag = max(0, master_offset - offset)
    return ReplicaLink(
        address=f"{entry.get('ip')}:{entry.get('port')}",
        state=as_text(entry.get("state")),
        offset=offset,
        lag_bytes=lag,
        lag_seconds=as_int(entry.get("lag")),
    )


def replication_lags(reports: list[RedisNodeHealth], read: list[NodeReading]) -> None:
    """A replica's lag in bytes: its master's offset (read this round) minus its own; else
    what its master's replica list says."""
    offsets: dict[str, int] = {}
    links: dict[str, int | None] = {}
    for report, node in zip(reports, read, strict=True):
        if report.role == "master" and node.info is not None:
            offset = as_int(node.info.get("master_repl_offset"))
            if offset is not None:
                offsets[report.address] = offset
            links.update({link.address: link.lag_bytes for link in report.replicas})
    for report, node in zip(reports, read, strict=True):
        if report.role != "replica" or report.status != "up" or node.info is None:
            continue
        own = as_int(node.info.get("slave_repl_offset"))
        master = offsets.get(report.master_address or "")
        if own is not None and master is not None and report.master_link_status == "up":
            report.replication_lag_bytes = max(0, master - own)
        else:
            report.replication_lag_bytes = links.get(report.address)


def cluster_nodes(text: str) -> list[tuple[Address, Role, list[str]]]:
    """``CLUSTER NODES``: ``<id> <ip:port@cport[,host]> <flags> <master> ...`` per line."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        endpoint = parts[1].split("@", 1)[0]
        host, _, port = endpoint.rpartition(":")
        flags = parts[2].split(",")
        if not host or not port.isdigit() or "noaddr" in flags or "handshake" in flags:
            continue
        role: Role = "replica" if "slave" in flags else "master"
        found.append(((host, int(port)), role, flags))
    return sorted(found)


def cluster_summary(read: list[NodeReading]) -> ClusterSummary:
    answered = [n for n in read if n.extra.get("cluster")]
    failing = [
        address_text(n.address)
        for n in read
        if n.error is not None or {"fail", "fail?"} & set(n.extra.get("flags", []))
    ]
    if not answered:
        return ClusterSummary(state=None, failing_nodes=failing, reason="no cluster node answered")
    views = [n.extra["cluster"] for n in answered]
    worst = next((v for v in views if v.get("cluster_state") != "ok"), views[0])
    state = worst.get("cluster_state")
    reason = None
    if state != "ok":
        reason = f"CLUSTER INFO of a node says cluster_state:{state}"
    return ClusterSummary(
        state=state,
        slots_assigned=as_int(worst.get("cluster_slots_assigned")),
        slots_ok=as_int(worst.get("cluster_slots_ok")),
        slots_pfail=as_int(worst.get("cluster_slots_pfail")),
        slots_fail=as_int(worst.get("cluster_slots_fail")),
        known_nodes=as_int(worst.get("cluster_known_nodes")),
        size=as_int(worst.get("cluster_size")),
        failing_nodes=failing,
        reason=reason,
    )


def info_fields(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def hit_rate(hits: int, misses: int) -> float | None:
    looked = hits + misses
    return round(100.0 * hits / looked, 2) if looked else None


def percent(part: int | None, whole: int | None) -> float | None:
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 2)


def as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def as_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
