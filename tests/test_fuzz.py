"""Property-based fuzzing (hypothesis) of both wire formats and the dashboard's forms.

Whatever arrives (random and malformed JSON, deep nesting, huge strings, invalid UTF-8, wrong
content types, broken ``?input=``, random form fields), the answer is never a 5xx, always the
protocol's own error shape, and memory stays bounded. Requests go over a raw socket to the real
app served by the production runner in a thread, so bytes no HTTP client would send (invalid
UTF-8 in the request line, control characters) reach the server as sent.

Kept under a minute for CI: a few hundred examples per wire, no datastores (the wire adapters
and forms are under test, not the collectors).
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.config import Settings
from server.runner import AppRunner
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN, SESSION_SECRET
from tests.stack.ports import HOST, free_port
from web.session import COOKIE_NAME, SessionCodec

MAX_BODY = 64 * 1024
FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,  # no .hypothesis folder in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PROCEDURES = [
    "monitoring.circuitBreakerStatus",
    "monitoring.cacheStats",
    "monitoring.cacheKeyStats",
    "monitoring.invalidateCache",
    "monitoring.resetCircuitBreaker",
    "monitoring.setCircuitBreakerState",
    "monitoring.unifiedHealth",
    "alerts.list",
    "alerts.acknowledge",
    "rpc.discover",
]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON;charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/octet-stream",
    "\x00/\xff",
    "",
]


# --- the server, in a thread, behind the production runner ---


@dataclass
class Served:
    port: int
    cookie: str  # a signed-in operator's session
    csrf: str


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    app_settings = Settings(
        auth_tokens={OPERATOR_NAME: OPERATOR_TOKEN},
        session_secret=SESSION_SECRET,
        alert_evaluation_enabled=False,
        max_body_bytes=MAX_BODY,
        auth_failure_limit=1_000_000,  # guesses here are fuzz, not an attack to throttle
    )
    port = free_port()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        runner = AppRunner(create_app(app_settings), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    codec = SessionCodec(SESSION_SECRET, {OPERATOR_NAME: OPERATOR_TOKEN}, 3600)
    session = codec.new(OPERATOR_NAME)
    try:
        yield Served(port, codec.encode(session), codec.csrf_token(session))
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def send(port: int, method: str, target: bytes, headers: dict[str, Any], body: bytes) -> Answer:
    """One request as raw bytes on its own connection; the whole answer."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {HOST}:{port}".encode()]
    for name, value in headers.items():
        if value is not None:
            raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
            lines.append(name.encode() + b": " + raw)
    lines += [f"Content-Length: {len(body)}".encode(), b"Connection: close", b"", b""]
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), found, payload)


# --- what to send ---

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # JSON numbers orjson writes
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
methods = st.sampled_from(PROCEDURES) | st.text(max_size=40)


@st.composite
def rpc_members(draw: st.DrawFn) -> Any:
    member: dict[str, Any] = {}
    if draw(st.booleans()):
        member["jsonrpc"] = draw(st.sampled_from(["2.0", "1.0", 2]) | json_values)
    else:
        member["jsonrpc"] = "2.0"
    member["method"] = draw(methods | json_values)
    if draw(st.booleans()):
        member["params"] = draw(json_values)
    if draw(st.booleans()):
        member["id"] = draw(json_values)
    return member if draw(st.integers(0, 9)) else draw(json_values)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _invalid_utf8(text: bytes, at: int) -> bytes:
    at = at % (len(text) + 1)
    return text[:at] + b"\xff\xfe\xc3" + text[at:]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["member", "batch", "bytes", "deep", "huge", "utf8", "empty"]))
    if kind == "member":
        return orjson.dumps(draw(rpc_members()))
    if kind == "batch":
        return orjson.dumps(draw(st.lists(rpc_members(), max_size=8)))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        return _deep(draw(st.integers(100, 20_000)))
    if kind == "huge":
        size = draw(st.sampled_from([MAX_BODY - 100, MAX_BODY + 1, 4 * MAX_BODY]))
        return (
            b'{"jsonrpc":"2.0","method":"alerts.list","params":{"x":"' + b"a" * size + b'"},"id":1}'
        )
    if kind == "utf8":
        text = orjson.dumps(draw(rpc_members()))
        return _invalid_utf8(text, draw(st.integers(0, 1000)))
    return b""


