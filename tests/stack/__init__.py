"""Real services for tests and ``make run``: PostgreSQL (+ streaming replica), PgBouncer, Redis
(+ replica and Sentinel), a Redis Cluster, Alertmanager, on free 127.0.0.1 ports in ``infrawatch-*``
temporary directories. Each is a ``StackServer`` (``tests/stack/server.py``): one start, wait
and stop for all of them.

Synchronous on purpose: session-scoped pytest fixtures and ``python -m tests.stack`` drive them
without an event loop.
"""

from tests.stack.alertmanager import Alertmanager
from tests.stack.pgbouncer import PgBouncer
from tests.stack.ports import free_port
from tests.stack.postgres import PostgresServer
from tests.stack.process import StackError, make_workdir, remove_workdir
from tests.stack.redis import RedisSentinel, RedisSentinelGroup, RedisServer
from tests.stack.redis_cluster import RedisCluster, RedisClusterNode
from tests.stack.server import ServerFailure, ServerGroup, StackServer

__all__ = [
    "Alertmanager",
    "PgBouncer",
    "PostgresServer",
    "RedisCluster",
    "RedisClusterNode",
    "RedisSentinel",
    "RedisSentinelGroup",
    "RedisServer",
    "ServerFailure",
    "ServerGroup",
    "StackError",
    "StackServer",
    "free_port",
    "make_workdir",
    "remove_workdir",
]
