"""Settings: read once from the environment, validated, frozen, then passed down.

``Settings.from_env(environ)`` checks every variable and raises one ``ConfigError`` naming all
the bad ones, each on its own line with what was expected. Tests build ``Settings(...)``
directly. ``docs/configuration.md`` lists every variable; keep the two in step.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """One line per bad variable: ``NAME: what was wrong; expected ...``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class TableName:
    """A table name from configuration, checked to be ``[schema.]identifier``."""

    schema: str | None
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        parts = text.strip().split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError(f"{text!r} is not a table name ([schema.]identifier)")
        return cls(parts[0], parts[1]) if len(parts) == 2 else cls(None, parts[0])

    @property
    def quoted(self) -> str:
        """The name ready to splice into SQL: every part double-quoted."""
        name = f'"{self.name}"'
        return f'"{self.schema}".{name}' if self.schema else name

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True, slots=True)
class PartitionPair:
    legacy: TableName
    partitioned: TableName

    @property
    def name(self) -> str:
        return f"{self.legacy}:{self.partitioned}"


QUEUE_KINDS = ("bullmq", "rq", "celery")


@dataclass(frozen=True, slots=True)
class QueueName:
    """One entry of ``QUEUE_NAMES``: ``kind:name``, or a plain ``name`` whose kind is detected.

    ``bullmq:prefix:name`` names a BullMQ queue under a key prefix other than ``bull``
    (BullMQ forbids ``:`` in queue names, so the last segment is always the name).
    """

    kind: str | None  # one of QUEUE_KINDS; None: detected from the keys present
    name: str
    prefix: str | None = None  # BullMQ key prefix; None means BullMQ's default "bull"

    @classmethod
    def parse(cls, text: str) -> QueueName:
        head, sep, rest = text.partition(":")
        kind = head.lower()
        if not sep or kind not in QUEUE_KINDS:
            return cls(None, text)  # a plain name, ':' and all
        if not rest:
            raise ValueError(f"{text!r} names no queue after {head}:")
        if kind == "bullmq" and ":" in rest:
            prefix, _, name = rest.rpartition(":")
            if not prefix or not name:
                raise ValueError(f"{text!r} is not bullmq:[prefix:]name")
            return cls(kind, name, prefix)
        return cls(kind, rest)

    def __str__(self) -> str:
        if self.kind is None:
            return self.name
        if self.prefix is not None:
            return f"{self.kind}:{self.prefix}:{self.name}"
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    # --- contract variables (DESIGN.md) ---
    database_url: str | None = None
    database_replica_urls: tuple[str, ...] = ()
    database_connection_limit: int = 10
    database_timeout_ms: int = 5000
    pgbouncer_admin_url: str | None = None
    redis_url: str | None = None
    redis_sentinel_hosts: tuple[HostPort, ...] = ()
    redis_master_name: str = "mymaster"
    redis_cluster_enabled: bool = False
    cache_enabled: bool = True
    queue_names: tuple[QueueName, ...] = ()
    partition_pairs: tuple[PartitionPair, ...] = ()
    auth_tokens: Mapping[str, str] = field(default_factory=dict)
    read_tokens_required: bool = False
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    alert_evaluation_interval: float = 15.0
    breaker_reset_timeout: float = 30.0
    # --- further settings (docs/configuration.md) ---
    database_min_connections: int = 1
    database_statement_cache_size: int = 100  # 0 behind PgBouncer in transaction mode
    replica_health_interval: float = 30.0
    slow_query_ms: float = 100.0
    partition_exact_count_limit: int = 1_000_000
    partition_writes_window: float = 60.0
    redis_connect_timeout_ms: int = 2000
    redis_command_timeout_ms: int = 1000
    redis_retries: int = 2
    redis_health_check_interval: float = 15.0
    redis_max_connections: int = 50
    breaker_failure_threshold: int = 5
    breaker_error_rate: float = 50.0
    breaker_window_seconds: float = 30.0
    breaker_minimum_calls: int = 10
    breaker_call_timeout_ms: int = 5000
    cache_default_ttl: float = 5.0
    cache_memory_max_items: int = 10_000
    cache_stale_max_age: float = 300.0
    cache_warm_interval: float = 60.0
    queue_discovery_interval: float = 60.0
    queue_scan_max_keys: int = 100_000
    cache_key_prefix: str = "infrawatch:cache:"
    cache_ttl_jitter: float = 0.1  # fraction of a TTL taken off at random, so keys expire apart
    cache_hot_tier: bool = True
    cache_stats_window: float = 300.0
    rpc_timeout: float = 30.0
    max_body_bytes: int = 1_048_576
    max_batch_size: int = 100
    max_url_bytes: int = 65_536
    metrics_basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    metrics_refresh_timeout: float = 1.0
    metrics_sync_interval: float = 5.0
    health_check_timeout: float = 1.0
    shutdown_timeout: float = 10.0
    log_level: str = "INFO"
    # --- alerts (docs/alerts.md): thresholds of the built-in rules, and evaluation bounds ---
    alert_evaluation_enabled: bool = True
    alert_evaluation_timeout: float = 10.0
    section_timeout: float = 5.0
    alert_partition_delta_warning: float = 10.0
    alert_partition_delta_critical: float = 100.0
    alert_cache_hit_rate_warning: float = 70.0
    alert_cache_hit_rate_critical: float = 50.0
    alert_cache_min_lookups: int = 100
    alert_replica_lag_warning: float = 10.0
    alert_replica_lag_critical: float = 30.0
    alert_cache_get_p95_warning: float = 50.0
    alert_cache_get_p95_critical: float = 100.0
    alert_invalidation_failure_rate_warning: float = 5.0
    alert_invalidation_failure_rate_critical: float = 10.0
    alert_pool_utilization_warning: float = 80.0
    alert_query_p99_warning: float = 500.0
    # --- dashboard ---
    session_max_age: float = 8 * 3600.0
    trust_forwarded_proto: bool = False
    dashboard_refresh_interval: float = 15.0

    def __post_init__(self) -> None:
        problems = []
        if self.database_min_connections > self.database_connection_limit:
            problems.append(
                "DATABASE_MIN_CONNECTIONS: is greater than DATABASE_CONNECTION_LIMIT "
                f"({self.database_min_connections} > {self.database_connection_limit})"
            )
        if self.redis_sentinel_hosts and self.redis_cluster_enabled:
            problems.append(
                "REDIS_CLUSTER_ENABLED: cannot be combined with REDIS_SENTINEL_HOSTS; pick one mode"
            )
        problems += self._alert_threshold_problems()
        try:
            _key_prefix(self.cache_key_prefix)
        except ValueError as exc:
            problems.append(f"CACHE_KEY_PREFIX: {exc}")
        if self.redis_cluster_enabled and self.redis_url is None:
            problems.append("REDIS_CLUSTER_ENABLED: needs REDIS_URL naming one node of the cluster")
        if problems:
            raise ConfigError(problems)

    def _alert_threshold_problems(self) -> list[str]:
        """A critical threshold must be stricter than its warning, or warning never shows."""
        pairs = [
            (
                "ALERT_PARTITION_DELTA",
                self.alert_partition_delta_warning,
                self.alert_partition_delta_critical,
                "above",
            ),
            (
                "ALERT_CACHE_HIT_RATE",
                self.alert_cache_hit_rate_warning,
                self.alert_cache_hit_rate_critical,
                "below",
            ),
            (
                "ALERT_REPLICA_LAG",
                self.alert_replica_lag_warning,
                self.alert_replica_lag_critical,
                "above",
            ),
            (
                "ALERT_CACHE_GET_P95",
                self.alert_cache_get_p95_warning,
                self.alert_cache_get_p95_critical,
                "above",
            ),
            (
                "ALERT_INVALIDATION_FAILURE_RATE",
                self.alert_invalidation_failure_rate_warning,
                self.alert_invalidation_failure_rate_critical,
                "above",
            ),
        ]
        problems = []
        for prefix, warning, critical, direction in pairs:
            stricter = critical > warning if direction == "above" else critical < warning
            if not stricter:
                word = "greater" if direction == "above" else "less"
                problems.append(
                    f"{prefix}_CRITICAL: must be {word} than {prefix}_WARNING "
                    f"({critical:g} vs {warning:g})"
                )
        return problems

    @property
    def operator_names(self) -> tuple[str, ...]:
        return tuple(self.auth_tokens)

    @property
    def redis_configured(self) -> bool:
        return bool(self.redis_url or self.redis_sentinel_hosts)

    @property
    def redis_mode(self) -> str:
        """``sentinel``, ``cluster``, ``standalone``, or ``none`` when Redis is not configured."""
        if self.redis_sentinel_hosts:
            return "sentinel"
        if self.redis_url is None:
            return "none"
        return "cluster" if self.redis_cluster_enabled else "standalone"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        reader = _Reader(environ)
        values: dict[str, Any] = {
            "database_url": reader.get("DATABASE_URL", _postgres_url),
            "database_replica_urls": reader.get("DATABASE_REPLICA_URLS", _list_of(_postgres_url)),
            "database_connection_limit": reader.get("DATABASE_CONNECTION_LIMIT", _positive_int),
            "database_timeout_ms": reader.get("DATABASE_TIMEOUT", _positive_int),
            "pgbouncer_admin_url": reader.get("PGBOUNCER_ADMIN_URL", _pgbouncer_url),
            "redis_url": reader.get("REDIS_URL", _redis_url),
            "redis_sentinel_hosts": reader.get("REDIS_SENTINEL_HOSTS", _list_of(_host_port)),
            "redis_master_name": reader.get("REDIS_MASTER_NAME", _nonempty),
            "redis_cluster_enabled": reader.get("REDIS_CLUSTER_ENABLED", _bool),
            "cache_enabled": reader.get("CACHE_ENABLED", _bool),
            "queue_names": reader.get("QUEUE_NAMES", _queue_names),
            "partition_pairs": reader.get("PARTITION_PAIRS", _list_of(_partition_pair)),
            "auth_tokens": reader.get("AUTH_TOKENS", _auth_tokens),
            "read_tokens_required": reader.get("READ_TOKENS_REQUIRED", _bool),
            "session_secret": reader.get("SESSION_SECRET", _secret),
            "alert_evaluation_interval": reader.get("ALERT_EVALUATION_INTERVAL", _positive_float),
            "breaker_reset_timeout": reader.get("BREAKER_RESET_TIMEOUT", _positive_float),
            "database_min_connections": reader.get("DATABASE_MIN_CONNECTIONS", _non_negative_int),
            "database_statement_cache_size": reader.get(
                "DATABASE_STATEMENT_CACHE_SIZE", _non_negative_int
            ),
            "replica_health_interval": reader.get("REPLICA_HEALTH_INTERVAL", _positive_float),
            "slow_query_ms": reader.get("SLOW_QUERY_MS", _positive_float),
            "partition_writes_window": reader.get("PARTITION_WRITES_WINDOW", _positive_float),
            "partition_exact_count_limit": reader.get(
                "PARTITION_EXACT_COUNT_LIMIT", _non_negative_int
            ),
            "redis_connect_timeout_ms": reader.get("REDIS_CONNECT_TIMEOUT", _positive_int),
            "redis_command_timeout_ms": reader.get("REDIS_COMMAND_TIMEOUT", _positive_int),
            "redis_retries": reader.get("REDIS_RETRIES", _non_negative_int),
            "redis_health_check_interval": reader.get(
                "REDIS_HEALTH_CHECK_INTERVAL", _non_negative_float
            ),
            "redis_max_connections": reader.get("REDIS_MAX_CONNECTIONS", _positive_int),
            "breaker_failure_threshold": reader.get("BREAKER_FAILURE_THRESHOLD", _positive_int),
            "breaker_error_rate": reader.get("BREAKER_ERROR_RATE", _percentage),
            "breaker_window_seconds": reader.get("BREAKER_WINDOW", _positive_float),
            "breaker_minimum_calls": reader.get("BREAKER_MINIMUM_CALLS", _positive_int),
            "breaker_call_timeout_ms": reader.get("BREAKER_CALL_TIMEOUT", _positive_int),
            "cache_default_ttl": reader.get("CACHE_DEFAULT_TTL", _positive_float),
            "cache_memory_max_items": reader.get("CACHE_MEMORY_MAX_ITEMS", _positive_int),
            "cache_stale_max_age": reader.get("CACHE_STALE_MAX_AGE", _non_negative_float),
            "cache_warm_interval": reader.get("CACHE_WARM_INTERVAL", _positive_float),
            "queue_discovery_interval": reader.get("QUEUE_DISCOVERY_INTERVAL", _positive_float),
            "queue_scan_max_keys": reader.get("QUEUE_SCAN_MAX_KEYS", _positive_int),
            "cache_key_prefix": reader.get("CACHE_KEY_PREFIX", _key_prefix),
            "cache_ttl_jitter": reader.get("CACHE_TTL_JITTER", _fraction),
            "cache_hot_tier": reader.get("CACHE_HOT_TIER", _bool),
            "cache_stats_window": reader.get("CACHE_STATS_WINDOW", _positive_float),
            "rpc_timeout": reader.get("RPC_TIMEOUT", _positive_float),
            "max_body_bytes": reader.get("MAX_BODY_BYTES", _positive_int),
            "max_batch_size": reader.get("MAX_BATCH_SIZE", _positive_int),
            "max_url_bytes": reader.get("MAX_URL_BYTES", _url_limit),
            "metrics_basic_auth": reader.get("METRICS_BASIC_AUTH", _basic_auth),
            "metrics_refresh_timeout": reader.get("METRICS_REFRESH_TIMEOUT", _positive_float),
            "metrics_sync_interval": reader.get("METRICS_SYNC_INTERVAL", _positive_float),
            "health_check_timeout": reader.get("HEALTH_CHECK_TIMEOUT", _positive_float),
            "shutdown_timeout": reader.get("SHUTDOWN_TIMEOUT", _positive_float),
            "log_level": reader.get("LOG_LEVEL", _log_level),
            "alert_evaluation_enabled": reader.get("ALERT_EVALUATION_ENABLED", _bool),
            "alert_evaluation_timeout": reader.get("ALERT_EVALUATION_TIMEOUT", _positive_float),
            "section_timeout": reader.get("SECTION_TIMEOUT", _positive_float),
            "alert_partition_delta_warning": reader.get(
                "ALERT_PARTITION_DELTA_WARNING", _non_negative_float
            ),
            "alert_partition_delta_critical": reader.get(
                "ALERT_PARTITION_DELTA_CRITICAL", _non_negative_float
            ),
            "alert_cache_hit_rate_warning": reader.get("ALERT_CACHE_HIT_RATE_WARNING", _percentage),
            "alert_cache_hit_rate_critical": reader.get(
                "ALERT_CACHE_HIT_RATE_CRITICAL", _percentage
            ),
            "alert_cache_min_lookups": reader.get("ALERT_CACHE_MIN_LOOKUPS", _non_negative_int),
            "alert_replica_lag_warning": reader.get(
                "ALERT_REPLICA_LAG_WARNING", _non_negative_float
            ),
            "alert_replica_lag_critical": reader.get(
                "ALERT_REPLICA_LAG_CRITICAL", _non_negative_float
            ),
            "alert_cache_get_p95_warning": reader.get(
                "ALERT_CACHE_GET_P95_WARNING", _non_negative_float
            ),
            "alert_cache_get_p95_critical": reader.get(
                "ALERT_CACHE_GET_P95_CRITICAL", _non_negative_float
            ),
            "alert_invalidation_failure_rate_warning": reader.get(
                "ALERT_INVALIDATION_FAILURE_RATE_WARNING", _percentage
            ),
            "alert_invalidation_failure_rate_critical": reader.get(
                "ALERT_INVALIDATION_FAILURE_RATE_CRITICAL", _percentage
            ),
            "alert_pool_utilization_warning": reader.get(
                "ALERT_POOL_UTILIZATION_WARNING", _percentage
            ),
            "alert_query_p99_warning": reader.get("ALERT_QUERY_P99_WARNING", _non_negative_float),
            "session_max_age": reader.get("SESSION_MAX_AGE", _positive_float),
            "trust_forwarded_proto": reader.get("TRUST_FORWARDED_PROTO", _bool),
            "dashboard_refresh_interval": reader.get("DASHBOARD_REFRESH_INTERVAL", _positive_float),
        }
        if reader.problems:
            raise ConfigError(reader.problems)
        return cls(**{k: v for k, v in values.items() if v is not None})

    def describe(self) -> dict[str, Any]:
        """The effective settings with every secret masked (for ``check-config``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in {"session_secret"}:
                value = "***"
            elif f.name == "auth_tokens":
                value = {name: "***" for name in value}
            elif f.name == "metrics_basic_auth" and value is not None:
                value = f"{value[0]}:***"
            elif isinstance(value, str) and "://" in value:
                value = mask_url(value)
            elif isinstance(value, tuple):
                value = [mask_url(v) if isinstance(v, str) else str(v) for v in value]
            out[f.name] = value
        return out


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def get(self, name: str, parse: Callable[[str], T]) -> T | None:
        raw = self.environ.get(name)
        if raw is None or not raw.strip():
            return None
        try:
            return parse(raw.strip())
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return None


def _bool(text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean; expected true or false")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise ValueError(f"{value} must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError(f"{value} must be zero or a positive integer")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise ValueError(f"{text} must be a positive number of seconds")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise ValueError(f"{text} must be zero or a positive number")
    return value


def _percentage(text: str) -> float:
    value = _float(text)
    if not 0 < value <= 100:
        raise ValueError(f"{text} must be a percentage in (0, 100]")
    return value


def _url_limit(text: str) -> int:
    value = _positive_int(text)
    if value < 8190:
        raise ValueError(f"{value} is below aiohttp's own 8190-byte request line; expected >= 8190")
    return value


def _fraction(text: str) -> float:
    value = _float(text)
    if not 0 <= value < 1:
        raise ValueError(f"{text} must be a fraction in [0, 1)")
    return value


def _key_prefix(text: str) -> str:
    # The prefix goes into SCAN MATCH patterns and CLIENT TRACKING PREFIX as is: no glob syntax.
    if re.search(r"[*?\[\]\\\s]", text):
        raise ValueError(f"{text!r} may not hold glob characters (*?[]\\) or whitespace")
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _secret(text: str) -> str:
    if len(text) < 16:
        raise ValueError("is too short; expected at least 16 characters")
    return text


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"{text!r} is not a log level; expected DEBUG, INFO, WARNING or ERROR")
    return level


def _url(text: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(text)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(
            f"{mask_url(text)!r} is not a URL of the form {schemes[0]}://[user[:password]@]host[:port]/..."
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{mask_url(text)!r} has an invalid port") from None
    return text


def _postgres_url(text: str) -> str:
    return _url(text, ("postgresql", "postgres"))


def _pgbouncer_url(text: str) -> str:
    url = _postgres_url(text)
    if urlsplit(url).path.strip("/") != "pgbouncer":
        raise ValueError(f"{mask_url(url)!r} must name the admin database: .../pgbouncer")
    return url


def _redis_url(text: str) -> str:
    return _url(text, ("redis", "rediss", "unix"))


def _host_port(text: str) -> HostPort:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    number = _int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{text!r} has a port out of range")
    return HostPort(host, number)


def _partition_pair(text: str) -> PartitionPair:
    legacy, sep, partitioned = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not legacy_table:partitioned_table")
    return PartitionPair(TableName.parse(legacy), TableName.parse(partitioned))


def _queue_names(text: str) -> tuple[QueueName, ...]:
    names = _list_of(QueueName.parse)(text)
    seen: set[QueueName] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"queue {str(name)!r} is listed twice")
        seen.add(name)
    return names


def _auth_tokens(text: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for item in text.split(","):
        name, sep, token = item.strip().partition(":")
        if not sep or not name or not token:
            raise ValueError("expected name:token,... (an entry has no name or no token)")
        if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
            raise ValueError(f"operator name {name!r} may hold only letters, digits and _.@-")
        if len(token) < 16:
            raise ValueError(f"the token of {name!r} is too short; expected at least 16 characters")
        if name in tokens:
            raise ValueError(f"operator {name!r} is listed twice")
        tokens[name] = token
    return tokens


def _basic_auth(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("expected user:password")
    return user, password


def _list_of(parse: Callable[[str], T]) -> Callable[[str], tuple[T, ...]]:
    def parse_list(text: str) -> tuple[T, ...]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        return tuple(parse(item) for item in items)

    return parse_list
