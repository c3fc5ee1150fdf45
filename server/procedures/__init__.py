"""The procedure catalogue: every procedure the service offers, registered in one place, each
built over the resources it uses."""

from __future__ import annotations

from collections.abc import Callable

from server.alerts.book import AlertBook
from server.alerts.models import EvaluatorStatus
from server.cache.cache import Cache
from server.collectors.partitions import PartitionWatch
from server.collectors.redis_health import RedisHealthCollector
from server.collectors.redis_queues import QueueCollector
from server.collectors.top_queries import TopQueries
from server.config import Settings
from server.datastores.postgres import PostgresCluster
from server.datastores.redis import RedisClient
from server.datastores.redis_gate import RedisGate
from server.delivery import Sender
from server.observability.health import Health
from server.procedures import alerts, breakers, cache, database, health, keys, queues, unified
from server.procedures import deliveries as alert_deliveries
from server.procedures import redis_health as redis_health_procedures
from server.resilience.registry import BreakerRegistry
from server.rpc.router import Procedure


def catalogue(
    settings: Settings,
    *,
    health_checks: Health,
    breaker_registry: BreakerRegistry,
    procedure_cache: Cache,
    redis: RedisClient | None,
    queue_collector: QueueCollector,
    postgres: PostgresCluster | None,
    partitions: PartitionWatch | None,
    book: AlertBook,
    sender: Sender | None = None,
    evaluation: Callable[[], EvaluatorStatus] | None = None,
    top_queries: TopQueries | None = None,
    redis_health: RedisHealthCollector | None = None,
) -> list[Procedure]:
    return [
        *health.procedures(health_checks, read_tokens_required=settings.auth.read_tokens_required),
        *breakers.procedures(breaker_registry),
        *cache.procedures(procedure_cache, redis),
        *queues.procedures(queue_collector),
        *keys.procedures(RedisGate(redis)),
        *database.procedures(
            postgres, partitions, settings.database, settings.partitions, top_queries
        ),
        *alerts.procedures(book),
        *(alert_deliveries.procedures(sender, evaluation) if sender is not None else ()),
        *unified.procedures(book, settings.rpc.section_timeout),
        *(redis_health_procedures.procedures(redis_health) if redis_health else []),
    ]
