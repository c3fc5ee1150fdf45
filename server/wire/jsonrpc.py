"""JSON-RPC 2.0 over ``POST /rpc``: parse, batch, notify, encode. The router does the rest.

Every answer that is a JSON-RPC response goes out with HTTP 200 (the error is in the body, as
the spec's transport-agnostic design expects); the exceptions are a body over the size limit
(413) and an all-notification batch or lone notification (204, no body).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from server.auth import Authenticator
from server.errors import (
    ErrorCode,
    InvalidInput,
    InvalidRequest,
    ProcedureNotFound,
    RpcError,
    TooManyRequests,
)
from server.redaction import mask_secrets
from server.rpc.openrpc import DISCOVER
from server.rpc.router import ANONYMOUS, Answers, Caller, Context, Pending, Router
from server.wire import body
from server.wire.answer import AnswerHeaders, JsonAnswer
from server.wire.hosts import origin_of

log = logging.getLogger(__name__)

_MISSING = object()
JSON = "application/json"
Reply = dict[str, Any]  # one JSON-RPC response object


def error_object(exc: RpcError, *, operator: bool = False) -> dict[str, Any]:
    """The ``error`` member: the spec's own numbers and titles where it has them (the message
    then goes to ``data.message``), tRPC's number and the message elsewhere. An operator also
    gets the foreign text behind it (``data.detail``: hosts, users, SQL)."""
    if isinstance(exc, ProcedureNotFound):
        number, title = -32601, "Method not found"
    elif isinstance(exc, InvalidInput):
        number, title = -32602, "Invalid params"
    elif isinstance(exc, InvalidRequest):
        number, title = -32600, "Invalid Request"
    elif exc.code is ErrorCode.PARSE_ERROR:
        number, title = -32700, "Parse error"
    elif exc.code is ErrorCode.PAYLOAD_TOO_LARGE:
        number, title = exc.info.jsonrpc, "Payload too large"
    else:
        number, title = exc.info.jsonrpc, exc.message
    data: dict[str, Any] = {"code": exc.code.value, "httpStatus": exc.info.http_status}
    if title != exc.message:
        data["message"] = exc.message
    if exc.details:
        data.update(exc.details)
    if operator and exc.detail is not None:
        data["detail"] = mask_secrets(exc.detail)
    return {"code": number, "message": title, "data": data}


def _response(
    request_id: Any,
    *,
    result: Any = _MISSING,
    error: RpcError | None = None,
    operator: bool = False,
) -> dict[str, Any]:
    if error is not None:
        return {
            "jsonrpc": "2.0",
            "error": error_object(error, operator=operator),
            "id": request_id,
        }
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


# What orjson makes of a JSON string, number, object and array: exact types, so one set lookup
# checks each (a bool is an int subclass, and not an id). About 0.2 µs less per call than
# isinstance against a tuple plus the bool exclusion.
_ID_TYPES = (str, int, float)
_ID_EXACT_TYPES = frozenset(_ID_TYPES)
_PARAMS_EXACT_TYPES = frozenset((dict, list))


def _start_member(
    answers: Answers, member: Any, caller: Caller, request: web.Request
) -> tuple[Reply | Pending | None, Context | None, Any]:
    """(reply, context, id): the member's reply (None for a notification) when it needs no
    waiting: a malformed request, an unknown method, a refusal, a cache hit; else the router's
    ``Pending`` for it.

    The member's checks are here rather than in a function of their own, and the router's
    compiled ``answer_now`` is called straight from ``answers``: each Python call on a cached
    hit's path shows in the bench (docs/performance.md)."""
    if type(member) is not dict:  # orjson makes plain dicts; no subclass can come from JSON
        return _invalid(InvalidRequest("a request must be a JSON object"))
    request_id = member.get("id", _MISSING)
    # The usual ids first, by exact type: a bool is not an id, and ``type() in`` says so.
    if (
        type(request_id) not in _ID_EXACT_TYPES
        and request_id is not _MISSING
        and request_id is not None
    ):
        return _invalid(InvalidRequest("id must be a string, a number or null"))
    echo = None if request_id is _MISSING else request_id
    if member.get("jsonrpc") != "2.0":
        return _invalid(InvalidRequest('"jsonrpc" must be exactly "2.0"', request_id=echo))
    method = member.get("method")
    if type(method) is not str:
        return _invalid(InvalidRequest('"method" must be a string', request_id=echo))
    params = member.get("params", _MISSING)
    if params is _MISSING:
        params = None
    elif type(params) not in _PARAMS_EXACT_TYPES:
        return _invalid(InvalidRequest('"params" must be an object or an array', request_id=echo))
    ctx = Context(caller, "jsonrpc")  # positional: keywords cost a hit about 0.2 µs
    if method == DISCOVER:  # its servers[0].url is this request's own address
        ctx.origin = origin_of(request)
    try:
        answer = answers[method](params, ctx)
    except RpcError as exc:
        return _failed(method, request_id, exc, caller), ctx, request_id
    if isinstance(answer, Pending):
        return answer, ctx, request_id
    if request_id is _MISSING:
        return None, ctx, request_id
    return {"jsonrpc": "2.0", "result": answer, "id": request_id}, ctx, request_id


