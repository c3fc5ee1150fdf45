"""`infrawatch check` (server/smoke.py) against `infrawatch serve` on the real stack.

The check runs as a pipeline would run it: a separate process whose environment has no server
setting at all. Healthy is 0; Redis stopped is 1 (degraded); the primary stopped, a wrong token
or nothing listening is 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from tests.served import OPERATOR_TOKEN, Served, free_port, stack_env
from tests.stack import PostgresServer, RedisServer

# What a CI runner has: a PATH and where Python finds the package, nothing of the server's.
_CLEAN_ENV = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ}

EXPECTED_CHECKS = {
    "reachable",
    "health",
    "health/ready",
    "metrics",
    "alert store",
    "dashboard page",
    "trpc batch",
    "mutation without token",
}


def check(url: str, *args: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "server", "check", "--url", url, "--format", "json", *args],
        env=_CLEAN_ENV,
        capture_output=True,
        timeout=timeout,
    )
    assert proc.stderr == b"", proc.stderr.decode()
    report: dict[str, Any] = orjson.loads(proc.stdout)
    assert report["exit_code"] == proc.returncode
    return proc.returncode, report


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_a_healthy_instance_passes_and_a_wrong_token_fails(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    with Served(stack_env(pg_dsn, redis_url), tmp_path) as served:
        code, report = check(served.url, "--token", OPERATOR_TOKEN)
        checks = by_name(report)
        assert code == 0, report
        assert report["status"] == "healthy"
        assert EXPECTED_CHECKS | {"token"} <= set(checks)
        assert all(c["status"] == "ok" for c in report["checks"]), report
        # Every query of the catalogue, over both wire formats.
        procedures = [name for name in checks if name.startswith("procedure ")]
        assert "procedure database.info" in procedures and len(procedures) >= 10
        assert checks["procedure database.info"]["detail"] == "jsonrpc ok, trpc ok"
        assert checks["alert store"]["detail"] == "durable (PostgreSQL)"
        assert checks["mutation without token"]["detail"].endswith("refused: UNAUTHORIZED")
        assert checks["token"]["detail"].startswith("accepted")

        code, report = check(served.url, "--token", "not-the-operator-token")
        assert code == 2, report
        assert "the token was refused (UNAUTHORIZED)" in orjson.dumps(report).decode()

        # Text for people: one line per check, the verdict last.
        proc = subprocess.run(
            [sys.executable, "-m", "server", "check", "--url", served.url],
            env=_CLEAN_ENV,
            capture_output=True,
            timeout=60,
        )
        lines = proc.stdout.decode().splitlines()
        assert proc.returncode == 0
        assert lines[-1] == f"infrawatch check {served.url}: healthy (exit 0)"
        assert all(line.split()[1] != "token:" for line in lines[:-1])  # no --token given


def test_redis_down_is_degraded(
    pg_dsn: str, redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    with Served(stack_env(pg_dsn, redis_url), tmp_path) as served:
        redis_server.stop()  # the next test finds it running again (conftest)
        code, report = check(served.url)
        checks = by_name(report)
        assert code == 1, report
        assert report["status"] == "degraded"
        assert checks["health"]["status"] == "degraded"
        assert checks["health/ready"]["status"] == "ok"  # the database answers: still ready
        assert not [c for c in report["checks"] if c["status"] == "failed"], report


def test_primary_down_is_unhealthy(
    pg_dsn: str, redis_url: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    with Served(stack_env(pg_dsn, redis_url), tmp_path) as served:
        postgres.stop()  # the next test finds it running again (conftest)
        code, report = check(served.url)
        checks = by_name(report)
        assert code == 2, report
        assert report["status"] == "unhealthy"
        assert checks["health"]["status"] == "failed"
        assert checks["health/ready"]["status"] == "failed"
        assert checks["alert store"]["status"] == "degraded"


def test_nothing_listening_is_unhealthy_within_15_seconds() -> None:
    port = free_port()
    started = time.monotonic()
    code, report = check(f"http://127.0.0.1:{port}")
    elapsed = time.monotonic() - started
    assert code == 2
    (only,) = report["checks"]
    assert only["name"] == "reachable" and only["status"] == "failed"
    assert only["detail"].startswith("unreachable within 15 s")
    assert 15 <= elapsed < 20


def test_an_instance_that_starts_late_is_waited_for(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    """A Job started with the Deployment: the check waits (up to 15 s) for it to listen."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "check", "--url", f"http://127.0.0.1:{port}"],
        env=_CLEAN_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    served = Served(stack_env(pg_dsn, redis_url), tmp_path, port=port)
    with served:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out + err).decode()


def test_with_read_tokens_required_the_token_opens_every_check(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(pg_dsn, redis_url, READ_TOKENS_REQUIRED="true")
    with Served(env, tmp_path) as served:
        code, report = check(served.url)
        assert code == 2, report
        assert "reading needs a token here" in orjson.dumps(report).decode()

        code, report = check(served.url, "--token", OPERATOR_TOKEN)
        checks = by_name(report)
        assert code == 0, report
        assert checks["metrics"]["detail"].endswith("infrawatch_*)")  # read, not skipped
        assert checks["alert store"]["detail"] == "durable (PostgreSQL)"
