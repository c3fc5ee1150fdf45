"""``BreakerRegistry``: the named breakers of one app, created on first use from ``Settings``.

One registry per app, built in ``Services`` and never at import, so breaker state cannot
outlive an app or leak between tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from server.config import Settings
from server.errors import ErrorCode, RpcError
from server.resilience.breaker import Breaker, BreakerConfig, Listener


class BreakerRegistry:
    def __init__(self, defaults: BreakerConfig | None = None) -> None:
        self.defaults = defaults or BreakerConfig()
        self._breakers: dict[str, Breaker] = {}
        self._listeners: list[Listener] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerRegistry:
        return cls(BreakerConfig.from_settings(settings))

    def get(self, name: str, **overrides: Any) -> Breaker:
        """The breaker called ``name``, created on first use with ``overrides`` of the defaults
        (any ``BreakerConfig`` field, e.g. ``call_timeout=1.0``).

        Asking again with overrides that differ from the breaker's raises ``ValueError``: two
        call sites would otherwise silently share a breaker tuned for only one of them.
        """
        breaker = self._breakers.get(name)
        if breaker is None:
            if not name:
                raise ValueError("a breaker needs a name")
            breaker = Breaker(name, self._config(overrides))
            for listener in self._listeners:
                breaker.add_listener(listener)
            self._breakers[name] = breaker
        elif overrides and self._config(overrides) != breaker.config:
            raise ValueError(
                f"breaker {name!r} already exists with {breaker.config}; "
                f"cannot get it again with {overrides}"
            )
        return breaker

    def _config(self, overrides: dict[str, Any]) -> BreakerConfig:
        known = {f.name for f in dataclasses.fields(BreakerConfig)}
        if unknown := sorted(set(overrides) - known):
            raise ValueError(
                f"unknown breaker setting(s) {unknown}; expected some of {sorted(known)}"
            )
        return dataclasses.replace(self.defaults, **overrides)

    def all(self) -> list[Breaker]:
        """Every breaker, by name."""
        return [self._breakers[name] for name in sorted(self._breakers)]

    def find(self, name: str) -> Breaker:
        """The existing breaker called ``name``, or NOT_FOUND for an operator's typo."""
        breaker = self._breakers.get(name)
        if breaker is None:
            known = ", ".join(sorted(self._breakers)) or "none yet"
            raise RpcError(
                ErrorCode.NOT_FOUND,
                f"no circuit breaker named {name!r} (known: {known})",
                details={"name": name, "known": sorted(self._breakers)},
            )
        return breaker

    def add_listener(self, listener: Listener) -> None:
        """``listener(breaker, old, new)`` on every state change of every breaker, present and
        future. It runs on the event loop, inside the call path: quick, no I/O (a Prometheus
        counter increment is the intended use)."""
        self._listeners.append(listener)
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)
