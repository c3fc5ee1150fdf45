"""``alerts.list`` and ``alerts.acknowledge``."""

from __future__ import annotations

from server.alerts.book import AlertBook
from server.alerts.models import AcknowledgeInput, Alert, AlertPage, AlertQuery
from server.errors import ErrorCode
from server.rpc.cost import Cost
from server.rpc.router import Context, Procedure, mutation, query


def procedures(book: AlertBook) -> list[Procedure]:
    async def list_alerts(ctx: Context, inp: AlertQuery) -> AlertPage:
        return await book.page(inp)

    async def acknowledge(ctx: Context, inp: AcknowledgeInput) -> Alert:
        # A mutation: the router has refused anonymous callers, so the name is a token's name.
        assert ctx.caller.name is not None
        record = await book.acknowledge(str(inp.id), ctx.caller.name, inp.note)
        return record.model()

    return [
        query(
            "alerts.list",
            list_alerts,
            input=AlertQuery,
            output=AlertPage,
            summary="Alerts, newest occurrence first, filtered by state, level and "
            "acknowledgement, paged by limit and offset.",
            errors=(ErrorCode.SERVICE_UNAVAILABLE,),
            options=(Cost.EXPENSIVE,),
        ),
        mutation(
            "alerts.acknowledge",
            acknowledge,
            input=AcknowledgeInput,
            output=Alert,
            summary="Acknowledge one alert as the calling operator, with an optional note. "
            "Idempotent: the first acknowledgement stands and a repeat returns it.",
            errors=(ErrorCode.NOT_FOUND, ErrorCode.SERVICE_UNAVAILABLE),
            positional=("id", "note"),
            options=(Cost.OPERATOR,),
        ),
    ]
