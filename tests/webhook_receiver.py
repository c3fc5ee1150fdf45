"""A webhook receiver for the delivery tests (ours: an aiohttp server on a free loopback port).

It checks every signed POST as docs/delivery.md tells a receiver to (HMAC-SHA256 of
``<timestamp>.<raw body>``, compared in constant time, timestamp within the replay window),
answers 401 to a bad one, and records what it accepted. ``stop()`` then ``start()`` brings it
back on the same port; ``/alertmanager`` records what an Alertmanager pages.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.stack.ports import HOST, free_port

REPLAY_WINDOW = 300  # seconds


@dataclass(frozen=True, slots=True)
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


def verify(secret: str, headers: Any, raw: bytes, now: float | None = None) -> bool:
    """What a receiver does with a delivery: the recipe docs/delivery.md gives."""
    timestamp = headers.get("X-Infrawatch-Timestamp", "")
    given = headers.get("X-Infrawatch-Signature", "")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > REPLAY_WINDOW:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    return hmac.compare_digest(given, "sha256=" + mac.hexdigest())


class Receiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.port = free_port()
        self.events: list[Received] = []
        self.refused = 0
        self.pages: list[dict[str, Any]] = []  # Alertmanager's webhook notifications
        self.status = 200  # what the hook answers a good delivery
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/alertmanager", self._page)
        self._runner = web.AppRunner(app)
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    @property
    def page_url(self) -> str:
        return f"http://{HOST}:{self.port}/alertmanager"

    async def start(self) -> None:
        if self._runner.server is None:
            await self._runner.setup()
        self._site = web.TCPSite(self._runner, HOST, self.port)
        await self._site.start()

    async def stop(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not verify(self.secret, request.headers, raw):
            self.refused += 1
            return web.Response(status=401)
        if self.status < 300:
            self.events.append(Received(dict(request.headers), orjson.loads(raw)))
        return web.Response(status=self.status)

    async def _page(self, request: web.Request) -> web.Response:
        self.pages.append(orjson.loads(await request.read()))
        return web.Response()

    def of(self, alert_id: str) -> list[str]:
        """The kinds received for one alert, in order."""
        return [e.body["kind"] for e in self.events if e.body["alert"]["id"] == alert_id]

    def paged(self, occurrence: str, status: str) -> bool:
        return any(
            page["status"] == status
            and any(a["labels"].get("occurrence") == occurrence for a in page["alerts"])
            for page in self.pages
        )
