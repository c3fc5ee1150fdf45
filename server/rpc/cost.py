"""Cost control: every procedure declares what a call costs, and the router bounds each class.

A procedure declares its class as an option: ``query(..., options=(Cost.EXPENSIVE,))``.

- ``Cost.CHEAP``: answered from memory (breakers, counters, in-process statistics).
- ``Cost.EXPENSIVE``: reads a watched system at some length (SCANs, counts, fan-outs, PgBouncer's
  console). Identical calls are *coalesced*: while one runs, the others with the same input
  (and caller) wait for its answer instead of running again; the answer then serves them for
  ``RPC_COALESCE_TTL`` seconds (a micro-cache; 0 turns it off, coalescing stays). Any mutation
  that succeeds clears it, so an operator's change shows in the next read.
- ``Cost.OPERATOR``: mutations (operators only: the router refuses anonymous callers first).
  Their own bound, so a flood of reads can never take an acknowledgement's place.

``Admission`` is the router middleware that applies this (it sits inside the cache, so a cache
hit never queues). Calls over the wire run at most ``RPC_<CLASS>_CONCURRENCY`` at a time per
class; one past the bound waits up to ``RPC_QUEUE_WAIT`` seconds for a place, then is refused
with TOO_MANY_REQUESTS (tRPC: HTTP 429 with ``Retry-After``; JSON-RPC: an error whose
``data.code`` says so). Each member of a batch is a call of its own. In-process calls (the
alert evaluator, the dashboard's sections, ``monitoring.unifiedMetrics``' sections) are not
bounded here: the evaluator must never be shed, and a section read by an expensive call that
already holds a place would otherwise wait on places its siblings hold. They are still
coalesced. The dashboard page and ``/metrics`` are bounded and coalesced by their own routes.

The check runs when the router is built: a procedure without a class (or a mutation declared
anything but ``OPERATOR``) stops the service at start-up with a message naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel

from server.errors import TooManyRequests
from server.rpc.router import Context, Next, NoInput, Procedure

T = TypeVar("T")
RETRY_AFTER = 1.0  # seconds a shed caller is told to wait: about one coalescing window


class Cost(StrEnum):
    CHEAP = "cheap"
    EXPENSIVE = "expensive"
    OPERATOR = "operator"


class Gate:
    """At most ``limit`` holders at once; a caller past it waits up to ``wait`` seconds for a
    place (first come, first served), then gets ``TooManyRequests``.

    ``enter`` is synchronous while a place is free (no coroutine, no timer: a cheap call pays
    two counter updates); ``leave`` hands the place to the oldest waiter, if any."""

    def __init__(self, name: str, limit: int, wait: float) -> None:
        self.name = name
        self.limit = limit
        self.wait = wait
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.admitted = 0
        self.shed = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_enter(self) -> bool:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            self.admitted += 1
            return True
        return False

    async def enter(self) -> None:
        if self.try_enter():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self.admitted += 1  # handed a place just as the wait ran out: take it
                return
            self.shed += 1
            raise TooManyRequests(
                f"too many {self.name} calls at once (at most {self.limit}); "
                f"retry in {RETRY_AFTER:g}s",
                retry_after=RETRY_AFTER,
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a place, then cancelled: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        self.admitted += 1

    def leave(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place passes on: ``active`` stays
                return
        self.active -= 1


class _LeaderGone(Exception):
    """The call running for its followers was cancelled: one of them runs it instead."""


class Coalescer(Generic[T]):
    """One run per key at a time; its outcome serves every caller that arrives meanwhile, and
    (a value only, never an error) for ``ttl`` seconds after."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._running: dict[str, asyncio.Future[T]] = {}
        self._recent: dict[str, tuple[float, T]] = {}
        self.runs = 0
        self.shared = 0

    def clear(self) -> None:
        self._recent.clear()

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        recent = self._recent.get(key)
        if recent is not None:
            if recent[0] > now:
                self.shared += 1
                return recent[1]
            del self._recent[key]
        while (running := self._running.get(key)) is not None:
            try:
                # Shielded: a follower that gives up does not cancel the run the others wait
                # for. A leader cancelled (its client went away) hands the run on instead.
                value = await asyncio.shield(running)
            except _LeaderGone:
                continue
            self.shared += 1
            return value
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        self.runs += 1
        try:
            value = await fn()
        except BaseException as exc:
            gone = isinstance(exc, asyncio.CancelledError)
            future.set_exception(_LeaderGone() if gone else exc)
            future.exception()  # retrieved: no follower is no "exception never retrieved"
            raise
        finally:
            del self._running[key]
        future.set_result(value)
        if self.ttl > 0:
            self._expire(now)
            self._recent[key] = (time.monotonic() + self.ttl, value)
        return value

    def _expire(self, now: float) -> None:
        # Bounded by what was asked within one ttl; swept as new answers come in.
        if len(self._recent) > 64:
            for key in [k for k, (until, _) in self._recent.items() if until <= now]:
                del self._recent[key]


