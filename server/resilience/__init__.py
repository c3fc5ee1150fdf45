"""Circuit breakers for every call to a datastore (aiobreaker underneath; see ``breaker``).

Their errors, ``CircuitOpen`` and ``CallTimeout``, live in ``server.errors`` with every other.
"""

from server.resilience.breaker import Breaker, BreakerConfig, Listener, is_client_error
from server.resilience.models import BreakerState, BreakerStatus, BreakerStatusList
from server.resilience.registry import BreakerRegistry

__all__ = [
    "Breaker",
    "BreakerConfig",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStatus",
    "BreakerStatusList",
    "Listener",
    "is_client_error",
]
