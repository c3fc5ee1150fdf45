"""Real Redis servers: standalone, replica, Sentinel, and a master+replica+sentinel group.

Conf files are written once, at the first start, and are owned by the server: Sentinel
rewrites its own, and ``CONFIG REWRITE`` after a failover must survive a restart.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.stack.ports import HOST, free_port
from tests.stack.process import Process, find_binary, make_dir, run, wait_for, write_file

START_TIMEOUT = 10.0
SYNC_TIMEOUT = 20.0


class _RedisProcess:
    """What a Redis server and a Sentinel share: a conf file, a port, a process we own."""

    binary_name = "redis-server"

    def __init__(self, tmp_dir: Path | str, *, name: str, port: int | None) -> None:
        self.port = port or free_port()
        self.name = f"{name}-{self.port}"
        self.dir = make_dir(Path(tmp_dir) / self.name)
        self.conf_path = self.dir / f"{name}.conf"
        binary = find_binary(self.binary_name, f"/usr/bin/{self.binary_name}")
        self.process = Process(
            self.name, [binary, str(self.conf_path)], cwd=self.dir, log_path=self.dir / "log"
        )

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def conf(self) -> str:
        return (
            f"bind {HOST}\nport {self.port}\ndir {self.dir}\n"
            'daemonize no\nprotected-mode no\nlogfile ""\n'
        )

    def start(self) -> Self:
        if self.is_running():
            return self
        if not self.conf_path.exists():
            write_file(self.conf_path, self.conf())
        self.process.start()
        try:
            wait_for(
                lambda: self.cli("PING"),
                what=f"{self.name} answering PING",
                timeout=START_TIMEOUT,
                check=self.process.ensure_alive,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.process.stop()

    def is_running(self) -> bool:
        return self.process.is_running()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A synchronous client for the harness (never for the server under test)."""
        options: dict[str, Any] = {
            "socket_timeout": 2,
            "socket_connect_timeout": 1,
            # redis-py 8 retries 10 times by default: a probe of a server that is not up yet
            # would block far past the deadline of the wait around it.
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": True,
        }
        return redis.Redis(host=HOST, port=self.port, **(options | kwargs))

    def cli(self, *args: str | int) -> Any:
        """One command, e.g. ``cli("FLUSHALL")``, on a connection closed right after."""
        with self.client() as client:
            return client.execute_command(*args)

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as client:
            info: dict[str, Any] = client.info(section)
            return info

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_RedisProcess):
    """``redis-server`` without persistence; a replica when ``replica_of`` is given.

    ``stop()`` then ``start()`` brings it back on the same port, empty.
    """

    def __init__(
        self,
        tmp_dir: Path | str,
        port: int | None = None,
        replica_of: RedisServer | None = None,
    ) -> None:
        super().__init__(tmp_dir, name="replica" if replica_of else "redis", port=port)
        self.replica_of = replica_of

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def conf(self) -> str:
        text = super().conf() + (
            'save ""\nappendonly no\n'
            # Full syncs start at once; the default waits 5 s for more replicas to join.
            "repl-diskless-sync-delay 0\n"
        )
        if self.replica_of is not None:
            text += f"replicaof {HOST} {self.replica_of.port}\n"
        return text

    def wait_for_sync(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Wait until this replica's link to its master is up."""
        wait_for(
            lambda: self.info("replication").get("master_link_status") == "up",
            what=f"{self.name} in sync with its master",
            timeout=timeout,
            check=self.process.ensure_alive,
        )


class RedisSentinel(_RedisProcess):
    """``redis-sentinel`` watching one master."""

    binary_name = "redis-sentinel"

    def __init__(
        self,
        tmp_dir: Path | str,
        master: RedisServer,
        name: str = "mymaster",
        quorum: int = 1,
        port: int | None = None,
    ) -> None:
        super().__init__(tmp_dir, name="sentinel", port=port)
        self.master = master
        self.master_name = name
        self.quorum = quorum

    def conf(self) -> str:
        # resolve-hostnames must precede the monitor line that it applies to.
        return super().conf() + (
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {self.master_name} {HOST} {self.master.port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
            f"sentinel failover-timeout {self.master_name} 5000\n"
        )

    def master_address(self) -> tuple[str, int]:
        with self.client() as client:
            host, port = client.sentinel_get_master_addr_by_name(self.master_name)
            return str(host), int(port)

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas this sentinel knows, as ``SENTINEL REPLICAS`` reports them."""
        with self.client() as client:
            replicas: list[dict[str, Any]] = client.sentinel_slaves(self.master_name)
            return replicas

    def wait_for_replicas(self, count: int = 1, timeout: float = SYNC_TIMEOUT) -> None:
        """Wait until this sentinel sees ``count`` replicas that are not down."""
        wait_for(
            lambda: (
                sum(not r["is_disconnected"] and not r["is_sdown"] for r in self.replicas())
                >= count
            ),
            what=f"{self.name} seeing {count} replica(s) of {self.master_name}",
            timeout=timeout,
            check=self.process.ensure_alive,
        )


class RedisSentinelGroup:
    """A master, one replica of it, and one sentinel watching them."""

    def __init__(self, tmp_dir: Path | str, master_name: str = "mymaster") -> None:
        self.master = RedisServer(tmp_dir)
        self.replica = RedisServer(tmp_dir, replica_of=self.master)
        self.sentinel = RedisSentinel(tmp_dir, self.master, name=master_name)
        self.master_name = master_name

    @property
    def sentinel_hosts(self) -> str:
        """The ``REDIS_SENTINEL_HOSTS`` value."""
        return self.sentinel.address

    @property
    def servers(self) -> tuple[RedisServer, RedisServer, RedisSentinel]:
        return self.master, self.replica, self.sentinel

    def start(self) -> Self:
        try:
            self.master.start()
            self.replica.start()
            self.replica.wait_for_sync()
            # Started after the replica is in sync, so the sentinel's first INFO of the master
            # already lists it and we do not wait for the 10 s refresh.
            self.sentinel.start()
            self.sentinel.wait_for_replicas(1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def redis_sentinel_group(tmp_dir: Path | str, master_name: str = "mymaster") -> RedisSentinelGroup:
    """A started group: replica in sync, sentinel aware of it. Stop it with ``stop()``."""
    return RedisSentinelGroup(tmp_dir, master_name).start()


class RedisClusterNode(RedisServer):
    """A ``redis-server`` with ``cluster-enabled yes``, a master of a ``RedisClusterGroup``."""

    def conf(self) -> str:
        return super().conf() + (
            "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 5000\n"
        )


class RedisClusterGroup:
    """Three cluster masters on loopback, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, tmp_dir: Path | str, size: int = 3) -> None:
        self.nodes = [RedisClusterNode(tmp_dir) for _ in range(size)]
        self.dir = Path(tmp_dir)

    @property
    def url(self) -> str:
        """A ``REDIS_URL`` naming one seed node."""
        return self.nodes[0].url.removesuffix("/0")

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            binary = find_binary("redis-cli", "/usr/bin/redis-cli")
            addresses = [node.address for node in self.nodes]
            replicas = ["--cluster-replicas", "0", "--cluster-yes"]
            run(
                [binary, "--cluster", "create", *addresses, *replicas],
                cwd=self.dir,
                timeout=START_TIMEOUT * 3,
            )
            for node in self.nodes:
                wait_for(
                    lambda node=node: "cluster_state:ok" in node.cli("CLUSTER", "INFO"),
                    what=f"{node.name} seeing the cluster ok",
                    timeout=SYNC_TIMEOUT,
                    check=node.process.ensure_alive,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
