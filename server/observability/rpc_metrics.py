"""``infrawatch_rpc_*``: every procedure call, whichever wire adapter made it.

The router calls ``RpcMetrics.observe`` once per call (``Router(observer=...)``), so JSON-RPC,
tRPC and in-process (dashboard) calls are all counted without the adapters knowing. Labels are
bounded: ``procedure`` is a catalogue path or ``unknown``, ``protocol`` one of three, ``code``
``OK`` or one of the tRPC code names.
"""

from __future__ import annotations

from typing import Any

from server.observability.metrics import Metrics
from server.rpc.errors import ErrorCode
from server.rpc.router import Protocol

OK = "OK"


class RpcMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.calls = metrics.counter(
            "rpc_calls_total",
            "Procedure calls, by procedure, protocol and outcome (OK or the tRPC error code).",
            ("procedure", "protocol", "code"),
        )
        self.duration = metrics.histogram(
            "rpc_call_duration_seconds",
            "Time a procedure call took in the router (validation, middleware, handler).",
            ("procedure", "protocol"),
        )
        self.errors = metrics.counter(
            "rpc_errors_total",
            "Procedure calls that ended in an error, by procedure, protocol and tRPC code.",
            ("procedure", "protocol", "code"),
        )
        self._children: dict[tuple[str, str, ErrorCode | None], tuple[Any, Any, Any]] = {}

    def observe(
        self, procedure: str, protocol: Protocol, code: ErrorCode | None, seconds: float
    ) -> None:
        key = (procedure, protocol, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._make(procedure, protocol, code)
        calls, timer, errors = children
        calls.inc()
        timer.observe(seconds)
        if errors is not None:
            errors.inc()

    def _make(self, procedure: str, protocol: str, code: ErrorCode | None) -> tuple[Any, Any, Any]:
        name = OK if code is None else code.value
        errors = None if code is None else self.errors.labels(procedure, protocol, name)
        return (
            self.calls.labels(procedure, protocol, name),
            self.duration.labels(procedure, protocol),
            errors,
        )
