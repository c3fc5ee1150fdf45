"""/metrics: the families, their labels, the formats, the credentials, and promtool's verdict."""

from __future__ import annotations

import asyncio
import base64
import gzip
import re
import subprocess
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.appkeys import BREAKERS, METRICS
from server.config import Settings
from server.errors import CircuitOpen, Unavailable
from server.observability.exposition import CHUNK, Slicer, negotiate, render
from server.observability.metrics import Metrics, family_name
from tests.served import started_as_served

TOKEN = "alice-token-0123456789"
OPENMETRICS = "application/openmetrics-text;version=1.0.0"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def label_values(found: Samples, name: str, label: str) -> set[str]:
    return {dict(key)[label] for (n, key) in found if n == name and label in dict(key)}


async def rpc(client: TestClient, method: str, params: Any = None, token: str | None = None) -> Any:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        body["params"] = params
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = await client.post("/rpc", json=body, headers=headers)
    return await resp.json()


async def scrape(client: TestClient, **headers: str) -> str:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.text()


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any]) -> TestClient:
    app = create_app(Settings(auth_tokens={"alice": TOKEN}))

    async def item(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["id"])

    app.router.add_get("/items/{id}", item)
    result: TestClient = await aiohttp_client(await started_as_served(app))
    return result


async def test_rpc_families_after_jsonrpc_calls(client: TestClient) -> None:
    for _ in range(2):
        assert "result" in await rpc(client, "monitoring.unifiedHealth")
    assert (await rpc(client, "no.such.method"))["error"]["code"] == -32601
    assert (await rpc(client, "monitoring.unifiedHealth", {"x": 1}))["error"]["code"] == -32602
    unauthorized = await rpc(client, "monitoring.resetCircuitBreaker", {"name": "x"})
    assert unauthorized["error"]["data"]["code"] == "UNAUTHORIZED"

    found = samples(await scrape(client))
    calls = "infrawatch_rpc_calls_total"
    health = {"procedure": "monitoring.unifiedHealth", "protocol": "jsonrpc"}
    assert value(found, calls, code="OK", **health) == 2
    assert value(found, calls, code="BAD_REQUEST", **health) == 1
    assert value(found, calls, procedure="unknown", protocol="jsonrpc", code="NOT_FOUND") == 1
    assert (
        value(
            found,
            "infrawatch_rpc_errors_total",
            procedure="monitoring.resetCircuitBreaker",
            protocol="jsonrpc",
            code="UNAUTHORIZED",
        )
        == 1
    )
    assert value(found, "infrawatch_rpc_errors_total", code="OK", **health) is None
    assert value(found, "infrawatch_rpc_call_duration_seconds_count", **health) == 3
    # A client cannot mint label values: the unknown method's name appears nowhere.
    assert "no.such.method" not in label_values(found, calls, "procedure")


async def test_rpc_families_count_trpc_calls_as_jsonrpc_ones(client: TestClient) -> None:
    for _ in range(2):
        assert (await client.get("/trpc/monitoring.unifiedHealth")).status == 200
    assert (await client.get("/trpc/no.such.procedure")).status == 404
    assert (await client.post("/trpc/monitoring.resetCircuitBreaker", json={})).status == 401

    found = samples(await scrape(client))
    calls = "infrawatch_rpc_calls_total"
    health = {"procedure": "monitoring.unifiedHealth", "protocol": "trpc"}
    assert value(found, calls, code="OK", **health) == 2
    # An unknown path is counted as on /rpc, under the one label a client cannot mint.
    assert value(found, calls, procedure="unknown", protocol="trpc", code="NOT_FOUND") == 1
    assert "no.such.procedure" not in label_values(found, calls, "procedure")
    reset = {"procedure": "monitoring.resetCircuitBreaker", "protocol": "trpc"}
    assert value(found, calls, code="UNAUTHORIZED", **reset) == 1


async def test_http_route_label_is_the_template(client: TestClient) -> None:
    for path in ("/items/1", "/items/2", "/items/three"):
        assert (await client.get(path)).status == 200
    for path in ("/nope", "/nope/deeper", "/items"):
        assert (await client.get(path)).status == 404
    assert (await client.put("/rpc")).status == 405
    found = samples(await scrape(client))
    total = "infrawatch_http_requests_total"
    assert value(found, total, method="GET", route="/items/{id}", status="200") == 3
    assert value(found, total, method="GET", route="unmatched", status="404") == 3
    assert value(found, total, method="PUT", route="unmatched", status="405") == 1
    routes = label_values(found, total, "route")
    assert routes <= {"/items/{id}", "unmatched", "/metrics"}, routes


