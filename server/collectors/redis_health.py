"""``RedisHealthCollector``: ``monitoring.redisHealth``, the watched Redis node by node.

Which nodes: standalone, the ``REDIS_URL`` server and the replicas its ``INFO replication``
lists (a replica once listed stays watched while it is down or its link is broken, so a link
that breaks does not make the replica vanish from the answer); Sentinel, the master and
replicas the sentinels know (``SENTINEL MASTER``/``REPLICAS``) and every sentinel, configured or
announced (``SENTINEL SENTINELS``), each asked ``SENTINEL CKQUORUM``; Cluster, every node of
``CLUSTER NODES``, each asked ``CLUSTER INFO`` too. When no sentinel or cluster node answers
the discovery, the last topology found is asked again.

Each node is asked on its own connection (``RedisNodes``), all at once; a node that does not
answer is reported ``down`` with the reason and the others answer as usual.

Rates (evictions/s, expirations/s, rejected connections/s, the keyspace hit rate) are INFO
counter deltas over ``REDIS_HEALTH_WINDOW`` seconds: each answer keeps its reading, and the
rate is taken against the newest earlier reading at least a window old (the oldest while less
than a window has passed; ``window_seconds`` says over how long). A node that restarted
(another ``run_id``) starts again. The application's keyspace hit rate sums every data node's
hits and misses over the window and leaves out the lookups infrawatch made itself
(``OwnLookups``): that is the figure the ``cache_hit_rate`` rule reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.datastores.redis import RedisClient
from server.datastores.redis_nodes import MAX_NODES, Address, RedisNodes, address_text
from server.errors import Unavailable

Role = Literal["master", "replica", "sentinel"]
_COUNTERS = ("evicted_keys", "expired_keys", "keyspace_hits", "keyspace_misses")
_REJECTED = "rejected_connections"
# Tries at a reading of the keyspace counters with none of our own reads in flight, and how
# long each waits for them to end.
QUIET_ATTEMPTS = 3
QUIET_WAIT = 0.5


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


@dataclass(slots=True)
class _Reading:
    at: float
    run_id: str
    counters: dict[str, int]


@dataclass(slots=True)
class _Node:
    address: Address
    role: Role | None
    info: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _History:
    """Readings over time, and deltas against the one a window back."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._readings: deque[_Reading] = deque()

    def add(self, reading: _Reading) -> tuple[_Reading, dict[str, int]] | None:
        """Keep ``reading``; return the baseline and the deltas since it (None: none yet)."""
        readings = self._readings
        if readings and readings[-1].run_id != reading.run_id:
            readings.clear()
        readings.append(reading)
        cutoff = reading.at - self._window
        # the baseline: the newest reading at least a window old, else the oldest
        while len(readings) > 2 and readings[1].at <= cutoff:
            readings.popleft()
        base = readings[0]
        if base is reading:
            return None
        deltas = {k: max(0, v - base.counters.get(k, 0)) for k, v in reading.counters.items()}
        return base, deltas


