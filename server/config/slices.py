"""Settings per component: each slice declares the variables one part of the service reads.

A field's alias is its environment variable, and each variable is declared here once, with
its type, default and constraints. A slice is checked when it is built and is frozen after.

A slice is built from keyword arguments only (by field name or by variable name); it never
reads ``os.environ`` behind its caller's back. ``Slice.from_env(environ)`` reads the given
mapping through ``EnvironSource``: a value is stripped, and an empty one counts as unset.

Each field also has a flat name, the name ``Settings(...)`` accepts for it (``database_url``):
its variable's name in lower case, or the ``flat_name`` its ``json_schema_extra`` gives where
the flat name says a unit the variable's name leaves out (``DATABASE_TIMEOUT`` ->
``database_timeout_ms``).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from annotated_types import Ge, Gt, Le, Lt
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from server.config.fields import (
    AllowedHosts,
    AuthTokens,
    BasicAuthValue,
    CommaSeparated,
    HostPortValue,
    HttpUrl,
    KeyPrefix,
    LogLevel,
    Networks,
    PartitionPairValue,
    PgBouncerUrl,
    PostgresUrl,
    QueueNames,
    RedisUrl,
    UrlLimit,
)
from server.config.values import BasicAuth, ConfigError, mask_url

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class EnvironSource(PydanticBaseSettingsSource):
    """A slice's variables, read from the mapping given (not from ``os.environ``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = field.alias or field_name
        raw = self._environ.get(name)
        value = raw.strip() if raw is not None else ""
        return value or None, name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                found[key] = value
        return found


class Slice(BaseSettings):
    """Base of the slices: frozen, every field aliased to its environment variable."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,  # code passes field names, from_env the variables' names
        allow_inf_nan=False,
        hide_input_in_errors=True,  # a refused secret stays out of the ValidationError's text
    )

    # field name -> flat name; set for each slice class as it is defined
    flat_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        flat: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            if field.alias is None:
                raise TypeError(f"{cls.__name__}.{name} names no environment variable (alias)")
            extra = field.json_schema_extra
            declared = extra.get("flat_name") if isinstance(extra, dict) else None
            flat[name] = declared if isinstance(declared, str) else field.alias.lower()
        cls.flat_names = flat

    @field_validator("*", mode="before")
    @classmethod
    def _strict_text(cls, value: Any, info: ValidationInfo) -> Any:
        # The text of an integer or a boolean is taken as docs/configuration.md says, no
        # more: pydantic's lax mode would also take "7.0" as 7 and "t" or "n" as booleans.
        if not isinstance(value, str):
            return value
        kind = cls.model_fields[str(info.field_name)].annotation
        if kind is int:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an integer") from None
        if kind is bool:
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise ValueError(f"{value!r} is not a boolean; expected true or false")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments only: the environment comes in through from_env, explicitly.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """The slice from ``environ``; ``ConfigError`` names every bad variable."""
        return cls.build(**EnvironSource(cls, environ)())

    @classmethod
    def build(cls, **values: Any) -> Self:
        """``cls(**values)``, refusals as ``ConfigError``: one line per bad variable."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(problems_of(cls, exc)) from None

    @classmethod
    def env(cls, field_name: str) -> str:
        """The environment variable of a field."""
        alias = cls.model_fields[field_name].alias
        assert alias is not None  # checked as the class was defined
        return alias

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every variable this slice reads, in declaration order."""
        return tuple(cls.env(name) for name in cls.model_fields)

    def masked(self) -> dict[str, Any]:
        """Every field's value with secrets masked: the ``repr=False`` fields, URL passwords."""
        return {
            name: _masked(getattr(self, name), secret=not field.repr)
            for name, field in type(self).model_fields.items()
        }

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, field in type(self).model_fields.items():
            if field.repr:
                yield name, _masked(getattr(self, name), secret=False)


def _masked(value: Any, *, secret: bool) -> Any:
    if value is None:
        return None
    if secret:
        if isinstance(value, BasicAuth):
            return f"{value.user}:***"
        if isinstance(value, Mapping):
            return {name: "***" for name in value}
        return "***"
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, tuple):
        return [_masked(v, secret=False) if isinstance(v, str) else str(v) for v in value]
    return value


# --- the slices, in the order their problems are reported ---


