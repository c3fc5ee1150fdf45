"""`serve --workers 2`: one scrape answers for both worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from server.observability.exposition import Slicer
from server.observability.multiprocess import PREFIX, merged, sweep_stale
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN
from tests.dashboard_pages import csrf_in
from tests.stack.ports import free_port
from tests.waiting import eventually, until_accepted
from web.session import COOKIE_NAME

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
# SIGTERM to the parent, then its workers' stop (no drain: SHUTDOWN_DRAIN_SECONDS=0).
STOP_WITHIN = 20.0
pytestmark = pytest.mark.timeout(240)


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        # A session per request: a new connection, which SO_REUSEPORT may hand to either worker.
        timeout = aiohttp.ClientTimeout(total=20)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.url + path, **kwargs) as resp,
        ):
            return resp.status, await resp.read()

    async def sample(self, name: str, **labels: str) -> float | None:
        status, body = await self.request("GET", "/metrics", headers=AUTH)
        assert status == 200, body
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return None


@pytest.fixture
async def served(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Served]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": pg_dsn,
        "REDIS_URL": redis_url,
        "AUTH_TOKENS": f"{OPERATOR_NAME}:{OPERATOR_TOKEN}",
        "READ_TOKENS_REQUIRED": "true",
        "METRICS_SYNC_INTERVAL": "0.2",
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_DRAIN_SECONDS": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "server", "serve", "--port", str(port), "--workers", "2"),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:

        def running() -> None:
            assert proc.returncode is None, log.read_text()

        await until_accepted(
            lambda: served.request("GET", "/health/live"),
            lambda answer: answer[0] == 200,
            what="the workers answering",
            within=60,
            interval=0.1,
            check=running,
            retry_on=(aiohttp.ClientError,),
        )
        yield served
    finally:
        # A stop as an operator's: the parent forwards it and removes the workers' metrics
        # directory (a SIGKILL left one in the system temp dir per test).
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_WITHIN)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 30)


async def test_two_workers_one_merged_scrape(served: Served) -> None:
    pids: set[int] = set()
    detailed = 0
    while len(pids) < 2:
        status, body = await served.request("GET", "/health/detailed", headers=AUTH)
        assert status == 200, body
        detailed += 1
        pids.add(orjson.loads(body)["process"]["pid"])
        assert detailed < 200, "every connection went to one worker"

    calls = 20
    call = {"jsonrpc": "2.0", "method": "monitoring.unifiedHealth", "id": 1}
    for _ in range(calls):
        status, _ = await served.request("POST", "/rpc", json=call, headers=AUTH)
        assert status == 200

    # The counts are pulled figures: each worker's reach the files within its sync interval
    # (0.2 s here). From then on any worker answers the scrape with both workers' counts.
    route = {"method": "GET", "route": "/health/detailed", "status": "200"}
    rpc = {"procedure": "monitoring.unifiedHealth", "protocol": "jsonrpc"}

    async def counts() -> tuple[float | None, ...]:
        return (
            await served.sample("infrawatch_http_requests_total", **route),
            await served.sample("infrawatch_rpc_calls_total", code="OK", **rpc),
            await served.sample("infrawatch_rpc_call_duration_seconds_count", **rpc),
            await served.sample("infrawatch_rpc_call_duration_seconds_bucket", le="+Inf", **rpc),
        )

    expected = (detailed, calls, calls, calls)
    await until_accepted(counts, lambda found: found == expected, what="both workers' counts")
    for _ in range(4):
        assert await counts() == expected
        assert (await served.sample("infrawatch_rpc_call_duration_seconds_sum", **rpc) or 0) > 0
        assert (await served.sample("process_resident_memory_bytes") or 0) > 0

    # Pulled figures (the process collector's) are held by each worker alone: each worker's
    # copy reaches the files and the scrape merges them by each family's mode.
    starts = await asyncio.to_thread(lambda: {pid: start_time(pid) for pid in pids})
    merged_start = await served.sample("process_start_time_seconds")
    assert merged_start == pytest.approx(min(starts.values()), abs=0.02)  # livemin

    async def merged_and_total() -> tuple[float, int]:
        total = sum(await asyncio.to_thread(lambda: [rss_bytes(pid) for pid in pids]))
        return await served.sample("process_resident_memory_bytes") or 0, total

    # livesum; memory moves a little between reads, so poll to within 10 %
    await until_accepted(
        merged_and_total,
        lambda found: abs(found[0] - found[1]) <= 0.1 * found[1],
        what="the merged RSS within 10 % of the workers' sum",
        within=20,
        interval=0.2,
    )

    # The parent owns the files' directory: there while the workers run, gone after.
    directory = await asyncio.to_thread(metrics_directory, min(pids))
    files = await asyncio.to_thread(lambda: {p.name for p in directory.iterdir()})
    assert {f"counter_{pid}.db" for pid in pids} <= files
    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.proc.wait(), 30) == 0
    assert not await asyncio.to_thread(directory.exists)


async def test_workers_stop_when_the_parent_is_killed(served: Served) -> None:
    pids: set[int] = set()
    for _ in range(200):
        status, body = await served.request("GET", "/health/detailed", headers=AUTH)
        assert status == 200, body
        pids.add(orjson.loads(body)["process"]["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2, "every connection went to one worker"
    directory = metrics_directory(next(iter(pids)))
    assert directory.name.startswith(f"{PREFIX}{served.proc.pid}-")
    served.proc.kill()  # SIGKILL: the parent forwards nothing
    await served.proc.wait()

    def alive() -> set[int]:
        # A worker that ended is reaped by init; until then it is a zombie, as good as gone.
        found = set()
        for pid in pids:
            with contextlib.suppress(FileNotFoundError):
                if Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z":
                    found.add(pid)
        return found

    await eventually(lambda: not alive(), what="both orphaned workers stopped", timeout=30)
    # The killed parent could not remove the workers' directory: the next one does.
    assert await asyncio.to_thread(directory.exists)
    live = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"{PREFIX}{os.getpid()}-")
    try:
        removed = await asyncio.to_thread(sweep_stale, str(directory.parent))
        assert str(directory) in removed
        assert not await asyncio.to_thread(directory.exists)
        assert await asyncio.to_thread(os.path.exists, live)  # its parent (this test) runs
    finally:
        await asyncio.to_thread(shutil.rmtree, live, True)


def start_time(pid: int) -> float:
    """When a process started, in Unix seconds, as prometheus-client's process collector
    computes it (``/proc/<pid>/stat`` start ticks after boot, plus boot time)."""
    ticks = float(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return ticks / os.sysconf("SC_CLK_TCK") + boot


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def metrics_directory(pid: int) -> Path:
    """The metrics directory a worker was given, read from its environment."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    key = b"PROMETHEUS_MULTIPROC_DIR="
    return Path(next(v for v in environ if v.startswith(key))[len(key) :].decode())


