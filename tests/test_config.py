"""Settings from the environment: every contract variable, and clear errors for bad values."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.config import ConfigError, QueueName, Settings, TableName


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.cache_enabled is True
    assert settings.alert_evaluation_interval == 15
    assert settings.breaker_reset_timeout == 30
    assert settings.read_tokens_required is False


def test_every_contract_variable_is_read() -> None:
    env = {
        "DATABASE_URL": "postgresql://app:pw@127.0.0.1:5432/app",
        "DATABASE_REPLICA_URLS": "postgresql://127.0.0.1:5433/app, postgresql://127.0.0.1:5434/app",
        "DATABASE_CONNECTION_LIMIT": "7",
        "DATABASE_TIMEOUT": "2500",
        "PGBOUNCER_ADMIN_URL": "postgresql://postgres@127.0.0.1:6432/pgbouncer",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "REDIS_SENTINEL_HOSTS": "127.0.0.1:26379,127.0.0.1:26380",
        "REDIS_MASTER_NAME": "main",
        "REDIS_CLUSTER_ENABLED": "false",
        "CACHE_ENABLED": "false",
        "QUEUE_NAMES": "emails,reports",
        "PARTITION_PAIRS": "orders:orders_partitioned,audit.events:audit.events_p",
        "AUTH_TOKENS": "alice:alice-token-0123456789,bob:bob-token-01234567890",
        "READ_TOKENS_REQUIRED": "true",
        "SESSION_SECRET": "s" * 32,
        "ALERT_EVALUATION_INTERVAL": "5",
        "BREAKER_RESET_TIMEOUT": "12.5",
    }
    s = Settings.from_env(env)
    assert s.database_replica_urls == (
        "postgresql://127.0.0.1:5433/app",
        "postgresql://127.0.0.1:5434/app",
    )
    assert (s.database_connection_limit, s.database_timeout_ms) == (7, 2500)
    assert [str(h) for h in s.redis_sentinel_hosts] == ["127.0.0.1:26379", "127.0.0.1:26380"]
    assert s.redis_master_name == "main"
    assert s.cache_enabled is False
    assert [str(q) for q in s.queue_names] == ["emails", "reports"]
    assert [p.name for p in s.partition_pairs] == [
        "orders:orders_partitioned",
        "audit.events:audit.events_p",
    ]
    assert s.partition_pairs[1].legacy.quoted == '"audit"."events"'
    assert dict(s.auth_tokens) == {
        "alice": "alice-token-0123456789",
        "bob": "bob-token-01234567890",
    }
    assert s.read_tokens_required is True
    assert (s.alert_evaluation_interval, s.breaker_reset_timeout) == (5, 12.5)


def test_every_bad_variable_is_named_with_what_was_expected() -> None:
    env = {
        "DATABASE_URL": "mysql://x",
        "DATABASE_CONNECTION_LIMIT": "many",
        "CACHE_ENABLED": "perhaps",
        "PARTITION_PAIRS": "orders;drop table x:orders_p",
        "AUTH_TOKENS": "alice:short",
        "REDIS_SENTINEL_HOSTS": "127.0.0.1",
        "ALERT_EVALUATION_INTERVAL": "-1",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "DATABASE_URL",
        "DATABASE_CONNECTION_LIMIT",
        "REDIS_SENTINEL_HOSTS",
        "CACHE_ENABLED",
        "PARTITION_PAIRS",
        "AUTH_TOKENS",
        "ALERT_EVALUATION_INTERVAL",
    ]
    assert "expected true or false" in problems[3]
    assert "not a table name" in problems[4]


@pytest.mark.parametrize("name", ['orders"; drop', "1orders", "a.b.c", "", "or ders", "x" * 64])
def test_table_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        TableName.parse(name)


def test_queue_names_name_their_kind_or_leave_it_to_detection() -> None:
    text = "bullmq:emails, rq:default,celery:celery,reports,bullmq:myapp:billing,app:jobs"
    s = Settings.from_env({"QUEUE_NAMES": text})
    assert s.queue_names == (
        QueueName("bullmq", "emails"),
        QueueName("rq", "default"),
        QueueName("celery", "celery"),
        QueueName(None, "reports"),
        QueueName("bullmq", "billing", prefix="myapp"),
        QueueName(None, "app:jobs"),  # "app" is no kind: a plain name, ':' and all
    )
    assert [str(q) for q in s.queue_names] == [t.strip() for t in text.split(",")]
    assert Settings.from_env({"QUEUE_NAMES": "RQ:default"}).queue_names[0].kind == "rq"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rq:", "names no queue after rq:"),
        ("bullmq::emails", "is not bullmq:[prefix:]name"),
        ("emails,rq:a,emails", "'emails' is listed twice"),
    ],
)
def test_bad_queue_names_are_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"QUEUE_NAMES": text})
    assert info.value.problems[0].startswith("QUEUE_NAMES: ")
    assert expected in info.value.problems[0]


def test_secrets_are_masked_in_description() -> None:
    s = Settings(
        database_url="postgresql://app:hunter2@127.0.0.1/app",
        auth_tokens={"alice": "alice-token-0123456789"},
        session_secret="x" * 32,
        metrics_basic_auth=("prom", "pw-secret"),
    )
    text = repr(s.describe())
    for secret in ("hunter2", "alice-token-0123456789", "x" * 32, "pw-secret"):
        assert secret not in text
    assert "postgresql://app:***@127.0.0.1/app" in text


def test_inconsistent_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="DATABASE_MIN_CONNECTIONS"):
        Settings(database_min_connections=5, database_connection_limit=2)


def test_check_config_exits_with_one_line_per_problem() -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_TIMEOUT": "soon", "MAX_URL_BYTES": "100"}
    proc = subprocess.run(
        [sys.executable, "-m", "server", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "infrawatch: invalid configuration: DATABASE_TIMEOUT: 'soon' is not an integer",
        "infrawatch: invalid configuration: MAX_URL_BYTES: 100 is below aiohttp's own "
        "8190-byte request line; expected >= 8190",
    ]


def test_check_config_prints_effective_settings() -> None:
    env = {"PATH": "/usr/bin:/bin", "AUTH_TOKENS": "ops:ops-token-0123456789abc"}
    proc = subprocess.run(
        [sys.executable, "-m", "server", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert '"auth_tokens": {\n    "ops": "***"\n  }' in proc.stdout
    assert "ops-token" not in proc.stdout


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("orders:orders-p", "'orders-p' is not a table name"),
        ('orders:"orders_p"', "'\"orders_p\"' is not a table name"),
        ("orders:orders_p;drop table x", "is not a table name"),
        ("a.b.c:orders_p", "'a.b.c' is not a table name"),
        ("orders:", "'' is not a table name"),
        ("orders", "'orders' is not legacy_table:partitioned_table"),
    ],
)
def test_partition_pairs_that_are_not_identifiers_are_refused(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PARTITION_PAIRS": f"good_legacy:shop.good_p,{value}"})
    (problem,) = info.value.problems
    assert problem.startswith("PARTITION_PAIRS: ")
    assert reason in problem


def test_serve_refuses_a_bad_partition_pair_at_start_up() -> None:
    env = {"PATH": "/usr/bin:/bin", "PARTITION_PAIRS": "orders:orders p"}
    proc = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "infrawatch: invalid configuration: PARTITION_PAIRS: 'orders p' is not a table name "
        "([schema.]identifier)"
    )
