"""Real services for tests and ``make run``: PostgreSQL (+ streaming replica), PgBouncer, Redis
(+ replica and Sentinel), on free 127.0.0.1 ports in ``infrawatch-*`` temporary directories.

Synchronous on purpose: session-scoped pytest fixtures and ``python -m tests.stack`` drive them
without an event loop.
"""

from tests.stack.pgbouncer import PgBouncer
from tests.stack.ports import free_port
from tests.stack.postgres import PostgresServer
from tests.stack.process import StackError, make_workdir, remove_workdir
from tests.stack.redis import (
    RedisClusterGroup,
    RedisSentinel,
    RedisSentinelGroup,
    RedisServer,
    redis_sentinel_group,
)

__all__ = [
    "PgBouncer",
    "PostgresServer",
    "RedisClusterGroup",
    "RedisSentinel",
    "RedisSentinelGroup",
    "RedisServer",
    "StackError",
    "free_port",
    "make_workdir",
    "redis_sentinel_group",
    "remove_workdir",
]
