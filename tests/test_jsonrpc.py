"""JSON-RPC 2.0 at POST /rpc: every example of the specification (section 7), adapted to
dotted method names, plus auth, limits and the real catalogue."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from server.app import create_app
from server.config import Settings
from server.errors import ErrorCode, RpcError
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, mutation, query

TOKEN = "alice-token-0123456789"
NOTIFIED: list[str] = []


class Subtract(BaseModel):
    minuend: int
    subtrahend: int


class Values(BaseModel):
    values: list[int] = []


class Note(BaseModel):
    text: str


async def subtract(_ctx: Context, inp: Subtract) -> int:
    return inp.minuend - inp.subtrahend


async def total(_ctx: Context, inp: Values) -> int:
    return sum(inp.values)


async def get_data(_ctx: Context, _: NoInput) -> list[Any]:
    return ["hello", 5]


async def record(ctx: Context, inp: Note) -> dict[str, Any]:
    NOTIFIED.append(inp.text)
    return {"by": ctx.caller.name, "text": inp.text}


async def conflict(_ctx: Context, _: NoInput) -> None:
    raise RpcError(ErrorCode.CONFLICT, "already done", details={"id": 7})


async def crash(_ctx: Context, _: NoInput) -> None:
    raise ZeroDivisionError("secret internals")


PROCEDURES: list[Procedure] = [
    query(
        "math.subtract",
        subtract,
        input=Subtract,
        positional=("minuend", "subtrahend"),
        options=(Cost.CHEAP,),
    ),
    query("math.sum", total, input=Values, options=(Cost.CHEAP,)),
    query("data.get", get_data, options=(Cost.CHEAP,)),
    query("notes.update", record, input=Note, options=(Cost.CHEAP,)),
    mutation("notes.record", record, input=Note, options=(Cost.OPERATOR,)),
    query("fail.conflict", conflict, options=(Cost.CHEAP,)),
    query("fail.crash", crash, options=(Cost.CHEAP,)),
]


@pytest.fixture
async def rpc(aiohttp_client: Any) -> TestClient:
    settings = Settings(auth_tokens={"alice": TOKEN}, max_batch_size=5, max_body_bytes=4096)
    return await aiohttp_client(create_app(settings, procedures=PROCEDURES))


async def post(client: TestClient, body: str | bytes, **headers: str) -> tuple[int, Any]:
    resp = await client.post("/rpc", data=body, headers=headers)
    raw = await resp.read()
    return resp.status, (orjson.loads(raw) if raw else None)


async def test_positional_parameters(rpc: TestClient) -> None:
    body = '{"jsonrpc": "2.0", "method": "math.subtract", "params": [42, 23], "id": 1}'
    assert await post(rpc, body) == (200, {"jsonrpc": "2.0", "result": 19, "id": 1})
    body = '{"jsonrpc": "2.0", "method": "math.subtract", "params": [23, 42], "id": 2}'
    assert await post(rpc, body) == (200, {"jsonrpc": "2.0", "result": -19, "id": 2})


async def test_named_parameters(rpc: TestClient) -> None:
    body = (
        '{"jsonrpc":"2.0","method":"math.subtract","params":{"subtrahend":23,"minuend":42},"id":3}'
    )
    assert await post(rpc, body) == (200, {"jsonrpc": "2.0", "result": 19, "id": 3})
    body = (
        '{"jsonrpc":"2.0","method":"math.subtract","params":{"minuend":42,"subtrahend":23},"id":4}'
    )
    assert await post(rpc, body) == (200, {"jsonrpc": "2.0", "result": 19, "id": 4})


async def test_notification_is_run_but_not_answered(rpc: TestClient) -> None:
    NOTIFIED.clear()
    status, payload = await post(
        rpc, '{"jsonrpc": "2.0", "method": "notes.update", "params": {"text": "hi"}}'
    )
    assert (status, payload) == (204, None)
    assert NOTIFIED == ["hi"]
    assert await post(rpc, '{"jsonrpc": "2.0", "method": "data.get"}') == (204, None)


async def test_non_existent_method(rpc: TestClient) -> None:
    status, payload = await post(rpc, '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert status == 200
    assert payload["id"] == "1"
    assert payload["error"]["code"] == -32601
    assert payload["error"]["message"] == "Method not found"
    assert payload["error"]["data"]["code"] == "NOT_FOUND"


async def test_invalid_json(rpc: TestClient) -> None:
    body = '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]'
    status, payload = await post(rpc, body)
    assert status == 200
    assert payload["id"] is None
    assert payload["error"]["code"] == -32700
    assert payload["error"]["message"] == "Parse error"


async def test_invalid_request_object(rpc: TestClient) -> None:
    status, payload = await post(rpc, '{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
    assert payload == {
        "jsonrpc": "2.0",
        "error": {
            "code": -32600,
            "message": "Invalid Request",
            "data": {
                "code": "BAD_REQUEST",
                "httpStatus": 400,
                "message": '"method" must be a string',
            },
        },
        "id": None,
    }


async def test_batch_with_invalid_json(rpc: TestClient) -> None:
    body = """[
      {"jsonrpc": "2.0", "method": "math.sum", "params": [1,2,4], "id": "1"},
      {"jsonrpc": "2.0", "method"
    ]"""
    status, payload = await post(rpc, body)
    assert isinstance(payload, dict)
    assert payload["error"]["code"] == -32700
    assert payload["id"] is None


async def test_empty_array(rpc: TestClient) -> None:
    status, payload = await post(rpc, "[]")
    assert isinstance(payload, dict)
    assert payload["error"]["code"] == -32600
    assert payload["id"] is None


async def test_invalid_batch_not_empty(rpc: TestClient) -> None:
    status, payload = await post(rpc, "[1]")
    assert isinstance(payload, list) and len(payload) == 1
    assert payload[0]["error"]["code"] == -32600
    assert payload[0]["id"] is None


async def test_invalid_batch(rpc: TestClient) -> None:
    status, payload = await post(rpc, "[1,2,3]")
    assert [p["error"]["code"] for p in payload] == [-32600, -32600, -32600]
    assert all(p["id"] is None for p in payload)


async def test_rpc_call_batch(rpc: TestClient) -> None:
    body = """[
        {"jsonrpc": "2.0", "method": "math.sum", "params": {"values": [1,2,4]}, "id": "1"},
        {"jsonrpc": "2.0", "method": "notes.update", "params": {"text": "seven"}},
        {"jsonrpc": "2.0", "method": "math.subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "data.get", "id": "9"}
    ]"""
    settings = Settings(auth_tokens={"alice": TOKEN})
    status, payload = await post(rpc, body)
    assert status == 413  # max_batch_size=5 in this fixture: the whole batch is refused
    assert payload["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE"
    assert settings.rpc.max_batch_size >= 6
    app = create_app(settings, procedures=PROCEDURES)
    from aiohttp.test_utils import TestServer

    async with TestClient(TestServer(app)) as client:
        status, payload = await post(client, body)
    assert status == 200
    by_id = {p["id"]: p for p in payload}
    assert len(payload) == 5  # the notification gets no answer
    assert by_id["1"]["result"] == 7
    assert by_id["2"]["result"] == 19
    assert by_id[None]["error"]["code"] == -32600
    assert by_id["5"]["error"]["code"] == -32601
    assert by_id["9"]["result"] == ["hello", 5]


async def test_rpc_call_batch_all_notifications(rpc: TestClient) -> None:
    NOTIFIED.clear()
    body = """[
        {"jsonrpc": "2.0", "method": "notes.update", "params": {"text": "a"}},
        {"jsonrpc": "2.0", "method": "notes.update", "params": {"text": "b"}}
    ]"""
    assert await post(rpc, body) == (204, None)
    assert sorted(NOTIFIED) == ["a", "b"]


async def test_id_is_echoed_exactly(rpc: TestClient) -> None:
    for request_id in [0, -1, 1.5, "", "x" * 100, None, 2**53]:
        body = orjson.dumps({"jsonrpc": "2.0", "method": "data.get", "id": request_id})
        status, payload = await post(rpc, body)
        assert payload["id"] == request_id
        assert payload["result"] == ["hello", 5]


@pytest.mark.parametrize(
    ("member", "detail"),
    [
        ({"jsonrpc": "1.0", "method": "data.get", "id": 1}, '"jsonrpc" must be exactly "2.0"'),
        ({"method": "data.get", "id": 1}, '"jsonrpc" must be exactly "2.0"'),
        ({"jsonrpc": "2.0", "method": "data.get", "params": 3, "id": 1}, '"params" must be'),
        ({"jsonrpc": "2.0", "method": "data.get", "id": {"a": 1}}, "id must be"),
        ({"jsonrpc": "2.0", "method": "data.get", "id": True}, "id must be"),
    ],
)
async def test_malformed_members(rpc: TestClient, member: dict[str, Any], detail: str) -> None:
    status, payload = await post(rpc, orjson.dumps(member))
    assert status == 200
    assert payload["error"]["code"] == -32600
    assert detail in payload["error"]["data"]["message"]


async def test_positional_params_refused_where_not_declared(rpc: TestClient) -> None:
    body = '{"jsonrpc": "2.0", "method": "notes.update", "params": ["x"], "id": 1}'
    status, payload = await post(rpc, body)
    assert payload["error"]["code"] == -32602
    assert "by name" in payload["error"]["data"]["message"]


async def test_wrong_types_are_invalid_params(rpc: TestClient) -> None:
    body = (
        '{"jsonrpc":"2.0","method":"math.subtract","params":{"minuend":"x","subtrahend":1},"id":1}'
    )
    status, payload = await post(rpc, body)
    error = payload["error"]
    assert (error["code"], error["message"]) == (-32602, "Invalid params")
    assert error["data"]["issues"][0]["path"] == "minuend"
    assert "minuend" in error["data"]["message"]


async def test_application_error_carries_trpc_code(rpc: TestClient) -> None:
    status, payload = await post(rpc, '{"jsonrpc":"2.0","method":"fail.conflict","id":1}')
    assert payload["error"] == {
        "code": -32009,
        "message": "already done",
        "data": {"code": "CONFLICT", "httpStatus": 409, "id": 7},
    }


async def test_unexpected_exception_is_internal_without_details(rpc: TestClient) -> None:
    status, payload = await post(rpc, '{"jsonrpc":"2.0","method":"fail.crash","id":1}')
    assert status == 200
    assert payload["error"]["code"] == -32603
    assert payload["error"]["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret" not in orjson.dumps(payload).decode()


async def test_mutation_needs_operator_token(rpc: TestClient) -> None:
    body = '{"jsonrpc":"2.0","method":"notes.record","params":{"text":"x"},"id":1}'
    status, payload = await post(rpc, body)
    assert payload["error"]["code"] == -32001
    assert payload["error"]["data"]["code"] == "UNAUTHORIZED"
    status, payload = await post(rpc, body, Authorization=f"Bearer {TOKEN}")
    assert payload["result"] == {"by": "alice", "text": "x"}


@pytest.mark.parametrize("header", ["Bearer wrong-token-0123456789", "Basic abc", "Bearer "])
async def test_bad_credentials_are_refused(rpc: TestClient, header: str) -> None:
    status, payload = await post(
        rpc, '{"jsonrpc":"2.0","method":"data.get","id":1}', Authorization=header
    )
    assert status == 401
    assert payload["error"]["data"]["code"] == "UNAUTHORIZED"


async def test_read_tokens_required(aiohttp_client: Any) -> None:
    settings = Settings(auth_tokens={"alice": TOKEN}, read_tokens_required=True)
    client = await aiohttp_client(create_app(settings, procedures=PROCEDURES))
    status, payload = await post(client, '{"jsonrpc":"2.0","method":"data.get","id":1}')
    assert payload["error"]["data"]["code"] == "UNAUTHORIZED"
    status, payload = await post(
        client, '{"jsonrpc":"2.0","method":"data.get","id":1}', Authorization=f"Bearer {TOKEN}"
    )
    assert payload["result"] == ["hello", 5]


async def test_oversized_body_gets_json_error(rpc: TestClient) -> None:
    body = orjson.dumps(
        {"jsonrpc": "2.0", "method": "notes.update", "params": {"text": "x" * 5000}, "id": 1}
    )
    status, payload = await post(rpc, body)
    assert status == 413
    assert payload["error"]["code"] == -32013
    assert payload["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_discover_lists_procedures_with_schemas(rpc: TestClient) -> None:
    for params in ("", ', "params": []'):
        status, payload = await post(
            rpc, f'{{"jsonrpc":"2.0","method":"rpc.discover"{params},"id":1}}'
        )
        doc = payload["result"]
        assert doc["openrpc"].startswith("1.3")
        methods = {m["name"]: m for m in doc["methods"]}
        assert set(methods) == {p.path for p in PROCEDURES} | {"rpc.discover"}
        sub = methods["math.subtract"]
        assert [p["name"] for p in sub["params"]] == ["minuend", "subtrahend"]
        assert all(p["required"] for p in sub["params"])
        assert sub["paramStructure"] == "by-position"
        assert -32001 in [e["code"] for e in methods["notes.record"]["errors"]]


async def test_real_catalogue_health(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(Settings()))
    status, payload = await post(
        client, '{"jsonrpc":"2.0","method":"monitoring.unifiedHealth","id":1}'
    )
    result = payload["result"]
    assert result["status"] == "healthy"
    assert {c["name"]: c["status"] for c in result["components"]} == {
        "database": "not_configured",
        "redis": "not_configured",
    }