def _invalid(exc: InvalidRequest) -> tuple[Reply, None, Any]:
    return _response(exc.request_id, error=exc), None, exc.request_id


async def _run_member(router: Router, pending: Pending, request_id: Any) -> Reply | None:
    try:
        result = await router.run_checked(pending)
    except RpcError as exc:
        return _failed(pending.proc.path, request_id, exc, pending.ctx.caller)
    return _succeeded(request_id, result)


def _failed(method: str, request_id: Any, exc: RpcError, caller: Caller) -> Reply | None:
    if request_id is _MISSING:
        log.info("notification %s failed: %s", method, exc.message)
        return None
    return _response(request_id, error=exc, operator=caller.authenticated)


def _succeeded(request_id: Any, result: Any) -> Reply | None:
    return None if request_id is _MISSING else _response(request_id, result=result)


async def _call_batch(
    router: Router, answers: Answers, members: list[Any], caller: Caller, request: web.Request
) -> list[Reply]:
    """Every member's reply, in order (notifications have none). What needs no waiting is
    answered first, synchronously, without a coroutine or a Task each; the rest run
    concurrently."""
    started = [_start_member(answers, member, caller, request) for member in members]
    pending = [
        (i, reply, rid) for i, (reply, _, rid) in enumerate(started) if isinstance(reply, Pending)
    ]
    ran = (
        await asyncio.gather(*(_run_member(router, p, rid) for _, p, rid in pending))
        if pending
        else []
    )
    replies = [reply for reply, _, _ in started]
    for (i, _, _), reply in zip(pending, ran, strict=True):
        replies[i] = reply
    return [reply for reply in replies if isinstance(reply, dict)]


def _encode(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type=JSON, headers=headers
    )


# A single call's answer headers, by the cache's verdict (wire/answer.py).
_ANSWER_HEADERS = AnswerHeaders({"Content-Type": JSON})


def _refusal(exc: RpcError, status: int = 200) -> web.Response:
    return _encode(_response(None, error=exc), status=status)


def _echoed_id(member: Any) -> Any:
    """The member's id when it is a valid one, else null (the spec's answer when unreadable)."""
    if not isinstance(member, dict):
        return None
    request_id = member.get("id")
    if isinstance(request_id, _ID_TYPES) and not isinstance(request_id, bool):
        return request_id
    return None


def _caller_refused(payload: Any, exc: RpcError, max_batch_size: int) -> web.Response:
    """A bad or throttled token: the refusal answers each request with its own id (a batch
    within the size limit gets one error per member), with the refusal's HTTP status."""
    if isinstance(payload, list) and 0 < len(payload) <= max_batch_size:
        answer: Any = [_response(_echoed_id(member), error=exc) for member in payload]
    else:
        answer = _response(_echoed_id(payload), error=exc)
    headers = {"Retry-After": exc.retry_after_header} if isinstance(exc, TooManyRequests) else None
    return _encode(answer, status=exc.info.http_status, headers=headers)


def rpc_handler(
    router: Router, auth: Authenticator, *, max_body_bytes: int, max_batch_size: int
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The ``POST /rpc`` handler, bound to its app's parts once rather than looked up in the
    app per request (a cached hit is measured in microseconds)."""
    return partial(
        handle_rpc, router, router.answers("jsonrpc"), auth, max_body_bytes, max_batch_size
    )


async def handle_rpc(
    router: Router,
    answers: Answers,
    auth: Authenticator,
    max_body_bytes: int,
    max_batch_size: int,
    request: web.Request,
) -> web.StreamResponse:
    try:
        # No coroutine when the body has all arrived, as an RPC request's nearly always has.
        raw = body.arrived(request, max_body_bytes)
        if raw is None:
            raw = await body.read(request, max_body_bytes)
    except RpcError as exc:  # too large
        return _refusal(exc, status=413)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _refusal(RpcError(ErrorCode.PARSE_ERROR, str(exc)))
    # Parsed first, so that a refused caller's answer carries the request's id.
    caller = ANONYMOUS
    authorization = request.headers.get("Authorization")
    if authorization:  # the peer's address (a syscall) only when there is a token to check
        try:
            caller = auth.caller_for_header(authorization, auth.client_of(request))
        except RpcError as exc:
            return _caller_refused(payload, exc, max_batch_size)

    if isinstance(payload, list):
        if not payload:
            return _refusal(InvalidRequest("empty batch"))
        if len(payload) > max_batch_size:
            too_many = InvalidRequest(
                f"a batch may hold at most {max_batch_size} requests, got {len(payload)}",
                code=ErrorCode.PAYLOAD_TOO_LARGE,
            )
            return _refusal(too_many, status=413)
        replies = await _call_batch(router, answers, payload, caller, request)
        if not replies:
            return web.Response(status=204)
        return _encode(replies)

    # One request: started here and awaited only when it must run (a hit needs no coroutine).
    answer, ctx, request_id = _start_member(answers, payload, caller, request)
    if isinstance(answer, Pending):
        answer = await _run_member(router, answer, request_id)
    if answer is None:
        return web.Response(status=204)
    verdict = ctx.meta.get("cache") if ctx is not None else None
    return JsonAnswer(orjson.dumps(answer), _ANSWER_HEADERS[verdict])
