"""The procedure catalogue: every procedure the service offers, registered in one place."""

from __future__ import annotations

from server.procedures import breakers, cache, health
from server.rpc.router import Procedure


def catalogue() -> list[Procedure]:
    return [*health.PROCEDURES, *breakers.PROCEDURES, *cache.PROCEDURES]
