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
from dataclasses import dataclass
from typing import Any

from server.collectors.redis_health_models import (
    ApplicationKeyspace,
    ClusterSummary,
    RedisHealth,
    RedisNodeHealth,
    Role,
    SentinelSummary,
)
from server.collectors.redis_node_info import (
    NodeReading,
    as_float,
    as_int,
    as_text,
    cluster_nodes,
    cluster_summary,
    hit_rate,
    info_fields,
    listed_replicas,
    node_role,
    percent,
    read_info,
    replica_entries,
    replica_link,
    replication_lags,
    still_broken,
)
from server.datastores.redis import RedisClient
from server.datastores.redis_nodes import MAX_NODES, Address, RedisNodes, address_text
from server.errors import Unavailable

_COUNTERS = ("evicted_keys", "expired_keys", "keyspace_hits", "keyspace_misses")
_REJECTED = "rejected_connections"
# Tries at a reading of the keyspace counters with none of our own reads in flight, and how
# long each waits for them to end.
QUIET_ATTEMPTS = 3
QUIET_WAIT = 0.5


@dataclass(slots=True)
class _Reading:
    at: float
    run_id: str
    counters: dict[str, int]


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
        replication_lags(reports, read)
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

    async def _standalone(self, nodes: RedisNodes) -> list[NodeReading]:
        seed = nodes.seed()
        assert seed is not None
        primary = await read_info(nodes, NodeReading(seed, None))
        listed = listed_replicas(primary.info)
        for address in listed:
            self._remember(address, "replica")
        others = [a for a in self._remembered if a != seed]
        replicas = await asyncio.gather(
            *(read_info(nodes, NodeReading(a, "replica")) for a in others)
        )
        kept = []
        for replica in replicas:
            if replica.address in listed or still_broken(replica, seed):
                kept.append(replica)
            else:
                # up and following someone else (or promoted): no longer this server's replica
                self._remembered.pop(replica.address, None)
        return [primary, *kept]

    async def _sentinel_mode(
        self, nodes: RedisNodes, warnings: list[str]
    ) -> tuple[list[NodeReading], SentinelSummary]:
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
        data = await asyncio.gather(*(read_info(nodes, NodeReading(a, r)) for a, r in last))
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

    async def _read_sentinel(self, nodes: RedisNodes, address: Address, name: str) -> NodeReading:
        node = await read_info(nodes, NodeReading(address, "sentinel"))
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
    ) -> tuple[list[NodeReading], ClusterSummary]:
        seed = nodes.seed()
        assert seed is not None
        topology: list[tuple[Address, Role, list[str]]] | None = None
        for address in dict.fromkeys([seed, *self._remembered]):
            try:
                text = await nodes.command(address, "CLUSTER", "NODES")
            except Unavailable as exc:
                warnings.append(exc.message)
                continue
            topology = cluster_nodes(str(text))
            break
        if topology is None:
            topology = [(a, r, []) for a, r in self._remembered.items()]
        else:
            self._remembered = {a: r for a, r, _ in topology[:MAX_NODES]}
        read = await asyncio.gather(
            *(
                self._read_cluster_node(nodes, NodeReading(a, r, extra={"flags": f}))
                for a, r, f in topology
            )
        )
        return list(read), cluster_summary(read)

    @staticmethod
    async def _read_cluster_node(nodes: RedisNodes, node: NodeReading) -> NodeReading:
        node = await read_info(nodes, node)
        if node.error is None:
            try:
                text = await nodes.command(node.address, "CLUSTER", "INFO")
            except Unavailable as exc:
                node.error = exc.message
            else:
                node.extra["cluster"] = info_fields(str(text))
        return node

    def _remember(self, address: Address, role: Role) -> None:
        if address in self._remembered or len(self._remembered) < MAX_NODES:
            self._remembered[address] = role

    # --- figures ---

    def _report(self, node: NodeReading, now: float) -> RedisNodeHealth:
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
        role = node_role(info, node.role)
        report = RedisNodeHealth(
            address=text,
            role=role,
            status="up",
            version=as_text(info.get("redis_version")),
            uptime_seconds=as_int(info.get("uptime_in_seconds")),
            connected_clients=as_int(info.get("connected_clients")),
            maxclients=as_int(info.get("maxclients")),
            blocked_clients=as_int(info.get("blocked_clients")),
            rejected_connections=as_int(info.get(_REJECTED)),
            cluster_flags=node.extra.get("flags", []),
        )
        report.clients_used_percent = percent(report.connected_clients, report.maxclients)
        if role == "sentinel":
            report.sentinel_quorum_ok = node.extra.get("quorum_ok")
            report.sentinel_quorum_message = node.extra.get("quorum_message")
            return report
        used, limit = as_int(info.get("used_memory")), as_int(info.get("maxmemory"))
        report.used_memory_bytes, report.maxmemory_bytes = used, limit
        report.memory_used_percent = percent(used, limit)
        report.maxmemory_policy = as_text(info.get("maxmemory_policy"))
        report.mem_fragmentation_ratio = as_float(info.get("mem_fragmentation_ratio"))
        report.evicted_keys = as_int(info.get("evicted_keys"))
        report.expired_keys = as_int(info.get("expired_keys"))
        self._rates(node, report, info, now)
        if role == "replica":
            host, port = info.get("master_host"), info.get("master_port")
            report.master_address = f"{host}:{port}" if host is not None else None
            report.master_link_status = as_text(info.get("master_link_status"))
            report.master_last_io_seconds = as_int(info.get("master_last_io_seconds_ago"))
            report.master_link_down_seconds = as_int(info.get("master_link_down_since_seconds"))
        else:
            offset = as_int(info.get("master_repl_offset"))
            report.replicas = [replica_link(entry, offset) for entry in replica_entries(info)]
        cluster = node.extra.get("cluster")
        if cluster:
            report.cluster_state = cluster.get("cluster_state")
            report.cluster_slots_assigned = as_int(cluster.get("cluster_slots_assigned"))
            report.cluster_slots_ok = as_int(cluster.get("cluster_slots_ok"))
            report.cluster_slots_pfail = as_int(cluster.get("cluster_slots_pfail"))
            report.cluster_slots_fail = as_int(cluster.get("cluster_slots_fail"))
        return report

    def _rates(
        self, node: NodeReading, report: RedisNodeHealth, info: Mapping[str, Any], now: float
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
        report.keyspace_hit_rate = hit_rate(hits, misses)

    async def _application(
        self, read: list[NodeReading], nodes: RedisNodes, client: RedisClient, warnings: list[str]
    ) -> ApplicationKeyspace | None:
        up = [
            n
            for n in read
            if n.info is not None
            and n.error is None
            and node_role(n.info, n.role) in ("master", "replica")
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
            hit_rate=hit_rate(hits, misses),
            window_seconds=round(now - base.at, 3),
            own_hits=deltas["own_hits"],
            own_misses=deltas["own_misses"],
        )