authorizations = st.sampled_from(
    [None, f"Bearer {OPERATOR_TOKEN}", "Bearer wrong-token", "Basic abc", "Bearer", "\x01"]
)


# --- the shapes every answer must have ---


def _jsonrpc_error_ok(error: Any) -> None:
    assert isinstance(error, dict)
    assert isinstance(error["code"], int) and isinstance(error["message"], str)
    assert isinstance(error["data"]["code"], str)


def check_jsonrpc(answer: Answer) -> None:
    assert answer.status < 500, answer
    if answer.status == 204:
        assert answer.body == b""
        return
    assert answer.headers["content-type"].startswith("application/json"), answer
    payload = answer.json()
    members = payload if isinstance(payload, list) else [payload]
    assert members
    for member in members:
        assert member["jsonrpc"] == "2.0" and "id" in member
        assert ("result" in member) != ("error" in member)
        if "error" in member:
            _jsonrpc_error_ok(member["error"])


def _trpc_error_ok(error: Any) -> None:
    assert isinstance(error["message"], str) and isinstance(error["code"], int)
    assert isinstance(error["data"]["code"], str)
    assert isinstance(error["data"]["httpStatus"], int)


def check_trpc(answer: Answer) -> None:
    assert answer.status < 500 or answer.status == 501, answer  # 501: streaming not served
    if answer.status == 204:
        return
    assert answer.headers["content-type"].startswith("application/json"), answer
    payload = answer.json()
    items = payload if isinstance(payload, list) else [payload]
    for item in items:
        assert ("result" in item) != ("error" in item), item
        if "error" in item:
            _trpc_error_ok(item["error"])
    if isinstance(payload, dict) and "error" in payload:
        assert payload["error"]["data"]["httpStatus"] == answer.status


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- the properties ---


@FUZZ
@given(body=bodies(), content_type=st.sampled_from(CONTENT_TYPES), auth=authorizations)
def test_jsonrpc_answers_every_body_in_its_own_shape(
    served: Served, body: bytes, content_type: str | None, auth: str | None
) -> None:
    answer = send(
        served.port,
        "POST",
        b"/rpc",
        {"Content-Type": content_type, "Authorization": auth},
        body,
    )
    check_jsonrpc(answer)


@st.composite
def trpc_requests(draw: st.DrawFn) -> tuple[str, bytes, bytes]:
    paths = draw(
        st.lists(st.sampled_from(PROCEDURES) | st.text(max_size=20), min_size=1, max_size=4)
    )
    path = quote(",".join(paths), safe=",.")
    if draw(st.booleans()):
        path = draw(st.sampled_from(["%", "%zz", "%ff%fe", "a%2"])) + path
    query: list[str] = []
    batch = draw(st.sampled_from([None, "1", "0", "true", ""]))
    if batch is not None:
        query.append(f"batch={batch}")
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]))
    body = b""
    kind = draw(st.sampled_from(["json", "raw", "broken", "none"]))
    if kind == "json":
        value = draw(json_values)
        if batch == "1" and draw(st.booleans()):
            value = {str(i): draw(json_values) for i in range(len(paths))}
        raw_input = orjson.dumps(value)
    elif kind == "raw":
        raw_input = draw(st.binary(max_size=100))
    elif kind == "broken":
        raw_input = draw(st.sampled_from([b"%", b"%zz", b"%ff%fe", b"{", _deep(5000)]))
    else:
        raw_input = b""
    if method == "GET" and kind != "none":
        escaped = raw_input if kind == "broken" else quote(raw_input, safe="").encode()
        query.append("input=" + escaped.decode("latin-1"))
    else:
        body = raw_input
    target = ("/trpc/" + path + ("?" + "&".join(query) if query else "")).encode("latin-1")
    if draw(st.integers(0, 9)) == 0:
        target = _invalid_utf8(target, draw(st.integers(6, 200)))
    return method, target, body


@FUZZ
@given(
    request=trpc_requests(),
    content_type=st.sampled_from(CONTENT_TYPES),
    auth=authorizations,
    accept=st.sampled_from([None, "application/jsonl", "*/*"]),
)
def test_trpc_answers_every_request_in_its_own_shape(
    served: Served,
    request: tuple[str, bytes, bytes],
    content_type: str | None,
    auth: str | None,
    accept: str | None,
) -> None:
    method, target, body = request
    headers = {"Content-Type": content_type, "Authorization": auth, "Accept": accept}
    check_trpc(send(served.port, method, target, headers, body))


