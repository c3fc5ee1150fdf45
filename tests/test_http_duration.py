"""``infrawatch_http_request_duration_seconds`` from `infrawatch serve` on the real stack: every
request timed by aiohttp's access-log hook (server/runner.py), labelled by method, route
template and status class, exposed in the plain-text /metrics answer."""

from __future__ import annotations

import http.client
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.served import Served, get, stack_env

FAMILY = "infrawatch_http_request_duration_seconds"
CALL = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "database.info"})


def _durations(port: int) -> dict[tuple[str, str, str], dict[str, float]]:
    status, body = get(port, "/metrics")
    assert status == 200
    series: dict[tuple[str, str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != FAMILY:
            continue
        assert family.type == "histogram"
        for sample in family.samples:
            labels = (sample.labels["method"], sample.labels["route"], sample.labels["status"])
            key = sample.name.removeprefix(FAMILY) + sample.labels.get("le", "")
            series.setdefault(labels, {})[key] = sample.value
    return series


def test_requests_are_timed_by_method_route_and_status_class(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    with Served(stack_env(pg_dsn, redis_url), tmp_path) as served:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        for _ in range(5):
            conn.request("POST", "/rpc", body=CALL, headers={"Content-Type": "application/json"})
            assert conn.getresponse().read() and True
        for _ in range(3):
            conn.request("GET", "/trpc/no.such")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 404
        conn.request("GET", "/no/such/page")
        conn.getresponse().read()
        for method in ("PATCH", "PROPFIND"):  # no route takes them; one is not standard
            conn.request(method, "/rpc")
            conn.getresponse().read()
        conn.close()

        series = _durations(served.port)
    rpc = series[("POST", "/rpc", "2xx")]
    assert rpc["_count"] == 5
    assert 0 < rpc["_sum"] < 5
    assert rpc["_bucket+Inf"] == 5
    bounds = sorted((float(k.removeprefix("_bucket")), v) for k, v in rpc.items() if "_bucket" in k)
    counts = [v for _, v in bounds]
    assert counts == sorted(counts), "buckets are cumulative"
    assert series[("GET", "/trpc/{path}", "4xx")]["_count"] == 3
    assert series[("GET", "unmatched", "4xx")]["_count"] == 1
    assert series[("PATCH", "unmatched", "4xx")]["_count"] == 1
    assert series[("other", "unmatched", "4xx")]["_count"] == 1
    # The scrapes themselves are timed too (the one above counted the earlier ones).
    assert ("GET", "/health/live", "2xx") in series
