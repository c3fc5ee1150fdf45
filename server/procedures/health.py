"""``monitoring.unifiedHealth``: is the primary reachable, is Redis, and how fast they answer.

The same probes and aggregation as ``/health`` (``server/observability/health.py``): one
answer, whichever way it is asked.
"""

from __future__ import annotations

from server.observability.health import ComponentHealth, Health, HealthReport, overall
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, query

# The names this module has always exported; the model itself is shared with /health.
UnifiedHealth = HealthReport
__all__ = ["ComponentHealth", "UnifiedHealth", "overall", "procedures"]


def procedures(health: Health, *, read_tokens_required: bool) -> list[Procedure]:
    async def unified_health(ctx: Context, _: NoInput) -> HealthReport:
        # Hosts, versions and raw error texts: operators only, and only when reads need a token.
        show = read_tokens_required and ctx.caller.authenticated
        return await health.report(["database", "redis"], show_details=show)

    return [
        query(
            "monitoring.unifiedHealth",
            unified_health,
            output=HealthReport,
            summary="Quick status: reachability and round-trip time of the primary and Redis.",
            options=(Cost.CHEAP,),
        ),
    ]
