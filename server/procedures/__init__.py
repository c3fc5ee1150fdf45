"""The procedure catalogue: every procedure the service offers, registered in one place."""

from __future__ import annotations

from server.procedures import alerts, breakers, cache, database, health, keys, queues, unified
from server.rpc.router import Procedure


def catalogue() -> list[Procedure]:
    return [
        *health.PROCEDURES,
        *breakers.PROCEDURES,
        *cache.PROCEDURES,
        *queues.PROCEDURES,
        *keys.PROCEDURES,
        *database.PROCEDURES,
        *alerts.PROCEDURES,
        *unified.PROCEDURES,
    ]
