"""Signed webhooks: every alert event POSTed as JSON, signed with HMAC-SHA256.

Headers: ``X-Infrawatch-Event`` (the kind), ``X-Infrawatch-Event-Id`` (the idempotency key,
also the body's ``id``), ``X-Infrawatch-Timestamp`` (Unix seconds of this attempt) and
``X-Infrawatch-Signature: sha256=<hex>``, the HMAC under ``ALERT_WEBHOOK_SECRET`` of
``<timestamp>.`` followed by the raw body bytes as sent. A receiver recomputes it over the
bytes it received, compares in constant time, and refuses a timestamp outside its replay
window (docs/delivery.md). Any 2xx is delivered; 408, 429 and 5xx (and no answer) are retried;
any other 4xx is refused for good.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import aiohttp
import orjson

from server.delivery.alertmanager import DeliveryError
from server.delivery.models import Delivery
from server.delivery.session import Session

SIGNATURE_HEADER = "X-Infrawatch-Signature"
TIMESTAMP_HEADER = "X-Infrawatch-Timestamp"
EVENT_HEADER = "X-Infrawatch-Event"
EVENT_ID_HEADER = "X-Infrawatch-Event-Id"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``<timestamp>.`` + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Webhook:
    def __init__(
        self,
        session: Session,
        url: str,
        secret: str,
        *,
        timeout: float,
        dashboard_url: str | None,
    ) -> None:
        self._session = session
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._dashboard = dashboard_url

    def body(self, delivery: Delivery) -> bytes:
        payload = dict(delivery.payload)
        if self._dashboard:
            link = f"{self._dashboard.rstrip('/')}/#alert-{delivery.alert_id}"
            payload["dashboard_url"] = link
        return orjson.dumps(payload)

    async def deliver(self, delivery: Delivery) -> None:
        body = self.body(delivery)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.kind,
            EVENT_ID_HEADER: str(delivery.payload["id"]),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._secret, timestamp, body),
        }
        try:
            async with self._session.client.post(
                self._url, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"POST: {type(exc).__name__}: {exc}") from exc
        if status >= 300:
            permanent = 400 <= status < 500 and status not in (408, 429)
            raise DeliveryError(f"POST: HTTP {status}", permanent=permanent)
