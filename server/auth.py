"""Who is calling: operator tokens from ``AUTH_TOKENS``, checked in constant time.

With a ``FailureThrottle``, a client address that presented too many wrong tokens is refused
with ``Throttled`` (429, ``Retry-After``) before its next token is compared. The address is the
peer's, or, when the peer is one of ``AUTH_TRUSTED_PROXIES``, the client its
``X-Forwarded-For`` names (``client``): behind a proxy every peer is the proxy, and throttling
it would refuse every client for one client's guesses.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from server.errors import ErrorCode, RpcError, Throttled
from server.rpc.router import ANONYMOUS, Caller
from server.throttle import FailureThrottle

if TYPE_CHECKING:
    from aiohttp import web


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN_CLIENT = "unknown"  # a Unix socket's peer has no address


class Authenticator:
    def __init__(
        self,
        tokens: Mapping[str, str],
        throttle: FailureThrottle | None = None,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        # Compare bytes of the same kind; names are kept apart from the secrets they map to.
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]
        self.throttle = throttle
        self._proxies: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in trusted_proxies
        )

    def client(self, remote: str | None, forwarded_for: str | None = None) -> str:
        """The address a request's failures count against.

        The peer (``remote``), unless it is a trusted proxy: then ``X-Forwarded-For`` is read
        from the right (each proxy appends the address it received from) and the first address
        that is not a trusted proxy is the client. An entry that is not an address was written
        by the client itself: the hop that passed it on is the client as far as is known. A
        client cannot choose its key: whatever it writes lies left of what the proxies add.
        """
        if remote is None:
            return UNKNOWN_CLIENT
        if not self._proxies or not forwarded_for or not self._trusted(remote):
            return remote
        client = remote
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return client
            client = hop
        return client

    def client_of(self, request: web.BaseRequest) -> str:
        """``client`` of an HTTP request."""
        return self.client(request.remote, request.headers.get("X-Forwarded-For"))

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)

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
