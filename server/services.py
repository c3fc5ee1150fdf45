"""The resources one app owns, handed to every procedure through ``Context.services``.

Built in ``create_app`` and filled in by the cleanup contexts as each resource starts; a field
is ``None`` while its resource is not configured (no ``DATABASE_URL``, no ``REDIS_URL``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.cache.cache import Cache
from server.collectors.partitions import PartitionWatch
from server.collectors.redis_queues import QueueCollector
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import RedisClient
from server.observability.health import HealthChecks
from server.observability.metrics import Metrics
from server.resilience.registry import BreakerRegistry

if TYPE_CHECKING:
    from server.alerts import AlertBook, Evaluator
    from server.rpc.router import Router


@dataclass
class Services:
    settings: Settings
    postgres: PostgresCluster | None = None
    redis: RedisClient | None = None
    # Set by create_app (watch_queues): keeps the last queue discovery between calls.
    queues: QueueCollector | None = None
    # Partition-migration checks; they remember each pair's previous write counters.
    partitions: PartitionWatch | None = None
    started_at: float = field(default_factory=time.time)
    # True from the first shutdown signal on: /health/ready turns 503.
    shutting_down: bool = False
    # Built from settings, so never passed in: every Services has its own breakers.
    breakers: BreakerRegistry = field(init=False)
    cache: Cache = field(init=False)
    metrics: Metrics = field(default_factory=Metrics)
    # The app's router, for procedures that gather others in-process (unifiedMetrics).
    router: Router | None = None
    # Alerting (alerts_ctx): the store every part reads and acknowledges through, and the
    # evaluator task's object (``run_once`` drives a round by hand).
    alerts: AlertBook | None = None
    alert_evaluator: Evaluator | None = None
    # The components /health* and monitoring.unifiedHealth probe; parts may add their own.
    health: HealthChecks = field(default_factory=HealthChecks.standard)

    def __post_init__(self) -> None:
        self.breakers = BreakerRegistry.from_settings(self.settings)
        # Redis joins it when redis_ctx has started the client (Cache.attach).
        self.cache = Cache(self.settings)
