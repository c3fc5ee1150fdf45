"""``monitoring.unifiedHealth``: is the primary reachable, is Redis, and how fast they answer.

The same probes and aggregation as ``/health`` (``server/observability/health.py``): one
answer, whichever way it is asked.
"""

from __future__ import annotations

from server.observability.health import ComponentHealth, HealthReport, overall, report
from server.rpc.router import Context, NoInput, Procedure, query

# The names this module has always exported; the model itself is shared with /health.
UnifiedHealth = HealthReport
__all__ = ["PROCEDURES", "ComponentHealth", "UnifiedHealth", "overall", "unified_health"]


async def unified_health(ctx: Context, _: NoInput) -> HealthReport:
    settings = ctx.services.settings
    # Hosts, versions and raw error texts: operators only, and only when reads need a token.
    show = settings.read_tokens_required and ctx.caller.authenticated
    return await report(ctx.services, ["database", "redis"], show_details=show)


PROCEDURES: list[Procedure] = [
    query(
        "monitoring.unifiedHealth",
        unified_health,
        output=HealthReport,
        summary="Quick status: reachability and round-trip time of the primary and Redis.",
    ),
]
