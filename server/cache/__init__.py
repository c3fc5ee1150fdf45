"""The procedure cache: Redis with a coherent in-process hot tier and an in-memory fallback.

``Cache`` (``cache.py``) is the API; ``CacheMiddleware`` and ``Warmer`` (``middleware.py``)
apply it to RPC procedures, as their ``CachePolicy`` and ``Invalidates`` (``policy.py``)
declare; ``CacheCollector`` (``metrics.py``) exports its figures.
"""

from server.cache.cache import MISSING, Cache, Lookup

__all__ = ["MISSING", "Cache", "Lookup"]
