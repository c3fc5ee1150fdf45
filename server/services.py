"""The resources one app owns, handed to every procedure through ``Context.services``.

Built in ``create_app`` and filled in by the cleanup contexts as each resource starts; a field
is ``None`` while its resource is not configured (no ``DATABASE_URL``, no ``REDIS_URL``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from server.cache.cache import Cache
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import RedisClient
from server.observability.metrics import Metrics
from server.resilience.registry import BreakerRegistry


@dataclass
class Services:
    settings: Settings
    postgres: PostgresCluster | None = None
    redis: RedisClient | None = None
    started_at: float = field(default_factory=time.time)
    # True from the first shutdown signal on: /health/ready turns 503.
    shutting_down: bool = False
    # Built from settings, so never passed in: every Services has its own breakers.
    breakers: BreakerRegistry = field(init=False)
    cache: Cache = field(init=False)
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.breakers = BreakerRegistry.from_settings(self.settings)
        # Redis joins it when redis_ctx has started the client (Cache.attach).
        self.cache = Cache(self.settings)
