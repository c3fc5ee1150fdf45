"""The tRPC HTTP protocol at ``/trpc/{path}``: what @trpc/server v11 answers to ``httpLink`` and
``httpBatchLink`` (no transformer). Parse, batch, encode; the router does the rest.

The reference is @trpc/server 11.25.2, the version ``tests/trpc_client/package-lock.json``
installs, under ``src/unstable-core-do-not-import/``: ``http/resolveResponse.ts`` (the order of
checks, one response or a batch), ``http/contentType.ts`` (reading paths, ``?batch=1`` and
inputs), ``http/getHTTPStatusCode.ts`` (the status of a batch), ``error/formatter.ts`` (the
error shape). Where we answer differently on purpose, the comment says why;
``docs/protocol-trpc.md`` lists every difference.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from server.auth import Authenticator
from server.errors import CODES, ErrorCode, ProcedureNotFound, RpcError, TooManyRequests
from server.redaction import mask_secrets
from server.rpc.router import ANONYMOUS, Caller, Context, Kind, Pending, Procedure, Router
from server.wire import body
from server.wire.answer import AnswerHeaders, JsonAnswer

# resolveResponse.ts TYPE_ACCEPTED_METHOD_MAP (no method override: a query is never a POST).
ACCEPTED_METHOD: dict[Kind, str] = {"query": "GET", "mutation": "POST"}
# resolveResponse.ts sets these on every answer but the HEAD one.
BASE_HEADERS = {"Content-Type": "application/json", "Vary": "trpc-accept, accept"}
_ANSWER_HEADERS = AnswerHeaders(BASE_HEADERS)  # a 200 answer's, by the cache's verdict
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def error_shape(
    exc: RpcError, path: str | None = None, *, operator: bool = False
) -> dict[str, Any]:
    """v11's default error shape (formatter.ts ``getDefaultErrorShape``).

    ``data.path`` only for an error of one call; never ``data.stack``, which v11 adds in
    development mode only. An error's details (e.g. validation ``issues``) join ``data`` the
    way a tRPC ``errorFormatter`` adds its own fields, without replacing the standard ones; an
    operator also gets the foreign text behind the message (``data.detail``).
    """
    info = CODES[exc.code]
    data: dict[str, Any] = {"code": exc.code.value, "httpStatus": info.http_status}
    if path is not None:
        data["path"] = path
    for key, value in (exc.details or {}).items():
        data.setdefault(key, value)
    if operator and exc.detail is not None:
        data["detail"] = mask_secrets(exc.detail)
    return {"message": exc.message, "code": info.jsonrpc, "data": data}


def error_body(exc: RpcError) -> bytes:
    """The JSON of a failure of the whole request: one error object, even for a batch."""
    return orjson.dumps({"error": error_shape(exc)})


def whole_request_error(exc: RpcError) -> web.Response:
    return web.Response(
        body=error_body(exc), status=CODES[exc.code].http_status, headers=BASE_HEADERS
    )


# (data, error, context): a call's answer or its error; the context once the router had it.
Outcome = tuple[Any, RpcError | None, Context | None]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, about 0.6 µs more
# per call made, on the path of every cached hit.
@dataclass(slots=True)
class _Call:
    path: str
    procedure: Procedure | None
    input: Any  # None when absent: the router treats null and no input alike


def _procedure_path(request: web.Request) -> str:
    # resolveResponse.ts decodePath: a malformed escape is the client's fault, BAD_REQUEST.
    # yarl leaves such escapes undecoded, so look at the raw path.
    raw = request.rel_url.raw_path
    if "%" in raw:  # nothing to decode otherwise (the common case: dotted names)
        try:
            if _MALFORMED_ESCAPE.search(raw):
                raise ValueError(raw)
            unquote(raw, errors="strict")
        except ValueError:  # UnicodeDecodeError included
            raise RpcError(ErrorCode.BAD_REQUEST, f'Invalid URL-encoding in path "{raw}"') from None
    path = request.match_info["path"]
    # adapters/standalone.ts trims one slash on each side of the procedure path.
    return path.removesuffix("/")


def _check_content_type(request: web.Request) -> None:
    """contentType.ts ``getContentTypeHandler``: a GET is read as JSON whatever it says; any
    other method must send ``application/json`` (media types compare case-insensitively,
    parameters such as ``charset`` are allowed). v11 also takes ``multipart/form-data`` and
    ``application/octet-stream`` for mutations; we take JSON only, so those are 415 too.
    """
    if request.method == "GET":
        return
    header = request.headers.get("Content-Type")
    if header is not None and header.split(";", 1)[0].strip().lower() == "application/json":
        return
    # v11's message lacks the closing quote; ours has it.
    message = (
        f'Unsupported content-type "{header}"'
        if header is not None
        else "Missing content-type header"
    )
    raise RpcError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, message)


def _is_batch(request: web.Request) -> bool:
    if not request.rel_url.raw_query_string:
        return False  # no query string to parse (httpLink's GET of a call without input)
    flag = request.query.get("batch")
    if flag is None:
        return False
    if flag == "1":
        return True
    # v11 reads any other value as "not a batch" (contentType.ts: get('batch') === '1') and
    # v10 read any non-empty one as a batch: refuse rather than guess which the client meant.
    raise RpcError(ErrorCode.BAD_REQUEST, f'"batch" must be 1, got "{flag}"')


def _find(router: Router, path: str) -> Procedure | None:
    try:
        return router.lookup(path, "trpc")
    except ProcedureNotFound:
        return None  # each such call answers NOT_FOUND on its own (v11 does the same)


def _check_single_kind(procedures: list[Procedure | None]) -> None:
    kinds = list(dict.fromkeys(proc.kind for proc in procedures if proc is not None))
    if len(kinds) > 1:
        raise RpcError(
            ErrorCode.BAD_REQUEST, f"Cannot mix procedure types in call: {', '.join(kinds)}"
        )


def _check_not_streaming(request: web.Request, batch: bool) -> None:
    """contentType.ts ``getAcceptHeader``: ``trpc-accept``, else ``application/jsonl`` among
    ``Accept``'s types, asks for httpBatchStreamLink's JSON Lines stream, which we don't serve.
    """
    headers = request.headers
    accept = headers.get("trpc-accept")
    if accept is None:
        types = headers.get("Accept", "")
        if "application/jsonl" in types and any(
            part.strip() == "application/jsonl" for part in types.split(",")
        ):
            accept = "application/jsonl"
    if accept != "application/jsonl":
        return
    if not batch:  # v11's own answer (resolveResponse.ts)
        raise RpcError(
            ErrorCode.BAD_REQUEST, "Streaming requests must be batched (you can do a batch of 1)"
        )
    raise RpcError(
        ErrorCode.NOT_IMPLEMENTED,
        "Streamed responses (httpBatchStreamLink) are not served: use httpBatchLink or httpLink",
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What ``/trpc`` answers with: bound once per app (see ``trpc_handler``)."""

    router: Router
    auth: Authenticator
    max_body_bytes: int
    max_batch_size: int


