"""The graceful stop of `infrawatch serve` over the real stack (server/runner.py).

After SIGTERM, for ``SHUTDOWN_DRAIN_SECONDS``: ``/health/ready`` answers 503 while every other
request is still served, on new and on kept-alive connections; then the listener closes, a
request in flight (a count that sleeps in PostgreSQL) finishes and is answered, and the process
exits 0. A second signal exits at once with 128 + n. With ``--workers`` the parent forwards the
signal and waits for its workers, which drain the same way.
"""

from __future__ import annotations

import http.client
import signal
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.served import OPERATOR_TOKEN, Served, get, stack_env
from tests.stack import PostgresServer
from tests.waiting import wait_until

DRAIN = 3.0
CALL = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "database.info"})


def _rpc(conn: http.client.HTTPConnection) -> dict[str, object]:
    conn.request("POST", "/rpc", body=CALL, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, body
    answer: dict[str, object] = orjson.loads(body)
    assert "result" in answer, answer
    return answer


SLOW_SECONDS = 6  # longer than the drain: the call is still running when the listener closes
SLOW_CALL = orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "monitoring.partitionMetrics"})


@pytest.fixture
def slow_pair(postgres: PostgresServer, pg_dsn: str) -> str:
    """A partition pair whose legacy side takes SLOW_SECONDS to count (``pg_sleep`` in
    PostgreSQL): ``monitoring.partitionMetrics`` is in flight for that long."""
    database = pg_dsn.rsplit("/", 1)[1].split("?")[0]
    postgres.psql(
        "CREATE VIEW slow_legacy AS SELECT g AS id FROM generate_series(1, 10) g, "
        "pg_sleep(:'seconds');"
        "CREATE TABLE part_p (id int) PARTITION BY RANGE (id);"
        "CREATE TABLE part_p_default PARTITION OF part_p DEFAULT;",
        database,
        variables={"seconds": str(SLOW_SECONDS)},
    )
    return "slow_legacy:part_p"


def _start_slow_call(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(SLOW_CALL)}\r\n\r\n"
    ).encode()
    sock.sendall(head + SLOW_CALL)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, orjson.loads(resp.read())


