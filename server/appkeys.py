"""Every typed key the aiohttp application holds: a str key warns, and tests fail on warnings.

``create_app`` builds each resource (no I/O) and publishes it here; the cleanup context that
owns it starts and stops it. Only app assembly, the dashboard and tests read these keys: the
procedures were built over the resources themselves.
"""

from __future__ import annotations

from aiohttp import web

from server.alerts import AlertBook, Evaluator
from server.alerts.election import Election
from server.auth import Authenticator
from server.cache.cache import Cache
from server.collectors.partitions import PartitionWatch
from server.collectors.redis_queues import QueueCollector
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import RedisClient
from server.delivery import Sender
from server.observability.health import Health
from server.observability.metrics import Metrics
from server.resilience.registry import BreakerRegistry
from server.rpc.cost import Admission
from server.rpc.router import Router

SETTINGS = web.AppKey("settings", Settings)
ROUTER = web.AppKey("router", Router)
ADMISSION = web.AppKey("admission", Admission)
AUTH = web.AppKey("auth", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
BREAKERS = web.AppKey("breakers", BreakerRegistry)
HEALTH = web.AppKey("health", Health)
CACHE = web.AppKey("cache", Cache)
QUEUES = web.AppKey("queues", QueueCollector)
ALERTS = web.AppKey("alerts", AlertBook)
EVALUATOR = web.AppKey("alert_evaluator", Evaluator)
DELIVERY = web.AppKey("alert_delivery", Sender)
# None without a database or with ALERT_EVALUATION_ENABLED=false: no election.
ELECTION: web.AppKey[Election | None] = web.AppKey("alert_election")
# None while not configured (no DATABASE_URL, no REDIS_URL).
POSTGRES: web.AppKey[PostgresCluster | None] = web.AppKey("postgres")
PARTITIONS: web.AppKey[PartitionWatch | None] = web.AppKey("partitions")
REDIS: web.AppKey[RedisClient | None] = web.AppKey("redis")
