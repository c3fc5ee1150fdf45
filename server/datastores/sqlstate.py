"""What a failed PostgreSQL call means for us: the server is unavailable, or the SQL was wrong.

``map_error(node, exc)`` turns an asyncpg (or OS, or timeout) error into one of ours:

    Unavailable                 the node cannot serve: connection refused or lost, too many
     │                          connections, shutting down, in recovery, out of resources
     └─ QueryTimeout            the statement ran out of time (statement_timeout, cancel, or
                                asyncpg's command timeout)
    SqlError(RpcError)          the statement itself is at fault (never counted by a breaker):
                                23xxx integrity and 40xxx serialization/deadlock -> CONFLICT,
                                22xxx data exceptions -> BAD_REQUEST, anything else (syntax,
                                undefined table, privileges) -> INTERNAL_SERVER_ERROR

Messages never carry query parameters: class 22 messages echo the offending value (``invalid
input syntax for type integer: "abc"``), so for those only the SQLSTATE and condition are kept,
and the server's DETAIL (``Key (id)=(5) already exists``) is never copied.

Messages are our own words (the node's name, the exception's type, the SQLSTATE and its
condition) and go to every caller. The driver's own text, which names hosts, users, databases,
relations and statements, goes to ``detail``, which the wire adapters show operators only.
"""

from __future__ import annotations

import asyncpg

from server.errors import ErrorCode, QueryTimeout, RpcError, SqlError, Unavailable

# What the driver (or the network under it) raises. ``InternalClientError`` belongs here: when
# the server ends a session (pg_terminate_backend, a restart), a statement sent between the
# server's FATAL message and the socket's close fails with "cannot switch to state ...; another
# operation (2) is in progress" (asyncpg issue #1069), and it means the connection is gone.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# SQLSTATE classes that say the server (not the statement) is the problem.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58", "XX", "3D", "28", "F0", "HV", "55"})
_CONFLICT_CLASSES = frozenset({"23", "40"})
_QUERY_CANCELED = "57014"
_READ_ONLY_TRANSACTION = "25006"


def map_error(node: str, exc: BaseException) -> RpcError:
    """Our error for ``exc`` raised by a statement on ``node`` (``raise ... from exc``)."""
    if isinstance(exc, asyncpg.PostgresError):
        return _from_sqlstate(node, exc)
    if isinstance(exc, TimeoutError):
        return QueryTimeout(f"{node}: the statement did not finish in time")
    return Unavailable(f"{node}: {type(exc).__name__}", detail=_describe(exc))


def map_connect_error(node: str, exc: BaseException) -> Unavailable:
    """Any failure while connecting or acquiring means the node cannot serve us."""
    return Unavailable(f"{node}: cannot connect: {type(exc).__name__}", detail=_describe(exc))


def _from_sqlstate(node: str, exc: asyncpg.PostgresError) -> RpcError:
    sqlstate = str(getattr(exc, "sqlstate", None) or "XX000")
    condition = type(exc).__name__
    klass = sqlstate[:2]
    if sqlstate == _QUERY_CANCELED:
        return QueryTimeout(
            f"{node}: the statement was cancelled (SQLSTATE {sqlstate})", detail=str(exc)
        )
    if klass in _UNAVAILABLE_CLASSES or sqlstate == _READ_ONLY_TRANSACTION:
        return Unavailable(f"{node}: {condition} (SQLSTATE {sqlstate})", detail=str(exc))
    if klass in _CONFLICT_CLASSES:
        return SqlError(
            ErrorCode.CONFLICT,
            f"{node}: {condition} (SQLSTATE {sqlstate})",
            sqlstate=sqlstate,
            condition=condition,
            detail=str(exc),
        )
    if klass == "22":
        return SqlError(
            ErrorCode.BAD_REQUEST,
            f"{node}: a value or query argument is invalid for its type "
            f"(SQLSTATE {sqlstate}, {condition})",
            sqlstate=sqlstate,
            condition=condition,
        )
    return SqlError(
        ErrorCode.INTERNAL_SERVER_ERROR,
        f"{node}: SQL error: {condition} (SQLSTATE {sqlstate})",
        sqlstate=sqlstate,
        condition=condition,
        detail=str(exc),
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