class RedisHealthCollector:
    """One per app: holds the readings the rates need and the last topology."""

    def __init__(
        self,
        client: RedisClient | None,
        nodes: RedisNodes | None,
        *,
        master_name: str,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._nodes = nodes
        self._master_name = master_name
        self._window = window
        self._clock = clock
        self._histories: dict[Address, _History] = {}
        self._keyspace = _History(window)
        self._remembered: dict[Address, Role] = {}  # standalone replicas; last topology
        self._sentinels: list[Address] = []

    async def health(self) -> RedisHealth:
        client, nodes = self._client, self._nodes
        if client is None or nodes is None:
            return RedisHealth(
                redis_configured=False,
                mode="none",
                window=self._window,
                nodes=[],
                keyspace=None,
                sentinel=None,
                cluster=None,
                warnings=[],
            )
        warnings: list[str] = []
        sentinel: SentinelSummary | None = None
        cluster: ClusterSummary | None = None
        if client.mode == "sentinel":
            read, sentinel = await self._sentinel_mode(nodes, warnings)
        elif client.mode == "cluster":
            read, cluster = await self._cluster_mode(nodes, warnings)
        else:
            read = await self._standalone(nodes)
        now = self._clock()
        reports = [self._report(node, now) for node in read]
        _replication_lags(reports, read)
        keyspace = await self._application(read, nodes, client, warnings)
        return RedisHealth(
            redis_configured=True,
            mode=client.mode,
            window=self._window,
            nodes=reports,
            keyspace=keyspace,
            sentinel=sentinel,
            cluster=cluster,
            warnings=warnings,
        )

    # --- topology per mode ---

    async def _standalone(self, nodes: RedisNodes) -> list[_Node]:
        seed = nodes.seed()
        assert seed is not None
        primary = await _read(nodes, _Node(seed, None))
        listed = _listed_replicas(primary.info)
        for address in listed:
            self._remember(address, "replica")
        others = [a for a in self._remembered if a != seed]
        replicas = await asyncio.gather(*(_read(nodes, _Node(a, "replica")) for a in others))
        kept = []
        for replica in replicas:
            if replica.address in listed or _still_broken(replica, seed):
                kept.append(replica)
            else:
                # up and following someone else (or promoted): no longer this server's replica
                self._remembered.pop(replica.address, None)
        return [primary, *kept]

    async def _sentinel_mode(
        self, nodes: RedisNodes, warnings: list[str]
    ) -> tuple[list[_Node], SentinelSummary]:
        name = self._master_name
        known = list(dict.fromkeys([*nodes.sentinels(), *self._sentinels]))
        sentinels = await asyncio.gather(*(self._read_sentinel(nodes, a, name) for a in known))
        master: Address | None = None
        replicas: list[Address] = []
        for node in sentinels:
            if node.error is not None:
                continue
            try:
                found = await nodes.command(node.address, "SENTINEL MASTER", name)
                listed = await nodes.command(node.address, "SENTINEL SLAVES", name)
                peers = await nodes.command(node.address, "SENTINEL SENTINELS", name)
            except Unavailable as exc:
                warnings.append(exc.message)
                continue
            master = (str(found["ip"]), int(found["port"]))
            replicas = [(str(r["ip"]), int(r["port"])) for r in listed]
            for peer in peers:
                address = (str(peer["ip"]), int(peer["port"]))
                if address not in self._sentinels and len(self._sentinels) < MAX_NODES:
                    self._sentinels.append(address)
            break
        if master is None:
            # no sentinel could say: ask the nodes last seen
            last: list[tuple[Address, Role]] = list(self._remembered.items())
        else:
            last = [(master, "master"), *((a, "replica") for a in replicas)]
            self._remembered = dict(last)
        data = await asyncio.gather(*(_read(nodes, _Node(a, r)) for a, r in last))
        reachable = [s for s in sentinels if s.error is None]
        ok = [s for s in reachable if s.extra.get("quorum_ok")]
        reason = None
        if not reachable:
            reason = "no sentinel answered"
        elif not ok:
            reason = str(reachable[0].extra.get("quorum_message"))
        summary = SentinelSummary(
            master_name=name,
            master_address=address_text(master) if master else None,
            sentinels=len(sentinels),
            reachable=len(reachable),
            quorum_ok=bool(ok),
            reason=reason,
        )
        return [*data, *sentinels], summary

    async def _read_sentinel(self, nodes: RedisNodes, address: Address, name: str) -> _Node:
        node = await _read(nodes, _Node(address, "sentinel"))
        if node.error is None:
            try:
                ok, message = await nodes.ckquorum(address, name)
            except Unavailable as exc:
                node.error = exc.message
            else:
                node.extra["quorum_ok"], node.extra["quorum_message"] = ok, message
        return node

    async def _cluster_mode(
        self, nodes: RedisNodes, warnings: list[str]
    ) -> tuple[list[_Node], ClusterSummary]:
        seed = nodes.seed()
        assert seed is not None
        topology: list[tuple[Address, Role, list[str]]] | None = None
        for address in dict.fromkeys([seed, *self._remembered]):
            try:
                text = await nodes.command(address, "CLUSTER", "NODES")
            except Unavailable as exc:
                warnings.append(exc.message)
                continue
            topology = _cluster_nodes(str(text))
            break
        if topology is None:
            topology = [(a, r, []) for a, r in self._remembered.items()]
        else:
            self._remembered = {a: r for a, r, _ in topology[:MAX_NODES]}
        read = await asyncio.gather(
            *(
                self._read_cluster_node(nodes, _Node(a, r, extra={"flags": f}))
                for a, r, f in topology
            )
        )
        return list(read), _cluster_summary(read)

    @staticmethod
    async def _read_cluster_node(nodes: RedisNodes, node: _Node) -> _Node:
        node = await _read(nodes, node)
        if node.error is None:
            try:
                text = await nodes.command(node.address, "CLUSTER", "INFO")
            except Unavailable as exc:
                node.error = exc.message
            else:
                node.extra["cluster"] = _fields(str(text))
        return node

    def _remember(self, address: Address, role: Role) -> None:
        if address in self._remembered or len(self._remembered) < MAX_NODES:
            self._remembered[address] = role

    # --- figures ---

    def _report(self, node: _Node, now: float) -> RedisNodeHealth:
        text = address_text(node.address)
        info = node.info
        if info is None or node.error is not None:
            return RedisNodeHealth(
                address=text,
                role=node.role,
                status="down",
                error=node.error or "no answer",
                cluster_flags=node.extra.get("flags", []),
            )
        role = _role(info, node.role)
        report = RedisNodeHealth(
            address=text,
            role=role,
            status="up",
            version=_text(info.get("redis_version")),
            uptime_seconds=_int(info.get("uptime_in_seconds")),
            connected_clients=_int(info.get("connected_clients")),
            maxclients=_int(info.get("maxclients")),
            blocked_clients=_int(info.get("blocked_clients")),
            rejected_connections=_int(info.get(_REJECTED)),
            cluster_flags=node.extra.get("flags", []),
        )
        report.clients_used_percent = _percent(report.connected_clients, report.maxclients)
        if role == "sentinel":
            report.sentinel_quorum_ok = node.extra.get("quorum_ok")
            report.sentinel_quorum_message = node.extra.get("quorum_message")
            return report
        used, limit = _int(info.get("used_memory")), _int(info.get("maxmemory"))
        report.used_memory_bytes, report.maxmemory_bytes = used, limit
        report.memory_used_percent = _percent(used, limit)
        report.maxmemory_policy = _text(info.get("maxmemory_policy"))
        report.mem_fragmentation_ratio = _float(info.get("mem_fragmentation_ratio"))
        report.evicted_keys = _int(info.get("evicted_keys"))
        report.expired_keys = _int(info.get("expired_keys"))
        self._rates(node, report, info, now)
        if role == "replica":
            host, port = info.get("master_host"), info.get("master_port")
            report.master_address = f"{host}:{port}" if host is not None else None
            report.master_link_status = _text(info.get("master_link_status"))
            report.master_last_io_seconds = _int(info.get("master_last_io_seconds_ago"))
            report.master_link_down_seconds = _int(info.get("master_link_down_since_seconds"))
        else:
            offset = _int(info.get("master_repl_offset"))
            report.replicas = [_link(entry, offset) for entry in _replica_entries(info)]
        cluster = node.extra.get("cluster")
        if cluster:
            report.cluster_state = cluster.get("cluster_state")
            report.cluster_slots_assigned = _int(cluster.get("cluster_slots_assigned"))
            report.cluster_slots_ok = _int(cluster.get("cluster_slots_ok"))
            report.cluster_slots_pfail = _int(cluster.get("cluster_slots_pfail"))
            report.cluster_slots_fail = _int(cluster.get("cluster_slots_fail"))
        return report

    def _rates(
        self, node: _Node, report: RedisNodeHealth, info: Mapping[str, Any], now: float
    ) -> None:
        counters = {k: int(info[k]) for k in (*_COUNTERS, _REJECTED) if k in info}
        history = self._histories.get(node.address)
        if history is None:
            if len(self._histories) >= MAX_NODES:
                return
            history = self._histories[node.address] = _History(self._window)
        found = history.add(_Reading(now, str(info.get("run_id", "")), counters))
        if found is None:
            return
        base, deltas = found
        span = now - base.at
        if span <= 0:
            return
        report.window_seconds = round(span, 3)
        report.evicted_keys_per_second = round(deltas.get("evicted_keys", 0) / span, 3)
        report.expired_keys_per_second = round(deltas.get("expired_keys", 0) / span, 3)
        report.rejected_connections_per_second = round(deltas.get(_REJECTED, 0) / span, 3)
        hits, misses = deltas.get("keyspace_hits", 0), deltas.get("keyspace_misses", 0)
        report.keyspace_hits, report.keyspace_misses = hits, misses
        report.keyspace_hit_rate = _rate(hits, misses)

    async def _application(
        self, read: list[_Node], nodes: RedisNodes, client: RedisClient, warnings: list[str]
    ) -> ApplicationKeyspace | None:
        up = [
            n
            for n in read
            if n.info is not None
            and n.error is None
            and _role(n.info, n.role) in ("master", "replica")
        ]
        if not up:
            return None
        data = [n.address for n in up]
        own = client.own_lookups
        stats: list[dict[str, Any]] = []
        for _ in range(QUIET_ATTEMPTS):
            # our own reads are tallied when their replies come: read Redis's counters while
            # none is in flight, or the two would disagree by the lookups between them
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(QUIET_WAIT):
                    await own.quiet()
            # one of ours may have begun between the wake-up and now: it must not be in
            # flight either at the start or at the end of the reading
            idle = own.pending == 0
            started, hits, misses = own.started, own.hits, own.misses
            try:
                stats = list(await asyncio.gather(*(nodes.info_stats(a) for a in data)))
            except Unavailable as exc:
                warnings.append(f"keyspace hit rate: {exc.message}")
                return None
            if idle and own.started == started and own.pending == 0:
                break
        # one identity for the set of nodes summed: a node joining, leaving or restarting
        # changes it, and the sums start again
        identity = "|".join(
            sorted(f"{address_text(n.address)}={(n.info or {}).get('run_id', '')}" for n in up)
        )
        counters = {
            "hits": sum(int(s.get("keyspace_hits", 0)) for s in stats),
            "misses": sum(int(s.get("keyspace_misses", 0)) for s in stats),
            "own_hits": hits,
            "own_misses": misses,
        }
        now = self._clock()
        found = self._keyspace.add(_Reading(now, identity, counters))
        if found is None:
            return None
        base, deltas = found
        hits = max(0, deltas["hits"] - deltas["own_hits"])
        misses = max(0, deltas["misses"] - deltas["own_misses"])
        return ApplicationKeyspace(
            hits=hits,
            misses=misses,
            lookups=hits + misses,
            hit_rate=_rate(hits, misses),
            window_seconds=round(now - base.at, 3),
            own_hits=deltas["own_hits"],
            own_misses=deltas["own_misses"],
        )


async def _read(nodes: RedisNodes, node: _Node) -> _Node:
    try:
        node.info = await nodes.info(node.address)
    except Unavailable as exc:
        node.error = exc.message
    return node


def _role(info: Mapping[str, Any], known: Role | None) -> Role | None:
    if info.get("redis_mode") == "sentinel" or known == "sentinel":
        return "sentinel"
    role = info.get("role")
    if role == "master":
        return "master"
    if role in ("slave", "replica"):
        return "replica"
    return known


def _replica_entries(info: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not info:
        return []
    return [
        v
        for k, v in info.items()
        if k.startswith("slave") and k[5:].isdigit() and isinstance(v, Mapping)
    ]


def _listed_replicas(info: Mapping[str, Any] | None) -> list[Address]:
    return [(str(e["ip"]), int(e["port"])) for e in _replica_entries(info) if "ip" in e]


def _still_broken(replica: _Node, master: Address) -> bool:
    """A remembered replica is still reported while down, or following ``master`` (or
    nothing) with its link down."""
    info = replica.info
    if info is None or replica.error is not None:
        return True
    if info.get("role") not in ("slave", "replica"):
        return False
    following = (str(info.get("master_host")), int(info.get("master_port", 0)))
    return following == master or info.get("master_link_status") != "up"


def _link(entry: Mapping[str, Any], master_offset: int | None) -> ReplicaLink:
    offset = _int(entry.get("offset"))
    lag = None
    if offset is not None and master_offset is not None:
        lag = max(0, master_offset - offset)
    return ReplicaLink(
        address=f"{entry.get('ip')}:{entry.get('port')}",
        state=_text(entry.get("state")),
        offset=offset,
        lag_bytes=lag,
        lag_seconds=_int(entry.get("lag")),
    )


def _replication_lags(reports: list[RedisNodeHealth], read: list[_Node]) -> None:
    """A replica's lag in bytes: its master's offset (read this round) minus its own; else
    what its master's replica list says."""
    offsets: dict[str, int] = {}
    links: dict[str, int | None] = {}
    for report, node in zip(reports, read, strict=True):
        if report.role == "master" and node.info is not None:
            offset = _int(node.info.get("master_repl_offset"))
            if offset is not None:
                offsets[report.address] = offset
            links.update({link.address: link.lag_bytes for link in report.replicas})
    for report, node in zip(reports, read, strict=True):
        if report.role != "replica" or report.status != "up" or node.info is None:
            continue
        own = _int(node.info.get("slave_repl_offset"))
        master = offsets.get(report.master_address or "")
        if own is not None and master is not None and report.master_link_status == "up":
            report.replication_lag_bytes = max(0, master - own)
        else:
            report.replication_lag_bytes = links.get(report.address)


def _cluster_nodes(text: str) -> list[tuple[Address, Role, list[str]]]:
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


def _cluster_summary(read: list[_Node]) -> ClusterSummary:
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
        slots_assigned=_int(worst.get("cluster_slots_assigned")),
        slots_ok=_int(worst.get("cluster_slots_ok")),
        slots_pfail=_int(worst.get("cluster_slots_pfail")),
        slots_fail=_int(worst.get("cluster_slots_fail")),
        known_nodes=_int(worst.get("cluster_known_nodes")),
        size=_int(worst.get("cluster_size")),
        failing_nodes=failing,
        reason=reason,
    )


def _fields(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _rate(hits: int, misses: int) -> float | None:
    looked = hits + misses
    return round(100.0 * hits / looked, 2) if looked else None


def _percent(part: int | None, whole: int | None) -> float | None:
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 2)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
