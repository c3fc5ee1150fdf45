"""Passwords out of text: ``mask_url`` for one URL, ``mask_secrets`` for any text (log lines,
error messages) that may hold URLs or ``password=...`` pairs.

Every form libpq and redis-py read a password from is covered: the URL's userinfo
(``postgresql://user:secret@host``), the query parameters ``password=`` and ``sslpassword=``
(in any case, and percent-encoded: libpq decodes a parameter's name before reading it), and
the key/value connection strings (``host=db password='a b'``).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

MASK = "***"
_PASSWORD_KEYS = frozenset({"password", "sslpassword"})
# scheme://user:password@  (the password up to the last @ before the host; no spaces)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]*@")
# password=..., sslpassword=...: quoted, or up to a separator
_PAIR = re.compile(
    r"""(?i)((?:ssl)?pass(?:%77|w)ord\s*=\s*)('(?:[^'\\]|\\.)*'|"[^"]*"|[^\s&;,'"]+)"""
)


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db?sslpassword=x``
    -> ``postgresql://user:***@host/db?sslpassword=***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: mask what looks like a secret
        return mask_secrets(url)
    netloc, query = parts.netloc, parts.query
    if password is not None:
        user, _, host = netloc.rpartition("@")
        name, _, _ = user.partition(":")
        netloc = f"{name}:{MASK}@{host}"
    if query:
        query = "&".join(_mask_parameter(p) for p in query.split("&"))
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_parameter(parameter: str) -> str:
    key, sep, _ = parameter.partition("=")
    if sep and unquote_plus(key).strip().lower() in _PASSWORD_KEYS:
        return f"{key}={MASK}"
    return parameter


def mask_secrets(text: str) -> str:
    """``text`` with every URL password and ``password=`` value replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text  # the common case of a log line: nothing to look for
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _PAIR.sub(lambda m: f"{m.group(1)}{MASK}", text)
