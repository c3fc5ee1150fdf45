"""Field types of the slices: how a variable's text becomes a value, and what the value must be.

Each type takes either the text of an environment variable or the finished value (what code
and tests pass to ``Settings(...)``), and refuses anything else with a ``ValueError`` saying
what was expected. Plain bounds (``gt=0``, ``le=100``) are declared on the fields themselves.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, PlainValidator

from server.config.values import BasicAuth, HostPort, PartitionPair, QueueName, mask_url

T = TypeVar("T")
V = TypeVar("V")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# aiohttp's own limit on a request line; a smaller MAX_URL_BYTES would never take effect.
AIOHTTP_LINE_BYTES = 8190


def _comma_separated(value: object) -> object:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


# ``a, b,c`` -> ``(a, b, c)``: items stripped, empty ones dropped; a tuple or list passes as is.
CommaSeparated = Annotated[tuple[T, ...], BeforeValidator(_comma_separated)]


def _text_or(cls: type[V], parse: Callable[[str], V]) -> PlainValidator:
    """A value of ``cls`` as is, or its text through ``parse``."""

    def validate(value: object) -> V:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return parse(value.strip())
        raise ValueError(f"expected {cls.__name__} or its text, not {type(value).__name__}")

    return PlainValidator(validate)


def _url(text: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(text)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(
            f"{mask_url(text)!r} is not a URL of the form "
            f"{schemes[0]}://[user[:password]@]host[:port]/..."
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{mask_url(text)!r} has an invalid port") from None
    return text


def _postgres_url(text: str) -> str:
    return _url(text, ("postgresql", "postgres"))


def _pgbouncer_url(text: str) -> str:
    url = _postgres_url(text)
    if urlsplit(url).path.strip("/") != "pgbouncer":
        raise ValueError(f"{mask_url(url)!r} must name the admin database: .../pgbouncer")
    return url


def _redis_url(text: str) -> str:
    return _url(text, ("redis", "rediss", "unix"))


def _http_url(text: str) -> str:
    return _url(text, ("http", "https"))


def _key_prefix(text: str) -> str:
    # The prefix goes into SCAN MATCH patterns and CLIENT TRACKING PREFIX as is: no glob syntax.
    if re.search(r"[*?\[\]\\\s]", text):
        raise ValueError(f"{text!r} may not hold glob characters (*?[]\\) or whitespace")
    return text


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not a log level; expected DEBUG, INFO, WARNING or ERROR")
    return level


def _url_limit(value: int) -> int:
    if value < AIOHTTP_LINE_BYTES:
        raise ValueError(
            f"{value} is below aiohttp's own {AIOHTTP_LINE_BYTES}-byte request line; "
            f"expected >= {AIOHTTP_LINE_BYTES}"
        )
    return value


def _allowed_host(text: str) -> str:
    """A host name (``example.com``), every subdomain of one (``.example.com``), an address
    (``10.0.0.5``, ``[::1]``), or ``*``: compared in lower case, without the port."""
    host = text.strip().lower()
    if host != "*" and not re.fullmatch(r"\.?[a-z0-9_.-]+|\[[0-9a-f:.]+\]", host):
        raise ValueError(
            f"{text!r} is not a host name (example.com, .example.com for its subdomains, "
            "an IP address, or *); give no scheme or port"
        )
    return host


def _network(text: str) -> str:
    """An address or a CIDR block (``10.0.0.0/8``, ``::1``), kept as its text."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        message = f"{text!r} is not an IP address or network (10.0.0.1, 10.0.0.0/8)"
        raise ValueError(message) from None


def _unique_queues(names: tuple[QueueName, ...]) -> tuple[QueueName, ...]:
    seen: set[QueueName] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"queue {str(name)!r} is listed twice")
        seen.add(name)
    return names


def _auth_tokens(value: object) -> object:
    """``name:token,...`` or a mapping -> ``{name: token}``, every entry checked."""
    entries: Iterable[tuple[str, str]]
    if isinstance(value, str):
        pairs = []
        for item in value.split(","):
            name, sep, token = item.strip().partition(":")
            if not sep or not name or not token:
                raise ValueError("expected name:token,... (an entry has no name or no token)")
            pairs.append((name, token))
        entries = pairs
    elif isinstance(value, Mapping):
        entries = value.items()
    else:
        return value  # not ours to judge: the dict[str, str] schema refuses it
    tokens: dict[str, str] = {}
    for name, token in entries:
        if not isinstance(name, str) or not isinstance(token, str):
            raise ValueError("expected operator names and tokens as text")
        if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
            raise ValueError(f"operator name {name!r} may hold only letters, digits and _.@-")
        if len(token) < 16:
            raise ValueError(f"the token of {name!r} is too short; expected at least 16 characters")
        if name in tokens:
            raise ValueError(f"operator {name!r} is listed twice")
        tokens[name] = token
    return tokens


def _basic_auth(value: object) -> BasicAuth:
    if isinstance(value, str):
        return BasicAuth.parse(value.strip())
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, str) and v for v in value)
    ):
        return BasicAuth(*value)
    raise ValueError("expected user:password")


PostgresUrl = Annotated[str, AfterValidator(_postgres_url)]
PgBouncerUrl = Annotated[str, AfterValidator(_pgbouncer_url)]
RedisUrl = Annotated[str, AfterValidator(_redis_url)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
KeyPrefix = Annotated[str, AfterValidator(_key_prefix)]
LogLevel = Annotated[str, AfterValidator(_log_level)]
UrlLimit = Annotated[int, AfterValidator(_url_limit)]
HostPortValue = Annotated[HostPort, _text_or(HostPort, HostPort.parse)]
PartitionPairValue = Annotated[PartitionPair, _text_or(PartitionPair, PartitionPair.parse)]
QueueNameValue = Annotated[QueueName, _text_or(QueueName, QueueName.parse)]
QueueNames = Annotated[CommaSeparated[QueueNameValue], AfterValidator(_unique_queues)]
AuthTokens = Annotated[dict[str, str], BeforeValidator(_auth_tokens)]
BasicAuthValue = Annotated[BasicAuth, PlainValidator(_basic_auth)]
AllowedHosts = CommaSeparated[Annotated[str, AfterValidator(_allowed_host)]]
Networks = CommaSeparated[Annotated[str, AfterValidator(_network)]]
