"""``monitoring.cacheKeyStats`` against a real Redis, through ``POST /rpc``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.glob import Glob
from tests.stack import RedisServer

MakeSettings = Callable[..., Settings]

# 5,000 keys: (namespace, count, expiry)
LAYOUT = [("session", 2500, "ex"), ("user", 1500, None), ("rate", 900, "px")]
PLAIN = 100  # keys without the separator
TOTAL = sum(n for _, n, _ in LAYOUT) + PLAIN


@pytest.fixture
def r(redis_url: str, redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as client:
        yield client


@pytest.fixture
def five_thousand(r: redis.Redis) -> None:
    with r.pipeline(transaction=False) as pipe:
        for namespace, count, expiry in LAYOUT:
            for i in range(count):
                key = f"{namespace}:{i}"
                if expiry == "ex":
                    pipe.set(key, "v" * 20, ex=3600)
                elif expiry == "px":
                    pipe.set(key, "v", px=3_600_000)
                else:
                    pipe.hset(key, mapping={"name": f"user {i}", "plan": "free"})
        for i in range(PLAIN):
            pipe.set(f"plain{i}", "v")
        pipe.execute()
    assert r.dbsize() == TOTAL


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: MakeSettings) -> TestClient:
    return await aiohttp_client(create_app(make_settings(database_url=None)))


async def call(client: TestClient, params: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": "monitoring.cacheKeyStats", "id": 1}
    if params is not None:
        body["params"] = params
    resp = await client.post("/rpc", data=orjson.dumps(body))
    assert resp.status == 200
    payload: dict[str, Any] = orjson.loads(await resp.read())
    return payload


async def stats(client: TestClient, params: Any = None) -> dict[str, Any]:
    payload = await call(client, params)
    assert "error" not in payload, payload
    result: dict[str, Any] = payload["result"]
    return result


def by_namespace(out: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {ns["namespace"]: ns for ns in out["namespaces"]}


@pytest.mark.usefixtures("five_thousand")
async def test_exact_counts_when_the_sample_covers_every_key(client: TestClient) -> None:
    out = await stats(client, {"sample": 10_000, "memory_sample": 40})

    assert (out["dbsize"], out["examined_keys"], out["sampled_keys"]) == (TOTAL,) * 3
    assert out["exact"] is True
    assert out["coverage"] == 100.0
    assert (out["estimated_keys"], out["estimated_margin"]) == (TOTAL, 0)
    spaces = by_namespace(out)
    assert list(spaces) == ["session", "user", "rate", None]  # largest first
    for namespace, count, expiry in LAYOUT:
        ns = spaces[namespace]
        assert (ns["sampled"], ns["estimated"], ns["margin"]) == (count, count, 0)
        assert ns["share"] == pytest.approx(100 * count / TOTAL, abs=0.01)
        assert (ns["with_ttl"], ns["without_ttl"]) == ((count, 0) if expiry else (0, count))
        assert ns["ttl_share"] == (100.0 if expiry else 0.0)
    assert spaces[None]["sampled"] == PLAIN
    assert (out["with_ttl"], out["without_ttl"], out["vanished"]) == (3400, 1600, 0)
    assert out["ttl_share"] == 68.0
    assert out["memory_sampled_keys"] == 40
    assert out["memory_sampled_bytes"] > 40 * 20
    measured = [ns for ns in spaces.values() if ns["memory_sampled"]]
    assert sum(ns["memory_sampled"] for ns in measured) == 40
    for ns in measured:
        assert ns["memory_mean_bytes"] > 0
        # The mean is shown to 0.1 byte; the estimate comes from the unrounded mean.
        expected = ns["memory_mean_bytes"] * ns["estimated"]
        assert abs(ns["memory_estimated_bytes"] - expected) <= 0.05 * ns["estimated"] + 1
    assert (out["namespaces_total"], out["truncated"], out["warnings"]) == (4, False, [])


@pytest.mark.usefixtures("five_thousand")
async def test_estimates_from_a_partial_sample_stay_within_their_margin(
    client: TestClient,
) -> None:
    out = await stats(client, {"sample": 1000, "memory_sample": 0})

    assert out["exact"] is False
    assert (out["examined_keys"], out["sampled_keys"]) == (1000, 1000)
    assert out["coverage"] == 20.0
    assert out["estimated_keys"] == TOTAL  # no pattern: every examined key matches
    spaces = by_namespace(out)
    assert sum(ns["sampled"] for ns in spaces.values()) == 1000
    for namespace, count, _ in LAYOUT:
        ns = spaces[namespace]
        # 95 % margins; twice the margin is about four standard errors.
        assert 0 < ns["margin"] < count / 4
        assert abs(ns["estimated"] - count) <= 2 * ns["margin"], ns
        assert ns["estimated"] == round(ns["sampled"] * TOTAL / 1000)
    assert out["memory_sampled_keys"] == 0
    assert out["memory_mean_bytes"] is None


@pytest.mark.usefixtures("five_thousand")
async def test_pattern_separator_and_limit(client: TestClient, r: redis.Redis) -> None:
    out = await stats(client, {"pattern": "session:*"})
    assert (out["sampled_keys"], out["estimated_keys"], out["exact"]) == (2500, 2500, True)
    assert list(by_namespace(out)) == ["session"]

    out = await stats(client, {"pattern": "[ru]*:1?"})  # rate:10-19 and user:10-19
    assert {ns: s["sampled"] for ns, s in by_namespace(out).items()} == {"rate": 10, "user": 10}

    r.set("a.b:c", "1")
    r.set("a.d", "1")
    out = await stats(client, {"pattern": "a.*", "separator": "."})
    assert {ns: s["sampled"] for ns, s in by_namespace(out).items()} == {"a": 2}

    out = await stats(client, {"limit": 2, "memory_sample": 0})
    assert [ns["namespace"] for ns in out["namespaces"]] == ["session", "user"]
    # session, user, rate, no separator, and "a.b" (of "a.b:c"; "a.d" has no ":")
    assert (out["namespaces_total"], out["truncated"]) == (5, True)


async def test_our_glob_matches_as_redis_match_does(r: redis.Redis) -> None:
    keys = [
        "abc", "abd", "xbc", "a", "ab", "h*llo", "hello", "hallo", "h]x", "[x", "x\\", "b]",
        "a-c", "bc", "cc", "é:1", "e:1",
    ]  # fmt: skip
    for key in keys:
        r.set(key, "1")
    patterns = [
        "*", "a?c", "[a-c]*", "[^a]*", "[c-a]?", "h\\*llo", "h*llo", "h[\\]]x", "h[]]x",
        "[]x", "[^]x", "x\\", "[\\[]x", "a[-]c", "?", "??", "*c", "a*", "[ae]:1", "é*", "[!a]*",
    ]  # fmt: skip
    for pattern in patterns:
        expected = sorted(r.scan_iter(match=pattern, count=1000))
        ours = sorted(k for k in keys if Glob(pattern).matches(k))
        assert ours == expected, pattern


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"sample": 0}, "sample"),
        ({"sample": 100_001}, "sample"),
        ({"pattern": "user:[abc"}, "unterminated ["),
        ({"separator": ""}, "separator"),
        ({"memory_sample": -1}, "memory_sample"),
        ({"samples": 10}, "samples"),
    ],
)
async def test_bad_input_is_invalid_params(
    client: TestClient, params: dict[str, Any], fragment: str
) -> None:
    payload = await call(client, params)
    error = payload["error"]
    assert error["code"] == -32602
    assert error["data"]["code"] == "BAD_REQUEST"
    assert fragment in error["data"]["message"]


async def test_empty_database(client: TestClient) -> None:
    out = await stats(client)
    assert (out["dbsize"], out["examined_keys"], out["exact"], out["namespaces"]) == (
        0,
        0,
        True,
        [],
    )
    assert out["ttl_share"] is None