class DatabaseSettings(Slice):
    """PostgreSQL: the primary, its replicas, the pools, PgBouncer's admin console."""

    url: PostgresUrl | None = Field(None, alias="DATABASE_URL")
    replica_urls: CommaSeparated[PostgresUrl] = Field((), alias="DATABASE_REPLICA_URLS")
    connection_limit: int = Field(10, gt=0, alias="DATABASE_CONNECTION_LIMIT")
    timeout_ms: int = Field(
        5000, gt=0, alias="DATABASE_TIMEOUT", json_schema_extra={"flat_name": "database_timeout_ms"}
    )
    min_connections: int = Field(1, ge=0, alias="DATABASE_MIN_CONNECTIONS")
    # 0 behind PgBouncer in transaction mode
    statement_cache_size: int = Field(100, ge=0, alias="DATABASE_STATEMENT_CACHE_SIZE")
    pgbouncer_admin_url: PgBouncerUrl | None = Field(None, alias="PGBOUNCER_ADMIN_URL")
    replica_health_interval: float = Field(30.0, gt=0, alias="REPLICA_HEALTH_INTERVAL")
    slow_query_ms: float = Field(100.0, gt=0, alias="SLOW_QUERY_MS")
    # database.topQueries: the window of its per-second figures and window means, and whether
    # the statements of infrawatch's own role are left out (docs/configuration.md).
    top_queries_window: float = Field(60.0, gt=0, alias="TOP_QUERIES_WINDOW")
    top_queries_exclude_own_role: bool = Field(True, alias="TOP_QUERIES_EXCLUDE_OWN_ROLE")

    @model_validator(mode="after")
    def _pool_bounds(self) -> Self:
        if self.min_connections > self.connection_limit:
            raise ConfigError(
                [
                    f"{self.env('min_connections')}: is greater than "
                    f"{self.env('connection_limit')} "
                    f"({self.min_connections} > {self.connection_limit})"
                ]
            )
        return self


class RedisSettings(Slice):
    """Redis: standalone, Sentinel or Cluster, and the client's timeouts and bounds."""

    url: RedisUrl | None = Field(None, alias="REDIS_URL")
    sentinel_hosts: CommaSeparated[HostPortValue] = Field((), alias="REDIS_SENTINEL_HOSTS")
    master_name: str = Field("mymaster", min_length=1, alias="REDIS_MASTER_NAME")
    cluster_enabled: bool = Field(False, alias="REDIS_CLUSTER_ENABLED")
    connect_timeout_ms: int = Field(
        2000,
        gt=0,
        alias="REDIS_CONNECT_TIMEOUT",
        json_schema_extra={"flat_name": "redis_connect_timeout_ms"},
    )
    command_timeout_ms: int = Field(
        1000,
        gt=0,
        alias="REDIS_COMMAND_TIMEOUT",
        json_schema_extra={"flat_name": "redis_command_timeout_ms"},
    )
    retries: int = Field(2, ge=0, alias="REDIS_RETRIES")
    health_check_interval: float = Field(15.0, ge=0, alias="REDIS_HEALTH_CHECK_INTERVAL")
    max_connections: int = Field(50, gt=0, alias="REDIS_MAX_CONNECTIONS")

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        cluster = self.env("cluster_enabled")
        problems = []
        if self.sentinel_hosts and self.cluster_enabled:
            problems.append(
                f"{cluster}: cannot be combined with {self.env('sentinel_hosts')}; pick one mode"
            )
        if self.cluster_enabled and self.url is None:
            problems.append(f"{cluster}: needs {self.env('url')} naming one node of the cluster")
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def configured(self) -> bool:
        return bool(self.url or self.sentinel_hosts)

    @property
    def mode(self) -> str:
        """``sentinel``, ``cluster``, ``standalone``, or ``none`` when Redis is not configured."""
        if self.sentinel_hosts:
            return "sentinel"
        if self.url is None:
            return "none"
        return "cluster" if self.cluster_enabled else "standalone"


