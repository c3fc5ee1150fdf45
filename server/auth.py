"""Who is calling: operator tokens from ``AUTH_TOKENS``, checked in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from server.errors import ErrorCode, RpcError
from server.rpc.router import ANONYMOUS, Caller


class Authenticator:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        # Compare bytes of the same kind; names are kept apart from the secrets they map to.
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]

    def caller_for_token(self, token: str) -> Caller | None:
        presented = token.encode()
        found: str | None = None
        # Look at every token so the time taken does not tell which one (or whether any) matched.
        for name, expected in self._tokens:
            if hmac.compare_digest(presented, expected):
                found = name
        return Caller(found) if found is not None else None

    def caller_for_header(self, authorization: str | None) -> Caller:
        """``Authorization`` header -> caller; a malformed or unknown token is refused outright.

        A client that sends a token expects to be someone: answering a wrong token with an
        anonymous result would hide its mistake until the first mutation.
        """
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RpcError(ErrorCode.UNAUTHORIZED, "Authorization must be 'Bearer <token>'")
        caller = self.caller_for_token(token.strip())
        if caller is None:
            raise RpcError(ErrorCode.UNAUTHORIZED, "Invalid token")
        return caller
