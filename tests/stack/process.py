"""Child processes of the stack: who they run as, where they log, bounded waits.

PostgreSQL and PgBouncer refuse to run as root. When we are root every server of the stack runs
as the ``postgres`` account instead (through ``Popen(user=...)``, so the pid we hold is the
server's own and not a ``runuser`` wrapper's), and its files live in directories that account
owns. Every wait has a deadline (``wait_for``, the stack's use of ``tests.waiting``); every stop
is bounded (``terminate``). ``tests/stack/server.py`` builds the servers' common life cycle on
these.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.waiting import wait_until

SERVICE_ACCOUNT_NAME = "postgres"


class StackError(RuntimeError):
    """A server of the stack could not be found, started, reached or stopped."""


@dataclass(frozen=True, slots=True)
class Account:
    """The unprivileged account servers run as when we are root."""

    name: str
    uid: int
    gid: int
    home: str

    def own(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


@functools.cache
def service_account() -> Account | None:
    """``postgres`` when we are root; None (run as ourselves) otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_ACCOUNT_NAME)
    except KeyError:
        raise StackError(
            f"running as root needs the {SERVICE_ACCOUNT_NAME!r} account "
            "(installed with the postgresql package)"
        ) from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def find_binary(name: str, *fallback_globs: str) -> str:
    """``name`` on PATH, else the match of the fallback globs that sorts highest by version."""
    found = shutil.which(name)
    if found:
        return found
    matches = [p for pattern in fallback_globs for p in glob.glob(pattern) if os.access(p, os.X_OK)]
    if not matches:
        raise StackError(f"{name} not found on PATH nor in {', '.join(fallback_globs)}")
    return max(matches, key=_version_key)


def _version_key(path: str) -> list[tuple[int, int | str]]:
    # /usr/lib/postgresql/9.6/bin < /usr/lib/postgresql/15/bin: compare numbers as numbers.
    parts = path.replace("/", ".").split(".")
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]


def make_workdir(parent: Path | None = None) -> Path:
    """A fresh ``infrawatch-*`` directory the servers can write to; removed at exit at latest."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="infrawatch-", dir=parent)).absolute()
    _own(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def make_dir(path: Path, mode: int = 0o700) -> Path:
    """An absolute directory the servers own: they run with it as cwd, so paths stay valid."""
    path = path.absolute()
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    _own(path)
    return path


def write_file(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write a file the servers own: Redis Sentinel and CONFIG REWRITE rewrite their conf."""
    path.write_text(text)
    path.chmod(mode)
    _own(path)
    return path


def _own(path: Path) -> None:
    account = service_account()
    if account is not None:
        account.own(path)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # PG* variables of the caller (PGHOST, PGOPTIONS, PGSERVICE...) must not redirect our tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    account = service_account()
    if account is not None:
        env.update(account.env())
    env.update(extra or {})
    return env


def _as_account() -> dict[str, Any]:
    account = service_account()
    return account.popen_kwargs() if account is not None else {}


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float = 60.0,
    input: str | None = None,
) -> str:
    """Run a one-shot command as the service account; its stdout, or StackError with its output."""
    try:
        result = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=child_env(),
            check=False,
            **_as_account(),
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{Path(argv[0]).name} took longer than {timeout:g}s: {argv}") from exc
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip()
        raise StackError(f"{Path(argv[0]).name} exited {result.returncode}: {output}")
    stdout: str = result.stdout
    return stdout


def wait_for(
    predicate: Callable[[], object],
    *,
    what: str,
    timeout: float,
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> None:
    """Poll ``predicate`` until truthy; StackError naming ``what`` after ``timeout`` seconds.

    The stack's use of ``tests.waiting.wait_until``: exceptions from the predicate count as
    "not yet" (a server that is still starting refuses connections); the last one is chained to
    the timeout error. ``check`` runs every round and may raise at once, e.g. when the process
    we wait on has died.
    """
    wait_until(
        predicate,
        what=what,
        within=timeout,
        interval=interval,
        check=check,
        retry_on=(Exception,),
        error=StackError,
    )


def stop_at_exit(stop: Callable[[], object]) -> Callable[[], None]:
    """Run ``stop`` at interpreter exit unless the returned function is called first.

    The fallback for interrupted runs: a fixture teardown that never ran must not leave
    servers behind.
    """

    def guarded() -> None:
        with contextlib.suppress(Exception):
            stop()

    atexit.register(guarded)
    return lambda: atexit.unregister(guarded)


def terminate(popen: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM) -> int:
    """Send ``sig``, wait at most ``timeout`` seconds, then kill; the exit status."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(sig)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
    return popen.wait(5)


class Process:
    """One long-running server we spawn, in its own process group, logging to a file."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, log_path: Path) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited; None while running or never started."""
        return self._popen.poll() if self._popen is not None else None

    def start(self) -> None:
        if self.is_running():
            return
        # Appending keeps the log of earlier runs when a test restarts the server.
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=child_env(),
                # Its own process group: Ctrl-C in the terminal reaches only us, and we stop
                # the servers in order instead of all of them dying at once.
                process_group=0,
                **_as_account(),
            )
        _own(self.log_path)

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process and wait at most ``timeout`` seconds, then kill it."""
        if self._popen is not None:
            terminate(self._popen, timeout, sig)
        self._popen = None
