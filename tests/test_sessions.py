"""Sessions and credentials under hostile use: malformed cookies, copied cookies after sign-out,
token guessing, foreign Host headers, refused callers' request ids."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.auth import UNKNOWN_CLIENT, Authenticator
from server.cli import _share_session_secret
from server.config import Settings
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, query
from server.throttle import FailureThrottle
from server.wire.hosts import AllowedHosts, host_name
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN, SESSION_SECRET
from tests.dashboard_pages import csrf_in, sign_in
from tests.stack import RedisServer
from web.session import COOKIE_NAME, SessionCodec

Client = Callable[..., Awaitable[TestClient]]
BEARER = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


async def who(ctx: Context, _: NoInput) -> str | None:
    return ctx.caller.name


PROCEDURES: list[Procedure] = [query("test.who", who, options=(Cost.CHEAP,))]


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_tokens": {OPERATOR_NAME: OPERATOR_TOKEN},
        "session_secret": SESSION_SECRET,
        "alert_evaluation_enabled": False,
    }
    return Settings(**(values | overrides))


@pytest.fixture
def client(aiohttp_client: Any) -> Client:
    """``await client(**settings)``: the app without datastores (nothing here needs them)."""

    async def make(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(_settings(**overrides), procedures=PROCEDURES))

    return make


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _signed(payload: str) -> str:
    """A cookie with a valid MAC over any payload (what only the secret's holder can make)."""
    codec = SessionCodec(SESSION_SECRET, {}, 60)
    return f"v1.{payload}.{_b64(codec._mac(payload))}"


DEEP = _b64(b"[" * 10_000 + b"]" * 10_000)  # past json's recursion limit
MALFORMED_COOKIES = [
    f"v1.{DEEP}.{_b64(b'x' * 32)}",  # deep nesting, forged MAC
    "v1." + "A" * 4000 + "." + "B" * 43,
    "v1.e30.%%%",
    "v1..",
    "v2.e30.AAAA",
    "v1.e30",
    "v1.\u00e9\u00e9.\u00e9",
    "garbage",
    "v1.!!!.!!!",
    _signed("not base64 !"),
    _signed(_b64(b"{not json")),
    _signed(_b64(b"[1, 2]")),
    _signed(_b64(b'{"sid": 5, "exp": "soon"}')),
]


@pytest.mark.parametrize("cookie", MALFORMED_COOKIES)
async def test_any_malformed_session_cookie_reads_as_no_session(
    client: Client, cookie: str
) -> None:
    app = await client()
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    for method, path in (("GET", "/"), ("GET", "/login"), ("GET", "/dashboard/sections")):
        response = await app.request(method, path, headers=headers)
        assert response.status == 200, (path, await response.text())
        assert "Signed in as" not in await response.text()
    refused = await app.post("/logout", headers=headers, data={}, allow_redirects=False)
    assert refused.status == 403


def test_a_validly_signed_deeply_nested_payload_is_no_session() -> None:
    codec = SessionCodec(SESSION_SECRET, {}, 60)
    started = time.perf_counter()
    assert codec.decode(_signed(DEEP)) is None
    assert time.perf_counter() - started < 1.0


async def test_logout_revokes_a_copied_cookie_on_every_instance(
    aiohttp_client: Any, redis_url: str, redis_server: RedisServer
) -> None:
    # Two instances sharing the secret and Redis, as behind a load balancer.
    settings = _settings(redis_url=redis_url)
    first = await aiohttp_client(create_app(settings, procedures=PROCEDURES))
    second = await aiohttp_client(create_app(settings, procedures=PROCEDURES))
    csrf = await sign_in(first, OPERATOR_TOKEN)
    copied = first.session.cookie_jar.filter_cookies(first.make_url("/"))[COOKIE_NAME].value
    stolen = {"Cookie": f"{COOKIE_NAME}={copied}"}
    page = await second.get("/", headers=stolen)
    assert "Signed in as" in await page.text()

    response = await first.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert response.status == 303

    for instance in (first, second):
        page = await instance.get("/", headers=stolen)
        assert page.status == 200
        assert "Signed in as" not in await page.text()
    sid = SessionCodec(SESSION_SECRET, {OPERATOR_NAME: OPERATOR_TOKEN}, 60).decode(copied)
    assert sid is not None
    ttl = int(redis_server.cli("TTL", f"infrawatch:session:revoked:{sid.sid}"))
    assert 8 * 3600 - 60 < ttl <= 8 * 3600 + 1  # gone when the cookie would have expired


async def test_logout_revokes_in_process_without_redis(client: Client) -> None:
    app = await client()
    csrf = await sign_in(app, OPERATOR_TOKEN)
    copied = app.session.cookie_jar.filter_cookies(app.make_url("/"))[COOKIE_NAME].value
    await app.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    page = await app.get("/", headers={"Cookie": f"{COOKIE_NAME}={copied}"})
    assert "Signed in as" not in await page.text()


# --- throttling failed credentials per client address ---


def test_throttle_counts_failures_in_a_window_and_stays_bounded() -> None:
    now = [1000.0]
    throttle = FailureThrottle(3, 60, max_clients=100, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("a")
    assert throttle.retry_after("a") is None
    throttle.failed("a")
    assert throttle.retry_after("a") == 60
    now[0] += 59.5
    assert throttle.retry_after("a") == 1
    now[0] += 1
    assert throttle.retry_after("a") is None  # the oldest failure left the window
    assert throttle.retry_after("b") is None
    for i in range(1000):
        throttle.failed(f"client-{i}")
    assert len(throttle) == 100


async def test_bearer_guessing_is_throttled_with_retry_after(client: Client) -> None:
    app = await client(auth_failure_limit=3, auth_failure_window=30)
    body = {"jsonrpc": "2.0", "method": "test.who", "id": 7}
    for _ in range(3):
        response = await app.post("/rpc", json=body, headers={"Authorization": "Bearer guess-x"})
        assert response.status == 401
    for headers in ({"Authorization": "Bearer guess-y"}, BEARER):
        response = await app.post("/rpc", json=body, headers=headers)
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 30
        answer = await response.json()
        assert answer["id"] == 7 and answer["error"]["data"]["code"] == "TOO_MANY_REQUESTS"
    trpc = await app.get("/trpc/test.who", headers=BEARER)
    assert trpc.status == 429 and int(trpc.headers["Retry-After"]) >= 1
    assert (await trpc.json())["error"]["data"]["code"] == "TOO_MANY_REQUESTS"
    detailed = await app.get("/health/detailed", headers=BEARER)
    assert detailed.status == 429 and "Retry-After" in detailed.headers
    # Without credentials nothing is throttled: anonymous reads go on.
    anonymous = await app.post("/rpc", json=body)
    assert (await anonymous.json())["result"] is None


def test_the_client_behind_a_trusted_proxy() -> None:
    auth = Authenticator({}, trusted_proxies=["10.0.0.0/8", "::1"])
    # Not a trusted peer: its own address, whatever it says it forwards.
    assert auth.client("192.0.2.7", "198.51.100.1") == "192.0.2.7"
    # A trusted proxy: the rightmost address that is not a trusted proxy.
    assert auth.client("10.0.0.2", "198.51.100.1") == "198.51.100.1"
    assert auth.client("::1", "203.0.113.9, 198.51.100.1, 10.1.2.3") == "198.51.100.1"
    # What the client wrote itself lies left of that: it cannot choose its key.
    assert auth.client("10.0.0.2", "1.2.3.4, 198.51.100.1") == "198.51.100.1"
    # Garbage where an address belongs: the hop that passed it on.
    assert auth.client("10.0.0.2", "not-an-ip") == "10.0.0.2"
    assert auth.client("10.0.0.2", "x, 10.0.0.3") == "10.0.0.3"
    # Only proxies: the leftmost; no header: the proxy itself; no peer address: "unknown".
    assert auth.client("10.0.0.2", "10.0.0.9") == "10.0.0.9"
    assert auth.client("10.0.0.2", None) == "10.0.0.2"
    assert auth.client(None, "198.51.100.1") == UNKNOWN_CLIENT
    # No trusted proxies configured: the header means nothing.
    assert Authenticator({}).client("10.0.0.2", "198.51.100.1") == "10.0.0.2"


async def test_guesses_behind_a_trusted_proxy_throttle_only_their_client(client: Client) -> None:
    """The test client connects from 127.0.0.1, a trusted proxy here: each X-Forwarded-For
    client is throttled on its own, so one client's guesses refuse no other."""
    app = await client(auth_failure_limit=2, auth_trusted_proxies="127.0.0.0/8,::1")
    body = {"jsonrpc": "2.0", "method": "test.who", "id": 1}

    def via(address: str, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "X-Forwarded-For": address}

    for _ in range(2):
        response = await app.post("/rpc", json=body, headers=via("198.51.100.1", "guess"))
        assert response.status == 401
    response = await app.post("/rpc", json=body, headers=via("198.51.100.1", OPERATOR_TOKEN))
    assert response.status == 429
    response = await app.post("/rpc", json=body, headers=via("198.51.100.2", OPERATOR_TOKEN))
    assert (await response.json())["result"] == OPERATOR_NAME


async def test_sign_in_guessing_is_throttled(client: Client) -> None:
    app = await client(auth_failure_limit=2)
    for expected in (401, 401, 429):
        form = await app.get("/login")
        response = await app.post(
            "/login",
            data={"token": "wrong-token-guess", "csrf_token": csrf_in(await form.text())},
            allow_redirects=False,
        )
        assert response.status == expected
    assert "Too many failed sign-ins" in await response.text()
    assert int(response.headers["Retry-After"]) >= 1


async def test_metrics_basic_auth_guessing_is_throttled(client: Client) -> None:
    app = await client(metrics_basic_auth="prom:scrape-secret", auth_failure_limit=2)
    wrong = {"Authorization": "Basic " + base64.b64encode(b"prom:nope").decode()}
    right = {"Authorization": "Basic " + base64.b64encode(b"prom:scrape-secret").decode()}
    assert (await app.get("/metrics", headers=right)).status == 200
    statuses = [(await app.get("/metrics", headers=wrong)).status for _ in range(3)]
    assert statuses == [401, 401, 429]
    assert (await app.get("/metrics", headers=right)).status == 429


# --- JSON-RPC: a refused caller's answer carries the request's id ---


async def test_a_refused_token_is_answered_with_the_request_id(client: Client) -> None:
    app = await client()
    bad = {"Authorization": "Bearer wrong-token-0000000"}
    single = await app.post(
        "/rpc", json={"jsonrpc": "2.0", "method": "test.who", "id": "abc"}, headers=bad
    )
    assert single.status == 401
    answer = await single.json()
    assert answer["id"] == "abc" and answer["error"]["data"]["code"] == "UNAUTHORIZED"
    batch = [
        {"jsonrpc": "2.0", "method": "test.who", "id": 1},
        {"jsonrpc": "2.0", "method": "test.who", "id": [1]},
        {"jsonrpc": "2.0", "method": "test.who", "id": 3},
    ]
    answers = await (await app.post("/rpc", json=batch, headers=bad)).json()
    assert [a["id"] for a in answers] == [1, None, 3]
    # Unparseable: the id cannot be read, so null, as the spec says.
    garbled = await app.post("/rpc", data=b'{"id": 5,', headers=bad)
    assert (await garbled.json())["id"] is None


# --- ALLOWED_HOSTS ---


def test_host_names_and_entries() -> None:
    assert host_name("Example.COM:8080") == "example.com"
    assert host_name("[::1]:80") == "[::1]"
    allowed = AllowedHosts(["example.com", ".corp.example", "10.0.0.5", "[::1]"])
    assert allowed.allows("example.com:443") and allowed.allows("EXAMPLE.com")
    assert allowed.allows("corp.example") and allowed.allows("a.b.corp.example:1")
    assert allowed.allows("10.0.0.5:8080") and allowed.allows("[::1]:8080")
    assert not allowed.allows("evil.example") and not allowed.allows("xcorp.example")
    assert not allowed.allows("example.com.evil.example") and not allowed.allows(None)
    assert AllowedHosts([]).any and AllowedHosts(["*"]).allows("anything")


async def test_allowed_hosts_refuses_foreign_hosts_but_not_probes(client: Client) -> None:
    app = await client(allowed_hosts="monitor.example, .internal")
    evil = {"Host": "evil.example"}
    for method, path in (("GET", "/"), ("GET", "/health"), ("GET", "/metrics")):
        response = await app.request(method, path, headers=evil)
        assert response.status == 400, path
        error = (await response.json())["error"]
        assert error["code"] == "BAD_REQUEST" and "ALLOWED_HOSTS" in error["message"]
    # The RPC routes: an error both wires read as their own (JSON-RPC response, tRPC shape).
    for method, path in (("POST", "/rpc"), ("GET", "/trpc/test.who")):
        response = await app.request(method, path, headers=evil)
        assert response.status == 400, path
        answer = await response.json()
        assert answer["jsonrpc"] == "2.0" and answer["id"] is None
        assert answer["error"]["data"] == {"code": "BAD_REQUEST", "httpStatus": 400}
        assert answer["error"]["code"] == -32600 and "ALLOWED_HOSTS" in answer["error"]["message"]
    for probe in ("/health/live", "/health/ready"):
        assert (await app.get(probe, headers=evil)).status == 200
    for host in ("monitor.example:8080", "a.internal"):
        assert (await app.get("/health", headers={"Host": host})).status == 200


# --- serve --workers without SESSION_SECRET ---


def test_the_parent_draws_one_session_secret_for_its_workers() -> None:
    environ: dict[str, str] = {}
    _share_session_secret(environ)
    drawn = environ["SESSION_SECRET"]
    assert len(drawn) >= 32
    assert Settings.from_env(environ).dashboard.session_secret == drawn
    _share_session_secret(environ)
    assert environ["SESSION_SECRET"] == drawn  # a given secret is kept
    given = {"SESSION_SECRET": "operator-chosen-secret-123"}
    _share_session_secret(given)
    assert given["SESSION_SECRET"] == "operator-chosen-secret-123"
    assert "SESSION_SECRET" not in os.environ or os.environ["SESSION_SECRET"]


def test_cookie_payload_is_signed_json() -> None:
    # The shape the malformed cookies above depart from.
    codec = SessionCodec(SESSION_SECRET, {OPERATOR_NAME: OPERATOR_TOKEN}, 60)
    cookie = codec.encode(codec.new(OPERATOR_NAME))
    payload = cookie.split(".")[1]
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert body["op"] == OPERATOR_NAME and orjson.dumps(body)
