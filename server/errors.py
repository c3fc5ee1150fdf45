"""Every error the service raises, and the one table that says what each code means.

    RpcError(code)              a failure a client is meant to see: a code name, a message
     ├─ ProcedureNotFound       NOT_FOUND: no procedure on that path (for that protocol)
     ├─ InvalidInput            BAD_REQUEST: the procedure's input failed validation
     ├─ InvalidRequest          BAD_REQUEST (or another code): not a well-formed request of its
     │                          wire protocol (a JSON-RPC member that is not a Request object)
     ├─ Throttled               TOO_MANY_REQUESTS: too many failed credentials from one address
     ├─ SqlError                the statement itself is at fault: CONFLICT, BAD_REQUEST or
     │                          INTERNAL_SERVER_ERROR by SQLSTATE class; never counted by a breaker
     ├─ TooManyRequests         TOO_MANY_REQUESTS: load shed, ours to refuse; ``retry_after``
     │   └─ PoolExhausted       our own pool stayed busy: load shedding, no breaker counts it
     └─ Unavailable             SERVICE_UNAVAILABLE: a dependency cannot serve us
         ├─ CircuitOpen         rejected at once: its breaker is open, forced open or half-open
         ├─ CallTimeout         the call overran its breaker's call timeout
         ├─ PoolTimeout         no pooled connection came within the acquire timeout
         ├─ QueryTimeout        PostgreSQL cancelled the statement for running too long
         └─ StoreRejected       PostgreSQL refused an alert-store statement: retrying won't help

Foreign errors (asyncpg, redis-py, psycopg, OS and timeout errors) are mapped to these once, at
the edge of the datastore that raised them (``datastores/sqlstate.py``, ``datastores/redis.py``,
``datastores/pgbouncer.py``); anything else that escapes a procedure becomes
INTERNAL_SERVER_ERROR at the router. Each wire adapter turns an ``RpcError`` into its own shape
in one function (``wire/jsonrpc.py`` ``error_object``, ``wire/trpc.py`` ``error_shape``,
``wire/http.py`` ``error_response`` for the plain HTTP routes). A bad setting is no ``RpcError``:
``config.ConfigError`` stops the process at start-up.

``CODES`` is @trpc/server v11's own table (``codes.ts`` for the numbers, ``getHTTPStatusCode.ts``
for the HTTP statuses): tRPC clients read ``data.code`` and ``data.httpStatus``, so both must
match it exactly. This module imports nothing of ours: every layer may import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    PARSE_ERROR = "PARSE_ERROR"
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_SUPPORTED = "METHOD_NOT_SUPPORTED"
    TIMEOUT = "TIMEOUT"
    CONFLICT = "CONFLICT"
    PRECONDITION_FAILED = "PRECONDITION_FAILED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    UNPROCESSABLE_CONTENT = "UNPROCESSABLE_CONTENT"
    TOO_MANY_REQUESTS = "TOO_MANY_REQUESTS"
    CLIENT_CLOSED_REQUEST = "CLIENT_CLOSED_REQUEST"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    BAD_GATEWAY = "BAD_GATEWAY"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    GATEWAY_TIMEOUT = "GATEWAY_TIMEOUT"


@dataclass(frozen=True, slots=True)
class CodeInfo:
    jsonrpc: int  # tRPC's number for the code (JSON-RPC's own where the spec has one)
    http_status: int


CODES: dict[ErrorCode, CodeInfo] = {
    ErrorCode.PARSE_ERROR: CodeInfo(-32700, 400),
    ErrorCode.BAD_REQUEST: CodeInfo(-32600, 400),
    ErrorCode.UNAUTHORIZED: CodeInfo(-32001, 401),
    ErrorCode.FORBIDDEN: CodeInfo(-32003, 403),
    ErrorCode.NOT_FOUND: CodeInfo(-32004, 404),
    ErrorCode.METHOD_NOT_SUPPORTED: CodeInfo(-32005, 405),
    ErrorCode.TIMEOUT: CodeInfo(-32008, 408),
    ErrorCode.CONFLICT: CodeInfo(-32009, 409),
    ErrorCode.PRECONDITION_FAILED: CodeInfo(-32012, 412),
    ErrorCode.PAYLOAD_TOO_LARGE: CodeInfo(-32013, 413),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: CodeInfo(-32015, 415),
    ErrorCode.UNPROCESSABLE_CONTENT: CodeInfo(-32022, 422),
    ErrorCode.TOO_MANY_REQUESTS: CodeInfo(-32029, 429),
    ErrorCode.CLIENT_CLOSED_REQUEST: CodeInfo(-32099, 499),
    ErrorCode.INTERNAL_SERVER_ERROR: CodeInfo(-32603, 500),
    ErrorCode.NOT_IMPLEMENTED: CodeInfo(-32603, 501),
    ErrorCode.BAD_GATEWAY: CodeInfo(-32603, 502),
    ErrorCode.SERVICE_UNAVAILABLE: CodeInfo(-32603, 503),
    ErrorCode.GATEWAY_TIMEOUT: CodeInfo(-32603, 504),
}


class RpcError(Exception):
    """A failure a client is meant to see: a code name, a message and optional details.

    ``message`` and ``details`` go to every caller, so they hold our own words only (a node's
    name, an exception's type, a SQLSTATE). ``detail`` is the foreign text behind them (a
    driver's message, with hosts, users or SQL): the wire adapters send it to operators only,
    as ``data.detail``.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.detail = detail

    @property
    def info(self) -> CodeInfo:
        return CODES[self.code]

    @property
    def described(self) -> str:
        """The message and the detail behind it: for the log, which operators read (its
        formatter masks passwords), never for an answer."""
        return f"{self.message} ({self.detail})" if self.detail else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}, {self.message!r})"