class Admission:
    """The router middleware of cost control (see the module docstring); ``Checks`` every
    procedure's class when the router is built."""

    def __init__(
        self,
        *,
        cheap: int,
        expensive: int,
        operator: int,
        queue_wait: float,
        coalesce_ttl: float,
    ) -> None:
        self.gates = {
            Cost.CHEAP: Gate("cheap", cheap, queue_wait),
            Cost.EXPENSIVE: Gate("expensive", expensive, queue_wait),
            Cost.OPERATOR: Gate("operator", operator, queue_wait),
        }
        self.coalescer: Coalescer[Any] = Coalescer(coalesce_ttl)
        self._classes: dict[str, Cost] = {}

    def check(self, proc: Procedure) -> None:
        cost = proc.option(Cost)
        if cost is None:
            raise ValueError(
                f"procedure {proc.path!r} declares no cost class: add "
                f"options=(Cost.CHEAP,) for an answer from memory, (Cost.EXPENSIVE,) for a read "
                f"of a watched system, or (Cost.OPERATOR,) for a mutation "
                f"(Cost is in server/rpc/cost.py)"
            )
        if proc.kind == "mutation" and cost is not Cost.OPERATOR:
            raise ValueError(
                f"mutation {proc.path!r} declares cost {cost.value!r}: a mutation is "
                f"Cost.OPERATOR (its capacity is reserved for operators)"
            )
        if proc.kind == "query" and cost is Cost.OPERATOR:
            raise ValueError(
                f"query {proc.path!r} declares Cost.OPERATOR, which is for mutations: "
                f"declare Cost.CHEAP or Cost.EXPENSIVE"
            )
        self._classes[proc.path] = cost

    async def __call__(self, ctx: Context, proc: Procedure, inp: BaseModel, nxt: Next) -> Any:
        cost = self._classes[proc.path]
        if cost is Cost.EXPENSIVE:
            key = _key(proc, inp, ctx)
            return await self.coalescer.run(key, lambda: self._bounded(cost, ctx, inp, nxt))
        result = await self._bounded(cost, ctx, inp, nxt)
        if cost is Cost.OPERATOR:
            self.coalescer.clear()  # the change shows in the next read
        return result

    async def _bounded(self, cost: Cost, ctx: Context, inp: BaseModel, nxt: Next) -> Any:
        if ctx.protocol == "internal":
            return await nxt(ctx, inp)
        gate = self.gates[cost]
        if not gate.try_enter():
            await gate.enter()
        try:
            return await nxt(ctx, inp)
        finally:
            gate.leave()


def _key(proc: Procedure, inp: BaseModel, ctx: Context) -> str:
    # Per caller: an operator may be shown more than an anonymous caller.
    who = ctx.caller.name or "-"
    if type(inp) is NoInput:
        return f"{proc.path}:{who}"
    body = orjson.dumps(inp.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return f"{proc.path}:{who}:{body.decode()}"
