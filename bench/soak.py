"""Soak: ``infrawatch serve`` for an hour of mixed load and idle rounds; is its RSS flat?

Run: ``make soak`` or ``.venv/bin/python bench/soak.py [minutes] [warmup-minutes] [clients]``
(defaults 60, 10 and 20). Not part of ``make test``: it takes the hour.

It starts a real PostgreSQL and Redis (``tests.stack``), then the service in a process of its
own with alerts evaluated every second (``ALERT_EVALUATION_INTERVAL=1``: fifteen times the
default's rounds). The hour alternates phases: 60 s of load (``bench/flood.py`` with
``clients`` anonymous clients: expensive reads, batches, ``/metrics``, the page) and 120 s
idle (only the evaluator's rounds). RSS (``/proc/<pid>/status``) is sampled every 5 s.

Verdict: after the warm-up, the drift is the least-squares slope of RSS over the idle samples'
times, times the time they span, and the spread of the idle samples (max - min); both must stay
under 5 MB. Idle samples only, so that a load phase's transient buffers do not count as growth.
Exit 0 when flat, 1 when not; the samples go to ``soak-rss.csv`` in the working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: this checkout's server and tests

from tests.stack import PostgresServer, RedisServer, make_workdir, remove_workdir  # noqa: E402
from tests.stack.ports import free_port, is_listening  # noqa: E402

LOAD_SECONDS = 60.0
IDLE_SECONDS = 120.0
SAMPLE_EVERY = 5.0
BUDGET_BYTES = 5_000_000


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def slope(points: list[tuple[float, int]]) -> float:
    """Least-squares bytes per second."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / var if var else 0.0


def serve(dsn: str, redis_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "ALERT_EVALUATION_INTERVAL": "1",
        "LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not is_listening(port, timeout=0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"infrawatch did not start:\n{log.read_text()[-2000:]}")
    return proc


def main(minutes: float, warmup_minutes: float, clients: int) -> int:
    workdir = make_workdir()
    samples: list[tuple[float, int, str]] = []
    try:
        with PostgresServer(workdir) as pg, RedisServer(workdir) as redis:
            port = free_port()
            proc = serve(pg.dsn(), redis.url, port, workdir / "infrawatch.log")
            url = f"http://127.0.0.1:{port}"
            started = time.monotonic()
            end = started + minutes * 60
            try:
                while time.monotonic() < end:
                    flood = subprocess.Popen(
                        [
                            sys.executable,
                            str(ROOT / "bench" / "flood.py"),
                            url,
                            str(LOAD_SECONDS),
                            str(clients),
                        ],
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                    )
                    while flood.poll() is None:
                        samples.append((time.monotonic() - started, rss(proc.pid), "load"))
                        time.sleep(SAMPLE_EVERY)
                    phase_end = min(end, time.monotonic() + IDLE_SECONDS)
                    while time.monotonic() < phase_end:
                        samples.append((time.monotonic() - started, rss(proc.pid), "idle"))
                        time.sleep(SAMPLE_EVERY)
                    last = samples[-1]
                    print(f"{last[0] / 60:5.1f} min  RSS {last[1] / 1e6:6.1f} MB", flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        remove_workdir(workdir)
    Path("soak-rss.csv").write_text(
        "seconds,rss_bytes,phase\n" + "".join(f"{t:.1f},{r},{p}\n" for t, r, p in samples)
    )
    idle = [(t, r) for t, r, p in samples if p == "idle" and t >= warmup_minutes * 60]
    if len(idle) < 3:
        print("too few idle samples after the warm-up")
        return 1
    span = idle[-1][0] - idle[0][0]
    drift = slope(idle) * span
    spread = max(r for _, r in idle) - min(r for _, r in idle)
    print(
        f"after {warmup_minutes:g} min warm-up: {len(idle)} idle samples over {span / 60:.1f} min; "
        f"RSS {idle[0][1] / 1e6:.1f} -> {idle[-1][1] / 1e6:.1f} MB, trend {drift / 1e6:+.2f} MB, "
        f"spread {spread / 1e6:.2f} MB (budget {BUDGET_BYTES / 1e6:g} MB)"
    )
    return 0 if abs(drift) < BUDGET_BYTES and spread < BUDGET_BYTES else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    raise SystemExit(
        main(
            float(args[0]) if args else 60.0,
            float(args[1]) if len(args) > 1 else 10.0,
            int(args[2]) if len(args) > 2 else 20,
        )
    )
