"""Settings: read once from the environment, validated, frozen, then passed down.

Each component's settings are a slice (``server/config/slices.py``): a pydantic-settings class
whose fields declare their environment variable, type, default and constraints, checked when
the slice is built. ``Settings`` (``server/config/settings.py``) holds one of each
(``settings.database``, ``settings.redis``, ...). ``Settings.from_env(environ)`` raises one
``ConfigError`` naming every bad variable, each on its own line with what was expected.
``docs/configuration.md`` lists every variable; keep the two in step.

    server/config/values.py    the value types (TableName, QueueName, ...), ConfigError
    server/config/fields.py    how a variable's text becomes a value (pydantic Annotated types)
    server/config/slices.py    the slices
    server/config/settings.py  Settings, the aggregate
"""

from server.config.settings import Settings
from server.config.slices import (
    AlertSettings,
    AuthSettings,
    BreakerSettings,
    CacheSettings,
    DashboardSettings,
    DatabaseSettings,
    DeliverySettings,
    HealthSettings,
    MetricsSettings,
    PartitionSettings,
    QueueSettings,
    RedisSettings,
    RedisWatchSettings,
    RpcSettings,
    ServerSettings,
    Slice,
)
from server.config.values import (
    QUEUE_KINDS,
    BasicAuth,
    ConfigError,
    HostPort,
    PartitionPair,
    QueueName,
    TableName,
    mask_secrets,
    mask_url,
)

__all__ = [
    "QUEUE_KINDS",
    "AlertSettings",
    "AuthSettings",
    "BasicAuth",
    "BreakerSettings",
    "CacheSettings",
    "ConfigError",
    "DashboardSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "HealthSettings",
    "HostPort",
    "MetricsSettings",
    "PartitionPair",
    "PartitionSettings",
    "QueueName",
    "QueueSettings",
    "RedisSettings",
    "RedisWatchSettings",
    "RpcSettings",
    "ServerSettings",
    "Settings",
    "Slice",
    "TableName",
    "mask_secrets",
    "mask_url",
]