def test_sigterm_drains_then_finishes_in_flight_requests(
    pg_dsn: str, redis_url: str, slow_pair: str, tmp_path: Path
) -> None:
    env = stack_env(
        pg_dsn,
        redis_url,
        SHUTDOWN_DRAIN_SECONDS=str(DRAIN),
        SHUTDOWN_TIMEOUT="15",
        PARTITION_PAIRS=slow_pair,
        # The exact count may take up to half the smaller of these: 15 s.
        DATABASE_TIMEOUT="30000",
        BREAKER_CALL_TIMEOUT="30000",
        ALERT_EVALUATION_ENABLED="false",  # no round computes (and caches) the pair first
    )
    with Served(env, tmp_path) as served:
        port = served.port
        assert get(port, "/health/ready")[0] == 200
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _rpc(kept)
        kept_socket = kept.sock
        in_flight = _start_slow_call(port)
        time.sleep(0.5)  # the call is counting in PostgreSQL

        sent = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: get(port, "/health/ready")[0],
            accept=lambda status: status == 503,
            what="/health/ready answering 503",
            within=DRAIN,
            retry_on=(OSError,),
        )
        status, body = get(port, "/health/ready")
        assert status == 503 and b"shutting down" in body
        # Still served during the drain: a new connection, and the kept-alive one.
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _rpc(fresh)
        fresh.close()
        _rpc(kept)
        assert kept.sock is kept_socket, "the kept-alive connection was replaced"
        assert get(port, "/health/live")[0] == 200
        assert time.monotonic() - sent < DRAIN, "the checks above outlasted the drain"

        # After the drain: the listener is closed, the call still in flight.
        wait_until(
            lambda: _refused(port),
            what="the listener closed after the drain",
            within=DRAIN + 5,
        )
        assert time.monotonic() - sent >= DRAIN - 0.1
        assert served.proc.poll() is None, served.log()
        status, answer = _read_response(in_flight)
        in_flight.close()
        kept.close()
        assert status == 200 and "result" in answer, answer
        (pair,) = answer["result"]["pairs"]
        # Counted to the end, not cancelled when the drain ended.
        assert pair["legacy_rows"] == 10 and pair["legacy_count_method"] == "exact", pair
        assert time.monotonic() - sent >= SLOW_SECONDS - 1
        assert served.proc.wait(timeout=30) == 0, served.log()
    log = served.log()
    assert "draining for 3.0s" in log, log
    assert "stopped: listener closed" in log.splitlines()[-1], log
    # uvloop is a Linux dependency (setup.cfg): the server runs on it.
    assert "(uvloop event loop)" in log, log
    assert "Traceback" not in log, log


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_second_signal_exits_at_once(pg_dsn: str, redis_url: str, tmp_path: Path) -> None:
    env = stack_env(pg_dsn, redis_url, SHUTDOWN_DRAIN_SECONDS="60")
    with Served(env, tmp_path) as served:
        served.proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: get(served.port, "/health/ready")[0],
            accept=lambda status: status == 503,
            what="/health/ready answering 503",
            within=10,
            retry_on=(OSError,),
        )
        sent = time.monotonic()
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=10) == 128 + signal.SIGINT, served.log()
        assert time.monotonic() - sent < 5
    assert "second signal (SIGINT): exiting at once" in served.log()
    assert "stopped: listener closed" not in served.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_workers_drain_on_a_signal_to_the_parent(
    pg_dsn: str, redis_url: str, tmp_path: Path, sig: signal.Signals
) -> None:
    env = stack_env(pg_dsn, redis_url, SHUTDOWN_DRAIN_SECONDS=str(DRAIN))
    with Served(env, tmp_path, ["--workers", "2"]) as served:
        # Both workers listen once each has answered at least one readiness probe.
        wait_until(
            lambda: served.log().count("infrawatch listening"),
            accept=lambda n: n == 2,
            what="two workers listening",
            within=60,
        )
        sent = time.monotonic()
        served.proc.send_signal(sig)
        # Each new connection lands on either worker: all answer 503 while draining.
        wait_until(
            lambda: get(served.port, "/health/ready")[0],
            accept=lambda status: status == 503,
            what="/health/ready answering 503",
            within=DRAIN,
            retry_on=(OSError,),
        )
        statuses = {get(served.port, "/health/ready")[0] for _ in range(10)}
        assert statuses == {503}
        assert time.monotonic() - sent < DRAIN
        assert served.proc.wait(timeout=30) == 0, served.log()
        assert time.monotonic() - sent >= DRAIN - 0.1
    log = served.log()
    assert log.count("draining for 3.0s") == 2, log
    assert log.count("stopped: listener closed") == 2, log


def _call(port: int, method: str, params: dict[str, str]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {OPERATOR_TOKEN}"}
    conn.request("POST", "/rpc", body=body, headers=headers)
    answer: dict[str, Any] = orjson.loads(conn.getresponse().read())
    conn.close()
    assert "result" in answer, answer
    return answer


def _pending_rounds(port: int) -> int:
    status, body = get(port, "/health/detailed")
    pending: int = orjson.loads(body)["alert_store"]["pending_rounds"]
    return pending


def _firing_in_memory(port: int) -> bool:
    page = _call(port, "alerts.list", {"state": "firing"})["result"]
    fingerprints = {a["fingerprint"] for a in page["alerts"]}
    return page["source"] == "memory" and "breaker_open:alert-store" in fingerprints


def test_rounds_queued_while_the_store_was_down_are_written_on_sigterm(
    pg_dsn: str, redis_url: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    env = stack_env(pg_dsn, redis_url, SHUTDOWN_DRAIN_SECONDS="0", ALERT_EVALUATION_INTERVAL="2")
    with Served(env, tmp_path) as served:
        # The alert store's own breaker forced open: rounds queue in memory (and the open
        # breaker is itself an alert, so the queued round has something to write).
        _call(
            served.port,
            "monitoring.setCircuitBreakerState",
            {"name": "alert-store", "state": "open"},
        )
        # A round that saw the breaker open, kept in memory only.
        wait_until(
            lambda: _firing_in_memory(served.port),
            what="the open breaker's alert firing, in memory",
            within=15,
        )
        assert _pending_rounds(served.port) >= 1
        _call(
            served.port,
            "monitoring.setCircuitBreakerState",
            {"name": "alert-store", "state": "closed"},
        )
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=30) == 0, served.log()
    database = pg_dsn.rsplit("/", 1)[1].split("?")[0]
    fingerprints = postgres.psql("SELECT fingerprint FROM infrawatch.alerts", database)
    assert "breaker_open:alert-store" in fingerprints.splitlines(), served.log()
