"""``AllowedHosts``: the ``Host`` header values the service answers (``ALLOWED_HOSTS``).

A guard against DNS rebinding: a page on ``evil.example`` whose name is made to resolve to
127.0.0.1 can make a browser send requests here, but they carry ``Host: evil.example``, which is
not ours, and get 400 before any handler runs. ``/health/live`` and ``/health/ready`` are exempt:
orchestrators probe them by address (``Host: 10.1.2.3:8080``). Unset, every host is answered.

Entries: ``example.com``, ``.example.com`` (the name and its subdomains), an address
(``10.0.0.5``, ``[::1]``), or ``*``; compared in lower case without the port.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from server.errors import ErrorCode, RpcError
from server.wire.http import either_wire_error, error_response

PROBES = frozenset({"/health/live", "/health/ready"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(host: str) -> str:
    """``Example.com:8080`` -> ``example.com``; ``[::1]:80`` -> ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


# host[:port] as a URI may hold it: a name, an IPv4 address or a bracketed IPv6 one.
_HOST = re.compile(r"(?:[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def origin_of(request: web.Request) -> str:
    """``http[s]://host[:port]`` this request was sent to, from its ``Host`` header (which
    ``ALLOWED_HOSTS``, when set, has already checked); the listening socket's own address when
    the header is missing or could not be part of a URI."""
    scheme = "https" if request.secure else "http"
    host = (request.headers.get("Host") or "").strip().lower()
    if not _HOST.fullmatch(host):
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            address, port = str(sockname[0]), int(sockname[1])
            host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        else:
            host = "localhost"
    return f"{scheme}://{host}"


class AllowedHosts:
    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.any = not entries or "*" in entries
        self._exact = frozenset(e for e in entries if not e.startswith("."))
        self._suffixes = tuple(e for e in entries if e.startswith("."))

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        if not host:
            return False
        name = host_name(host)
        if name in self._exact:
            return True
        return any(name == s[1:] or name.endswith(s) for s in self._suffixes)

    def middleware(self) -> Middleware:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            host = request.headers.get("Host")
            if request.path in PROBES or self.allows(host):
                return await handler(request)
            shown = (host or "")[:100].encode("ascii", "backslashreplace").decode()
            refusal = RpcError(
                ErrorCode.BAD_REQUEST, f"Host {shown!r} is not served here (ALLOWED_HOSTS)"
            )
            if request.path == "/rpc" or request.path.startswith("/trpc/"):
                return either_wire_error(refusal)
            return error_response(refusal)

        return guard