def _query_input(request: web.Request) -> bytes:
    """A GET's input: ``?input=``, or nothing."""
    query = request.rel_url.raw_query_string and request.query.get("input")
    return query.encode() if query else b""


def _inputs(raw: bytes, request: web.Request, batch: bool, count: int) -> list[Any]:
    """The input of each call (contentType.ts ``getInputs``).

    A GET carries its input in ``?input=`` and anything else in the body; an empty one of
    either is no input at all. v11 parses lazily, so each call that reads its input fails on
    its own; we parse once, up front, and a bad input fails the whole request.
    """
    if not raw:
        return [None] * count
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        where = "?input=" if request.method == "GET" else "body"
        raise RpcError(ErrorCode.BAD_REQUEST, f"The {where} is not JSON: {exc}") from None
    if not batch:
        return [value]
    if not isinstance(value, dict):
        raise RpcError(
            ErrorCode.BAD_REQUEST, '"input" needs to be an object when doing a batch call'
        )
    # Keyed by the call's index in the batch; a missing key is no input.
    return [value.get(str(index)) for index in range(count)]


def _parse(
    request: web.Request, endpoint: Endpoint
) -> tuple[bool, list[str], list[Procedure | None]]:
    """Everything that fails a whole request before its input is read, in v11's order:
    (batch, the calls' paths, their procedures: None for a path that has none)."""
    path = _procedure_path(request)
    _check_content_type(request)
    batch = _is_batch(request)
    paths = path.split(",") if batch else [path]
    max_batch = endpoint.max_batch_size
    if batch and len(paths) > max_batch:
        # v11's code and message (contentType.ts, its maxBatchSize option), with our limit.
        raise RpcError(
            ErrorCode.BAD_REQUEST,
            f"Batch call exceeds maximum size ({len(paths)} calls; MAX_BATCH_SIZE={max_batch})",
        )
    if batch:  # one call is of one kind
        procedures = [_find(endpoint.router, p) for p in paths]
        _check_single_kind(procedures)
    else:  # no comprehension (a function call of its own in Python 3.11) for the usual call
        procedures = [_find(endpoint.router, path)]
    _check_not_streaming(request, batch)
    return batch, paths, procedures


