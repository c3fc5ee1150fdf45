"""Headless Debian chromium, driven over the DevTools protocol with aiohttp's websocket client.

No browser-automation dependency: ``Chromium`` starts the browser on a free loopback port
with a fresh profile, ``DevToolsPage`` speaks the protocol (commands by id, events by name)
to one tab. Every wait has a deadline; polling goes through ``tests.waiting``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.stack.ports import HOST, free_port
from tests.waiting import until_accepted

START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0
FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root, where chromium's sandbox cannot start
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


class DevToolsError(RuntimeError):
    pass


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("chromium is not installed (apt-get install chromium)")


class Event:
    def __init__(self, method: str, params: dict[str, Any]) -> None:
        self.method = method
        self.params = params

    def __repr__(self) -> str:
        return f"Event({self.method}, {self.params})"


class DevToolsPage:
    """One tab: ``send`` a command and get its result; ``expect`` an event before acting."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, Callable[[Event], bool], asyncio.Future[Event]]] = []
        self.events: list[Event] = []
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                return await future
        finally:
            self._pending.pop(ident, None)

    def expect(
        self, method: str, predicate: Callable[[Event], bool] = lambda _: True
    ) -> asyncio.Future[Event]:
        """A future for the next ``method`` event matching ``predicate``: create it *before*
        the action that causes the event, then await it with a timeout."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, predicate, future))
        return future

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise DevToolsError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, *, within: float, what: str) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        # Polling: the page has no event to tell us when its own condition holds.
        return await until_accepted(
            lambda: self.evaluate(expression), bool, what=what, within=within, interval=0.1
        )

    async def load(self, action: Callable[[], Any], within: float = COMMAND_TIMEOUT) -> None:
        """Run ``action`` (a navigation, a form submit) and wait for the new page's load."""
        loaded = self.expect("Page.loadEventFired")
        result = action()
        if asyncio.iscoroutine(result):
            await result
        async with asyncio.timeout(within):
            await loaded

    async def goto(self, url: str) -> None:
        await self.load(lambda: self.send("Page.navigate", url=url))

    async def screenshot(self, path: Path, *, width: int, height: int, mobile: bool) -> Path:
        """A PNG of the whole page as laid out at ``width`` CSS pixels."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = await self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1},
        )
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))
        return path

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                reply = self._pending.get(data["id"])
                if reply is not None and not reply.done():
                    if "error" in data:
                        reply.set_exception(DevToolsError(str(data["error"])))
                    else:
                        reply.set_result(data.get("result", {}))
                continue
            event = Event(data.get("method", ""), data.get("params", {}))
            self.events.append(event)
            for waiter in list(self._waiters):
                method, predicate, future = waiter
                if method == event.method and not future.done() and predicate(event):
                    future.set_result(event)
                    self._waiters.remove(waiter)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[DevToolsPage]:
    """A headless chromium with a fresh profile; its first tab, ready for commands."""
    port = free_port()
    # ignore_cleanup_errors: a crash dump written while the profile is being removed must
    # not turn a passing test into an error.
    with tempfile.TemporaryDirectory(
        prefix="infrawatch-chromium-", ignore_cleanup_errors=True
    ) as profile:
        process = await asyncio.create_subprocess_exec(
            chromium_binary(),
            *FLAGS,
            f"--remote-debugging-port={port}",
            f"--remote-debugging-address={HOST}",
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            async with aiohttp.ClientSession() as http:
                target = await _first_page(http, process, port)
                ws = await http.ws_connect(
                    target["webSocketDebuggerUrl"], max_msg_size=256 * 1024 * 1024
                )
                page = DevToolsPage(ws)
                try:
                    for domain in ("Page", "Runtime", "Log"):
                        await page.send(f"{domain}.enable")
                    yield page
                finally:
                    await page.close()
                    await _close_browser(http, port)
        finally:
            await _stop(process)


async def _close_browser(http: aiohttp.ClientSession, port: int) -> None:
    """Ask chromium to quit: it then ends and reaps its own helper processes."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, ValueError):
        async with asyncio.timeout(5):
            async with http.get(f"http://{HOST}:{port}/json/version") as response:
                version = await response.json(content_type=None)
            async with http.ws_connect(version["webSocketDebuggerUrl"]) as ws:
                await ws.send_str(json.dumps({"id": 1, "method": "Browser.close"}))
                await ws.receive()


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Wait for chromium to end; then end whatever is left of its process group (its own,
    from start_new_session)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 10)
    # Helpers (renderer, GPU, zygote) that outlive the browser would keep writing the profile.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await asyncio.wait_for(process.wait(), 10)


async def _first_page(
    http: aiohttp.ClientSession, process: asyncio.subprocess.Process, port: int
) -> dict[str, Any]:
    url = f"http://{HOST}:{port}/json/list"

    def running() -> None:
        if process.returncode is not None:
            raise DevToolsError(f"chromium exited with {process.returncode} at start")

    async def pages() -> list[dict[str, Any]]:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            targets = await response.json(content_type=None)
        return [t for t in targets if t.get("type") == "page"]

    found = await until_accepted(
        pages,
        bool,
        what=f"a DevTools page on port {port}",
        within=START_TIMEOUT,
        interval=0.2,
        check=running,
        retry_on=(aiohttp.ClientError, TimeoutError, ValueError),
        error=DevToolsError,
    )
    return found[0]
