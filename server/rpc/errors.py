"""Every error a procedure call can end in, and how each wire format spells it.

    RpcError(code)                 any failure with a tRPC code name
     ├─ ProcedureNotFound          NOT_FOUND; JSON-RPC says -32601 "Method not found"
     ├─ InvalidInput               BAD_REQUEST; JSON-RPC says -32602 "Invalid params"
     └─ Unavailable                SERVICE_UNAVAILABLE: a datastore is down or its breaker open

Foreign errors (asyncpg, redis, breakers) are mapped to ``Unavailable`` once, in the datastore
layer; anything else that escapes a procedure becomes INTERNAL_SERVER_ERROR at the router.

``CODES`` is @trpc/server v11's own table (``codes.ts`` for the JSON-RPC numbers,
``getHTTPStatusCode.ts`` for the HTTP statuses): tRPC clients read ``data.code`` and
``data.httpStatus``, so both must match it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    jsonrpc: int
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
    """A failure a client is meant to see: a code name, a message and optional details."""

    def __init__(
        self, code: ErrorCode, message: str, *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def info(self) -> CodeInfo:
        return CODES[self.code]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}, {self.message!r})"


class ProcedureNotFound(RpcError):
    def __init__(self, path: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, f'No procedure found on path "{path}"')
        self.path = path


class InvalidInput(RpcError):
    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message, details=details)


class Unavailable(RpcError):
    """A dependency (Postgres, Redis, PgBouncer) cannot be reached or its breaker is open."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message, details=details)