class RedisWatchSettings(Slice):
    """The watched Redis: the window of ``monitoring.redisHealth``'s rates and the thresholds of
    the rules on it (``server/alerts/watched_redis.py``). The keyspace hit rate's thresholds are
    ``ALERT_CACHE_HIT_RATE_*`` and ``ALERT_CACHE_MIN_LOOKUPS`` (``AlertSettings``)."""

    health_window: float = Field(60.0, gt=0, alias="REDIS_HEALTH_WINDOW")
    memory_warning: float = Field(90.0, gt=0, le=100, alias="ALERT_REDIS_MEMORY_WARNING")
    evictions_warning: float = Field(0.0, ge=0, alias="ALERT_REDIS_EVICTIONS_WARNING")
    replica_lag_bytes_critical: int = Field(
        16 * 1024 * 1024, ge=0, alias="ALERT_REDIS_REPLICA_LAG_BYTES"
    )
    queue_backlog_warning: int = Field(1000, ge=0, alias="ALERT_QUEUE_BACKLOG_WARNING")
    queue_failed_warning: int = Field(100, ge=0, alias="ALERT_QUEUE_FAILED_WARNING")


class CacheSettings(Slice):
    """The procedure cache: Redis with an in-process hot tier and a memory fallback."""

    enabled: bool = Field(True, alias="CACHE_ENABLED")
    default_ttl: float = Field(5.0, gt=0, alias="CACHE_DEFAULT_TTL")
    memory_max_items: int = Field(10_000, gt=0, alias="CACHE_MEMORY_MAX_ITEMS")
    stale_max_age: float = Field(300.0, ge=0, alias="CACHE_STALE_MAX_AGE")
    warm_interval: float = Field(60.0, gt=0, alias="CACHE_WARM_INTERVAL")
    key_prefix: KeyPrefix = Field("infrawatch:cache:", alias="CACHE_KEY_PREFIX")
    # the fraction of a TTL taken off at random, so keys written together expire apart
    ttl_jitter: float = Field(0.1, ge=0, lt=1, alias="CACHE_TTL_JITTER")
    hot_tier: bool = Field(True, alias="CACHE_HOT_TIER")
    stats_window: float = Field(300.0, gt=0, alias="CACHE_STATS_WINDOW")


class QueueSettings(Slice):
    """The Redis-backed job queues to watch, or how to discover them."""

    names: QueueNames = Field((), alias="QUEUE_NAMES")
    discovery_interval: float = Field(60.0, gt=0, alias="QUEUE_DISCOVERY_INTERVAL")
    scan_max_keys: int = Field(100_000, gt=0, alias="QUEUE_SCAN_MAX_KEYS")


class PartitionSettings(Slice):
    """The table pairs of a migration to partitioned tables."""

    pairs: CommaSeparated[PartitionPairValue] = Field((), alias="PARTITION_PAIRS")
    exact_count_limit: int = Field(1_000_000, ge=0, alias="PARTITION_EXACT_COUNT_LIMIT")
    writes_window: float = Field(60.0, gt=0, alias="PARTITION_WRITES_WINDOW")


class AuthSettings(Slice):
    """Who may call what: operator tokens, and whether reading needs one too."""

    tokens: AuthTokens = Field(default_factory=dict, repr=False, alias="AUTH_TOKENS")
    read_tokens_required: bool = Field(False, alias="READ_TOKENS_REQUIRED")
    # wrong tokens (bearer or sign-in form) one client address may present per window
    failure_limit: int = Field(10, gt=0, alias="AUTH_FAILURE_LIMIT")
    failure_window: float = Field(60.0, gt=0, alias="AUTH_FAILURE_WINDOW")
    # proxies whose X-Forwarded-For names the client an address is throttled under
    trusted_proxies: Networks = Field((), alias="AUTH_TRUSTED_PROXIES")


