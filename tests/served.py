"""``infrawatch serve`` as a user runs it: a subprocess on a free port, over the real stack.

``Served`` starts the command with the given environment, waits until ``/health/live``
answers (or the process has exited, which fails the wait at once), and kills it if a test left
it running. Its output goes to a log file the failing assertion can show.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from server.observability.http_metrics import ACCESS_LOG_CLASS
from server.runner import AppRunner
from tests.waiting import wait_until

OPERATOR_TOKEN = "ops-token-0123456789abcdef"
SESSION_SECRET = "served-session-secret-0123456789"


class RunnerTestServer(TestServer):
    """aiohttp's test server on ``infrawatch serve``'s runner (``server/runner.py``): JSON
    answers to unparseable requests, the RPC routes answered without the router. The
    ``aiohttp_client`` fixture (tests/conftest.py) serves every app given to it on this."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return AppRunner(self.app, **kwargs)


async def started_as_served(app: web.Application) -> TestServer:
    """A test server started with the access-log hook ``infrawatch serve`` gives its runner
    (the HTTP families are counted there); pass it to ``aiohttp_client``. The hook goes to
    ``start_server``: aiohttp's ``TestServer`` drops runner arguments given to its constructor.
    """
    server = RunnerTestServer(app)
    await server.start_server(access_log_class=app[ACCESS_LOG_CLASS])
    return server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stack_env(pg_dsn: str | None, redis_url: str | None, **extra: str) -> dict[str, str]:
    """This process's environment without any server setting, plus the given ones."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "REDIS_", "PGBOUNCER_", "AUTH_", "ALERT"))
    }
    env |= {"AUTH_TOKENS": f"ops:{OPERATOR_TOKEN}", "SESSION_SECRET": SESSION_SECRET}
    env["LOG_LEVEL"] = "INFO"
    if pg_dsn is not None:
        env["DATABASE_URL"] = pg_dsn
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env | extra


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a new connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Served:
    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        args: Sequence[str] = (),
        *,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), *args]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            command, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT
        )

    def __enter__(self) -> Served:
        try:
            wait_until(
                self._live_or_exited, what="`infrawatch serve` answering /health/live", within=60
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        assert self.proc.poll() is None, self.log()
        return self

    def _live_or_exited(self) -> bool:
        if self.proc.poll() is not None:
            return True
        try:
            return get(self.port, "/health/live", timeout=1)[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()