async def test_breaker_families_read_the_breakers(client: TestClient) -> None:
    breakers = client.app[BREAKERS]
    db = breakers.get("database-query", failure_threshold=2, call_timeout=0.05)

    async def refused() -> None:
        raise Unavailable("connection refused")

    async def hangs() -> None:
        await asyncio.Event().wait()

    with pytest.raises(Unavailable):
        await db.call(hangs)  # a timeout, counted apart from failures
    with pytest.raises(Unavailable):
        await db.call(refused)
    with pytest.raises(CircuitOpen):
        await db.call(refused)
    breakers.get("redis-cache")
    found = samples(await scrape(client))
    assert value(found, "infrawatch_breaker_state", breaker="database-query") == 1
    assert value(found, "infrawatch_breaker_state", breaker="redis-cache") == 0
    assert value(found, "infrawatch_breaker_timeouts_total", breaker="database-query") == 1
    assert value(found, "infrawatch_breaker_failures_total", breaker="database-query") == 1
    assert value(found, "infrawatch_breaker_rejections_total", breaker="database-query") == 1

    db.force_open("maintenance")
    db.reset("done")
    db.disable("testing")
    found = samples(await scrape(client))
    assert value(found, "infrawatch_breaker_state", breaker="database-query") == 0


async def test_process_and_platform_families_and_no_created(client: TestClient) -> None:
    await rpc(client, "monitoring.unifiedHealth")
    text = await scrape(client)
    found = samples(text)
    assert value(found, "process_cpu_seconds_total") is not None
    assert (value(found, "process_resident_memory_bytes") or 0) > 0
    assert any(name == "python_info" for name, _ in found)
    assert "_created" not in text


async def test_openmetrics_when_accept_asks(client: TestClient) -> None:
    await rpc(client, "monitoring.unifiedHealth")
    resp = await client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = await resp.text()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    # The strict OpenMetrics parser accepts the assembled chunks.
    names = {f.name for f in parse_openmetrics(text)}
    assert {"infrawatch_rpc_calls", "infrawatch_rpc_call_duration_seconds"} <= names

    plain = await client.get("/metrics", headers={"Accept": "text/plain"})
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")


async def test_gzip_when_accept_encoding_asks(client: TestClient) -> None:
    url = str(client.make_url("/metrics"))
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            raw = await resp.read()
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
            assert "Content-Encoding" not in resp.headers
            plain = await resp.read()
    assert b"infrawatch_http_requests_total" in gzip.decompress(raw)
    assert b"infrawatch_http_requests_total" in plain


