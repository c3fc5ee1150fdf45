"""``alerts.deliveries``: where alerts were sent, per target, and which instance evaluates."""

from __future__ import annotations

from collections.abc import Callable

from server.alerts.models import EvaluatorStatus
from server.delivery import DeliveryStatus, Sender
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, query


def procedures(
    sender: Sender, evaluation: Callable[[], EvaluatorStatus] | None = None
) -> list[Procedure]:
    async def deliveries(ctx: Context, _: NoInput) -> DeliveryStatus:
        status = await sender.status()
        if evaluation is not None:
            status.evaluation = evaluation()
        return status

    return [
        query(
            "alerts.deliveries",
            deliveries,
            output=DeliveryStatus,
            summary="Where alert events go (Alertmanager, signed webhooks): per target, events "
            "pending and the oldest one's age, sent, failed attempts, last success, last "
            "error; whether the outbox is durable (PostgreSQL) or in memory; which instance "
            "evaluates. An unreachable outbox shows as available: false.",
            # INFO on every node / counts over the outbox tables: coalesced and bounded.
            options=(Cost.EXPENSIVE,),
        ),
    ]
