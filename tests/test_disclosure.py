"""What anyone may read: no password in any URL form anywhere (answers, logs, check-config,
errors, reprs); no hosts, users or SQL in anonymous callers' errors; operators get the detail."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import ConfigError, Settings
from server.log_format import FORMAT, SafeFormatter, escape_controls
from server.redaction import mask_secrets, mask_url
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN
from tests.stack import PostgresServer
from tests.stack.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
BEARER = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
SECRETS = ("pw-userinfo-1", "pw-param-2", "pw-ssl-3", "redis-pw-4", "bouncer-pw-5")


def _urls(pg_port: int, redis_port: int, user: str = "bob") -> dict[str, str]:
    return {
        "DATABASE_URL": f"postgresql://{user}:pw-userinfo-1@127.0.0.1:{pg_port}/app"
        "?password=pw-param-2&sslmode=prefer&SSLPassword=pw-ssl-3",
        "DATABASE_REPLICA_URLS": f"postgresql://{user}@127.0.0.1:{pg_port}/app?pass%77ord=pw-param-2",
        "PGBOUNCER_ADMIN_URL": f"postgresql://admin:bouncer-pw-5@127.0.0.1:{pg_port}/pgbouncer",
        "REDIS_URL": f"redis://:redis-pw-4@127.0.0.1:{redis_port}/0?password=redis-pw-4",
    }


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} in {text[:2000]}"


# --- masking itself ---


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db?password=s3cret&a=1", "postgresql://u@h/db?password=***&a=1"),
        ("postgresql://u@h/db?sslpassword=s3cret", "postgresql://u@h/db?sslpassword=***"),
        ("postgresql://u@h/db?PassWord=s3cret", "postgresql://u@h/db?PassWord=***"),
        ("postgresql://u@h/db?pass%77ord=s3cret", "postgresql://u@h/db?pass%77ord=***"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("unix://:s3cret@/tmp/r.sock?password=s3cret", "unix://:***@/tmp/r.sock?password=***"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_mask_url_covers_every_form(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_secrets_in_free_text() -> None:
    text = (
        "connect postgresql://bob:s3cret@db:5432/app failed; dsn host=db password='a b' user=x;"
        " password=abc&x=1, redis://:pw2@h:1 sslpassword=zz"
    )
    masked = mask_secrets(text)
    for secret in ("s3cret", "'a b'", "abc", "pw2", "zz"):
        assert secret not in masked
    assert "bob:***@db" in masked and "user=x" in masked


# --- settings: reprs, check-config, configuration errors ---


def test_no_settings_repr_or_description_shows_a_secret() -> None:
    environ = _urls(5432, 6379) | {
        "AUTH_TOKENS": "alice:token-secret-0123456789",
        "SESSION_SECRET": "session-secret-0123456789",
        "METRICS_BASIC_AUTH": "prom:basic-secret",
    }
    settings = Settings.from_env(environ)
    texts = [repr(settings), str(settings), orjson.dumps(settings.describe()).decode()]
    texts += [repr(getattr(settings, name)) for name in ("database", "redis", "auth", "metrics")]
    texts += [str(settings.dashboard), repr(settings.dashboard)]
    for text in texts:
        _no_secret(text)
        for secret in ("token-secret", "session-secret", "basic-secret"):
            assert secret not in text


def test_a_refused_url_is_reported_masked() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"DATABASE_URL": "postgresql://u:pw-userinfo-1@h:99999/db?password=x"})
    _no_secret(str(info.value))
    assert "DATABASE_URL" in str(info.value)


def test_check_config_prints_no_secret() -> None:
    env = {**os.environ, **_urls(5432, 6379), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "server", "check-config"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    described = orjson.loads(done.stdout)
    assert described["database_url"].startswith("postgresql://bob:***@127.0.0.1")
    _no_secret(done.stdout + done.stderr)


# --- answers and errors: anonymous callers vs operators ---


@pytest.fixture
async def down(aiohttp_client: Any) -> TestClient:
    """Every datastore configured with passwords in every form, none of them listening."""
    settings = Settings.from_env(
        _urls(free_port(), free_port())
        | {
            "AUTH_TOKENS": f"{OPERATOR_NAME}:{OPERATOR_TOKEN}",
            "DATABASE_TIMEOUT": "500",
            "BREAKER_FAILURE_THRESHOLD": "1000",
            "BREAKER_MINIMUM_CALLS": "1000",
            "ALERT_EVALUATION_ENABLED": "false",
        }
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def _rpc(client: TestClient, method: str, **headers: str) -> dict[str, Any]:
    resp = await client.post(
        "/rpc", json={"jsonrpc": "2.0", "method": method, "id": 1}, headers=headers
    )
    text = await resp.text()
    _no_secret(text)
    answer: dict[str, Any] = orjson.loads(text)
    return answer


READS = (
    "database.info",
    "monitoring.connectionPoolStats",
    "monitoring.cacheStats",
    "monitoring.cacheKeyStats",
    "monitoring.queueStats",
    "monitoring.circuitBreakerStatus",
    "monitoring.unifiedMetrics",
    "database.replicaStats",
    "database.replicaHealth",
    "database.activity",
    "database.topQueries",
    "monitoring.redisHealth",
)


def _error_texts(value: Any) -> Iterator[str]:
    """Every error text in an answer: error members, ``error``/``last_error``/``message``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("error", "last_error", "message", "reasons", "detail") and item:
                yield orjson.dumps(item).decode()
            yield from _error_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _error_texts(item)