class _Exchange:
    """One request's calls, run the way resolveResponse.ts runs them: concurrently, each
    checked for existence, then method, then the caller, then handed to the router."""

    __slots__ = ("allow", "caller", "caller_error", "calls", "request", "router")

    def __init__(self, request: web.Request, calls: list[_Call], endpoint: Endpoint) -> None:
        self.request = request
        self.calls = calls
        self.router = endpoint.router
        self.allow: str | None = None
        self.caller: Caller = ANONYMOUS
        # v11 builds the context once (createContext); if that throws, every call that gets
        # past the path and method checks fails with its error.
        self.caller_error: RpcError | None = None
        authorization = request.headers.get("Authorization")
        if authorization:  # the peer's address (a syscall) only when there is a token to check
            try:
                self.caller = endpoint.auth.caller_for_header(
                    authorization, endpoint.auth.client_of(request)
                )
            except RpcError as exc:
                self.caller_error = exc

    async def run(self) -> list[Outcome]:
        """Every call's outcome, in order. What needs no waiting (a refusal, a cache hit) is
        answered first, synchronously; the rest run concurrently (one awaited in this task:
        gather would wrap each in a Task, scheduled on a later turn of the loop)."""
        started = [self.start(call) for call in self.calls]
        pending = [s for s in started if isinstance(s, Pending)]
        if len(pending) == 1:
            ran = [await self.finish(pending[0])]
        else:
            ran = await asyncio.gather(*(self.finish(s) for s in pending)) if pending else []
        finished = iter(ran)
        return [next(finished) if isinstance(s, Pending) else s for s in started]

    def _admit(self, call: _Call) -> Procedure:
        """The checks before the router: existence, method, then the caller."""
        method = self.request.method
        proc = call.procedure
        if proc is None:
            # The router raises ProcedureNotFound, counted under the label a client cannot
            # mint, as for an unknown JSON-RPC method.
            proc = self.router.resolve(call.path, "trpc")
        kind = proc.kind
        if method != ACCEPTED_METHOD[kind]:
            # RFC 9110 15.5.6: a 405 lists what the resource accepts; v11 does the same.
            self.allow = ACCEPTED_METHOD[kind]
            raise RpcError(
                ErrorCode.METHOD_NOT_SUPPORTED,
                f'Unsupported {method}-request to {kind} procedure at path "{call.path}"',
            )
        if self.caller_error is not None:
            raise self.caller_error
        return proc

    def start(self, call: _Call) -> Outcome | Pending:
        """The call's outcome when it needs no waiting, else the router's ``Pending``."""
        ctx: Context | None = None
        try:
            proc = self._admit(call)
            ctx = Context(self.caller, "trpc")  # positional: keywords cost a hit about 0.2 µs
            data = self.router.answer_now(proc, call.input, ctx)
        except RpcError as exc:
            return None, exc, ctx
        return data if isinstance(data, Pending) else (data, None, ctx)

    async def finish(self, pending: Pending) -> Outcome:
        try:
            data = await self.router.run_checked(pending)
        except RpcError as exc:
            return None, exc, pending.ctx  # the cache may have set its verdict before
        return data, None, pending.ctx


