"""Real Redis servers: standalone, replica, Sentinel, and a master+replica+sentinel group.

Conf files are written once, at the first start, and are owned by the server: Sentinel
rewrites its own, and ``CONFIG REWRITE`` after a failover must survive a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.stack.ports import HOST
from tests.stack.process import find_binary
from tests.stack.server import ChildServer, ServerGroup

SYNC_TIMEOUT = 20.0


class _RedisProcess(ChildServer):
    """What a Redis server and a Sentinel share: ``<binary> <conf>``, ready once it answers
    PING; the conf is written at the first start only."""

    binary_name = "redis-server"
    readiness = "answering PING"

    def __init__(self, tmp_dir: Path | str, *, name: str, port: int | None) -> None:
        binary = find_binary(self.binary_name, f"/usr/bin/{self.binary_name}")
        super().__init__(tmp_dir, name=name, port=port, binary=binary, conf_name=f"{name}.conf")

    def conf(self) -> str:
        return (
            f"bind {HOST}\nport {self.port}\ndir {self.dir}\n"
            'daemonize no\nprotected-mode no\nlogfile ""\n'
        )

    def _prepare(self) -> None:
        if not self.conf_path.exists():
            self._write_conf()

    def ready(self) -> object:
        return self.cli("PING")

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


class RedisServer(_RedisProcess):
    """``redis-server`` without persistence; a replica when ``replica_of`` is given.

    ``stop()`` then ``start()`` brings it back on the same port, empty.
    """

    def __init__(
        self,
        tmp_dir: Path | str,
        port: int | None = None,
        replica_of: RedisServer | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(tmp_dir, name=name or ("replica" if replica_of else "redis"), port=port)
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
        self.wait_until(
            lambda: self.info("replication").get("master_link_status") == "up",
            what="in sync with its master",
            timeout=timeout,
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
        self.wait_until(
            lambda: (
                sum(not r["is_disconnected"] and not r["is_sdown"] for r in self.replicas())
                >= count
            ),
            what=f"seeing {count} replica(s) of {self.master_name}",
            timeout=timeout,
        )


class RedisSentinelGroup(ServerGroup):
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

    def _start(self) -> None:
        self.master.start()
        self.replica.start()
        self.replica.wait_for_sync()
        # Started after the replica is in sync, so the sentinel's first INFO of the master
        # already lists it and we do not wait for the 10 s refresh.
        self.sentinel.start()
        self.sentinel.wait_for_replicas(1)