class AlertSettings(Slice):
    """The alert evaluator's schedule and the thresholds of the built-in rules."""

    evaluation_enabled: bool = Field(True, alias="ALERT_EVALUATION_ENABLED")
    evaluation_interval: float = Field(15.0, gt=0, alias="ALERT_EVALUATION_INTERVAL")
    evaluation_timeout: float = Field(10.0, gt=0, alias="ALERT_EVALUATION_TIMEOUT")
    partition_delta_warning: float = Field(10.0, ge=0, alias="ALERT_PARTITION_DELTA_WARNING")
    partition_delta_critical: float = Field(100.0, ge=0, alias="ALERT_PARTITION_DELTA_CRITICAL")
    cache_hit_rate_warning: float = Field(70.0, gt=0, le=100, alias="ALERT_CACHE_HIT_RATE_WARNING")
    cache_hit_rate_critical: float = Field(
        50.0, gt=0, le=100, alias="ALERT_CACHE_HIT_RATE_CRITICAL"
    )
    cache_min_lookups: int = Field(100, ge=0, alias="ALERT_CACHE_MIN_LOOKUPS")
    replica_lag_warning: float = Field(10.0, ge=0, alias="ALERT_REPLICA_LAG_WARNING")
    replica_lag_critical: float = Field(30.0, ge=0, alias="ALERT_REPLICA_LAG_CRITICAL")
    cache_get_p95_warning: float = Field(50.0, ge=0, alias="ALERT_CACHE_GET_P95_WARNING")
    cache_get_p95_critical: float = Field(100.0, ge=0, alias="ALERT_CACHE_GET_P95_CRITICAL")
    invalidation_failure_rate_warning: float = Field(
        5.0, gt=0, le=100, alias="ALERT_INVALIDATION_FAILURE_RATE_WARNING"
    )
    invalidation_failure_rate_critical: float = Field(
        10.0, gt=0, le=100, alias="ALERT_INVALIDATION_FAILURE_RATE_CRITICAL"
    )
    pool_utilization_warning: float = Field(
        80.0, gt=0, le=100, alias="ALERT_POOL_UTILIZATION_WARNING"
    )
    query_p99_warning: float = Field(500.0, ge=0, alias="ALERT_QUERY_P99_WARNING")
    # The watched PostgreSQL (server/alerts/watched_postgres.py).
    db_connections_warning: float = Field(80.0, gt=0, le=100, alias="ALERT_DB_CONNECTIONS_WARNING")
    db_connections_critical: float = Field(
        95.0, gt=0, le=100, alias="ALERT_DB_CONNECTIONS_CRITICAL"
    )
    idle_in_transaction_seconds: float = Field(
        60.0, ge=0, alias="ALERT_IDLE_IN_TRANSACTION_SECONDS"
    )
    blocked_session_seconds: float = Field(30.0, ge=0, alias="ALERT_BLOCKED_SESSION_SECONDS")
    pgbouncer_maxwait_warning: float = Field(1.0, ge=0, alias="ALERT_PGBOUNCER_MAXWAIT_WARNING")
    pgbouncer_maxwait_critical: float = Field(5.0, ge=0, alias="ALERT_PGBOUNCER_MAXWAIT_CRITICAL")
    slow_statement_min_calls: int = Field(10, ge=1, alias="ALERT_SLOW_STATEMENT_MIN_CALLS")

    # (rule, the direction in which a reading is bad): its critical threshold must lie further
    # that way than its warning, or the warning never shows.
    _LEVELS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("partition_delta", "above"),
        ("cache_hit_rate", "below"),
        ("replica_lag", "above"),
        ("cache_get_p95", "above"),
        ("invalidation_failure_rate", "above"),
        ("db_connections", "above"),
        ("pgbouncer_maxwait", "above"),
    )

    @model_validator(mode="after")
    def _critical_stricter_than_warning(self) -> Self:
        problems = []
        for rule, direction in self._LEVELS:
            warning = getattr(self, f"{rule}_warning")
            critical = getattr(self, f"{rule}_critical")
            stricter = critical > warning if direction == "above" else critical < warning
            if not stricter:
                word = "greater" if direction == "above" else "less"
                problems.append(
                    f"{self.env(f'{rule}_critical')}: must be {word} than "
                    f"{self.env(f'{rule}_warning')} ({critical:g} vs {warning:g})"
                )
        if problems:
            raise ConfigError(problems)
        return self