WRITER = """
from prometheus_client import Counter, Gauge, Histogram
events = Counter("t_events_total", "events", ["kind"], registry=None)
level = Gauge("t_level", "level", ["kind"], registry=None, multiprocess_mode="livesum")
worst = Gauge("t_worst", "worst", ["kind"], registry=None, multiprocess_mode="livemax")
each = Gauge("t_each", "each", [], registry=None)  # mode "all": one series per pid
wait = Histogram("t_wait_seconds", "wait", ["kind"], registry=None)
for i in range(300):
    events.labels(f"k{i}").inc(i)
    level.labels(f"k{i % 7}").set(i)
    worst.labels(f"k{i % 3}").set(i)
    wait.labels(f"k{i % 5}").observe(i / 100)
each.set(1)
"""


def normalized(families: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (
            f.name,
            f.type,
            f.documentation,
            sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples),
        )
        for f in families
    )


async def test_sliced_merge_equals_the_library_merge(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two writer processes: two pids' files
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, env=env)
        assert await asyncio.wait_for(writer.wait(), 60) == 0
    library = MultiProcessCollector(None, path=str(tmp_path)).collect()
    ours = await merged(str(tmp_path), Slicer(0.0))  # a pause after every entry
    assert normalized(ours) == normalized(library)
    events = next(f for f in ours if f.name == "t_events")
    assert {s.value for s in events.samples if s.labels == {"kind": "k7"}} == {14.0}
    each = next(f for f in ours if f.name == "t_each")
    assert len(each.samples) == 2  # mode "all" keeps one series per worker