def _library_registry(children: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("lib_events_total", "events", ["kind"], registry=registry)
    gauge = Gauge("lib_level", "level\nwith a newline", ["kind", "zone"], registry=registry)
    histogram = Histogram("lib_wait_seconds", "wait", ["kind"], registry=registry)
    for i in range(children):
        counter.labels(f"k{i}").inc(i)
        gauge.labels(f'k"{i}"\\', "z").set(i / 3)
        histogram.labels(f"k{i}").observe(i / 100)
    return registry


def _drop_created(text: bytes) -> bytes:
    return re.sub(rb"(?m)^(# (HELP|TYPE) \w+_created .*|\w+_created(\{.*\})? .*)\n", b"", text)


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
async def test_sliced_render_equals_the_library_encoder(accept: str | None) -> None:
    registry = _library_registry(120)  # families far larger than one chunk
    encode, content_type = negotiate(accept)
    ours = await render(registry.collect(), encode, content_type)
    expected = (generate_openmetrics if accept else generate_latest)(registry)
    assert b"_created" in expected
    assert ours.body == _drop_created(expected)


async def test_render_yields_to_the_loop_while_it_works() -> None:
    registry = _library_registry(700)  # about 2,100 series, 10,000 sample lines
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    encode, content_type = negotiate(None)
    result = await render(registry.collect(), encode, content_type, slicer=Slicer(0.0))
    done = True
    await task
    assert result.samples > 10_000
    # One yield per chunk: other tasks ran all along the render, not only after it.
    assert ticks >= result.samples // CHUNK


async def test_refresh_hooks_run_before_render_and_are_bounded(
    aiohttp_client: Callable[..., Any],
) -> None:
    app = create_app(Settings(metrics_refresh_timeout=0.2))
    metrics = app[METRICS]
    level = metrics.gauge("test_refreshed_level", "set by a refresh hook")

    async def fresh() -> None:
        level.set(42)

    async def hung() -> None:
        await asyncio.Event().wait()

    metrics.add_refresh("fresh", fresh)
    metrics.add_refresh("hung", hung)
    client = await aiohttp_client(app)
    loop = asyncio.get_running_loop()
    started = loop.time()
    found = samples(await scrape(client))
    assert loop.time() - started < 2.0
    assert value(found, "infrawatch_test_refreshed_level") == 42


def test_business_metric_names_are_checked_and_prefixed() -> None:
    metrics = Metrics(standard_collectors=False)
    orders = metrics.counter("orders_processed_total", "orders", ("region",))
    assert orders._name == "infrawatch_orders_processed"  # the library keeps _total apart
    assert metrics.counter("infrawatch_orders_processed_total", "orders", ("region",)) is orders
    with pytest.raises(ValueError, match="already exists as a counter"):
        metrics.counter("orders_processed_total", "orders", ("zone",))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.gauge("orders_processed", "clashes with the counter's series")
    for bad, message in [
        ("Orders", "lower-case"),
        ("orders__x_total", "lower-case"),
        ("orders", "must end in _total"),
        ("latency_ms", "base units"),
        ("size_kb", "base units"),
    ]:
        kind = "counter" if message == "must end in _total" else "gauge"
        with pytest.raises(ValueError, match=message):
            family_name(bad, kind)
    with pytest.raises(ValueError, match="only counters"):
        metrics.gauge("queue_total", "x")


async def test_business_metrics_show_in_the_scrape(client: TestClient) -> None:
    metrics = client.app[METRICS]
    metrics.counter("orders_processed_total", "Orders processed.", ("region",)).labels("eu").inc(3)
    metrics.histogram("order_value_seconds", "x", ()).observe(0.2)
    found = samples(await scrape(client))
    assert value(found, "infrawatch_orders_processed_total", region="eu") == 3
    assert value(found, "infrawatch_order_value_seconds_count") == 1


# --- credentials ---


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_basic_auth(aiohttp_client: Callable[..., Any]) -> None:
    app = create_app(Settings(metrics_basic_auth=("prom", "scrape-secret-1"), auth_tokens={}))
    client = await aiohttp_client(app)
    refused = await client.get("/metrics")
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    for header in (
        _basic("prom", "wrong"),
        _basic("other", "scrape-secret-1"),
        _basic("prom", "scrape-secret-1x"),
        "Basic !!not-base64!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        f"Bearer {TOKEN}",
    ):
        assert (await client.get("/metrics", headers={"Authorization": header})).status == 401
    ok = await client.get("/metrics", headers={"Authorization": _basic("prom", "scrape-secret-1")})
    assert ok.status == 200
    # Health stays open to load balancers.
    assert (await client.get("/health/live")).status == 200


async def test_read_tokens_required_needs_a_bearer_token(
    aiohttp_client: Callable[..., Any],
) -> None:
    app = create_app(Settings(read_tokens_required=True, auth_tokens={"alice": TOKEN}))
    client = await aiohttp_client(app)
    assert (await client.get("/metrics")).status == 401
    bad = {"Authorization": "Bearer not-a-known-token-000"}
    assert (await client.get("/metrics", headers=bad)).status == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/metrics", headers=good)).status == 200


async def test_with_both_either_credential_opens_metrics(
    aiohttp_client: Callable[..., Any],
) -> None:
    settings = Settings(
        read_tokens_required=True,
        auth_tokens={"alice": TOKEN},
        metrics_basic_auth=("prom", "scrape-secret-1"),
    )
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/metrics")).status == 401
    for header in (_basic("prom", "scrape-secret-1"), f"Bearer {TOKEN}"):
        assert (await client.get("/metrics", headers={"Authorization": header})).status == 200


# --- promtool on a live scrape of the real stack ---


async def test_promtool_check_metrics_is_silent_after_traffic(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    for _ in range(3):
        await rpc(client, "monitoring.unifiedHealth")
    await rpc(client, "no.such")
    await rpc(client, "monitoring.circuitBreakerStatus", token=TOKEN)
    await client.get("/health/detailed")
    await client.get("/missing")
    client.app[BREAKERS].get("database-query")
    body = (await client.get("/metrics")).content
    text = await body.read()
    assert b"infrawatch_rpc_calls_total" in text and b"infrawatch_breaker_state" in text
    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == b"" and checked.stderr == b""


async def test_a_failing_collector_costs_only_its_own_families(client: TestClient) -> None:
    class Broken:
        def describe(self) -> list[Any]:
            return []

        def collect(self) -> list[Any]:
            raise RuntimeError("lost its datastore")

    client.app[METRICS].add_collector(Broken())
    resp = await client.get("/metrics")
    assert resp.status == 200
    found = samples(await resp.text())
    assert value(found, "process_cpu_seconds_total") is not None