class ProcedureNotFound(RpcError):
    def __init__(self, path: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, f'No procedure found on path "{path}"')
        self.path = path


class InvalidInput(RpcError):
    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message, details=details)


class InvalidRequest(RpcError):
    """Not a well-formed request of its protocol; ``request_id`` is echoed when it was read."""

    def __init__(
        self, message: str, *, code: ErrorCode = ErrorCode.BAD_REQUEST, request_id: Any = None
    ) -> None:
        super().__init__(code, message)
        self.request_id = request_id


class SqlError(RpcError):
    """The statement failed for a reason of its own; ``sqlstate`` says which."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        sqlstate: str,
        condition: str,
        detail: str | None = None,
    ) -> None:
        super().__init__(
            code, message, details={"sqlstate": sqlstate, "condition": condition}, detail=detail
        )
        self.sqlstate = sqlstate
        self.condition = condition


class TooManyRequests(RpcError):
    """429: wait ``retry_after`` seconds, then ask again. Shedding raises it as is (this service
    is at its bound for this kind of work: not a dependency failure, so no breaker counts it);
    authentication throttling as ``Throttled``. ``data.retryAfter`` on both wires, and the
    ``Retry-After`` header (``retry_after_header``) wherever the answer's status is 429."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(ErrorCode.TOO_MANY_REQUESTS, message, details={"retryAfter": retry_after})
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """RFC 9110 10.2.3: whole seconds, at least one."""
        return str(max(1, math.ceil(self.retry_after)))


class PoolExhausted(TooManyRequests):
    """Every connection of our own pool stayed in use for the whole acquire timeout: our
    saturation, not the database's failure (it answers; we asked too much at once)."""


class Unavailable(RpcError):
    """A dependency (Postgres, Redis, PgBouncer) cannot be reached or its breaker is open."""

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, detail: str | None = None
    ) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message, details=details, detail=detail)


class CircuitOpen(Unavailable):
    """Rejected at once: the breaker is open, forced open, or busy with its half-open trial.

    ``state`` is the breaker's state name (``resilience.BreakerState`` is a ``StrEnum``)."""

    def __init__(self, name: str, state: str, reopens_at: datetime | None) -> None:
        if state == "forced_open":
            why = "is forced open by an operator"
        elif state == "half_open":
            why = "is half-open and its one trial call is in flight"
        elif reopens_at is not None:
            why = f"is open until {reopens_at.isoformat(timespec='milliseconds')}"
        else:
            why = "is open"
        super().__init__(
            f"circuit breaker {name!r} {why}",
            details={
                "breaker": name,
                "state": str(state),
                "reopens_at": reopens_at.isoformat() if reopens_at else None,
            },
        )
        self.breaker = name
        self.state = state
        self.reopens_at = reopens_at


class CallTimeout(Unavailable):
    """The call did not finish within the breaker's call timeout (it counts as a failure)."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(
            f"call through circuit breaker {name!r} exceeded its {timeout:g}s timeout",
            details={"breaker": name, "timeout": timeout},
        )
        self.breaker = name
        self.timeout = timeout


class PoolTimeout(Unavailable):
    """No connection could be had within the acquire timeout."""


class QueryTimeout(Unavailable):
    """A statement was cancelled for running too long."""


class StoreRejected(Unavailable):
    """PostgreSQL refused a statement (not a connection problem): retrying will not help."""


class Throttled(TooManyRequests):
    """Refused before any token is compared: this client address failed to authenticate too
    often (whole seconds to wait)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed authentication attempts from this address; retry in {retry_after} s",
            retry_after=retry_after,
        )