def _status(errors: list[RpcError | None]) -> int:
    """getHTTPStatusCode.ts: the one status all answers share, else 207 Multi-Status."""
    statuses = {200 if exc is None else CODES[exc.code].http_status for exc in errors}
    return statuses.pop() if len(statuses) == 1 else 207


def _retry_after(errors: list[RpcError | None]) -> str | None:
    """For a throttled or shed call (429): the longest wait any call was told."""
    waits = [exc for exc in errors if isinstance(exc, TooManyRequests)]
    return max(waits, key=lambda exc: exc.retry_after).retry_after_header if waits else None


def trpc_handler(
    router: Router, auth: Authenticator, *, max_body_bytes: int, max_batch_size: int
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The ``/trpc/{path}`` handler, bound to its app's parts once."""
    return partial(handle_trpc, Endpoint(router, auth, max_body_bytes, max_batch_size))


async def handle_trpc(endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
    if request.method == "HEAD":
        # resolveResponse.ts: HEAD answers 204 before anything else ("lambda warmup").
        return web.Response(status=204)
    try:
        batch, paths, procedures = _parse(request, endpoint)
        # A body is awaited only when it has not all arrived yet (an RPC body nearly always has).
        limit = endpoint.max_body_bytes
        raw = _query_input(request) if request.method == "GET" else body.arrived(request, limit)
        if raw is None:
            raw = await body.read(request, limit)
        inputs = _inputs(raw, request, batch, len(paths))
    except RpcError as exc:
        return whole_request_error(exc)
    calls = [_Call(p, proc, inp) for p, proc, inp in zip(paths, procedures, inputs, strict=True)]
    exchange = _Exchange(request, calls, endpoint)
    if not batch:
        # One call, awaited only when it must run: a hit needs no coroutine.
        outcome = exchange.start(calls[0])
        if isinstance(outcome, Pending):
            outcome = await exchange.finish(outcome)
        return _one_answer(exchange, calls[0], outcome)
    outcomes = await exchange.run()
    operator = exchange.caller.authenticated
    items = [
        {"result": {"data": data}}
        if exc is None
        else {"error": error_shape(exc, call.path, operator=operator)}
        for call, (data, exc, _) in zip(calls, outcomes, strict=True)
    ]
    errors = [exc for _, exc, _ in outcomes]
    headers = _headers(exchange, errors)
    return web.Response(body=orjson.dumps(items), status=_status(errors), headers=headers)


def _one_answer(exchange: _Exchange, call: _Call, outcome: Outcome) -> web.Response:
    """One call (httpLink, or a batch link's lone call sent unbatched): its answer without the
    batch's lists of items, statuses and waits, each a few hundred nanoseconds on the path of
    every cached hit."""
    data, exc, ctx = outcome
    if exc is None:
        item: dict[str, Any] = {"result": {"data": data}}
        status = 200
    else:
        item = {"error": error_shape(exc, call.path, operator=exchange.caller.authenticated)}
        status = CODES[exc.code].http_status
    verdict = ctx.meta.get("cache") if ctx is not None else None
    if status == 200:
        return JsonAnswer(orjson.dumps(item), _ANSWER_HEADERS[verdict])
    headers = _headers(exchange, [exc])
    if verdict is not None:
        headers["X-Cache"] = verdict
    return web.Response(body=orjson.dumps(item), status=status, headers=headers)


def _headers(exchange: _Exchange, errors: list[RpcError | None]) -> dict[str, str]:
    headers = dict(BASE_HEADERS)
    if exchange.allow is not None:
        headers["Allow"] = exchange.allow
    if retry_after := _retry_after([*errors, exchange.caller_error]):
        headers["Retry-After"] = retry_after
    return headers
