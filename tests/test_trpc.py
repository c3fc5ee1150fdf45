"""The tRPC HTTP protocol at /trpc/{path}, case by case against @trpc/server v11's behaviour
(server/wire/trpc.py names the v11 files each rule comes from), plus long URLs and the real
catalogue on real Postgres and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from server.app import create_app
from server.appkeys import BREAKERS
from server.config import Settings
from server.errors import ErrorCode, RpcError
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, mutation, query

TOKEN = "alice-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


class Add(BaseModel):
    a: int
    b: int


class Note(BaseModel):
    text: str


async def add(_ctx: Context, inp: Add) -> int:
    return inp.a + inp.b


async def get_data(_ctx: Context, _: NoInput) -> list[Any]:
    return ["hello", 5]


async def echo(_ctx: Context, inp: Note) -> str:
    return inp.text


async def record(ctx: Context, inp: Note) -> dict[str, Any]:
    return {"by": ctx.caller.name, "text": inp.text}


async def touch(ctx: Context, _: NoInput) -> str:
    return f"touched by {ctx.caller.name}"


async def conflict(_ctx: Context, _: NoInput) -> None:
    raise RpcError(ErrorCode.CONFLICT, "already done", details={"id": 7, "code": "ignored"})


async def crash(_ctx: Context, _: NoInput) -> None:
    raise ZeroDivisionError("secret internals")


async def mark_cached(ctx: Context, proc: Procedure, inp: BaseModel, nxt: Any) -> Any:
    ctx.meta["cache"] = "HIT"
    return await nxt(ctx, inp)


PROCEDURES: list[Procedure] = [
    query("math.add", add, input=Add, options=(Cost.CHEAP,)),
    query("data.get", get_data, options=(Cost.CHEAP,)),
    query("echo.text", echo, input=Note, options=(Cost.CHEAP,)),
    query("data.cached", get_data, middleware=(mark_cached,), options=(Cost.CHEAP,)),
    query("data.rpcOnly", get_data, protocols=frozenset({"jsonrpc"}), options=(Cost.CHEAP,)),
    mutation("notes.record", record, input=Note, options=(Cost.OPERATOR,)),
    mutation("notes.touch", touch, options=(Cost.OPERATOR,)),
    query("fail.conflict", conflict, options=(Cost.CHEAP,)),
    query("fail.crash", crash, options=(Cost.CHEAP,)),
]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_tokens": {"alice": TOKEN},
        "max_batch_size": 5,
        "max_body_bytes": 4096,
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def trpc(aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(make_settings(), procedures=PROCEDURES))


def url(path: str, *, batch: bool = False, input: Any = None, raw_input: str | None = None) -> str:
    params = []
    if batch:
        params.append("batch=1")
    if input is not None:
        raw_input = json.dumps(input)
    if raw_input is not None:
        params.append(f"input={quote(raw_input, safe='')}")
    return f"/trpc/{path}" + (f"?{'&'.join(params)}" if params else "")


async def send(
    client: TestClient,
    method: str,
    target: str,
    body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    resp = await client.request(method, target, data=body, headers=headers or {})
    raw = await resp.read()
    return resp.status, (orjson.loads(raw) if raw else None), resp.headers


def error(code: ErrorCode, number: int, status: int, message: str, path: str | None) -> Any:
    data: dict[str, Any] = {"code": code.value, "httpStatus": status}
    if path is not None:
        data["path"] = path
    return {"error": {"message": message, "code": number, "data": data}}


# --- queries, mutations, envelopes ---


async def test_query_without_input(trpc: TestClient) -> None:
    status, payload, headers = await send(trpc, "GET", url("data.get"))
    assert (status, payload) == (200, {"result": {"data": ["hello", 5]}})
    assert headers["Content-Type"] == "application/json"
    assert headers["Vary"] == "trpc-accept, accept"
    assert "X-Cache" not in headers


async def test_query_with_input(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("math.add", input={"a": 2, "b": 40}))
    assert (status, payload) == (200, {"result": {"data": 42}})
    # URLSearchParams reads "+" as a space; so does aiohttp.
    status, payload, _ = await send(trpc, "GET", '/trpc/echo.text?input={"text":"a+b"}')
    assert payload == {"result": {"data": "a b"}}


@pytest.mark.parametrize("target", ["/trpc/data.get?input=", "/trpc/data.get?input=null"])
async def test_empty_or_null_input_is_no_input(trpc: TestClient, target: str) -> None:
    assert (await send(trpc, "GET", target))[:2] == (200, {"result": {"data": ["hello", 5]}})


async def test_trailing_slash_is_trimmed(trpc: TestClient) -> None:
    assert (await send(trpc, "GET", "/trpc/data.get/"))[:2] == (
        200,
        {"result": {"data": ["hello", 5]}},
    )


async def test_mutation_with_token(trpc: TestClient) -> None:
    status, payload, _ = await send(
        trpc, "POST", "/trpc/notes.record", '{"text": "hi"}', JSON | AUTH
    )
    assert (status, payload) == (200, {"result": {"data": {"by": "alice", "text": "hi"}}})


async def test_mutation_with_empty_body_has_no_input(trpc: TestClient) -> None:
    # httpLink sends no body for an undefined input (v11.25 contentType.ts reads it as none).
    status, payload, _ = await send(trpc, "POST", "/trpc/notes.touch", None, JSON | AUTH)
    assert (status, payload) == (200, {"result": {"data": "touched by alice"}})


async def test_mutation_without_token_is_unauthorized(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "POST", "/trpc/notes.record", '{"text":"x"}', JSON)
    assert status == 401
    assert payload == error(
        ErrorCode.UNAUTHORIZED,
        -32001,
        401,
        "notes.record is a mutation: it needs an operator token",
        "notes.record",
    )


async def test_query_input_on_a_post_is_ignored(trpc: TestClient) -> None:
    target = url("notes.record", input={"text": "from the url"})
    status, payload, _ = await send(trpc, "POST", target, '{"text": "from the body"}', JSON | AUTH)
    assert payload["result"]["data"]["text"] == "from the body"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer wrong-token-0123456789", "Invalid token"),
        ("Basic abc", "Authorization must be 'Bearer <token>'"),
    ],
)
async def test_bad_credentials_fail_each_call(trpc: TestClient, header: str, message: str) -> None:
    status, payload, _ = await send(trpc, "GET", url("data.get"), headers={"Authorization": header})
    assert status == 401
    assert payload == error(ErrorCode.UNAUTHORIZED, -32001, 401, message, "data.get")
    # As in v11, where a failing createContext fails each call after its path and method
    # checks: a missing procedure is still NOT_FOUND.
    status, payload, _ = await send(
        trpc, "GET", url("nope,data.get", batch=True), headers={"Authorization": header}
    )
    assert status == 207
    assert [item["error"]["data"]["code"] for item in payload] == ["NOT_FOUND", "UNAUTHORIZED"]


async def test_read_tokens_required(aiohttp_client: Any) -> None:
    settings = make_settings(read_tokens_required=True)
    client = await aiohttp_client(create_app(settings, procedures=PROCEDURES))
    status, payload, _ = await send(client, "GET", url("data.get"))
    assert (status, payload["error"]["data"]["code"]) == (401, "UNAUTHORIZED")
    status, payload, _ = await send(client, "GET", url("data.get"), headers=AUTH)
    assert (status, payload) == (200, {"result": {"data": ["hello", 5]}})


# --- errors of one call ---


async def test_unknown_procedure(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("nope.nothing"))
    assert status == 404
    assert payload == error(
        ErrorCode.NOT_FOUND,
        -32004,
        404,
        'No procedure found on path "nope.nothing"',
        "nope.nothing",
    )


@pytest.mark.parametrize("path", ["rpc.discover", "data.rpcOnly"])
async def test_jsonrpc_only_procedures_are_not_found(trpc: TestClient, path: str) -> None:
    status, payload, _ = await send(trpc, "GET", url(path))
    assert (status, payload["error"]["data"]["code"]) == (404, "NOT_FOUND")


async def test_query_as_post_is_method_not_supported(trpc: TestClient) -> None:
    status, payload, headers = await send(trpc, "POST", "/trpc/data.get", "{}", JSON | AUTH)
    assert status == 405
    assert headers["Allow"] == "GET"
    assert payload == error(
        ErrorCode.METHOD_NOT_SUPPORTED,
        -32005,
        405,
        'Unsupported POST-request to query procedure at path "data.get"',
        "data.get",
    )


async def test_mutation_as_get_is_method_not_supported(trpc: TestClient) -> None:
    status, payload, headers = await send(trpc, "GET", url("notes.record"), headers=AUTH)
    assert (status, headers["Allow"]) == (405, "POST")
    message = 'Unsupported GET-request to mutation procedure at path "notes.record"'
    assert payload["error"]["message"] == message


async def test_other_methods(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "PUT", "/trpc/data.get", "{}", JSON)
    assert status == 405
    assert (
        payload["error"]["message"]
        == 'Unsupported PUT-request to query procedure at path "data.get"'
    )
    # v11 reads anything but a GET by its content type first.
    status, payload, _ = await send(trpc, "OPTIONS", "/trpc/data.get")
    assert (status, payload) == (
        415,
        error(ErrorCode.UNSUPPORTED_MEDIA_TYPE, -32015, 415, "Missing content-type header", None),
    )


async def test_head_is_no_content(trpc: TestClient) -> None:
    resp = await trpc.head("/trpc/anything")
    assert resp.status == 204
    assert await resp.read() == b""


async def test_bad_input_is_bad_request_with_issues(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("math.add", input={"a": "x", "b": 1}))
    assert status == 400
    err = payload["error"]
    assert (err["code"], err["data"]["code"], err["data"]["path"]) == (
        -32600,
        "BAD_REQUEST",
        "math.add",
    )
    assert err["data"]["issues"][0]["path"] == "a"
    assert err["message"].startswith("Invalid input for math.add")


async def test_application_error_details_join_data(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("fail.conflict"))
    assert status == 409
    assert payload == {
        "error": {
            "message": "already done",
            "code": -32009,
            # a detail never replaces a standard field: "code" stays the tRPC code
            "data": {"code": "CONFLICT", "httpStatus": 409, "path": "fail.conflict", "id": 7},
        }
    }


async def test_unexpected_exception_is_internal_without_details(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("fail.crash"))
    assert status == 500
    assert payload == error(
        ErrorCode.INTERNAL_SERVER_ERROR, -32603, 500, "Internal server error", "fail.crash"
    )
    assert "secret" not in json.dumps(payload)


async def test_cache_header_on_single_answers(trpc: TestClient) -> None:
    status, payload, headers = await send(trpc, "GET", url("data.cached"))
    assert (status, headers["X-Cache"]) == (200, "HIT")
    status, payload, headers = await send(trpc, "GET", url("data.cached,data.get", batch=True))
    assert status == 200
    assert "X-Cache" not in headers


# --- failures of the whole request: one error object, no path ---


@pytest.mark.parametrize("batch", [False, True])
async def test_bad_input_json_fails_the_whole_request(trpc: TestClient, batch: bool) -> None:
    path = "math.add,data.get" if batch else "math.add"
    status, payload, _ = await send(trpc, "GET", url(path, batch=batch, raw_input='{"0": '))
    assert status == 400
    assert isinstance(payload, dict)
    assert payload["error"]["code"] == -32600
    assert payload["error"]["data"] == {"code": "BAD_REQUEST", "httpStatus": 400}
    assert payload["error"]["message"].startswith("The ?input= is not JSON")


async def test_bad_body_json_fails_the_whole_request(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "POST", "/trpc/notes.record", "{nope", JSON | AUTH)
    assert (status, payload["error"]["data"]) == (400, {"code": "BAD_REQUEST", "httpStatus": 400})
    assert payload["error"]["message"].startswith("The body is not JSON")


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (None, "Missing content-type header"),
        ("text/plain", 'Unsupported content-type "text/plain"'),
        (
            "multipart/form-data; boundary=x",
            'Unsupported content-type "multipart/form-data; boundary=x"',
        ),
        ("application/jsonx", 'Unsupported content-type "application/jsonx"'),
    ],
)
async def test_post_needs_json_content_type(
    trpc: TestClient, content_type: str | None, message: str
) -> None:
    headers = AUTH | ({"Content-Type": content_type} if content_type else {})
    resp = await trpc.post("/trpc/notes.record", data=b'{"text":"x"}', headers=headers)
    if content_type is None:
        # aiohttp's client adds application/octet-stream to a bytes body; send none at all
        resp.close()
        reader, writer = await asyncio.open_connection(trpc.host, trpc.port)
        writer.write(
            b"POST /trpc/notes.record HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n"
            b"Connection: close\r\n\r\n" + b'{"text":"x"}'
        )
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 415")
        payload = orjson.loads(body)
    else:
        assert resp.status == 415
        payload = await resp.json()
    assert payload == error(ErrorCode.UNSUPPORTED_MEDIA_TYPE, -32015, 415, message, None)


async def test_content_type_compares_case_insensitively(trpc: TestClient) -> None:
    headers = AUTH | {"Content-Type": "Application/JSON; charset=utf-8"}
    status, payload, _ = await send(trpc, "POST", "/trpc/notes.record", '{"text":"x"}', headers)
    assert (status, payload["result"]["data"]["text"]) == (200, "x")


async def test_oversized_body_is_payload_too_large(trpc: TestClient) -> None:
    body = orjson.dumps({"text": "x" * 5000})
    status, payload, _ = await send(trpc, "POST", "/trpc/notes.record", body, JSON | AUTH)
    assert status == 413
    assert payload == error(
        ErrorCode.PAYLOAD_TOO_LARGE, -32013, 413, "The body exceeds 4096 bytes", None
    )


async def test_malformed_path_escape(trpc: TestClient) -> None:
    # Sent raw: aiohttp's client would escape the "%".
    for raw, shown in [(b"data%ZZget", "data%ZZget"), (b"data%FFget", "data%FFget")]:
        head, payload = await raw_exchange(
            trpc, b"GET /trpc/" + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert head.startswith(b"HTTP/1.1 400")
        message = f'Invalid URL-encoding in path "/trpc/{shown}"'
        assert payload == error(ErrorCode.BAD_REQUEST, -32600, 400, message, None)


async def test_streaming_is_refused(trpc: TestClient) -> None:
    stream = {"trpc-accept": "application/jsonl"}
    status, payload, _ = await send(trpc, "GET", url("data.get"), headers=stream)
    assert (status, payload["error"]["message"]) == (
        400,
        "Streaming requests must be batched (you can do a batch of 1)",
    )
    status, payload, _ = await send(
        trpc, "GET", url("data.get", batch=True), headers={"Accept": "application/jsonl"}
    )
    assert (status, payload["error"]["data"]["code"]) == (501, "NOT_IMPLEMENTED")


# --- batches ---


async def test_batch_of_queries_answers_in_order(trpc: TestClient) -> None:
    target = url(
        "math.add,data.get,echo.text,math.add",
        batch=True,
        input={"0": {"a": 1, "b": 2}, "2": {"text": "third"}, "3": {"a": 10, "b": -3}},
    )
    status, payload, _ = await send(trpc, "GET", target)
    assert status == 200
    assert payload == [
        {"result": {"data": 3}},
        {"result": {"data": ["hello", 5]}},
        {"result": {"data": "third"}},
        {"result": {"data": 7}},
    ]


async def test_batch_of_one(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("data.get", batch=True))
    assert (status, payload) == (200, [{"result": {"data": ["hello", 5]}}])


async def test_batch_with_differing_statuses_is_multi_status(trpc: TestClient) -> None:
    target = url("data.get,nope,math.add", batch=True, input={"2": {"a": "x", "b": 1}})
    status, payload, _ = await send(trpc, "GET", target)
    assert status == 207
    assert payload[0] == {"result": {"data": ["hello", 5]}}
    assert payload[1] == error(
        ErrorCode.NOT_FOUND, -32004, 404, 'No procedure found on path "nope"', "nope"
    )
    assert (payload[2]["error"]["data"]["code"], payload[2]["error"]["data"]["path"]) == (
        "BAD_REQUEST",
        "math.add",
    )


async def test_batch_with_one_shared_error_status(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("nope,nada", batch=True))
    assert status == 404
    assert [item["error"]["data"]["path"] for item in payload] == ["nope", "nada"]


async def test_empty_batch_is_one_call_on_an_empty_path(trpc: TestClient) -> None:
    # v11 splits "" into [""]: one NOT_FOUND in an array.
    status, payload, _ = await send(trpc, "GET", "/trpc/?batch=1")
    assert (status, payload) == (
        404,
        [error(ErrorCode.NOT_FOUND, -32004, 404, 'No procedure found on path ""', "")],
    )


async def test_comma_without_batch_flag_is_one_path(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("data.get,data.get"))
    assert (status, payload["error"]["data"]["path"]) == (404, "data.get,data.get")


async def test_batch_of_mutations(trpc: TestClient) -> None:
    body = '{"0": {"text": "a"}, "2": {"text": "c"}}'
    status, payload, _ = await send(
        trpc, "POST", "/trpc/notes.record,notes.touch,notes.record?batch=1", body, JSON | AUTH
    )
    assert status == 200
    assert payload == [
        {"result": {"data": {"by": "alice", "text": "a"}}},
        {"result": {"data": "touched by alice"}},
        {"result": {"data": {"by": "alice", "text": "c"}}},
    ]


@pytest.mark.parametrize("flag", ["0", "true", "2", ""])
async def test_batch_flag_must_be_one(trpc: TestClient, flag: str) -> None:
    status, payload, _ = await send(trpc, "GET", f"/trpc/data.get,data.get?batch={flag}")
    assert status == 400
    assert payload == error(
        ErrorCode.BAD_REQUEST, -32600, 400, f'"batch" must be 1, got "{flag}"', None
    )


async def test_batch_over_the_limit(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url(",".join(["data.get"] * 6), batch=True))
    assert status == 400
    assert isinstance(payload, dict)
    assert payload["error"]["message"].startswith("Batch call exceeds maximum size")
    assert payload["error"]["data"] == {"code": "BAD_REQUEST", "httpStatus": 400}
    status, payload, _ = await send(trpc, "GET", url(",".join(["data.get"] * 5), batch=True))
    assert (status, len(payload)) == (200, 5)


@pytest.mark.parametrize("raw_input", ['[{"a": 1}]', "null", "3"])
async def test_batch_input_must_be_an_object(trpc: TestClient, raw_input: str) -> None:
    status, payload, _ = await send(trpc, "GET", url("data.get", batch=True, raw_input=raw_input))
    assert status == 400
    message = '"input" needs to be an object when doing a batch call'
    assert payload == error(ErrorCode.BAD_REQUEST, -32600, 400, message, None)


async def test_batch_cannot_mix_queries_and_mutations(trpc: TestClient) -> None:
    status, payload, _ = await send(trpc, "GET", url("data.get,nope,notes.touch", batch=True))
    assert status == 400
    message = "Cannot mix procedure types in call: query, mutation"
    assert payload == error(ErrorCode.BAD_REQUEST, -32600, 400, message, None)


# --- long URLs ---


@pytest.fixture
async def served(aiohttp_client: Any) -> TestClient:
    app = create_app(make_settings(max_batch_size=100), procedures=PROCEDURES)
    return await aiohttp_client(app)


def long_batch_target(target_bytes: int) -> str:
    """A batched GET of `echo.text` calls whose URL is about `target_bytes` long."""
    count = 50
    text = "x" * (target_bytes // count)
    inputs = {str(i): {"text": text} for i in range(count)}
    return url(",".join(["echo.text"] * count), batch=True, input=inputs)


async def test_long_batched_get_works(served: TestClient) -> None:
    target = long_batch_target(20_000)
    assert 20_000 < len(target) < Settings().server.max_url_bytes
    status, payload, _ = await send(served, "GET", target)
    assert status == 200
    assert len(payload) == 50
    assert all(item["result"]["data"] == "x" * 400 for item in payload)


async def raw_exchange(client: TestClient, request: bytes) -> tuple[bytes, Any]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, orjson.loads(body)


async def test_url_over_the_limit_gets_json_error(served: TestClient) -> None:
    limit = Settings().server.max_url_bytes
    target = long_batch_target(limit + 1000)
    assert len(target) > limit
    status, payload, headers = await send(served, "GET", target)
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert payload["error"]["code"] == -32013
    assert payload["error"]["data"] == {"code": "PAYLOAD_TOO_LARGE", "httpStatus": 413}
    assert f"longer than {limit} bytes" in payload["error"]["message"]


async def test_header_over_the_limit_gets_json_error(served: TestClient) -> None:
    limit = Settings().server.max_url_bytes
    status, payload, _ = await send(
        served, "GET", url("data.get"), headers={"X-Big": "y" * (limit + 10)}
    )
    assert (status, payload["error"]["data"]["code"]) == (413, "PAYLOAD_TOO_LARGE")


async def test_malformed_request_gets_json_error(served: TestClient) -> None:
    head, payload = await raw_exchange(
        served, b"GET /trpc/data.get HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"
    )
    # aiohttp answers what it could not parse as HTTP/1.0
    assert head.split(b" ", 2)[1] == b"400"
    assert b"Content-Type: application/json" in head
    assert payload["error"]["data"] == {"code": "BAD_REQUEST", "httpStatus": 400}
    assert payload["error"]["message"].startswith("Malformed HTTP request")


async def test_handler_errors_keep_aiohttp_default(served: TestClient) -> None:
    # Only parse errors change: anything else stays aiohttp's (here: an unknown route).
    resp = await served.get("/not-a-route")
    assert resp.status == 404
    assert resp.content_type == "text/plain"


# --- the real catalogue on real Postgres and Redis ---


@pytest.fixture
async def real(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> TestClient:
    return await aiohttp_client(create_app(make_settings()))


async def test_real_unified_health(real: TestClient) -> None:
    status, payload, _ = await send(real, "GET", url("monitoring.unifiedHealth"))
    assert status == 200
    health = payload["result"]["data"]
    assert health["status"] == "healthy"
    assert {c["name"]: c["status"] for c in health["components"]} == {
        "database": "up",
        "redis": "up",
    }


async def test_real_reset_circuit_breaker(real: TestClient, operator_token: str) -> None:
    # An operator's scene: the Redis breaker was forced open and must be closed again.
    real.app[BREAKERS].get("redis-cache").force_open("test: forced open")
    _, payload, _ = await send(real, "GET", url("monitoring.circuitBreakerStatus"))
    states = {b["name"]: b["state"] for b in payload["result"]["data"]["breakers"]}
    assert states["redis-cache"] == "forced_open"
    body = b'{"name": "redis-cache"}'
    target = "/trpc/monitoring.resetCircuitBreaker"
    status, payload, _ = await send(real, "POST", target, body, JSON)
    assert (status, payload["error"]["data"]["code"]) == (401, "UNAUTHORIZED")
    assert real.app[BREAKERS].get("redis-cache").state.value == "forced_open"
    bearer = {"Authorization": f"Bearer {operator_token}"}
    status, payload, _ = await send(real, "POST", target, body, JSON | bearer)
    assert status == 200
    assert (payload["result"]["data"]["name"], payload["result"]["data"]["state"]) == (
        "redis-cache",
        "closed",
    )
    status, payload, _ = await send(real, "POST", target, b'{"name": "no-such"}', JSON | bearer)
    assert (status, payload["error"]["data"]["code"]) == (404, "NOT_FOUND")
