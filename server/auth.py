"""Who is calling: operator tokens from ``AUTH_TOKENS``, checked in constant time.

With a ``FailureThrottle``, a client address that presented too many wrong tokens is refused
with ``Throttled`` (429, ``Retry-After``) before its next token is compared.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from server.errors import ErrorCode, RpcError, Throttled
from server.rpc.router import ANONYMOUS, Caller
from server.throttle import FailureThrottle


class Authenticator:
    def __init__(self, tokens: Mapping[str, str], throttle: FailureThrottle | None = None) -> None:
        # Compare bytes of the same kind; names are kept apart from the secrets they map to.
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]
        self.throttle = throttle

    def caller_for_token(self, token: str) -> Caller | None:
        presented = token.encode(errors="surrogateescape")
        found: str | None = None
        # Look at every token so the time taken does not tell which one (or whether any) matched.
        for name, expected in self._tokens:
            if hmac.compare_digest(presented, expected):
                found = name
        return Caller(found) if found is not None else None

    def check_token(self, token: str, client: str | None) -> Caller | None:
        """``caller_for_token``, throttled per ``client`` address (``None``: not throttled).

        Raises ``Throttled`` while the address is over its limit; counts a wrong token.
        """
        self.refuse_if_throttled(client)
        caller = self.caller_for_token(token)
        if caller is None:
            self.failed(client)
        return caller

    def refuse_if_throttled(self, client: str | None) -> None:
        if self.throttle is not None and client is not None:
            wait = self.throttle.retry_after(client)
            if wait is not None:
                raise Throttled(wait)

    def failed(self, client: str | None) -> None:
        """Count a failed credential of ``client`` (a wrong token, bad basic auth)."""
        if self.throttle is not None and client is not None:
            self.throttle.failed(client)

    def caller_for_header(self, authorization: str | None, client: str | None = None) -> Caller:
        """``Authorization`` header -> caller; a malformed or unknown token is refused outright.

        A client that sends a token expects to be someone: answering a wrong token with an
        anonymous result would hide its mistake until the first mutation. ``client`` (the
        peer's address) throttles repeated failures.
        """
        if not authorization:
            return ANONYMOUS
        self.refuse_if_throttled(client)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.failed(client)
            raise RpcError(ErrorCode.UNAUTHORIZED, "Authorization must be 'Bearer <token>'")
        caller = self.check_token(token.strip(), client)
        if caller is None:
            raise RpcError(ErrorCode.UNAUTHORIZED, "Invalid token")
        return caller


def client_address(remote: str | None) -> str:
    """The key a peer is throttled under (``request.remote``; a Unix socket has none)."""
    return remote or "unknown"
