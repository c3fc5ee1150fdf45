"""Dashboard sessions and CSRF tokens: HMAC-signed, nothing stored on the server.

A session cookie is ``v1.<payload>.<mac>``: the payload (base64url JSON) holds a random session
id, the operator's name (absent for a visitor who has only opened the sign-in form), the
expiry, and a fingerprint of the operator's current token, so that changing a token in
``AUTH_TOKENS`` ends every session signed in with the old one. The MAC is HMAC-SHA256 under a
key derived from ``SESSION_SECRET``.

A CSRF token is HMAC(csrf key, session id): bound to one session, valid while it lives, and
renewed with it at each sign-in. Session and CSRF keys are derived separately from the secret
so that a value valid as one can never pass as the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

COOKIE_NAME = "infrawatch_session"
CSRF_FIELD = "csrf_token"
_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    operator: str | None
    expires: int

    @property
    def signed_in(self) -> bool:
        return self.operator is not None


class SessionCodec:
    """Issues and checks session cookies and CSRF tokens for one app."""

    def __init__(self, secret: str, tokens: Mapping[str, str], max_age: float) -> None:
        root = secret.encode()
        self._session_key = _derive(root, b"session")
        self._csrf_key = _derive(root, b"csrf")
        self._token_key = _derive(root, b"token-fingerprint")
        self._tokens = dict(tokens)
        self.max_age = int(max_age)

    # --- sessions ---

    def new(self, operator: str | None, now: float | None = None) -> Session:
        issued = time.time() if now is None else now
        return Session(secrets.token_urlsafe(18), operator, int(issued) + self.max_age)

    def encode(self, session: Session) -> str:
        body: dict[str, object] = {"sid": session.sid, "exp": session.expires}
        if session.operator is not None:
            body["op"] = session.operator
            body["tok"] = self._fingerprint(session.operator)
        payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"{_VERSION}.{payload}.{_b64(self._mac(payload))}"

    def decode(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in ``cookie``, or ``None`` when it is absent, forged, stale or expired."""
        if not cookie:
            return None
        version, _, rest = cookie.partition(".")
        payload, _, mac = rest.partition(".")
        if version != _VERSION or not payload or not mac:
            return None
        try:
            given = _unb64(mac)
            expected = self._mac(payload)
        except (ValueError, binascii.Error):  # UnicodeEncodeError included
            return None
        # The MAC is checked before the payload is even decoded: a forged cookie (deeply
        # nested JSON, say) never reaches the JSON parser.
        if not hmac.compare_digest(given, expected):
            return None
        try:
            body = json.loads(_unb64(payload))
        except (ValueError, binascii.Error, RecursionError):
            return None
        if not isinstance(body, dict):
            return None
        sid, expires, operator = body.get("sid"), body.get("exp"), body.get("op")
        if not isinstance(sid, str) or not isinstance(expires, int):
            return None
        if expires <= (time.time() if now is None else now):
            return None
        if operator is not None and not self._token_still_valid(operator, body.get("tok")):
            return None
        return Session(sid, operator, expires)

    # --- CSRF ---

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).digest())

    def csrf_valid(self, session: Session | None, given: object) -> bool:
        if session is None or not isinstance(given, str) or not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf_token(session).encode())

    # --- internals ---

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._session_key, payload.encode(), hashlib.sha256).digest()

    def _fingerprint(self, operator: str) -> str:
        token = self._tokens.get(operator, "")
        digest = hmac.new(self._token_key, f"{operator}\0{token}".encode(), hashlib.sha256)
        return _b64(digest.digest()[:16])

    def _token_still_valid(self, operator: object, fingerprint: object) -> bool:
        if not isinstance(operator, str) or operator not in self._tokens:
            return False
        if not isinstance(fingerprint, str):
            return False
        return hmac.compare_digest(fingerprint.encode(), self._fingerprint(operator).encode())


def _derive(root: bytes, label: bytes) -> bytes:
    return hmac.new(root, b"infrawatch-dashboard/" + label, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