@st.composite
def forms(draw: st.DrawFn) -> tuple[str, bytes, bytes, dict[str, Any]]:
    path = draw(
        st.sampled_from(["/login", "/logout", "/alerts/1/acknowledge"])
        | st.builds(lambda s: "/alerts/" + quote(s, safe="") + "/acknowledge", st.text(max_size=20))
    )
    fields: dict[str, str] = draw(
        st.dictionaries(
            st.sampled_from(["token", "csrf_token", "next", "note", "x"]) | st.text(max_size=5),
            st.text(max_size=50),
            max_size=5,
        )
    )
    signed_in = draw(st.booleans())
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    raw = "&".join(f"{quote(k)}={quote(v)}" for k, v in fields.items()).encode()
    kind = draw(st.sampled_from(["form", "bytes", "utf8", "huge"]))
    if kind == "bytes":
        raw = draw(st.binary(max_size=200))
    elif kind == "utf8":
        raw = _invalid_utf8(raw, draw(st.integers(0, 100)))
    elif kind == "huge":
        raw = b"note=" + b"n" * draw(st.sampled_from([MAX_BODY - 10, MAX_BODY + 10]))
    headers: dict[str, Any] = {"Content-Type": content_type}
    return path, raw, b"csrf" if signed_in else b"", headers


@FUZZ
@given(form=forms(), with_csrf=st.booleans(), query=st.text(max_size=30))
def test_dashboard_forms_never_fail_with_a_5xx(
    served: Served, form: tuple[str, bytes, bytes, dict[str, Any]], with_csrf: bool, query: str
) -> None:
    path, body, signed_in, headers = form
    if signed_in:
        headers["Cookie"] = f"{COOKIE_NAME}={served.cookie}"
        if with_csrf:
            body = f"csrf_token={quote(served.csrf)}&".encode() + body
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    target = (path + "?next=" + quote(query, safe="")).encode()
    answer = send(served.port, "POST", target, headers, body)
    assert answer.status < 500, answer
    get = send(served.port, "GET", b"/login?next=" + quote(query).encode(), headers, b"")
    assert get.status < 500, get


@settings(FUZZ, max_examples=100)  # each renders a whole page: fewer, to stay well under 60 s
@given(
    cookie=st.text(max_size=200) | st.sampled_from(["v1.", "v1..", "v1.e30.e30", "v1.W10.AA"]),
    path=st.sampled_from(["/", "/dashboard/sections", "/login", "/logout"]),
    view=st.text(max_size=10),
)
def test_dashboard_pages_read_any_cookie_as_no_session(
    served: Served, cookie: str, path: str, view: str
) -> None:
    value = cookie.encode("utf-8", "surrogateescape").replace(b"\r", b"").replace(b"\n", b"")
    headers = {"Cookie": b"infrawatch_session=" + value}
    target = (path + "?view=" + quote(view, safe="")).encode()
    answer = send(served.port, "GET", target, headers, b"")
    assert answer.status < 500, answer
    assert b"Signed in as" not in answer.body


def test_memory_stays_bounded_over_the_fuzzing(served: Served) -> None:
    # After the examples above: a thousand more of the largest bodies must not grow the heap.
    before = rss_kib()
    large = b'{"jsonrpc":"2.0","method":"alerts.list","params":{"x":"' + b"a" * (MAX_BODY - 100)
    for i in range(1000):
        body = (large + b'"},"id":1}') if i % 2 else _deep(20_000)
        check_jsonrpc(
            send(served.port, "POST", b"/rpc", {"Content-Type": "application/json"}, body)
        )
    grown_mib = (rss_kib() - before) / 1024
    assert grown_mib < 50, f"peak RSS grew {grown_mib:.1f} MiB over 1000 large requests"


def test_the_shapes_checked_are_the_protocols() -> None:
    # The checks above would pass vacuously if they accepted anything: they do not.
    with pytest.raises(AssertionError):
        check_jsonrpc(Answer(500, {"content-type": "application/json"}, b"{}"))
    with pytest.raises((AssertionError, KeyError)):
        check_jsonrpc(Answer(200, {"content-type": "application/json"}, b'{"jsonrpc":"2.0"}'))
    with pytest.raises((AssertionError, KeyError)):
        check_trpc(Answer(400, {"content-type": "application/json"}, json.dumps({"x": 1}).encode()))
