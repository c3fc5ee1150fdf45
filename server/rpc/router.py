"""The protocol-free core: procedures under dotted paths, input validation, middleware.

The wire adapters (``server/wire``) parse a request into (path, raw input, caller), resolve the
procedure once (``Router.resolve``/``lookup``), run it (``Router.run``, or its two halves:
``answer_now`` for what needs no waiting, then ``run_checked``) and encode what comes back; the
dashboard, the alert evaluator and ``monitoring.unifiedMetrics`` do the same in-process.
Nothing here knows about HTTP, and nothing here knows what a middleware does: the cache is one
(``server/cache/middleware.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, get_args, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from server.deadlines import Deadlines, uncancel
from server.errors import ErrorCode, InvalidInput, ProcedureNotFound, RpcError

log = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["query", "mutation"]
# The wire a call came over; "internal" for in-process calls.
Transport = Literal["jsonrpc", "trpc", "internal"]


class NoInput(BaseModel):
    """The input of a procedure that takes none: absent, ``null``, ``{}`` or ``[]``."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: an operator's name from ``AUTH_TOKENS``, or nobody."""

    name: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.name is not None


ANONYMOUS = Caller()


@dataclass(slots=True)
class Context:
    """What a procedure sees besides its input: who calls, over what, and the middleware's
    notes for the adapter. Resources are not here: each procedure was built over its own."""

    caller: Caller = ANONYMOUS
    protocol: Transport = "internal"
    # The router running the call, for a procedure that reads others in-process; set by it.
    router: Router | None = None
    # Set by middleware for the adapter to surface (e.g. "cache": "HIT" -> X-Cache).
    meta: dict[str, str] = field(default_factory=dict)
    # ``scheme://host[:port]`` the request came to, when a procedure needs it (rpc.discover).
    origin: str | None = None


Handler = Callable[[Context, Any], Awaitable[Any]]
# Told about every call once it ends: (procedure label, protocol, error code or None for OK,
# seconds). The label is the procedure's path, or UNKNOWN_PROCEDURE for a path no procedure
# has, so a client cannot mint label values. Runs on the call path: quick, no I/O.
Observer = Callable[[str, Transport, ErrorCode | None, float], None]
UNKNOWN_PROCEDURE = "unknown"
Next = Callable[[Context, BaseModel], Awaitable[Any]]
# What a fast path answers when it has no answer (a cache miss): the chain runs.
NO_ANSWER: Any = type("NoAnswer", (), {"__repr__": lambda _self: "NO_ANSWER"})()


@dataclass(frozen=True, slots=True)
class Pending:
    """A call ``Router.answer_now`` authorized and validated but could not answer at once:
    ``Router.run_checked`` runs it."""

    proc: Procedure
    inp: BaseModel
    ctx: Context


class Middleware(Protocol):
    """Wraps a procedure's handler: ``await nxt(ctx, inp)`` runs the rest of the chain."""

    def __call__(
        self, ctx: Context, proc: Procedure, inp: BaseModel, nxt: Next, /
    ) -> Awaitable[Any]: ...


# A fast path's look for one procedure: the answer, or ``NO_ANSWER``.
Peek = Callable[[Context, BaseModel], Any]
# One procedure's ``Router.answer_now`` as the router compiled it: (raw input, ctx) -> the
# answer or a ``Pending``.
Answer = Callable[[Any, Context], Any]


class Answers(dict[str, Answer]):
    """What one wire offers, by path, each as its compiled ``answer_now`` (``Router.answers``).
    A path no procedure has is observed as that call's outcome and raises
    ``ProcedureNotFound``, as ``Router.resolve`` does: an adapter starts a call with one
    lookup, ``answers[path](raw_input, ctx)``."""

    __slots__ = ("_protocol", "_router")

    def __init__(self, router: Router, protocol: Transport, answers: dict[str, Answer]) -> None:
        super().__init__(answers)
        self._router = router
        self._protocol = protocol

    def __missing__(self, path: str) -> Answer:
        raise self._router.not_found(path, self._protocol)


@runtime_checkable
class FastPath(Protocol):
    """A middleware that may answer synchronously (a cache hit) before the chain runs.

    ``peeker`` gives, once per procedure when the router is built, the function that looks
    (or None: never for this one), with what it needs of the procedure already worked out.
    The router asks it after authorization and validation, before the deadline and the chain,
    which such an answer does not need: it cannot overrun. Only the outermost middleware is
    asked, so no middleware is skipped.
    """

    def peeker(self, proc: Procedure, /) -> Peek | None: ...


