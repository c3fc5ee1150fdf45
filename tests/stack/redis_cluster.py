"""A real Redis Cluster: three masters, no replicas, the 16384 slots split evenly among them.

Each node is a :class:`RedisServer` (no persistence) with cluster mode on. Its cluster config
file (node id, peers, slots) lives in its own directory and outlives the process, so a node a
test stopped comes back as the same member owning the same slots, only empty. Slots are assigned
and the nodes introduced from Python (``CLUSTER ADDSLOTSRANGE``, ``CLUSTER MEET``) rather than
with ``redis-cli --cluster create``: no second tool to find, and a restart can see what is
already done and skip it.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.stack.ports import HOST, free_port
from tests.stack.process import wait_for
from tests.stack.redis import RedisServer
from tests.stack.server import ServerGroup

SLOT_COUNT = 16384
# Short, so a stopped node is noticed and a restarted one accepted again within seconds; not so
# short that a starved machine (tests share two cores) makes healthy nodes look failed.
NODE_TIMEOUT_MS = 2000
# The whole start: processes up, slots assigned, every node reporting cluster_state:ok.
START_TIMEOUT = 25.0
# Rejoining after a restart: the others must clear their FAIL flag (about two node timeouts),
# and a restarted master waits 2 s before it calls itself ok.
OK_TIMEOUT = 20.0


class RedisClusterNode(RedisServer):
    """One master of the cluster, owning the slots ``first..last`` (inclusive)."""

    def __init__(self, tmp_dir: Path | str, slots: tuple[int, int]) -> None:
        super().__init__(tmp_dir, name="cluster")
        # The bus defaults to port + 10000, which may be taken or, from our range, land among
        # the kernel's ephemeral ports: pick it like any other port.
        self.bus_port = free_port()
        self.slots = slots

    def conf(self) -> str:
        return super().conf() + (
            "cluster-enabled yes\n"
            f"cluster-config-file {self.dir / 'nodes.conf'}\n"
            f"cluster-port {self.bus_port}\n"
            f"cluster-node-timeout {NODE_TIMEOUT_MS}\n"
        )

    def cluster_info(self) -> dict[str, str]:
        """``CLUSTER INFO`` as a dict of strings, e.g. ``{"cluster_state": "ok", ...}``."""
        text = str(self.cli("CLUSTER", "INFO"))
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    def node_id(self) -> str:
        return str(self.cli("CLUSTER", "MYID"))

    def owned_slots(self) -> list[tuple[int, int]]:
        """The slot ranges this node says it owns (``CLUSTER NODES``, its ``myself`` line)."""
        for line in str(self.cli("CLUSTER", "NODES")).splitlines():
            fields = line.split()
            if len(fields) >= 8 and "myself" in fields[2].split(","):
                return [_slot_range(field) for field in fields[8:] if not field.startswith("[")]
        return []

    def is_ok(self, size: int) -> bool:
        """This node sees ``size`` masters, every slot served, and says ``cluster_state:ok``."""
        info = self.cluster_info()
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_slots_ok") == str(SLOT_COUNT)
            and info.get("cluster_known_nodes") == str(size)
            and info.get("cluster_size") == str(size)
        )


class RedisCluster(ServerGroup):
    """Three cluster masters on free ports; ``seed_url`` is the ``REDIS_URL`` for cluster mode."""

    def __init__(self, tmp_dir: Path | str, size: int = 3) -> None:
        self._nodes = tuple(RedisClusterNode(tmp_dir, slots) for slots in _split_slots(size))

    @property
    def nodes(self) -> tuple[RedisClusterNode, ...]:
        return self._nodes

    @property
    def servers(self) -> tuple[RedisClusterNode, ...]:
        return self._nodes

    @property
    def seed_url(self) -> str:
        """The first node's URL: a cluster client learns the others from it."""
        return self._nodes[0].url

    def _start(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for node in self._nodes:
            node.start()
        for node in self._nodes:
            # Already owned after a restart: the node read them back from its config file.
            if not node.owned_slots():
                node.cli("CLUSTER", "ADDSLOTSRANGE", *node.slots)
        seed = self._nodes[0]
        if seed.cluster_info().get("cluster_known_nodes") != str(len(self._nodes)):
            for node in self._nodes[1:]:
                seed.cli("CLUSTER", "MEET", HOST, node.port, node.bus_port)
        self.wait_until_ok(timeout=max(deadline - time.monotonic(), 1.0))

    def wait_until_ok(self, timeout: float = OK_TIMEOUT) -> None:
        """Wait until every node reports the whole cluster up (e.g. after a node restarted)."""
        size = len(self._nodes)
        wait_for(
            lambda: all(node.is_ok(size) for node in self._nodes),
            what=f"redis cluster {self.addresses} reporting cluster_state:ok on every node",
            timeout=timeout,
            check=self.ensure_alive,
        )

    @property
    def addresses(self) -> str:
        return ",".join(node.address for node in self._nodes)

    def flushall(self) -> None:
        """Empty every node (``FLUSHALL`` only ever empties the node it is sent to)."""
        for node in self._nodes:
            node.cli("FLUSHALL")

    def node_for_slot(self, slot: int) -> RedisClusterNode:
        for node in self._nodes:
            first, last = node.slots
            if first <= slot <= last:
                return node
        raise ValueError(f"slot {slot} outside 0..{SLOT_COUNT - 1}")

    def node_for_key(self, key: str) -> RedisClusterNode:
        """The node that holds ``key``, by the server's own hash (``CLUSTER KEYSLOT``)."""
        return self.node_for_slot(int(self._nodes[0].cli("CLUSTER", "KEYSLOT", key)))


def _split_slots(size: int) -> list[tuple[int, int]]:
    """Contiguous ranges covering every slot, as ``redis-cli --cluster create`` splits them."""
    if not 1 <= size <= SLOT_COUNT:
        raise ValueError(f"a cluster has 1..{SLOT_COUNT} masters, not {size}")
    bounds = [round(i * SLOT_COUNT / size) for i in range(size + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(size)]


def _slot_range(field: str) -> tuple[int, int]:
    first, _, last = field.partition("-")
    return int(first), int(last or first)
