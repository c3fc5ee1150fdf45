"""``infrawatch serve | call | check | check-config`` (also ``python -m server ...``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import secrets
import signal
import sys
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING

import orjson

from server.config import ConfigError, Settings

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("server")


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"infrawatch: invalid configuration: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _configure_logging(level: str) -> None:
    from server.log_format import FORMAT, SafeFormatter

    # Passwords masked and control characters escaped in every line (server/log_format.py).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def _serve_one(host: str, port: int, reuse_port: bool) -> None:
    from server.app import create_app
    from server.runner import serve

    settings = _settings_or_exit()
    _configure_logging(settings.server.log_level)
    app = create_app(settings)
    if multiprocessing.parent_process() is not None:
        app.on_startup.append(_stop_with_parent)
    # server/runner.py: the drain (SIGINT/SIGTERM: /health/ready 503 for drain_seconds while
    # requests are still served), then in-flight requests get shutdown_timeout and the cleanup
    # contexts close pools in reverse order; uvloop when installed; connections that answer an
    # over-long URL with a JSON error; the HTTP duration hook.
    serve(
        app,
        host=host,
        port=port,
        reuse_port=reuse_port,
        shutdown_timeout=settings.server.shutdown_timeout,
        on_listening=lambda: log.info(
            "infrawatch listening on http://%s:%s (%s)", host, port, _loop_name()
        ),
        drain_seconds=settings.server.shutdown_drain_seconds,
        on_drain=lambda: _mark_draining(app),
    )


def _loop_name() -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__.split('.')[0]} event loop"


def _mark_draining(app: web.Application) -> None:
    """From the first signal on, ``/health/ready`` answers 503 (the drain, server/runner.py)."""
    from server import appkeys

    app[appkeys.HEALTH].shutting_down = True


async def _stop_with_parent(_app: object) -> None:
    """A worker whose parent died (SIGKILL, OOM killer) stops gracefully rather than hold the
    port alone, unsupervised: the parent's sentinel turns readable when it ends."""
    parent = multiprocessing.parent_process()
    assert parent is not None
    loop = asyncio.get_running_loop()

    def orphaned() -> None:
        loop.remove_reader(parent.sentinel)
        log.warning("the parent process %s ended: stopping", parent.pid)
        os.kill(os.getpid(), signal.SIGTERM)

    loop.add_reader(parent.sentinel, orphaned)


def _share_session_secret(environ: MutableMapping[str, str]) -> None:
    """Without ``SESSION_SECRET``, each worker would draw its own: a session signed by one
    would be refused by the others. The parent draws one and the workers inherit it (spawned
    processes copy the parent's environment), kept in memory only, never printed."""
    if not environ.get("SESSION_SECRET", "").strip():
        environ["SESSION_SECRET"] = secrets.token_urlsafe(32)


def _serve_worker(host: str, port: int) -> None:
    """One of ``--workers``, in its own process group: Ctrl-C in a terminal reaches the parent
    alone, which forwards it once; a second signal from the group would end the drain at once."""
    os.setpgrp()
    _serve_one(host, port, True)


def _serve_workers(host: str, port: int, workers: int) -> int:
    """N processes sharing the port (SO_REUSEPORT); a signal to the parent stops them all.

    The workers' metrics are merged through files in a directory this parent owns: created
    empty before the first worker starts, removed after the last one ends.
    """
    from server.observability import multiprocess

    _share_session_secret(os.environ)
    with multiprocess.worker_directory() as metrics_dir:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_serve_worker, args=(host, port)) for _ in range(workers)]
        for proc in procs:
            proc.start()

        def forward(signum: int, _frame: object) -> None:
            for proc in procs:
                if proc.pid is not None and proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        for proc in procs:
            proc.join()
            if proc.pid is not None:
                multiprocess.worker_exited(proc.pid, metrics_dir)
    return max((proc.exitcode or 0) for proc in procs)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()  # fail before forking, with one line per bad variable
    _configure_logging(settings.server.log_level)
    if args.workers > 1:
        return _serve_workers(args.host, args.port, args.workers)
    _serve_one(args.host, args.port, False)
    return 0


def cmd_check_config(_args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    print(json.dumps(settings.describe(), indent=2, default=str))
    return 0


async def _call(url: str, token: str | None, procedure: str, params: object) -> object:
    from server.client import RpcClient

    async with RpcClient(url, token=token) as rpc:
        return await rpc.call(procedure, params)


def cmd_call(args: argparse.Namespace) -> int:
    from server.client import RpcCallError

    params = None
    if args.input is not None:
        try:
            params = orjson.loads(args.input)
        except orjson.JSONDecodeError as exc:
            print(f"infrawatch call: the input is not JSON: {exc}", file=sys.stderr)
            return 2
    token = args.token or os.environ.get("INFRAWATCH_TOKEN")
    try:
        result = asyncio.run(_call(args.url, token, args.procedure, params))
    except RpcCallError as exc:
        error = {"code": exc.number, "message": exc.message, "data": exc.data}
        print(json.dumps({"error": error}, indent=2), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"infrawatch call: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``infrawatch check``: server/smoke.py; reads no server setting."""
    from server import smoke

    token = args.token or os.environ.get("INFRAWATCH_TOKEN")
    results = asyncio.run(smoke.SmokeCheck(args.url, token, timeout=args.timeout).run())
    if args.format == "json":
        sys.stdout.buffer.write(smoke.render_json(args.url, results) + b"\n")
    else:
        print(smoke.render_text(args.url, results))
    return int(smoke.verdict(results))


def _add_check_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "check",
        help="smoke-check a running instance: exit 0 healthy, 1 degraded, 2 unhealthy",
    )
    check.add_argument("--url", default=os.environ.get("INFRAWATCH_URL", "http://127.0.0.1:8080"))
    check.add_argument("--token", help="operator token (default: $INFRAWATCH_TOKEN)")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for the instance and each call"
    )
    check.set_defaults(func=cmd_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infrawatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate the environment, print the settings")
    check.set_defaults(func=cmd_check_config)

    call = sub.add_parser("call", help="call a procedure over JSON-RPC and print the result")
    call.add_argument("procedure")
    call.add_argument("input", nargs="?", help="the input as JSON, e.g. '{\"id\": 3}'")
    call.add_argument("--token", help="operator token (default: $INFRAWATCH_TOKEN)")
    call.add_argument("--url", default=os.environ.get("INFRAWATCH_URL", "http://127.0.0.1:8080"))
    call.set_defaults(func=cmd_call)
    _add_check_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