class DeliverySettings(Slice):
    """Where alerts go (Alertmanager, signed webhooks), how they are retried, and who this
    instance is (the ``instance`` label, the evaluator's name)."""

    alertmanager_urls: CommaSeparated[HttpUrl] = Field((), alias="ALERTMANAGER_URLS")
    webhook_urls: CommaSeparated[HttpUrl] = Field((), alias="ALERT_WEBHOOK_URLS")
    webhook_secret: str | None = Field(
        None, min_length=16, repr=False, alias="ALERT_WEBHOOK_SECRET"
    )
    timeout: float = Field(5.0, gt=0, alias="ALERT_DELIVERY_TIMEOUT")
    poll_interval: float = Field(1.0, gt=0, alias="ALERT_DELIVERY_POLL_INTERVAL")
    retry_base: float = Field(1.0, gt=0, alias="ALERT_DELIVERY_RETRY_BASE")
    # At most a minute: a target that comes back is served within one.
    retry_max: float = Field(30.0, gt=0, le=60, alias="ALERT_DELIVERY_RETRY_MAX")
    resend_interval: float = Field(60.0, gt=0, alias="ALERT_DELIVERY_RESEND_INTERVAL")
    retention: float = Field(7 * 86400.0, gt=0, alias="ALERT_DELIVERY_RETENTION")
    dashboard_url: HttpUrl | None = Field(None, alias="ALERT_DASHBOARD_URL")
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        min_length=1,
        max_length=200,
        alias="INSTANCE_ID",
    )

    # The election's session lock needs a session of its own on the server: through PgBouncer
    # in transaction mode, point this at PostgreSQL itself. Unset: DATABASE_URL.
    election_database_url: PostgresUrl | None = Field(None, alias="ALERT_ELECTION_DATABASE_URL")

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> Self:
        if self.webhook_urls and self.webhook_secret is None:
            raise ConfigError(
                [f"{self.env('webhook_secret')}: must be set when {self.env('webhook_urls')} is"]
            )
        return self

    @property
    def configured(self) -> bool:
        return bool(self.alertmanager_urls or self.webhook_urls)


class BreakerSettings(Slice):
    """The policy of every circuit breaker."""

    reset_timeout: float = Field(30.0, gt=0, alias="BREAKER_RESET_TIMEOUT")
    failure_threshold: int = Field(5, gt=0, alias="BREAKER_FAILURE_THRESHOLD")
    error_rate: float = Field(50.0, gt=0, le=100, alias="BREAKER_ERROR_RATE")
    window_seconds: float = Field(
        30.0,
        gt=0,
        alias="BREAKER_WINDOW",
        json_schema_extra={"flat_name": "breaker_window_seconds"},
    )
    minimum_calls: int = Field(10, gt=0, alias="BREAKER_MINIMUM_CALLS")
    call_timeout_ms: int = Field(
        5000,
        gt=0,
        alias="BREAKER_CALL_TIMEOUT",
        json_schema_extra={"flat_name": "breaker_call_timeout_ms"},
    )


class RpcSettings(Slice):
    """Procedure calls: over the wire, and in-process as sections (unified metrics, the alert
    evaluator, the dashboard)."""

    timeout: float = Field(30.0, gt=0, alias="RPC_TIMEOUT")
    section_timeout: float = Field(5.0, gt=0, alias="SECTION_TIMEOUT")
    max_batch_size: int = Field(100, gt=0, alias="MAX_BATCH_SIZE")
    # Cost control (server/rpc/cost.py): calls over the wire run at most this many at once per
    # cost class; one past the bound waits up to RPC_QUEUE_WAIT seconds, then TOO_MANY_REQUESTS.
    cheap_concurrency: int = Field(64, gt=0, alias="RPC_CHEAP_CONCURRENCY")
    expensive_concurrency: int = Field(4, gt=0, alias="RPC_EXPENSIVE_CONCURRENCY")
    operator_concurrency: int = Field(8, gt=0, alias="RPC_OPERATOR_CONCURRENCY")
    queue_wait: float = Field(0.5, ge=0, alias="RPC_QUEUE_WAIT")
    # An expensive read's answer serves every identical call for this long (0: coalesce only).
    coalesce_ttl: float = Field(1.0, ge=0, le=60, alias="RPC_COALESCE_TTL")


class ServerSettings(Slice):
    """The HTTP server process: request limits, graceful stop, logging."""

    max_body_bytes: int = Field(1_048_576, gt=0, alias="MAX_BODY_BYTES")
    max_url_bytes: UrlLimit = Field(65_536, gt=0, alias="MAX_URL_BYTES")
    shutdown_timeout: float = Field(10.0, gt=0, alias="SHUTDOWN_TIMEOUT")
    # Long enough for a load balancer's readiness probe to see the 503 (probes every few s).
    shutdown_drain_seconds: float = Field(5.0, ge=0, alias="SHUTDOWN_DRAIN_SECONDS")
    log_level: LogLevel = Field("INFO", alias="LOG_LEVEL")
    # Host header values answered (DNS-rebinding guard); empty: any
    allowed_hosts: AllowedHosts = Field((), alias="ALLOWED_HOSTS")


