"""Circuit breakers for every call to a datastore (aiobreaker underneath; see ``breaker``)."""

from server.resilience.breaker import (
    Breaker,
    BreakerConfig,
    CallTimeout,
    CircuitOpen,
    Listener,
    is_client_error,
)
from server.resilience.models import BreakerState, BreakerStatus, BreakerStatusList
from server.resilience.registry import BreakerRegistry
from server.resilience.retry import Retry, call_with_fallback

__all__ = [
    "Breaker",
    "BreakerConfig",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStatus",
    "BreakerStatusList",
    "CallTimeout",
    "CircuitOpen",
    "Listener",
    "Retry",
    "call_with_fallback",
    "is_client_error",
]
