"""Settings from the environment: every contract variable, and clear errors for bad values;
the slices, checked as they are built; flat names; secrets kept out of every text."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.config import (
    AuthSettings,
    CacheSettings,
    ConfigError,
    DashboardSettings,
    DatabaseSettings,
    HostPort,
    MetricsSettings,
    QueueName,
    RedisSettings,
    Settings,
    TableName,
)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database.url is None
    assert settings.cache.enabled is True
    assert settings.alerts.evaluation_interval == 15
    assert settings.breakers.reset_timeout == 30
    assert settings.auth.read_tokens_required is False


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
    assert s.database.url == "postgresql://app:pw@127.0.0.1:5432/app"
    assert s.database.replica_urls == (
        "postgresql://127.0.0.1:5433/app",
        "postgresql://127.0.0.1:5434/app",
    )
    assert (s.database.connection_limit, s.database.timeout_ms) == (7, 2500)
    assert s.database.pgbouncer_admin_url == "postgresql://postgres@127.0.0.1:6432/pgbouncer"
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert [str(h) for h in s.redis.sentinel_hosts] == ["127.0.0.1:26379", "127.0.0.1:26380"]
    assert s.redis.master_name == "main"
    assert s.redis.cluster_enabled is False
    assert s.cache.enabled is False
    assert [str(q) for q in s.queues.names] == ["emails", "reports"]
    assert [p.name for p in s.partitions.pairs] == [
        "orders:orders_partitioned",
        "audit.events:audit.events_p",
    ]
    assert s.partitions.pairs[1].legacy.quoted == '"audit"."events"'
    assert dict(s.auth.tokens) == {
        "alice": "alice-token-0123456789",
        "bob": "bob-token-01234567890",
    }
    assert s.auth.read_tokens_required is True
    assert s.dashboard.session_secret == "s" * 32
    assert (s.alerts.evaluation_interval, s.breakers.reset_timeout) == (5, 12.5)


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
    assert s.queues.names == (
        QueueName("bullmq", "emails"),
        QueueName("rq", "default"),
        QueueName("celery", "celery"),
        QueueName(None, "reports"),
        QueueName("bullmq", "billing", prefix="myapp"),
        QueueName(None, "app:jobs"),  # "app" is no kind: a plain name, ':' and all
    )
    assert [str(q) for q in s.queues.names] == [t.strip() for t in text.split(",")]
    assert Settings.from_env({"QUEUE_NAMES": "RQ:default"}).queues.names[0].kind == "rq"


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


SECRETS = ("hunter2", "alice-token-0123456789", "x" * 32, "pw-secret", "replica-pw", "cert-pw")


def _secret_settings() -> Settings:
    return Settings(
        database_url="postgresql://app:hunter2@127.0.0.1/app?sslpassword=cert-pw&sslmode=require",
        database_replica_urls=("postgresql://app@127.0.0.1/app?password=replica-pw",),
        redis_url="redis://:hunter2@127.0.0.1:6379/0",
        auth_tokens={"alice": "alice-token-0123456789"},
        session_secret="x" * 32,
        metrics_basic_auth=("prom", "pw-secret"),
    )


def test_secrets_are_masked_in_description() -> None:
    s = _secret_settings()
    described = s.describe()
    text = repr(described)
    for secret in SECRETS:
        assert secret not in text
    assert described["database_url"] == (
        "postgresql://app:***@127.0.0.1/app?sslpassword=***&sslmode=require"
    )
    assert described["database_replica_urls"] == ["postgresql://app@127.0.0.1/app?password=***"]
    assert described["redis_url"] == "redis://:***@127.0.0.1:6379/0"
    assert described["auth_tokens"] == {"alice": "***"}
    assert described["session_secret"] == "***"
    assert described["metrics_basic_auth"] == "prom:***"
    # every setting, by the flat name Settings(...) takes
    assert list(described) == list(Settings.flat_names())
    assert described["database_timeout_ms"] == 5000


def test_no_repr_shows_a_secret() -> None:
    s = _secret_settings()
    texts = [repr(s), str(s), *(repr(getattr(s, f.name)) for f in dataclasses.fields(s))]
    texts += [repr(s.metrics.basic_auth), str(s.metrics.basic_auth)]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    assert "postgresql://app:***@127.0.0.1/app" in repr(s.database)
    # A refused secret is not repeated either: not in our lines, not in pydantic's text.
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SESSION_SECRET": "short-secret", "AUTH_TOKENS": "bob:bobs-secret"})
    assert "short-secret" not in str(info.value) and "bobs-secret" not in str(info.value)
    assert info.value.problems == [
        "AUTH_TOKENS: the token of 'bob' is too short; expected at least 16 characters",
        "SESSION_SECRET: is too short; expected at least 16 characters",
    ]
    with pytest.raises(ValidationError) as refused:
        DashboardSettings(session_secret="short-secret")
    assert "short-secret" not in str(refused.value)


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


# --- the slices ---


def test_slices_are_checked_as_they_are_built() -> None:
    refusals: list[Callable[[], object]] = [
        lambda: DatabaseSettings(min_connections=5, connection_limit=2),
        lambda: DatabaseSettings(url="mysql://db/app"),
        lambda: DatabaseSettings(timeout_ms=0),
        lambda: RedisSettings(cluster_enabled=True),
        lambda: RedisSettings(master_name=""),
        lambda: CacheSettings(key_prefix="cache:*"),
        lambda: CacheSettings(ttl_jitter=1.0),
        lambda: AuthSettings(tokens={"alice": "short"}),
        lambda: AuthSettings(tokens={"al ice": "alice-token-0123456789"}),
        lambda: MetricsSettings(basic_auth=("prom", "")),
        lambda: DashboardSettings(session_max_age=float("inf")),
        lambda: CacheSettings(no_such_setting=1),  # type: ignore[call-arg]
    ]
    for build in refusals:
        with pytest.raises(ValidationError):
            build()
    # by field name or by variable name; values are checked and converted either way
    assert DatabaseSettings.build(**{"DATABASE_CONNECTION_LIMIT": "7"}).connection_limit == 7
    assert RedisSettings(sentinel_hosts="h1:26379, h2:26380").sentinel_hosts == (
        HostPort("h1", 26379),
        HostPort("h2", 26380),
    )
    redis = RedisSettings()
    with pytest.raises(ValidationError, match="frozen"):
        redis.url = "redis://elsewhere:6379/0"  # type: ignore[misc]


def test_slice_problems_name_their_variables() -> None:
    with pytest.raises(ConfigError) as info:
        RedisSettings.build(sentinel_hosts=(HostPort("h", 26379),), cluster_enabled=True)
    assert info.value.problems == [
        "REDIS_CLUSTER_ENABLED: cannot be combined with REDIS_SENTINEL_HOSTS; pick one mode",
        "REDIS_CLUSTER_ENABLED: needs REDIS_URL naming one node of the cluster",
    ]
    with pytest.raises(ConfigError) as info:
        DatabaseSettings.build(connection_limit=0, timeout_ms="soon", replica_urls="x,y")
    assert info.value.problems == [
        "DATABASE_REPLICA_URLS: 'x' is not a URL of the form "
        "postgresql://[user[:password]@]host[:port]/...",
        "DATABASE_CONNECTION_LIMIT: 0 must be a positive integer",
        "DATABASE_TIMEOUT: 'soon' is not an integer",
    ]


def test_flat_names_go_to_the_slice_that_declares_them() -> None:
    s = Settings(
        redis_url="redis://127.0.0.1:6379/0",
        breaker_failure_threshold=2,
        section_timeout=0.1,
        database_timeout_ms=1000,
        queue_names=(QueueName("rq", "default"),),
    )
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.breakers.failure_threshold == 2
    assert s.rpc.section_timeout == 0.1
    assert s.database.timeout_ms == 1000
    assert s.queues.names == (QueueName("rq", "default"),)
    assert s.cache == CacheSettings()  # untouched slices keep their defaults
    assert s.redis.configured is True and s.redis.mode == "standalone"
    # Settings are read from their slices only: there is no flat attribute.
    with pytest.raises(AttributeError):
        _ = s.redis_url  # type: ignore[attr-defined]


def test_slices_and_flat_names_combine_and_replace_keeps_the_rest() -> None:
    base = Settings(database=DatabaseSettings(url="postgresql://db/app", connection_limit=3))
    s = Settings(database=base.database, database_min_connections=2, cache={"enabled": False})
    assert (s.database.url, s.database.connection_limit) == ("postgresql://db/app", 3)
    assert s.database.min_connections == 2 and s.cache.enabled is False
    # flat names through replace, as tests/pg_app.py does (mypy knows only the slice fields)
    copy = dataclasses.replace(s, alert_evaluation_enabled=False, cache_enabled=True)  # type: ignore[call-arg]
    assert copy.alerts.evaluation_enabled is False and copy.cache.enabled is True
    assert (
        copy.database == s.database and copy.dashboard.session_secret == s.dashboard.session_secret
    )
    with pytest.raises(ConfigError, match="DATABASE_MIN_CONNECTIONS"):
        dataclasses.replace(s, database_min_connections=4)  # type: ignore[call-arg]


def test_bad_flat_values_and_unknown_names_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(database_connection_limit=0, cache_ttl_jitter=1.5, metrics_refresh_timeout=-1)
    assert info.value.problems == [
        "DATABASE_CONNECTION_LIMIT: 0 must be a positive integer",
        "CACHE_TTL_JITTER: 1.5 must be a fraction in [0, 1)",
        "METRICS_REFRESH_TIMEOUT: -1 must be a positive number",
    ]
    with pytest.raises(ConfigError) as info:
        Settings(redis_ulr="redis://127.0.0.1:6379/0")
    assert info.value.problems == ["redis_ulr: is not a setting; did you mean redis_url?"]


def test_flat_names_are_the_variables_in_lower_case_or_say_their_unit() -> None:
    units = {
        "DATABASE_TIMEOUT": "database_timeout_ms",
        "REDIS_CONNECT_TIMEOUT": "redis_connect_timeout_ms",
        "REDIS_COMMAND_TIMEOUT": "redis_command_timeout_ms",
        "BREAKER_WINDOW": "breaker_window_seconds",
        "BREAKER_CALL_TIMEOUT": "breaker_call_timeout_ms",
    }
    expected = [units.get(v, v.lower()) for v in Settings.variables()]
    assert list(Settings.flat_names()) == expected
    assert len(set(Settings.variables())) == len(Settings.variables()) == 109


def test_the_environment_is_read_only_when_handed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-process/app")
    monkeypatch.setenv("CACHE_ENABLED", "false")
    assert Settings().database.url is None
    assert Settings.from_env({}).cache.enabled is True
    assert DatabaseSettings().url is None


def test_blank_is_unset_values_are_stripped_and_text_is_strict() -> None:
    s = Settings.from_env(
        {"DATABASE_CONNECTION_LIMIT": "   ", "CACHE_ENABLED": "", "REDIS_RETRIES": " 4 "}
    )
    assert (s.database.connection_limit, s.cache.enabled, s.redis.retries) == (10, True, 4)
    assert (
        Settings.from_env({"CACHE_HOT_TIER": "OFF", "LOG_LEVEL": "debug"}).cache.hot_tier is False
    )
    assert Settings.from_env({"LOG_LEVEL": "debug"}).server.log_level == "DEBUG"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REDIS_RETRIES": "7.0", "CACHE_HOT_TIER": "t", "RPC_TIMEOUT": "nan"})
    assert info.value.problems == [
        "REDIS_RETRIES: '7.0' is not an integer",
        "CACHE_HOT_TIER: 't' is not a boolean; expected true or false",
        "RPC_TIMEOUT: 'nan' is not a finite number",
    ]


def test_one_line_per_bad_variable_even_with_several_bad_entries() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REDIS_SENTINEL_HOSTS": "a,b:0,c:1", "PARTITION_PAIRS": "x,y"})
    assert info.value.problems == [
        "REDIS_SENTINEL_HOSTS: 'a' is not host:port",
        "PARTITION_PAIRS: 'x' is not legacy_table:partitioned_table",
    ]


def test_session_secret_is_random_for_each_settings_when_unset() -> None:
    secrets = {Settings().dashboard.session_secret for _ in range(3)}
    secrets.add(Settings.from_env({}).dashboard.session_secret)
    assert len(secrets) == 4 and all(len(s) >= 16 for s in secrets)


def test_redis_mode() -> None:
    assert RedisSettings().mode == "none" and not RedisSettings().configured
    sentinel = RedisSettings(sentinel_hosts="h:26379")
    assert (sentinel.mode, sentinel.configured) == ("sentinel", True)
    cluster = Settings(redis_url="redis://h:7000/0", redis_cluster_enabled=True)
    assert (cluster.redis.mode, cluster.redis.configured) == ("cluster", True)


def test_every_variable_is_in_the_configuration_reference() -> None:
    documented = set(
        re.findall(r"^\| `([A-Z0-9_]+)`", (ROOT / "docs/configuration.md").read_text(), re.M)
    )
    not_settings = {"PROMETHEUS_MULTIPROC_DIR", "INFRAWATCH_URL", "INFRAWATCH_TOKEN"}
    assert set(Settings.variables()) == documented - not_settings
