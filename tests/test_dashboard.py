"""The dashboard (`GET /`), its sign-in, CSRF protection and headers, against real services.

Figures on the page are compared with what the same procedure returns through the router.
Sections whose procedures are not in this branch's catalogue are checked against the output
shapes of COMMON.md (tests/dashboard_contract.py), served under their real paths.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from html import unescape
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import web as web_package
from server.app import create_app
from server.appkeys import BREAKERS, POSTGRES, ROUTER
from server.config import Settings
from server.errors import Unavailable
from server.resilience import BreakerState
from server.rpc.cost import Cost
from server.rpc.router import ANONYMOUS, Caller, Context, Procedure, query
from tests.assembly import Edit, create_app_with
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN, SESSION_SECRET
from tests.dashboard_contract import (
    CACHE_STATS,
    OUTPUTS,
    failing,
    slow,
    standins,
    with_catalogue,
)
from tests.dashboard_pages import csrf_in, row_of, sections_of, sign_in
from tests.stack import RedisServer
from web import filters
from web.sections import SECTIONS, present_sections
from web.session import COOKIE_NAME, SessionCodec

MakeClient = Callable[..., Awaitable[TestClient]]
SECURITY_HEADERS = (
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
)


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_settings: Callable[..., Settings],
) -> MakeClient:
    """``await make_client(catalogue=None, **settings)``: the whole app on real services, its
    real catalogue edited by ``catalogue`` (``with_catalogue``) if given."""

    async def make(catalogue: Edit | None = None, **overrides: Any) -> TestClient:
        settings = make_settings(**overrides)
        app = create_app(settings) if catalogue is None else create_app_with(settings, catalogue)
        return await aiohttp_client(app)

    return make


def _app(client: TestClient) -> web.Application:
    app = client.app
    assert app is not None
    return app


async def _call(client: TestClient, path: str, caller: Caller = ANONYMOUS) -> Any:
    app = _app(client)
    return await app[ROUTER].call(path, None, Context(caller=caller))


def _set_cookie(response: Any) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        cookie.load(header)
    return cookie


# --- sections from the real catalogue ---


async def test_page_shows_each_section_in_the_catalogue_with_the_procedures_figures(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    postgres = _app(client)[POSTGRES]
    assert postgres is not None
    # A breaker of the test's own (the service's breakers move with its own traffic), called
    # around real round trips to the primary.
    breaker = _app(client)[BREAKERS].get("dashboard-test")
    for _ in range(3):
        await breaker.call(postgres.ping)

    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = sections_of(await response.text())

    expected = {s.id for s in present_sections(_app(client)[ROUTER])}
    assert {"status", "breakers"} <= expected
    assert set(page) == expected
    for section in SECTIONS:
        assert (section.id in page) == (section.id in expected)

    status = await _call(client, "monitoring.circuitBreakerStatus")
    (figures,) = [b for b in status["breakers"] if b["name"] == "dashboard-test"]
    row = row_of(page["breakers"], "dashboard-test")
    assert row[1].startswith(figures["state"])
    assert row[2] == str(figures["window"]["calls"]) == "3"
    assert row[3] == str(figures["window"]["failures"]) == "0"
    assert row[6] == f"{figures['window']['error_rate']:.1f} %"

    health = await _call(client, "monitoring.unifiedHealth")
    assert health["status"] == "healthy"
    if "monitoring.unifiedMetrics" not in {p.path for p in _app(client)[ROUTER].procedures}:
        assert "HEALTHY" in page["status"].text
    for component in health["components"]:
        assert row_of(page["status"], component["name"])[1] == component["status"]
    # The test database has no pg_stat_statements: the section says why and what to do.
    assert "pg_stat_statements unavailable" in page["top_queries"].text
    assert "CREATE EXTENSION pg_stat_statements" in page["top_queries"].text
    assert row_of(page["activity"], "primary")[0] == "primary"


async def test_a_datastore_going_down_degrades_the_page_it_does_not_break_it(
    make_client: MakeClient, redis_server: RedisServer
) -> None:
    client = await make_client(redis_command_timeout_ms=300, redis_connect_timeout_ms=300)
    redis_server.stop()

    response = await client.get("/")

    assert response.status == 200
    page = sections_of(await response.text())
    assert row_of(page["status"], "redis")[1] == "down"
    assert row_of(page["status"], "database")[1] == "up"
    health = await _call(client, "monitoring.unifiedHealth")
    assert health["status"] == "degraded"
    assert "redis is down" in page["status"].text


async def test_data_is_escaped(make_client: MakeClient) -> None:
    client = await make_client()
    hostile = "<script>alert('breaker')</script>"
    _app(client)[BREAKERS].get(hostile)

    html = await (await client.get("/")).text()

    assert hostile not in html
    assert "&lt;script&gt;alert(&#39;breaker&#39;)&lt;/script&gt;" in html
    assert hostile in sections_of(html)["breakers"].text


# --- every section against the contract shapes ---


async def test_every_section_renders_the_contract_shapes(make_client: MakeClient) -> None:
    client = await make_client(catalogue=with_catalogue(standins()))
    await sign_in(client, OPERATOR_TOKEN)

    html = await (await client.get("/")).text()
    page = sections_of(html)

    assert list(page) == [s.id for s in SECTIONS]
    assert "DEGRADED" in page["status"].text
    assert "cache hit rate 45.0 % is below 50 %" in page["status"].text
    assert "banner-degraded" in html

    cache = page["cache"]
    assert "87.5 %" in cache.text  # hit_rate 87.48
    assert "12,345" in cache.text and "1,766" in cache.text
    assert row_of(cache, "GET") == ["GET", "14,111", "0.41 ms", "0.35 ms", "0.93 ms", "1.87 ms"]
    assert row_of(cache, "DELETE")[2:] == ["—", "—", "—", "—"]
    assert row_of(cache, "rpc") == ["rpc", "12,000", "1,700", "87.6 %"]
    assert "3.0 MiB" in cache.text and "7.0.15" in cache.text
    assert "5.9 %" in cache.text  # invalidation failure rate 5.88

    pools = page["pools"]
    assert row_of(pools, "replica-1") == [
        "replica-1",
        "replica",
        "17",
        "1\u201320",  # an en dash between min and max
        "0",
        "17",
        "2",
        "85.0 % 85.0 %",  # the <meter>'s fallback text, then the figure
    ]
    assert row_of(pools, "appdb")[:5] == ["appdb", "app", "7", "0", "3"]
    assert "98,765" in pools.text

    replicas = page["replicas"]
    assert row_of(replicas, "replica-1")[4:7] == ["yes", "1.25 s", "2.0 KiB"]
    assert row_of(replicas, "replica-2")[1] == "no"
    assert "connection refused" in row_of(replicas, "replica-2")[-1]

    partitions = page["partitions"]
    assert "10,007" in partitions.text and "10,000" in partitions.text
    assert "not ready" in partitions.text
    assert "failed: row delta: 7 rows differ" in partitions.text
    assert "passed: dual write trigger: trigger enabled" in partitions.text
    # The reading's own time (a cached answer is up to its TTL old), not the page's.
    assert re.search(r"checked\s*[0-9.]+ (s|min|h) ago", partitions.text), partitions.text
    checked_at = OUTPUTS["monitoring.partitionMetrics"]["pairs"][0]["checked_at"]
    assert f'<time datetime="{checked_at}"' in html

    activity = page["activity"]
    assert row_of(activity, "primary")[1:3] == ["83 / 97", "85.6 % 85.6 %"]
    assert row_of(activity, "primary")[3:] == ["2", "2", "1.2 min", "1", "31.2 s"]
    assert row_of(activity, "replica-1")[1] == "down connection refused"
    assert "SELECT pg_sleep($1)" in activity.text and "checkout 81" in activity.text
    assert "6 client(s) waiting; the longest wait 2.75 s" in activity.text

    top = page["top_queries"]
    row = row_of(top, "SELECT * FROM orders WHERE customer_id = $1")
    assert row[1:5] == ["shop_app", "shop", "20.00", "27.4"]
    assert row[8:] == ["90,210", "180,420", "99.2 %", "0"]
    assert "left out: role infrawatch" in top.text

    queries = page["queries"]
    assert "infrawatch's own statements" in queries.text
    assert "612.0 ms" in queries.text and "15.00" in queries.text
    assert row_of(queries, "SELECT * FROM big WHERE x = $1")[1:] == ["4", "420.5 ms", "750.0 ms"]

    deliveries = page["deliveries"]
    assert "Rules evaluated by web-1 (elected through PostgreSQL)." in deliveries.text
    row = row_of(deliveries, "webhook:https://hooks.example/<b>x</b>")
    assert row[1:5] == ["7", "1.6 min", "40", "9"]
    assert row[6].endswith("ago: POST: HTTP 503")
    assert "<b>x</b>" not in html  # escaped
    assert row_of(deliveries, "alertmanager:http://alertmanager:9093")[1:5] == [
        "0",
        "—",
        "1,234",
        "2",
    ]

    queues = page["queues"]
    assert row_of(queues, "emails") == ["emails", "bullmq", "42", "wait 40 active 2 failed 5"]
    assert row_of(queues, "reports")[:3] == ["reports", "rq", "3"]


async def test_redis_health_section_shows_each_node_and_the_applications_hit_rate(
    make_client: MakeClient,
) -> None:
    client = await make_client(catalogue=with_catalogue(standins()))
    page = sections_of(await (await client.get("/")).text())
    redis = page["redis"]
    assert "65.4 %" in redis.text  # the application's keyspace hit rate
    assert "10,000" in redis.text
    assert "no sentinel answered" in redis.text
    master = row_of(redis, "10.0.0.1:6379")
    assert master[1:6] == ["master", "up", "3.0 MiB", "75.0 %", "allkeys-lru"]
    assert "10.0.0.2:6379 online lag 2.0 KiB" in master[-1]
    replica = row_of(redis, "10.0.0.2:6379")
    assert "link down" in replica[-1] and "2.0 KiB" in replica[-1]
    sentinel = row_of(redis, "10.0.0.9:26379")
    assert sentinel[2].startswith("down") and "<b>connection refused</b>" in sentinel[2]
    # infrawatch's own cache says whose it is
    assert "scope: self" in page["cache"].text


async def test_alerts_critical_first_with_one_form_per_unacknowledged_alert(
    make_client: MakeClient,
) -> None:
    client = await make_client(catalogue=with_catalogue(standins(acknowledged=[])))
    await sign_in(client, OPERATOR_TOKEN)

    html = await (await client.get("/")).text()

    alerts_html = html[html.index('id="alerts"') : html.index('id="breakers"')]
    firing_order = re.findall(r'<li id="alert-(\d+)"', alerts_html)
    assert firing_order == ["2", "3", "1"]  # critical (newest first), then warning
    forms = re.findall(r'action="/alerts/(\d+)/acknowledge"', alerts_html)
    assert forms == ["2", "1"]  # 3 is acknowledged, 4 resolved
    for alert_id in forms:
        assert f'<label for="note-{alert_id}">' in alerts_html
    text = sections_of(html)["alerts"].text
    assert "3 firing" in text and "2 critical" in text and "1 warning" in text
    assert "Acknowledged by bob" in text
    assert "<script>alert('note')</script> on it" in text
    assert "<script>alert(" not in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


async def test_acknowledge_calls_the_procedure_as_the_signed_in_operator(
    make_client: MakeClient,
) -> None:
    acknowledged: list[dict[str, Any]] = []
    client = await make_client(catalogue=with_catalogue(standins(acknowledged=acknowledged)))
    csrf = await sign_in(client, OPERATOR_TOKEN)

    response = await client.post(
        "/alerts/2/acknowledge",
        data={"csrf_token": csrf, "note": "  looking into it  "},
        allow_redirects=False,
    )

    assert response.status == 303
    assert response.headers["Location"] == "/#alert-2"
    assert acknowledged == [{"id": 2, "note": "looking into it", "by": OPERATOR_NAME}]


async def test_acknowledge_error_is_shown_on_the_page(make_client: MakeClient) -> None:
    client = await make_client(catalogue=with_catalogue(standins(acknowledged=[])))
    csrf = await sign_in(client, OPERATOR_TOKEN)

    response = await client.post("/alerts/999/acknowledge", data={"csrf_token": csrf})

    assert response.status == 404
    html = await response.text()
    assert "Alert 999 was not acknowledged: no alert with id 999" in html
    assert "alerts" in sections_of(html)


async def test_acknowledge_without_the_procedure_says_so(make_client: MakeClient) -> None:
    client = await make_client(catalogue=with_catalogue([], without={"alerts.acknowledge"}))
    csrf = await sign_in(client, OPERATOR_TOKEN)

    response = await client.post("/alerts/1/acknowledge", data={"csrf_token": csrf})

    assert response.status == 404
    assert 'No procedure found on path "alerts.acknowledge"' in unescape(await response.text())


async def test_a_failing_slow_or_misshapen_source_shows_its_error_in_its_section(
    make_client: MakeClient,
) -> None:
    broken_cache = {k: v for k, v in CACHE_STATS.items() if k != "latency"}
    replaced = {
        "monitoring.cacheStats",
        "monitoring.queueStats",
        "monitoring.queryStats",
        "monitoring.partitionMetrics",
    }
    catalogue = with_catalogue(
        [
            *standins({k: v for k, v in OUTPUTS.items() if k not in replaced}),
            *standins({"monitoring.cacheStats": broken_cache}),
            failing("monitoring.queueStats", Unavailable("redis unreachable: refused")),
            failing("monitoring.queryStats", ZeroDivisionError("secret internals")),
            slow("monitoring.partitionMetrics", 5.0),
        ]
    )
    client = await make_client(catalogue=catalogue, section_timeout=0.3)

    started = time.monotonic()
    response = await client.get("/")
    elapsed = time.monotonic() - started

    assert response.status == 200
    html = await response.text()
    page = sections_of(html)
    assert "Queue statistics unavailable: redis unreachable: refused" in page["queues"].text
    assert "SERVICE_UNAVAILABLE" in page["queues"].text
    assert "unavailable: Internal server error" in page["queries"].text
    assert "secret internals" not in html
    assert "no answer within 0.3s" in page["partitions"].text
    assert "could not be shown" in page["cache"].text and "latency" in page["cache"].text
    assert "12,345" not in page["cache"].text
    assert "42" not in page["queues"].text
    assert elapsed < 4.0  # the slow source was cut off, not waited for
    assert row_of(page["replicas"], "replica-1")[0] == "replica-1"  # the rest is intact


async def test_sections_reuse_the_answers_unified_metrics_already_read(
    make_client: MakeClient,
) -> None:
    """Where monitoring.unifiedMetrics holds a section's answer, the page shows that answer
    (banner and section agree) instead of calling the procedure again."""
    calls: list[str] = []

    def counted(path: str, value: dict[str, Any]) -> Procedure:
        async def handler(ctx: Context, _inp: Any) -> dict[str, Any]:
            # The page's calls only: other readers (an alert evaluator) call as someone else.
            if ctx.caller.name == OPERATOR_NAME:
                calls.append(path)
            return value

        return query(path, handler, options=(Cost.CHEAP,))

    unified = {
        "status": "degraded",
        "reasons": ["monitoring.queueStats unavailable: redis unreachable"],
        "sections": {
            "monitoring.cacheStats": {"status": "ok", "data": CACHE_STATS},
            "monitoring.queueStats": {
                "status": "unavailable",
                "error": {"code": "SERVICE_UNAVAILABLE", "message": "redis unreachable"},
            },
        },
    }
    edit = with_catalogue(
        [
            *standins({k: v for k, v in OUTPUTS.items() if k != "monitoring.unifiedMetrics"}),
            counted("monitoring.unifiedMetrics", unified),
        ]
    )

    def catalogue(real: list[Procedure]) -> list[Procedure]:
        return [
            counted(p.path, OUTPUTS[p.path])
            if p.path in ("monitoring.cacheStats", "monitoring.queueStats", "monitoring.queryStats")
            else p
            for p in edit(real)
        ]

    client = await make_client(catalogue=catalogue)
    await sign_in(client, OPERATOR_TOKEN)
    calls.clear()

    page = sections_of(await (await client.get("/")).text())

    assert sorted(calls) == ["monitoring.queryStats", "monitoring.unifiedMetrics"]
    assert "87.5 %" in page["cache"].text
    assert "Queue statistics unavailable: redis unreachable" in page["queues"].text
    assert "612.0 ms" in page["queries"].text


# --- signing in and out ---


async def test_login_with_a_good_token_sets_a_strict_http_only_session(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    form = await client.get("/login")
    assert 'name="csrf_token"' in await form.text()
    visitor = _set_cookie(form)[COOKIE_NAME]
    assert visitor["httponly"] and visitor["samesite"] == "Strict"

    response = await client.post(
        "/login",
        data={"token": OPERATOR_TOKEN, "csrf_token": csrf_in(await form.text()), "next": "/"},
        allow_redirects=False,
    )

    assert response.status == 303 and response.headers["Location"] == "/"
    cookie = _set_cookie(response)[COOKIE_NAME]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(8 * 3600)
    assert not cookie["secure"]  # plain HTTP here
    assert cookie.value != visitor.value
    assert OPERATOR_TOKEN not in cookie.value
    html = await (await client.get("/")).text()
    assert f"Signed in as <strong>{OPERATOR_NAME}</strong>" in html
    assert 'action="/logout"' in html


async def test_login_with_a_bad_token_is_refused(make_client: MakeClient) -> None:
    client = await make_client()
    form = await client.get("/login")

    response = await client.post(
        "/login",
        data={"token": "not-the-token-at-all", "csrf_token": csrf_in(await form.text())},
        allow_redirects=False,
    )

    assert response.status == 401
    assert "That token is not valid." in await response.text()
    assert COOKIE_NAME not in _set_cookie(response)
    html = await (await client.get("/")).text()
    assert "Signed in as" not in html and 'href="/login"' in html


async def test_login_without_csrf_is_forbidden(make_client: MakeClient) -> None:
    client = await make_client()
    await client.get("/login")

    response = await client.post("/login", data={"token": OPERATOR_TOKEN}, allow_redirects=False)

    assert response.status == 403
    assert COOKIE_NAME not in _set_cookie(response)


async def test_secure_cookie_behind_a_trusted_tls_proxy_only(make_client: MakeClient) -> None:
    async def cookie_for(trust: bool) -> Any:
        client = await make_client(trust_forwarded_proto=trust)
        response = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
        return _set_cookie(response)[COOKIE_NAME]

    assert (await cookie_for(True))["secure"] is True
    assert not (await cookie_for(False))["secure"]


async def test_next_only_redirects_within_the_site(make_client: MakeClient) -> None:
    client = await make_client()
    form = await client.get("/login?next=//evil.example/")
    html = await form.text()
    assert 'name="next" value="/"' in html

    response = await client.post(
        "/login",
        data={"token": OPERATOR_TOKEN, "csrf_token": csrf_in(html), "next": "//evil.example/"},
        allow_redirects=False,
    )
    assert response.headers["Location"] == "/"


async def test_logout_needs_csrf_and_ends_the_session(make_client: MakeClient) -> None:
    client = await make_client()
    csrf = await sign_in(client, OPERATOR_TOKEN)

    refused = await client.post("/logout", data={}, allow_redirects=False)
    assert refused.status == 403
    assert "Signed in as" in await (await client.get("/")).text()

    response = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert response.status == 303
    assert _set_cookie(response)[COOKIE_NAME].value == ""
    assert "Signed in as" not in await (await client.get("/")).text()


# --- CSRF on the acknowledge form ---


@pytest.mark.parametrize("token", [None, "", "forged-token", "other-session"])
async def test_acknowledge_without_a_valid_csrf_token_is_forbidden(
    make_client: MakeClient, token: str | None
) -> None:
    acknowledged: list[dict[str, Any]] = []
    client = await make_client(catalogue=with_catalogue(standins(acknowledged=acknowledged)))
    await sign_in(client, OPERATOR_TOKEN)
    data = {"note": "x"}
    if token == "other-session":
        codec = SessionCodec(SESSION_SECRET, {OPERATOR_NAME: OPERATOR_TOKEN}, 60)
        data["csrf_token"] = codec.csrf_token(codec.new(OPERATOR_NAME))
    elif token is not None:
        data["csrf_token"] = token

    response = await client.post("/alerts/2/acknowledge", data=data, allow_redirects=False)

    assert response.status == 403
    assert "security token is missing or invalid" in await response.text()
    assert acknowledged == []


async def test_signed_out_visitors_get_a_read_only_page(make_client: MakeClient) -> None:
    client = await make_client(catalogue=with_catalogue(standins(acknowledged=[])))

    html = await (await client.get("/")).text()

    assert "/acknowledge" not in html and "<form" not in html
    assert 'href="/login"' in html
    assert '<noscript><meta http-equiv="refresh" content="15"></noscript>' in html
    assert "alerts" in sections_of(html)

    csrf = await sign_in(client, OPERATOR_TOKEN)
    html = await (await client.get("/")).text()
    assert 'http-equiv="refresh"' not in html  # forms on the page: never reload under a typist
    assert 'href="/?view=watch"' in html
    assert csrf in html
    watch = await (await client.get("/?view=watch")).text()
    assert 'http-equiv="refresh"' in watch and "/acknowledge" not in watch


async def test_a_signed_out_post_with_a_visitor_session_is_still_forbidden(
    make_client: MakeClient,
) -> None:
    acknowledged: list[dict[str, Any]] = []
    client = await make_client(catalogue=with_catalogue(standins(acknowledged=acknowledged)))
    csrf = csrf_in(await (await client.get("/login")).text())

    response = await client.post("/alerts/2/acknowledge", data={"csrf_token": csrf})

    assert response.status == 403
    assert "Sign in as an operator" in await response.text()
    assert acknowledged == []


# --- READ_TOKENS_REQUIRED ---


async def test_read_tokens_required_sends_visitors_to_sign_in(make_client: MakeClient) -> None:
    client = await make_client(read_tokens_required=True)

    response = await client.get("/?view=watch", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login?next=%2F%3Fview%3Dwatch"
    fragment = await client.get("/dashboard/sections", allow_redirects=False)
    assert fragment.status == 401

    form = await client.get(response.headers["Location"])
    login = await client.post(
        "/login",
        data={
            "token": OPERATOR_TOKEN,
            "csrf_token": csrf_in(await form.text()),
            "next": "/?view=watch",
        },
        allow_redirects=False,
    )
    assert login.headers["Location"] == "/?view=watch"
    page = await client.get("/")
    assert page.status == 200
    assert "breakers" in sections_of(await page.text())
    assert (await client.get("/dashboard/sections")).status == 200


# --- the fragment, headers, static files ---


async def test_fragment_holds_the_same_sections_without_the_page(make_client: MakeClient) -> None:
    client = await make_client()

    response = await client.get("/dashboard/sections")

    assert response.status == 200
    html = await response.text()
    assert "<html" not in html and 'id="updated"' in html
    assert set(sections_of(html)) == {s.id for s in present_sections(_app(client)[ROUTER])}
    assert response.headers["Cache-Control"] == "no-store"
    assert "gather;dur=" in response.headers["Server-Timing"]


@pytest.mark.parametrize("path", ["/", "/login", "/static/dashboard.css", "/no-such-page"])
async def test_security_headers_on_every_response(make_client: MakeClient, path: str) -> None:
    client = await make_client()

    response = await client.get(path)

    for name in SECURITY_HEADERS:
        assert name in response.headers
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_static_files_are_served_from_the_package(make_client: MakeClient) -> None:
    client = await make_client()
    html = await (await client.get("/")).text()
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', html):
        response = await client.get(asset)
        assert response.status == 200, asset
        assert response.content_type in ("text/css", "text/javascript", "application/javascript")
    assert "<style" not in html and " style=" not in html
    assert re.search(r"<script>(?!</)", html) is None  # no inline script


# --- the session codec itself ---


def test_session_cookie_rejects_tampering_expiry_and_rotated_tokens() -> None:
    tokens = {"alice": "alice-token-0123456789"}
    codec = SessionCodec(SESSION_SECRET, tokens, max_age=60)
    session = codec.new("alice", now=1000.0)
    cookie = codec.encode(session)

    assert codec.decode(cookie, now=1001.0) == session
    assert codec.decode(cookie, now=1061.0) is None  # expired
    version, payload, mac = cookie.split(".")
    assert codec.decode(f"{version}.{payload}.{mac[:-2]}AA", now=1001.0) is None
    assert codec.decode(f"{version}.{payload[:-2]}x.{mac}", now=1001.0) is None
    assert codec.decode("garbage", now=1001.0) is None
    other_secret = SessionCodec("another-secret-0123456789", tokens, 60)
    assert other_secret.decode(cookie, now=1001.0) is None
    rotated = SessionCodec(SESSION_SECRET, {"alice": "a-brand-new-token-987654"}, 60)
    assert rotated.decode(cookie, now=1001.0) is None
    removed = SessionCodec(SESSION_SECRET, {}, 60)
    assert removed.decode(cookie, now=1001.0) is None

    assert codec.csrf_valid(session, codec.csrf_token(session))
    assert not codec.csrf_valid(session, codec.csrf_token(codec.new("alice")))
    assert not codec.csrf_valid(None, codec.csrf_token(session))
    assert not codec.csrf_valid(session, None)


def test_breaker_states_have_a_badge_kind() -> None:
    template = (Path(web_package.__file__).parent / "templates/sections/breakers.html").read_text()
    for state in BreakerState:
        assert f"'{state.value}':" in template


def test_sections_cover_every_shape_in_the_contract() -> None:
    paths = {path for section in SECTIONS for path in section.paths}
    assert set(OUTPUTS) | {"monitoring.unifiedHealth", "monitoring.circuitBreakerStatus"} == paths


def test_html_helpers_escape_what_they_are_given() -> None:
    badge = filters.state("<script>x</script>", 'ok" onmouseover="alert(1)')
    assert "<script>" not in badge and "&lt;script&gt;" in badge
    assert '" onmouseover' not in badge and "&#34; onmouseover" in badge
    assert filters.when("<b>not a time</b>") == filters.when(None)
    moment = filters.when("2026-01-02T03:04:05+00:00")
    assert 'datetime="2026-01-02T03:04:05+00:00"' in moment
    assert 'title="2026-01-02 03:04:05 UTC"' in moment
    assert filters.yesno(False, good=False) == '<span class="badge badge-ok">no</span>'
    assert filters.number(None) == filters.percent(None) == filters.millis(None) == "—"
    assert filters.size(3 * 1024 * 1024) == "3.0 MiB" and filters.size(512) == "512 B"
