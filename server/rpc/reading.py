"""Reading a procedure in-process, bounded, with its outcome classified rather than raised.

The alert evaluator and ``monitoring.unifiedMetrics`` gather many procedures at once; one that
is down, slow or not installed yet must become a fact about that section, never an exception
that loses the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from server.errors import ErrorCode, ProcedureNotFound, RpcError
from server.rpc.router import Context, Router

Outcome = Literal["ok", "absent", "unavailable", "error", "timeout"]


class SectionError(BaseModel):
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Reading:
    """``ok``: ``output`` holds the procedure's answer. ``absent``: no such procedure in this
    build. ``unavailable``: it raised ``Unavailable`` (its dependency is down). ``error``: any
    other error. ``timeout``: it did not answer within the bound."""

    path: str
    outcome: Outcome
    output: Any = None
    error: SectionError | None = None
    seconds: float = 0.0


async def read(
    router: Router, path: str, ctx: Context, bound: float, raw_input: Any = None
) -> Reading:
    """Call ``path`` with ``raw_input`` as ``ctx.caller``, in-process, within ``bound`` seconds."""
    try:
        proc = router.lookup(path, "internal")
    except ProcedureNotFound:
        return Reading(path, "absent")
    # A context of its own: middleware writes ``meta``, and reads run side by side.
    own = Context(caller=ctx.caller, protocol="internal")
    started = time.perf_counter()
    try:
        async with asyncio.timeout(bound):
            output = await router.run(proc, raw_input, own)
    except TimeoutError:
        error = SectionError(code=ErrorCode.TIMEOUT.value, message=f"no answer within {bound:g}s")
        return Reading(path, "timeout", error=error, seconds=time.perf_counter() - started)
    except RpcError as exc:
        outcome: Outcome = "unavailable" if exc.code is ErrorCode.SERVICE_UNAVAILABLE else "error"
        error = SectionError(code=exc.code.value, message=exc.message)
        return Reading(path, outcome, error=error, seconds=time.perf_counter() - started)
    return Reading(path, "ok", output=output, seconds=time.perf_counter() - started)


async def read_all(
    router: Router, paths: Iterable[str], ctx: Context, bound: float
) -> dict[str, Reading]:
    """Every path read concurrently, each within ``bound`` seconds."""
    unique = list(dict.fromkeys(paths))
    readings = await asyncio.gather(*(read(router, path, ctx, bound) for path in unique))
    return {r.path: r for r in readings}
