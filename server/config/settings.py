"""``Settings``: every component's slice, read once from the environment, checked, frozen.

``Settings.from_env(environ)`` builds every slice and raises one ``ConfigError`` naming all the
bad variables, one line each. ``Settings(**values)`` takes slices by attribute name
(``database=DatabaseSettings(...)``) and single settings by their flat names
(``redis_url=...``, ``breaker_failure_threshold=2``), which go to the slice that declares them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

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
from server.config.values import ConfigError


@dataclass(frozen=True, init=False)
class Settings:
    """One slice per component; each component takes its own (``settings.redis``).

    A dataclass over frozen slices, so ``dataclasses.replace(settings, cache_enabled=False)``
    builds a checked copy with that one setting changed.
    """

    # in the order from_env reports problems
    database: DatabaseSettings
    redis: RedisSettings
    redis_watch: RedisWatchSettings
    cache: CacheSettings
    queues: QueueSettings
    partitions: PartitionSettings
    auth: AuthSettings
    alerts: AlertSettings
    delivery: DeliverySettings
    breakers: BreakerSettings
    rpc: RpcSettings
    server: ServerSettings
    metrics: MetricsSettings
    health: HealthSettings
    dashboard: DashboardSettings

    def __init__(self, **values: Any) -> None:
        """Slices by attribute name (a slice or a mapping of its field names), settings by flat
        name; a flat name given beside its slice changes that slice. Every slice not given is
        built from its defaults. Raises ``ConfigError`` naming every bad variable or name."""
        given: dict[str, Any] = {}
        changes: dict[str, dict[str, Any]] = {name: {} for name in _SLICES}
        unknown: list[str] = []
        for key, value in values.items():
            if key in _SLICES:
                given[key] = value
            elif key in _FLAT:
                slice_name, field_name = _FLAT[key]
                changes[slice_name][field_name] = value
            else:
                unknown.append(_not_a_setting(key))
        if unknown:
            raise ConfigError(unknown)
        problems: list[str] = []
        for name, cls in _SLICES.items():
            try:
                part = _build(cls, given.get(name), changes[name])
            except ConfigError as exc:
                problems += exc.problems
            else:
                object.__setattr__(self, name, part)
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Every slice from ``environ``; an empty variable counts as unset."""
        slices: dict[str, Slice] = {}
        problems: list[str] = []
        for name, slice_cls in _SLICES.items():
            try:
                slices[name] = slice_cls.from_env(environ)
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems)
        return cls(**slices)

    @classmethod
    def variables(cls) -> tuple[str, ...]:
        """Every environment variable the settings read."""
        return tuple(v for slice_cls in _SLICES.values() for v in slice_cls.variables())

    @classmethod
    def flat_names(cls) -> tuple[str, ...]:
        """Every name ``Settings(...)`` accepts for a single setting."""
        return tuple(_FLAT)

    def describe(self) -> dict[str, Any]:
        """The effective settings by flat name, every secret masked (for ``check-config``)."""
        out: dict[str, Any] = {}
        for name in _SLICES:
            part: Slice = getattr(self, name)
            masked = part.masked()
            for field_name, flat in type(part).flat_names.items():
                out[flat] = masked[field_name]
        return out


def _build(cls: type[Slice], base: object, changes: dict[str, Any]) -> Slice:
    if base is None:
        return cls.build(**changes)
    if isinstance(base, Mapping):
        return cls.build(**{**base, **changes})
    if type(base) is not cls:
        raise TypeError(f"expected {cls.__name__}, not {type(base).__name__}")
    return cls.build(**{**dict(base), **changes}) if changes else base


def _not_a_setting(key: str) -> str:
    close = difflib.get_close_matches(key, [*_SLICES, *_FLAT], n=1)
    return f"{key}: is not a setting" + (f"; did you mean {close[0]}?" if close else "")


def _index() -> tuple[dict[str, type[Slice]], dict[str, tuple[str, str]]]:
    """The slices by attribute name, and every flat name -> (slice attribute, field name)."""
    hints = get_type_hints(Settings)
    slices: dict[str, type[Slice]] = {f.name: hints[f.name] for f in fields(Settings)}
    flat: dict[str, tuple[str, str]] = {}
    variables: set[str] = set()
    for slice_name, cls in slices.items():
        for field_name, flat_name in cls.flat_names.items():
            variable = cls.env(field_name)
            if flat_name in flat or flat_name in slices or variable in variables:
                raise TypeError(f"{cls.__name__}.{field_name}: {variable} declared twice")
            flat[flat_name] = (slice_name, field_name)
            variables.add(variable)
    return slices, flat


_SLICES, _FLAT = _index()