@runtime_checkable
class Checks(Protocol):
    """A middleware that vets each procedure when the router is built (a cached mutation is a
    mistake its author should hear of at start-up, not at the first call)."""

    def check(self, proc: Procedure, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Procedure:
    path: str
    kind: Kind
    handler: Handler
    input: type[BaseModel] = NoInput
    output: type[BaseModel] | None = None
    summary: str = ""
    middleware: tuple[Middleware, ...] = ()
    # Declarations for middleware, one per type, read with ``option`` (a cache policy, ...).
    options: tuple[object, ...] = ()
    errors: tuple[ErrorCode, ...] = ()  # codes worth documenting in OpenRPC
    protocols: frozenset[Transport] = frozenset({"jsonrpc", "trpc", "internal"})
    positional: tuple[str, ...] = ()  # field order when JSON-RPC params come as an array

    def option(self, kind: type[T]) -> T | None:
        """The declaration of type ``kind`` among ``options``, if any."""
        for item in self.options:
            if isinstance(item, kind):
                return item
        return None


def query(path: str, handler: Handler, **kwargs: Any) -> Procedure:
    return Procedure(path=path, kind="query", handler=handler, **kwargs)


def mutation(path: str, handler: Handler, **kwargs: Any) -> Procedure:
    return Procedure(path=path, kind="mutation", handler=handler, **kwargs)


class Router:
    """Maps dotted paths to procedures and runs them through the middleware chain.

    ``middleware`` wraps every procedure (outermost first); a procedure's own middleware runs
    inside it, nearest the handler. ``timeout`` bounds one call; ``queries_need_caller`` is
    ``READ_TOKENS_REQUIRED``; ``observer`` sees every call's outcome (metrics), whichever
    adapter made it.

    The outermost middleware may be a ``FastPath``: its peek is asked first. Every
    middleware that ``Checks`` vets each procedure here.
    """

    def __init__(
        self,
        procedures: Iterable[Procedure],
        *,
        middleware: Iterable[Middleware] = (),
        timeout: float | None = None,
        queries_need_caller: bool = False,
        observer: Observer | None = None,
    ) -> None:
        self._procedures: dict[str, Procedure] = {}
        for proc in procedures:
            if proc.path in self._procedures:
                raise ValueError(f"duplicate procedure path {proc.path!r}")
            if not proc.path or any(not part for part in proc.path.split(".")):
                raise ValueError(f"procedure path {proc.path!r} is not a dotted name")
            self._procedures[proc.path] = proc
        self._middleware = tuple(middleware)
        for mw in self._middleware:
            if isinstance(mw, Checks):
                for proc in self._procedures.values():
                    mw.check(proc)
        outermost = self._middleware[0] if self._middleware else None
        fast_path = outermost if isinstance(outermost, FastPath) else None
        # Chains are built once: a call allocates no closures on the hot path.
        self._chains = {path: self._chain(proc) for path, proc in self._procedures.items()}
        self._timeout = timeout
        # The breakers' single-timer deadlines, for the breakers' reason: asyncio.timeout costs
        # 4-5 µs a call (a Timeout object, a TimerHandle on the loop's heap), a fifth of what a
        # cached call through POST /rpc may cost in all. Every call here has the same timeout,
        # so deadlines expire in start order and one timer serves them all.
        self._deadlines = Deadlines(timeout) if timeout else None
        self._queries_need_caller = queries_need_caller
        self._observer = observer
        # What each wire offers, and what an anonymous caller may call: one dict and one set
        # lookup on the hot path instead of a method and a property each.
        self._offered: dict[Transport, dict[str, Procedure]] = {
            protocol: {p.path: p for p in self._procedures.values() if protocol in p.protocols}
            for protocol in get_args(Transport)
        }
        queries = (path for path, proc in self._procedures.items() if proc.kind == "query")
        self._open_to_anonymous = frozenset(() if queries_need_caller else queries)
        # Each procedure's ``answer_now``, with what is known of it before any call worked
        # out once: whether an anonymous caller may call it, whether it takes input, its fast
        # path. A cached hit's whole path is this function (docs/performance.md).
        self._answers: dict[str, Answer] = {
            path: self._answerer(proc, None if fast_path is None else fast_path.peeker(proc))
            for path, proc in self._procedures.items()
        }
        # resolve + answer_now in one lookup, per wire: ``answers``.
        self._offered_answers: dict[Transport, Answers] = {
            protocol: Answers(self, protocol, {path: self._answers[path] for path in offered})
            for protocol, offered in self._offered.items()
        }

    @property
    def procedures(self) -> tuple[Procedure, ...]:
        return tuple(self._procedures.values())

    def lookup(self, path: str, protocol: Transport = "internal") -> Procedure:
        """The procedure at ``path`` offered over ``protocol``; ``ProcedureNotFound`` if none."""
        proc = self._offered[protocol].get(path)
        if proc is None:
            raise ProcedureNotFound(path)
        return proc

    def resolve(self, path: str, protocol: Transport) -> Procedure:
        """``lookup`` for a call about to be run: a miss is observed as that call's outcome.

        An adapter resolves each call once and hands the procedure to ``run``."""
        proc = self._offered[protocol].get(path)
        if proc is None:
            raise self.not_found(path, protocol)
        return proc

    def not_found(self, path: str, protocol: Transport) -> ProcedureNotFound:
        """The error of a call of ``path`` over ``protocol``, which offers no such procedure,
        observed as that call's outcome."""
        self._observe(path, protocol, ErrorCode.NOT_FOUND, time.perf_counter())
        return ProcedureNotFound(path)

    def authorize(self, proc: Procedure, caller: Caller) -> None:
        if caller.name is not None or proc.path in self._open_to_anonymous:
            return
        if proc.kind == "mutation":
            raise RpcError(
                ErrorCode.UNAUTHORIZED, f"{proc.path} is a mutation: it needs an operator token"
            )
        if self._queries_need_caller:
            raise RpcError(ErrorCode.UNAUTHORIZED, f"{proc.path} needs a token")

    async def call(self, path: str, raw_input: Any, ctx: Context) -> Any:
        """Resolve and run one procedure (in-process callers; adapters resolve, then run)."""
        return await self.run(self.resolve(path, ctx.protocol), raw_input, ctx)

    async def run(self, proc: Procedure, raw_input: Any, ctx: Context) -> Any:
        """Run a resolved procedure; returns JSON-ready data or raises ``RpcError``.

        For a wire protocol the data may hold ``orjson.Fragment`` (JSON already encoded, a
        cache hit's): the adapters serialize with orjson, which copies it. ``internal`` calls
        get plain Python values. ``answer_now``, then ``run_checked`` when that has no answer.
        """
        answer = self.answer_now(proc, raw_input, ctx)
        return await self.run_checked(answer) if isinstance(answer, Pending) else answer

    def answer_now(self, proc: Procedure, raw_input: Any, ctx: Context) -> Any:
        """The synchronous part of ``run``: authorization, input validation and the fast
        path (a cache hit, answered without a deadline, the chain or any coroutine).

        Returns the answer, or a ``Pending`` when the call must run (``run_checked``). A batch
        answers its hits this way, with no Task each, and gathers only the calls that must
        run. Refusals are observed and raised; a hit is observed here; a ``Pending`` is
        observed by ``run_checked``.
        """
        return self._answers[proc.path](raw_input, ctx)

    def answers(self, protocol: Transport) -> Answers:
        """``answer_now(resolve(path, protocol), ...)`` for every path, by path: a wire
        adapter binds it once and begins each call with one lookup, no method call between
        (``Answers``)."""
        return self._offered_answers[protocol]

    def _answerer(self, proc: Procedure, peek: Peek | None) -> Answer:
        """``answer_now`` for ``proc``: a closure over what does not change between calls.
        Each Python call and attribute it saves shows in the bench (docs/performance.md)."""
        path = proc.path
        open_to_anonymous = path in self._open_to_anonymous
        takes_no_input = proc.input is NoInput
        observer = self._observer
        observe = self._observe
        authorize = self.authorize
        clock = time.perf_counter

        def answer_now(raw_input: Any, ctx: Context) -> Any:
            started = clock()
            try:
                if not open_to_anonymous and ctx.caller.name is None:
                    authorize(proc, ctx.caller)
                if raw_input is None and takes_no_input:
                    inp: BaseModel = _NO_INPUT
                else:
                    inp = validate_input(proc, raw_input)
                result = NO_ANSWER if peek is None else peek(ctx, inp)
            except RpcError as exc:
                observe(path, ctx.protocol, exc.code, started)
                raise
            if result is NO_ANSWER:
                return Pending(proc, inp, ctx)
            if observer is not None:
                observer(path, ctx.protocol, None, clock() - started)
            return result

        return answer_now

    async def run_checked(self, pending: Pending) -> Any:
        """Run the chain for a call ``answer_now`` authorized and validated."""
        started = time.perf_counter()
        path, ctx = pending.proc.path, pending.ctx
        try:
            result = await self._run(path, ctx, pending.inp)
        except RpcError as exc:
            self._observe(path, ctx.protocol, exc.code, started)
            raise
        except asyncio.CancelledError:
            self._observe(path, ctx.protocol, ErrorCode.CLIENT_CLOSED_REQUEST, started)
            raise
        if self._observer is not None:
            self._observer(path, ctx.protocol, None, time.perf_counter() - started)
        return result

    def _observe(
        self, path: str, protocol: Transport, code: ErrorCode | None, started: float
    ) -> None:
        if self._observer is not None:
            label = path if path in self._procedures else UNKNOWN_PROCEDURE
            self._observer(label, protocol, code, time.perf_counter() - started)

    async def _run(self, path: str, ctx: Context, inp: BaseModel) -> Any:
        """The chain under the call deadline; foreign errors become INTERNAL_SERVER_ERROR."""
        ctx.router = self
        deadlines = self._deadlines
        token = deadlines.enter(time.monotonic()) if deadlines is not None else 0
        try:
            result = await self._chains[path](ctx, inp)
        except BaseException as exc:
            # Our deadline cancelled the call (and nobody else did): it timed out.
            if (
                deadlines is not None
                and deadlines.leave(token)
                and uncancel() == 0
                and isinstance(exc, asyncio.CancelledError)
            ):
                raise self._timed_out(path) from exc
            if isinstance(exc, RpcError):
                raise
            if isinstance(exc, TimeoutError):
                raise self._timed_out(path) from exc
            if isinstance(exc, Exception):
                log.exception("procedure %s failed (caller=%s)", path, ctx.caller.name)
                raise RpcError(ErrorCode.INTERNAL_SERVER_ERROR, "Internal server error") from exc
            raise
        if deadlines is not None and deadlines.leave(token):
            uncancel()  # the handler swallowed our cancellation and returned: undo it
        return result

    def _timed_out(self, path: str) -> RpcError:
        return RpcError(ErrorCode.TIMEOUT, f"{path} did not finish in {self._timeout}s")

    def _chain(self, proc: Procedure) -> Next:
        async def innermost(ctx: Context, inp: BaseModel) -> Any:
            return encode_output(proc, await proc.handler(ctx, inp))

        call: Next = innermost
        for mw in reversed(self._middleware + proc.middleware):
            call = _bind(mw, proc, call)
        return call


def _bind(mw: Middleware, proc: Procedure, nxt: Next) -> Next:
    async def step(ctx: Context, inp: BaseModel) -> Any:
        return await mw(ctx, proc, inp, nxt)

    return step


_NO_INPUT = NoInput()  # no fields to change: one instance serves every call


@dataclass(frozen=True, slots=True)
class JsonReady:
    """An answer its handler built directly in the JSON form of the procedure's ``output``
    model: the router passes ``data`` on as it is, without building or checking the models.

    For live status reads on the hot path (``monitoring.circuitBreakerStatus``), where the
    models cost most of the call; their tests hold ``data`` to the output model."""

    data: Any


def validate_input(proc: Procedure, raw: Any) -> BaseModel:
    if proc.input is NoInput and (raw is None or raw == {} or raw == []):
        return _NO_INPUT
    if raw is None:
        raw = {}
    elif isinstance(raw, list):
        if not proc.positional:
            raise InvalidInput(f"{proc.path} takes its params by name (an object), not an array")
        if len(raw) > len(proc.positional):
            raise InvalidInput(
                f"{proc.path} takes at most {len(proc.positional)} positional params"
            )
        raw = dict(zip(proc.positional, raw, strict=False))
    try:
        return proc.input.model_validate(raw)
    except ValidationError as exc:
        issues = [
            {"path": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        summary = "; ".join(f"{i['path'] or 'input'}: {i['message']}" for i in issues)
        raise InvalidInput(
            f"Invalid input for {proc.path}: {summary}", details={"issues": issues}
        ) from exc


def encode_output(proc: Procedure, value: Any) -> Any:
    if isinstance(value, JsonReady):
        return value.data
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if proc.output is not None and value is not None:
        return proc.output.model_validate(value).model_dump(mode="json", by_alias=True)
    return value
