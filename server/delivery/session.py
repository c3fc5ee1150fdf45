"""``Session``: delivery's one ``aiohttp.ClientSession``, opened and closed by the app's
delivery context (a session must be made on the running loop, and ``create_app`` does no
I/O); the targets' clients are built over the holder before it opens."""

from __future__ import annotations

import aiohttp


class Session:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        if self._session is None:
            # No cookies between targets; one connection pool for all of them.
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("delivery's HTTP session is not open")
        return self._session
