"""``python -m tests.stack``: a local stack for ``make run``.

Starts a PostgreSQL primary, a streaming replica, PgBouncer and Redis in a private temporary
directory under the system's temporary folder (``$TMPDIR``, else ``/tmp``), not in the checkout:
when we are root the servers run as ``postgres``, which cannot enter a checkout in a private
folder (root's home, a ``mktemp -d``). The directory is owned by the servers' account, mode
0700, and removed on exit. Prints the environment that points infrawatch at them, then either runs
``--exec -- command...`` with that environment or waits for Ctrl-C. The stack is torn down when
the command exits or on SIGINT/SIGTERM.

``--demo`` adds demo data (a partition migration in progress, see ``tests/stack/demo.py``), the
demo's settings (a generated operator token, printed) and a small background workload against
the stack and the service at ``--url``, which stops before the stack does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from tests.stack import (
    Alertmanager,
    PgBouncer,
    PostgresServer,
    RedisServer,
    make_workdir,
    remove_workdir,
)
from tests.stack.demo import DemoWorkload, create_demo_schema, demo_environment, operator_token
from tests.stack.process import terminate

# After SIGINT/SIGTERM the command gets this long to exit before it is killed.
COMMAND_STOP_TIMEOUT = 15.0


def start_stack(workdir: Path, stack: contextlib.ExitStack) -> dict[str, str]:
    """Start every server (each stopped by ``stack``, in reverse order); their environment."""
    primary = stack.enter_context(PostgresServer(workdir))
    replica = stack.enter_context(primary.make_replica(workdir))
    bouncer = stack.enter_context(PgBouncer(workdir, primary))
    redis_server = stack.enter_context(RedisServer(workdir))
    alertmanager = stack.enter_context(Alertmanager(workdir))
    return {
        "DATABASE_URL": primary.dsn(),
        "DATABASE_REPLICA_URLS": replica.dsn(),
        "PGBOUNCER_ADMIN_URL": bouncer.admin_dsn,
        "REDIS_URL": redis_server.url,
        "ALERTMANAGER_URLS": alertmanager.url,
    }


def start_demo(
    env: dict[str, str], url: str, stack: contextlib.ExitStack
) -> tuple[dict[str, str], DemoWorkload]:
    """Demo schema and settings; the workload starts now and stops before the servers do (and
    before the command of ``--exec``: its calls would otherwise meet a closed listener)."""
    create_demo_schema(env["DATABASE_URL"])
    demo = demo_environment()
    workload = DemoWorkload(env | demo, url)
    workload.start()
    stack.callback(workload.stop)
    return demo, workload


def _announce(env: dict[str, str], url: str) -> None:
    token = operator_token(env)
    print(
        f"\ninfrawatch demo: open {url.rstrip('/')}/ and sign in with the operator token\n"
        f"    {token}\n(operator 'demo'; a new token each run). A workload keeps every "
        "section moving; Ctrl-C stops everything.\n",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options, command = _split_exec(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(options)
    if command is not None and not command:
        parser.error("--exec needs a command after it")
    stopping = threading.Event()
    received: list[int] = []
    children: list[int] = []  # the --exec command's pid, once started

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            # A second Ctrl-C: passed on, so the command (infrawatch serve) exits at once.
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    workdir = make_workdir(args.dir)
    try:
        with contextlib.ExitStack() as stack:
            print(f"starting the stack in {workdir}", file=sys.stderr)
            env = start_stack(workdir, stack)
            workload = None
            if args.demo:
                demo, workload = start_demo(env, args.url, stack)
                env |= demo
            for name, value in env.items():
                print(f"{name}={value}")
            if args.demo:
                _announce(env, args.url)
            sys.stdout.flush()
            if command:
                before_stop = workload.stop if workload is not None else None
                return _run_command(command, env, stopping, children, before_stop)
            if not stopping.is_set():
                print("stack running; Ctrl-C stops it", file=sys.stderr)
            stopping.wait()
            return 128 + received[0]
    finally:
        remove_workdir(workdir)
        print("stack stopped", file=sys.stderr)


def _run_command(
    command: Sequence[str],
    env: dict[str, str],
    stopping: threading.Event,
    children: list[int],
    before_stop: Callable[[], object] | None = None,
) -> int:
    if stopping.is_set():
        return 130
    # Its own process group: a terminal's Ctrl-C reaches us alone and the command gets exactly
    # one signal, from terminate() below. Two (the terminal's and ours) would end
    # `infrawatch serve`'s drain at once: a second signal is its "exit now".
    child = subprocess.Popen(command, env=os.environ | env, process_group=0)
    children.append(child.pid)
    # Polling, so that a signal (which only sets the event) is noticed within 0.2 s.
    while child.poll() is None and not stopping.wait(0.2):
        pass
    if before_stop is not None:
        before_stop()  # the demo's load ends first, as it would before a real deploy's stop
    # One SIGTERM, then a bounded time to shut down (its drain included).
    code = terminate(child, COMMAND_STOP_TIMEOUT)
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.stack",
        usage="%(prog)s [--dir DIR] [--demo] [--url URL] [--exec -- command [args...]]",
        description=__doc__,
        epilog="--exec -- command [args...]: run the command with the stack's environment "
        "added, stop the stack when it exits.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="parent of the stack's temporary directory (default: the system's temporary "
        "folder; the servers' account must be able to enter it)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="add demo data, a demo operator token and a background workload (make run)",
    )
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="where the service will listen, for the demo workload and the printed link "
        "(default: http://127.0.0.1:8080)",
    )
    return parser


def _split_exec(argv: list[str]) -> tuple[list[str], list[str] | None]:
    # By hand: argparse mishandles "--exec -- cmd --flags" (REMAINDER after an option).
    if "--exec" not in argv:
        return argv, None
    at = argv.index("--exec")
    command = argv[at + 1 :]
    return argv[:at], command[1:] if command[:1] == ["--"] else command


if __name__ == "__main__":
    sys.exit(main())