class MetricsSettings(Slice):
    """``/metrics``: who may scrape it, and how fresh its pulled figures are."""

    basic_auth: BasicAuthValue | None = Field(None, repr=False, alias="METRICS_BASIC_AUTH")
    refresh_timeout: float = Field(1.0, gt=0, alias="METRICS_REFRESH_TIMEOUT")
    sync_interval: float = Field(5.0, gt=0, alias="METRICS_SYNC_INTERVAL")


class HealthSettings(Slice):
    """``/health/*`` probes."""

    check_timeout: float = Field(1.0, gt=0, alias="HEALTH_CHECK_TIMEOUT")


class DashboardSettings(Slice):
    """The dashboard: its signed sessions and cookies, and how often it refreshes."""

    # Unset: a random secret for each Settings (sessions then end with the process).
    session_secret: str = Field(
        default_factory=lambda: secrets.token_urlsafe(32),
        min_length=16,
        repr=False,
        alias="SESSION_SECRET",
    )
    session_max_age: float = Field(8 * 3600.0, gt=0, alias="SESSION_MAX_AGE")
    trust_forwarded_proto: bool = Field(False, alias="TRUST_FORWARDED_PROTO")
    refresh_interval: float = Field(15.0, gt=0, alias="DASHBOARD_REFRESH_INTERVAL")


# --- ValidationError -> one line per bad variable ---


def problems_of(cls: type[Slice], exc: ValidationError) -> list[str]:
    """``NAME: what was wrong; expected ...`` for each bad variable, in declaration order.

    A field-level error names the field's variable (the first thing wrong with it, once); a
    cross-field check raises ``ConfigError`` whose lines name their own variables.
    """
    problems: list[str] = []
    named: set[str] = set()
    by_alias = {field.alias: name for name, field in cls.model_fields.items()}
    for error in exc.errors():
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):
            problems += cause.problems
            continue
        key = str(error["loc"][0]) if error["loc"] else cls.__name__
        name = key if key in cls.model_fields else by_alias.get(key)
        if name is None:
            problems.append(f"{key}: is not a setting of {cls.__name__}")
            continue
        variable = cls.env(name)
        if variable not in named:
            named.add(variable)
            problems.append(f"{variable}: {_explain(error, cls.model_fields[name])}")
    return problems


def _explain(error: Any, field: FieldInfo) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx", {})
    number = "integer" if field.annotation is int else "number"
    if kind == "value_error":
        return str(ctx["error"])
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{value!r} is not an integer"
    if kind in ("float_parsing", "float_type"):
        return f"{value!r} is not a number"
    if kind == "finite_number":
        return f"{value!r} is not a finite number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{value!r} is not a boolean; expected true or false"
    if kind == "string_too_short":
        least = ctx["min_length"]
        return (
            "must not be empty"
            if least == 1
            else f"is too short; expected at least {least} characters"
        )
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{value} must be {_range(field, number)}"
    return str(error["msg"])


def _range(field: FieldInfo, number: str) -> str:
    """What a field's bounds allow, in words: ``a positive integer``, ``a number in (0, 100]``."""
    low = high = ""
    for bound in field.metadata:
        if isinstance(bound, Gt):
            low = f"({bound.gt:g}"
        elif isinstance(bound, Ge):
            low = f"[{bound.ge:g}"
        elif isinstance(bound, Lt):
            high = f"{bound.lt:g})"
        elif isinstance(bound, Le):
            high = f"{bound.le:g}]"
    if (low, high) == ("(0", "100]"):
        return "a percentage in (0, 100]"
    if (low, high) == ("[0", "1)"):
        return "a fraction in [0, 1)"
    if not high and low in ("(0", "[0"):
        return f"a positive {number}" if low == "(0" else f"zero or a positive {number}"
    if not high:
        return f"{'greater than' if low[0] == '(' else 'at least'} {low[1:]}"
    return f"a {number} in {low or '(-inf'}, {high}"
