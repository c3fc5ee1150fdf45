"""Circuit breaker procedures: status for everyone, reset and state changes for operators.

The operations mirror resilience4j's actuator: reset closes a breaker and clears its window;
set-state forces it open, disables it (calls pass, statistics still kept) or closes it.
"""

from __future__ import annotations

import logging
from typing import Any

from server.errors import ErrorCode
from server.resilience.breaker import Breaker
from server.resilience.models import (
    BreakerName,
    BreakerStatus,
    BreakerStatusList,
    SetBreakerState,
)
from server.resilience.registry import BreakerRegistry
from server.rpc.cost import Cost
from server.rpc.router import Context, JsonReady, NoInput, Procedure, mutation, query

log = logging.getLogger(__name__)


def procedures(breakers: BreakerRegistry) -> list[Procedure]:
    """The breaker procedures over one app's registry."""

    async def circuit_breaker_status(ctx: Context, _: NoInput) -> JsonReady:
        # Built as JSON, not as 1 + 6 models per breaker: a live read polled by dashboards and
        # scripts (docs/performance.md). tests/test_breaker_procedures.py holds it to the model.
        statuses = [b.status() for b in breakers.all()]
        if not ctx.caller.authenticated:
            statuses = [_without_detail(status) for status in statuses]
        return JsonReady({"breakers": statuses})

    async def reset_circuit_breaker(ctx: Context, inp: BreakerName) -> BreakerStatus:
        breaker = breakers.find(inp.name)
        who = ctx.caller.name
        log.warning(
            "circuit breaker %s: reset by %s (was %s)", breaker.name, who, breaker.state.value
        )
        breaker.reset(f"reset by operator {who}")
        return breaker.snapshot()

    async def set_circuit_breaker_state(ctx: Context, inp: SetBreakerState) -> BreakerStatus:
        breaker = breakers.find(inp.name)
        who = ctx.caller.name
        log.warning(
            "circuit breaker %s: set to %s by %s (was %s)",
            breaker.name,
            inp.state,
            who,
            breaker.state.value,
        )
        _apply(breaker, inp.state, f"set to {inp.state} by operator {who}")
        return breaker.snapshot()

    return [
        query(
            "monitoring.circuitBreakerStatus",
            circuit_breaker_status,
            output=BreakerStatusList,
            summary="Every circuit breaker: state, rolling counts, error rate, latency, last "
            "failure, when it reopens, and cumulative totals.",
            options=(Cost.CHEAP,),
        ),
        mutation(
            "monitoring.resetCircuitBreaker",
            reset_circuit_breaker,
            input=BreakerName,
            output=BreakerStatus,
            summary="Close one breaker by name and clear its rolling window.",
            errors=(ErrorCode.NOT_FOUND,),
            positional=("name",),
            options=(Cost.OPERATOR,),
        ),
        mutation(
            "monitoring.setCircuitBreakerState",
            set_circuit_breaker_state,
            input=SetBreakerState,
            output=BreakerStatus,
            summary="Force one breaker open, disable it (calls pass, statistics kept) or close it.",
            errors=(ErrorCode.NOT_FOUND,),
            positional=("name", "state"),
            options=(Cost.OPERATOR,),
        ),
    ]


def _without_detail(status: dict[str, Any]) -> dict[str, Any]:
    """The status as anyone may see it: the last failure's own text (hosts, users) removed."""
    failure = status["last_failure"]
    if failure is None or failure["detail"] is None:
        return status
    return status | {"last_failure": failure | {"detail": None}}


def _apply(breaker: Breaker, state: str, reason: str) -> None:
    if state == "open":
        breaker.force_open(reason)
    elif state == "disabled":
        breaker.disable(reason)
    else:
        breaker.reset(reason)