PULLED_WRITER = """
import sys
import tempfile
from server.observability.metrics import Metrics
from server.observability.rpc_metrics import RpcMetrics
from server.errors import ErrorCode

metrics = Metrics(standard_collectors=False)
rpc = RpcMetrics(metrics, buckets=(0.01, 0.1, 1.0, 10.0))
for seconds in (0.005, 0.05, 0.5):
    rpc.observe("a.b", "jsonrpc", None, seconds)
metrics.sync()
metrics.sync()  # nothing new: copies nothing twice
rpc.observe("a.b", "jsonrpc", None, 0.01)  # on a bound: that bucket (le)
rpc.observe("a.b", "jsonrpc", ErrorCode.TIMEOUT, 5.0)
metrics.sync()
"""


async def test_pulled_histograms_merge_bucket_by_bucket(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PULLED_WRITER, env=env, cwd=ROOT
        )
        assert await asyncio.wait_for(writer.wait(), 60) == 0
    families = {f.name: f for f in await merged(str(tmp_path), Slicer())}
    child = {"procedure": "a.b", "protocol": "jsonrpc"}
    found = {
        (s.name, s.labels.get("le")): s.value
        for s in families["infrawatch_rpc_call_duration_seconds"].samples
        if {k: v for k, v in s.labels.items() if k != "le"} == child
    }
    name = "infrawatch_rpc_call_duration_seconds"
    # Per worker: 0.005 and 0.01 <= 0.01; 0.05 <= 0.1; 0.5 <= 1; 5.0 <= 10; none above 10
    # (an empty bucket is still a series). Two workers.
    assert found[(f"{name}_bucket", "0.01")] == 4
    assert found[(f"{name}_bucket", "0.1")] == 6
    assert found[(f"{name}_bucket", "1.0")] == 8
    assert found[(f"{name}_bucket", "10.0")] == 10
    assert found[(f"{name}_bucket", "+Inf")] == 10
    assert found[(f"{name}_count", None)] == 10
    assert len(found) == 7  # every bucket, the count and the sum
    assert found[(f"{name}_sum", None)] == pytest.approx(2 * (0.005 + 0.05 + 0.5 + 0.01 + 5.0))
    calls = {
        s.labels["code"]: s.value
        for s in families["infrawatch_rpc_calls"].samples
        if s.name == "infrawatch_rpc_calls_total"
    }
    assert calls == {"OK": 8, "TIMEOUT": 2}


async def _page(served: Served, path: str, cookie: str, **kwargs: Any) -> aiohttp.ClientResponse:
    """One request on a new connection (either worker), with the session cookie; read."""
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(
            kwargs.pop("method", "GET"),
            served.url + path,
            headers={"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {},
            allow_redirects=False,
            **kwargs,
        ) as resp,
    ):
        await resp.read()
        return resp


async def test_a_session_holds_on_every_worker_without_a_session_secret(served: Served) -> None:
    # The fixture sets no SESSION_SECRET: the parent draws one that both workers share, so a
    # form served by one worker is accepted by the other, and so is the session.
    form = await _page(served, "/login", "")
    visitor = form.cookies[COOKIE_NAME].value
    csrf = csrf_in(await form.text())
    signed_in = await _page(
        served, "/login", visitor, method="POST", data={"token": OPERATOR_TOKEN, "csrf_token": csrf}
    )
    assert signed_in.status == 303, await signed_in.text()
    cookie = signed_in.cookies[COOKIE_NAME].value
    pids: set[int] = set()
    for _ in range(40):
        page = await _page(served, "/", cookie)
        assert page.status == 200 and "Signed in as" in await page.text()
        status, body = await served.request("GET", "/health/detailed", headers=AUTH)
        pids.add(orjson.loads(body)["process"]["pid"])
    assert len(pids) == 2, "every connection went to one worker"

    # Signing out on one worker ends the session on both (Redis holds the revocation).
    page_csrf = csrf_in(await (await _page(served, "/", cookie)).text())
    out = await _page(served, "/logout", cookie, method="POST", data={"csrf_token": page_csrf})
    assert out.status == 303
    for _ in range(20):
        assert (await _page(served, "/", cookie)).status == 303  # to the sign-in form