async def test_anonymous_answers_hold_no_password_and_no_host_in_errors(down: TestClient) -> None:
    for method in READS:
        answer = await _rpc(down, method)
        for text in _error_texts(answer):
            # A replica's node name is made from its address ("127.0.0.1-5433"), as in every
            # answer; the drivers' own forms ("127.0.0.1:5433", "('127.0.0.1', 5433)") are not.
            assert "127.0.0.1:" not in text and "'127.0.0.1'" not in text, (method, text)
            assert "bob" not in text, (method, text)
            assert '"detail"' not in text or '"detail":null' in text, (method, text)
    health = await down.get("/health/detailed")
    body = await health.text()
    _no_secret(body)
    report = orjson.loads(body)
    assert report["alert_store"]["last_error"] is None
    for text in _error_texts(report):
        assert "127.0.0.1:" not in text and "'127.0.0.1'" not in text, text


async def test_operators_get_the_detail(down: TestClient) -> None:
    anonymous = await _rpc(down, "monitoring.cacheKeyStats")
    assert anonymous["error"]["data"]["code"] == "SERVICE_UNAVAILABLE"
    assert "detail" not in anonymous["error"]["data"]
    assert "127.0.0.1" not in orjson.dumps(anonymous).decode()

    operator = await _rpc(down, "monitoring.cacheKeyStats", **BEARER)
    assert "127.0.0.1" in operator["error"]["data"]["detail"]  # redis-py's own text
    trpc = await down.get("/trpc/monitoring.cacheKeyStats", headers=BEARER)
    assert "127.0.0.1" in (await trpc.json())["error"]["data"]["detail"]
    anonymous_trpc = await down.get("/trpc/monitoring.cacheKeyStats")
    assert "detail" not in (await anonymous_trpc.json())["error"]["data"]

    breakers = await _rpc(down, "monitoring.circuitBreakerStatus", **BEARER)
    details = [
        b["last_failure"]["detail"] for b in breakers["result"]["breakers"] if b["last_failure"]
    ]
    assert any("127.0.0.1" in (d or "") for d in details)
    report = await (await down.get("/health/detailed", headers=BEARER)).json()
    assert report["alert_store"]["last_error"]
    redis_health = next(c for c in report["components"] if c["name"] == "redis")
    assert "127.0.0.1:" in redis_health["error"]
    _no_secret(orjson.dumps(report).decode())


async def test_a_database_refusing_the_user_names_it_to_operators_only(
    aiohttp_client: Any, postgres: PostgresServer
) -> None:
    settings = Settings(
        database_url=postgres.dsn(user="ghost_user_xyz"),
        auth_tokens={OPERATOR_NAME: OPERATOR_TOKEN},
        alert_evaluation_enabled=False,
    )
    client = await aiohttp_client(create_app(settings))
    answer = await _rpc(client, "database.info")
    node = answer["result"]["nodes"][0]
    assert node["up"] is False and "ghost_user_xyz" not in node["error"]
    breakers = await _rpc(client, "monitoring.circuitBreakerStatus")
    assert "ghost_user_xyz" not in orjson.dumps(breakers["result"]).decode()
    as_operator = await _rpc(client, "monitoring.circuitBreakerStatus", **BEARER)
    assert "ghost_user_xyz" in orjson.dumps(as_operator["result"]).decode()


# --- logs ---


def test_log_lines_mask_secrets_and_escape_control_characters() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter(FORMAT))
    logger = logging.getLogger("test.disclosure")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("method %s failed", "evil\nFAKE 2026 CRITICAL root: forged\r\x1b[31m")
        logger.warning("connect to postgresql://u:pw-userinfo-1@h/db?sslpassword=pw-ssl-3")
        try:
            raise RuntimeError("dsn password=pw-param-2")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    _no_secret(text)
    assert "\\nFAKE 2026" in text and "\\x1b[31m" in text
    assert not any(line.startswith("FAKE") for line in text.splitlines())
    assert "Traceback (most recent call last):\n" in text  # tracebacks keep their lines
    assert escape_controls("a\u2028b\tc") == "a\\u2028b\\tc"


async def test_a_method_name_with_newlines_reaches_the_log_on_one_line(
    aiohttp_client: Any,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        client = await aiohttp_client(create_app(Settings(alert_evaluation_enabled=False)))
        forged = "no.such\n2026-01-01 00:00:00 CRITICAL server: forged"
        resp = await client.post("/rpc", json={"jsonrpc": "2.0", "method": forged})
        assert resp.status == 204
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = stream.getvalue()
    assert "no.such\\n2026-01-01" in text
    assert not any(line.startswith("2026-01-01 00:00:00") for line in text.splitlines())
