"""What every server of the stack shares: a directory and a port of its own, a log, a start that
waits until the server is ready, a bounded stop, and a stop at interpreter exit for a server a
fixture's teardown never stopped.

``StackServer`` is that life cycle; each server says how it launches, when it is ready and how
it halts. ``ChildServer`` is the common case, ``binary <conf file>`` as our child process
(Redis, Sentinel, PgBouncer). ``ServerGroup`` starts several together (a Sentinel group, a
Redis Cluster) and stops them in reverse order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.stack.ports import HOST, free_port
from tests.stack.process import Process, StackError, make_dir, stop_at_exit, wait_for, write_file


class ServerFailure(StackError):
    """A server failed to start or died: the message ends with the end of its log."""


class _Managed:
    """``with server:`` starts it and stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class StackServer(_Managed):
    """One server in ``<tmp_dir>/<name>-<port>``; ``start()`` again after ``stop()`` brings it
    back on the same port and directory."""

    # Bounds the readiness wait after the launch.
    start_timeout = 10.0
    # What ``ready()`` checks, for the message when it never comes true.
    readiness = "ready"

    def __init__(
        self, tmp_dir: Path | str, *, name: str, port: int | None = None, log_name: str = "log"
    ) -> None:
        self.port = port or free_port()
        self.name = f"{name}-{self.port}"
        self.dir = make_dir(Path(tmp_dir) / self.name)
        self.log_path = self.dir / log_name
        self._cancel_exit_stop: Callable[[], None] | None = None

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    # --- what each server says ---

    def _prepare(self) -> None:
        """Write what the server needs before it starts (each start)."""

    def _launch(self) -> None:
        raise NotImplementedError

    def ready(self) -> object:
        """Truthy once the server serves; errors count as "not yet". By default the launch
        itself has waited."""
        return True

    def is_running(self) -> bool:
        raise NotImplementedError

    def ensure_alive(self) -> None:
        """ServerFailure if the server is known to have died."""

    def _halt(self) -> None:
        """Stop the running server, bounded: politely, then by force."""
        raise NotImplementedError

    def _abort(self) -> None:
        """The quickest stop: after a failed start, and at interpreter exit."""
        self.stop()

    # --- the life cycle ---

    def start(self) -> Self:
        if self.is_running():
            return self
        self._prepare()
        # Guarded before launching: a start that fails may still leave a process behind.
        if self._cancel_exit_stop is None:
            self._cancel_exit_stop = stop_at_exit(self._abort)
        try:
            self._launch()
            self.wait_until(self.ready, what=self.readiness, timeout=self.start_timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._abort()
            if isinstance(exc, StackError) and not isinstance(exc, ServerFailure):
                raise self.failure(str(exc)) from exc
            raise
        return self

    def stop(self) -> None:
        if self.is_running():
            self._halt()
        self._forget_exit_stop()

    def _forget_exit_stop(self) -> None:
        if self._cancel_exit_stop is not None:
            self._cancel_exit_stop()
            self._cancel_exit_stop = None

    def wait_until(self, predicate: Callable[[], object], *, what: str, timeout: float) -> None:
        """Poll ``predicate`` (errors count as "not yet") until truthy; ServerFailure naming
        this server and ``what`` after ``timeout`` seconds, or as soon as the server dies."""
        try:
            wait_for(
                predicate, what=f"{self.name} {what}", timeout=timeout, check=self.ensure_alive
            )
        except ServerFailure:
            raise
        except StackError as exc:
            raise self.failure(str(exc)) from exc

    # --- its log ---

    def failure(self, message: str) -> ServerFailure:
        return ServerFailure(f"{message}\nend of {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class ChildServer(StackServer):
    """``binary <conf file>`` as our child process (never daemonized: we own its pid and its
    output); stopped with SIGTERM, killed if it has not exited 10 s later."""

    def __init__(
        self, tmp_dir: Path | str, *, name: str, port: int | None, binary: str, conf_name: str
    ) -> None:
        super().__init__(tmp_dir, name=name, port=port)
        self.conf_path = self.dir / conf_name
        self.process = Process([binary, str(self.conf_path)], cwd=self.dir, log_path=self.log_path)

    def conf(self) -> str:
        raise NotImplementedError

    def _write_conf(self) -> None:
        write_file(self.conf_path, self.conf())

    def _launch(self) -> None:
        self.process.start()

    def is_running(self) -> bool:
        return self.process.is_running()

    def ensure_alive(self) -> None:
        code = self.process.returncode
        if code is not None:
            raise self.failure(f"{self.name} exited with {code}")

    def _halt(self) -> None:
        self.process.stop()


class ServerGroup(_Managed):
    """Servers started together; a start that fails stops them all, in reverse order."""

    @property
    def servers(self) -> tuple[StackServer, ...]:
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def is_running(self) -> bool:
        return all(server.is_running() for server in self.servers)

    def ensure_alive(self) -> None:
        for server in self.servers:
            server.ensure_alive()
