"""What a scrape of /metrics costs, and what it does to RPC calls served at the same time.

Run: ``.venv/bin/python bench/bench_metrics.py [seconds-per-variant] [cycles]`` (5, 12).

Part 1, in process: the series our app exposes after traffic over every route and procedure
(both protocols), and the same app padded to 2,000 series. For each: prometheus-client's stock
``generate_latest()`` (one synchronous call, ``_created`` included), and our render
(``Metrics.expose``: refresh, sliced render, no ``_created``): wall time, CPU time, and the
longest stretch it held the event loop (the largest gap a ticker task saw).

Part 2, over the network: a real server (this script's ``serve`` mode: ``create_app`` padded to
2,000 series, in its own process) answers JSON-RPC calls paced at a fixed rate (open loop: a
call is sent at its time whether or not earlier ones came back, so a stall shows as latency,
not as fewer calls), while one real Prometheus scrapes it every second. Three variants run
back to back in each cycle, switched by reloading Prometheus' config: scraping
``/health/live`` (the baseline: same Prometheus, same HTTP request per second, nothing
rendered), ``/metrics``, and ``/metrics-stock`` (stock ``generate_latest`` on the loop, for
comparison). Reported: pooled p50/p99, the median over cycles of each variant's p99, the
median over cycles of its p99 minus the baseline's p99 in the same cycle, and Prometheus' own
``scrape_duration_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from server import appkeys
from server.app import create_app
from server.appkeys import METRICS, ROUTER
from server.config import Settings
from server.rpc.router import Caller, Context

TOKEN = "bench-token-0123456789"
BREAKERS = (
    "redis-cache",
    "database-query",
    "database-write",
    "database-replica-r1",
    "pgbouncer-admin",
)
RATE = 400  # calls per second in part 2
PADDED = 2_000


# --- the app under test ---


def build_app() -> web.Application:
    app = create_app(Settings(auth_tokens={"bench": TOKEN}))

    async def stock(request: web.Request) -> web.Response:
        # What an unsliced handler does: the whole registry in one call, on the loop.
        body = generate_latest(request.app[METRICS].registry)
        return web.Response(body=body, content_type="text/plain")

    async def prepare(request: web.Request) -> web.Response:
        # The served app's own label sets (it calls itself over HTTP), then the padding.
        async with aiohttp.ClientSession() as session:
            await traffic(request.app, session, str(request.url.origin()))
        pad(request.app, int(request.query.get("series", PADDED)))
        return web.Response(text="ready")

    app.router.add_get("/metrics-stock", stock)
    app.router.add_post("/bench/prepare", prepare)
    return app


async def traffic(app: web.Application, session: aiohttp.ClientSession, base: str) -> None:
    """Every route, every procedure over both protocols, every breaker: our real label sets."""
    for name in BREAKERS:
        app[appkeys.BREAKERS].get(name)
    for path in ("/health", "/health/live", "/health/ready", "/health/db", "/health/redis"):
        async with session.get(base + path) as resp:
            await resp.read()
    for path in ("/health/detailed", "/no/such/path", "/metrics"):
        async with session.get(base + path) as resp:
            await resp.read()
    router = app[ROUTER]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in [proc.path for proc in router.procedures] + ["no.such.procedure"]:
        body = {"jsonrpc": "2.0", "method": path, "id": 1}
        async with session.post(base + "/rpc", json=body, headers=headers) as resp:
            await resp.read()
        for protocol in ("trpc", "internal"):  # the tRPC adapter and the dashboard call alike
            ctx = Context(caller=Caller("bench"), protocol=protocol)
            with contextlib.suppress(Exception):  # an error outcome is a label set too
                await router.call(path, None, ctx)


def pad(app: web.Application, total: int) -> None:
    """Business-metric families until the scrape holds ``total`` samples (series)."""
    metrics = app[METRICS]
    have = sum(len(f.samples) for f in metrics.registry.collect()) - count_created(app)
    family = 0
    while have < total:
        counter = metrics.counter(f"bench_padding_{family}_total", "padding", ("key",))
        for i in range(min(100, total - have)):
            counter.labels(f"k{i}").inc(i)
            have += 1
        family += 1


def count_created(app: web.Application) -> int:
    registry = app[METRICS].registry
    return sum(1 for f in registry.collect() for s in f.samples if s.name.endswith("_created"))


# --- part 1 ---


async def loop_hold(work: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    """Wall and CPU ms of ``work``, and the longest it held the event loop, while a ticker
    task measures the gaps between its turns: in CPU time of this thread (what our code
    spends without letting the loop run) and in wall time (that plus whatever the OS gave
    other processes meanwhile: on a shared machine, noise)."""
    cpu_gaps: list[float] = []
    wall_gaps: list[float] = []
    done = False

    async def ticker() -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now_cpu, now_wall = time.thread_time(), time.perf_counter()
            cpu_gaps.append(now_cpu - cpu)
            wall_gaps.append(now_wall - wall)
            cpu, wall = now_cpu, now_wall

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    cpu, wall = time.thread_time(), time.perf_counter()
    await work()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    done = True
    await task
    return {
        "wall_ms": wall * 1000,
        "cpu_ms": cpu * 1000,
        "hold_cpu_ms": max(cpu_gaps, default=0.0) * 1000,
        "hold_wall_ms": max(wall_gaps, default=0.0) * 1000,
    }


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


async def stock_render(app: web.Application) -> None:
    generate_latest(app[METRICS].registry)


async def stock_render_in_thread(app: web.Application) -> None:
    # The loop thread is free, but the encoder holds the GIL: the loop gets it back only at
    # the interpreter's switch interval (5 ms) or when the encoder happens to release it.
    await asyncio.to_thread(generate_latest, app[METRICS].registry)


async def part1(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for label, padded in (("our series after traffic", False), (f"padded to {PADDED}", True)):
        app = build_app()
        async with TestClient(TestServer(app)) as client:
            await traffic(app, client.session, str(client.make_url("")).rstrip("/"))
            if padded:
                pad(app, PADDED)
            metrics = app[METRICS]
            ours = await metrics.expose()
            stock_lines = generate_latest(metrics.registry).count(b"\n")
            for name, work in (
                ("stock generate_latest", lambda a=app: stock_render(a)),
                ("stock, in a worker thread", lambda a=app: stock_render_in_thread(a)),
                ("ours: expose()", lambda m=metrics: m.expose()),
                ("ours: expose(), gzip", lambda m=metrics: m.expose(None, "gzip")),
                (
                    "ours: expose(), OpenMetrics",
                    lambda m=metrics: m.expose("application/openmetrics-text;version=1.0.0"),
                ),
            ):
                runs = [await loop_hold(work) for _ in range(repeats)]
                rows.append(
                    {
                        "case": label,
                        "series": ours.samples,
                        "stock_lines": stock_lines,
                        "variant": name,
                        **medians(runs),
                    }
                )
    return rows


# --- part 3: --workers, two workers' files merged ---


def mp_worker() -> None:
    """A worker's share: the app's label sets after traffic, padded, written to the files."""

    async def run() -> None:
        app = build_app()
        async with TestClient(TestServer(app)) as client:
            await traffic(app, client.session, str(client.make_url("")).rstrip("/"))
            pad(app, PADDED)
            app[METRICS].sync()

    asyncio.run(run())


def mp_scrape(repeats: int) -> None:
    from prometheus_client.multiprocess import MultiProcessCollector

    from server.observability.metrics import Metrics

    async def run() -> None:
        metrics = Metrics(standard_collectors=False)
        assert metrics.multiprocess, "PROMETHEUS_MULTIPROC_DIR was not set before the import"
        series = (await metrics.expose()).samples
        runs = [await loop_hold(metrics.expose) for _ in range(repeats)]
        library = MultiProcessCollector(None, path=metrics.multiprocess_dir)

        async def stock_merge() -> None:
            library.collect()

        stock = [await loop_hold(stock_merge) for _ in range(repeats)]
        print(json.dumps({"series": series, **medians(runs), "stock": medians(stock)}))

    asyncio.run(run())


async def part3(repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-multiproc-") as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        for _ in range(2):
            worker = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "mp-worker", env=env
            )
            assert await worker.wait() == 0
        scrape = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "mp-scrape", str(repeats), env=env, stdout=subprocess.PIPE
        )
        out, _ = await scrape.communicate()
        assert scrape.returncode == 0
        result: dict[str, Any] = json.loads(out)
        return result


# --- part 2 ---


def serve(port: int) -> None:
    web.run_app(build_app(), host="127.0.0.1", port=port, print=None, access_log=None)


async def paced_calls(url: str, seconds: float) -> list[float]:
    """Calls sent at RATE per second for ``seconds``; the latency of each, in ms."""
    body = json.dumps({"jsonrpc": "2.0", "method": "monitoring.circuitBreakerStatus", "id": 1})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            started = time.perf_counter()
            async with session.post(url + "/rpc", data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200
            latencies.append((time.perf_counter() - started) * 1000)

        tasks = []
        start = time.perf_counter()
        n = int(seconds * RATE)
        for i in range(n):
            delay = start + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    """One real Prometheus for the whole of part 2; each variant rewrites its config (the
    scraped path) and reloads it (``/-/reload``), so switching costs no restart."""

    def __init__(self, target: str, workdir: Path) -> None:
        self.target = target
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None

    def write(self, path: str) -> None:
        self.config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: bench\n"
            f"    metrics_path: {path}\n"
            f"    authorization: {{credentials: {TOKEN}}}\n"
            f"    static_configs: [{{targets: ['{self.target}']}}]\n"
        )

    async def start(self, path: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "install the prometheus package"
        self.write(path)
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await self.wait_for_scrape_of(path)

    async def switch(self, path: str) -> None:
        self.write(path)
        async with aiohttp.ClientSession() as session, session.post(self.api + "/-/reload") as r:
            assert r.status == 200, await r.text()
        await self.wait_for_scrape_of(path)

    async def wait_for_scrape_of(self, path: str) -> None:
        """Until two scrapes of ``path`` have happened (the second on the settled config)."""
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while len(seen) < 2:
                try:
                    async with session.get(self.api + "/api/v1/targets") as resp:
                        targets = (await resp.json())["data"]["activeTargets"]
                    for t in targets:
                        if t["scrapeUrl"].endswith(path) and not t["lastScrape"].startswith("0001"):
                            seen.add(t["lastScrape"])
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"prometheus never scraped {path}"
                await asyncio.sleep(0.2)

    async def last_scrape_ms(self) -> float | None:
        query = 'scrape_duration_seconds{job="bench"}'
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.api + "/api/v1/query", params={"query": query}) as resp,
        ):
            result = (await resp.json())["data"]["result"]
        return float(result[0]["value"][1]) * 1000 if result else None

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[int(len(ordered) * 0.99)]


async def part2(seconds: float, cycles: int, series: int) -> list[dict[str, Any]]:
    """Cycles of the three variants back to back: a burst of load from elsewhere on a shared
    machine then hits the variants of one cycle alike, and each variant is compared with the
    baseline of its own cycle (the median of those paired differences is reported)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "serve", str(port), stdout=subprocess.DEVNULL
    )
    # "/health/live": Prometheus calls the server every second on a route that renders
    # nothing (the scrape fails as a format error): the baseline, with the same HTTP traffic
    # and the same Prometheus running, minus the render.
    variants = ("/health/live", "/metrics", "/metrics-stock")
    calls: dict[str, list[float]] = {v: [] for v in variants}
    per_cycle: dict[str, list[float]] = {v: [] for v in variants}
    scrape_ms: dict[str, list[float]] = {v: [] for v in variants}
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with session.get(url + "/health/live") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the bench server never answered"
                await asyncio.sleep(0.1)
            prepare = url + f"/bench/prepare?series={series}"
            async with session.post(prepare) as resp:
                assert resp.status == 200, await resp.text()
            async with session.get(url + "/metrics") as resp:
                lines = (await resp.text()).count("\n")
        print(f"server: {lines} lines on /metrics; {RATE} calls/s, {seconds:g} s per variant")
        await paced_calls(url, 2)  # warm-up
        with tempfile.TemporaryDirectory(prefix="bench-prometheus-") as tmp:
            prometheus = Prometheus(f"127.0.0.1:{port}", Path(tmp))
            await prometheus.start(variants[0])
            try:
                for cycle in range(cycles):
                    for variant in variants:
                        await prometheus.switch(variant)
                        latencies = await paced_calls(url, seconds)
                        calls[variant].extend(latencies)
                        per_cycle[variant].append(p99(latencies))
                        took = await prometheus.last_scrape_ms()
                        if took is not None and variant != "/health/live":
                            scrape_ms[variant].append(took)
                    print(
                        f"  cycle {cycle + 1}: p99 "
                        + ", ".join(f"{v} {per_cycle[v][-1]:.2f} ms" for v in variants),
                        flush=True,
                    )
            finally:
                await prometheus.stop()
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
    base = per_cycle[variants[0]]
    rows = []
    for variant in variants:
        lat = sorted(calls[variant])
        deltas = [a - b for a, b in zip(per_cycle[variant], base, strict=True)]
        rows.append(
            {
                "variant": variant,
                "calls": len(lat),
                "p50_ms": lat[len(lat) // 2],
                "p99_ms": lat[int(len(lat) * 0.99)],
                "cycle_p99_median_ms": statistics.median(per_cycle[variant]),
                "paired_delta_median_ms": statistics.median(deltas),
                "scrape_ms": statistics.median(scrape_ms[variant]) if scrape_ms[variant] else None,
            }
        )
    return rows


async def main(seconds: float, rounds: int) -> None:
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    header = (
        f"{'series':>6} {'wall ms':>8} {'cpu ms':>7} {'held, cpu ms':>12} {'held, wall ms':>13}"
    )

    def figures(row: dict[str, Any]) -> str:
        return (
            f"{row['series']:>6} {row['wall_ms']:8.2f} {row['cpu_ms']:7.2f} "
            f"{row['hold_cpu_ms']:12.2f} {row['hold_wall_ms']:13.2f}"
        )

    print("Part 1: one scrape rendered in process (median of 15)")
    print(f"{'case':<26} {'variant':<30} {header}")
    for row in await part1(15):
        print(f"{row['case']:<26} {row['variant']:<30} {figures(row)}")

    print("\nPart 3: --workers 2, both workers' files merged and rendered (median of 15)")
    print(f"{'case':<57} {header}")
    merged = await part3(15)
    print(f"{f'two workers, each padded to {PADDED}: ours':<57} {figures(merged)}")
    stock = {"series": merged["series"], **merged["stock"]}
    print(f"{'  the same: MultiProcessCollector.collect() alone':<57} {figures(stock)}")

    for series in (0, PADDED):
        what = "our series after traffic" if series == 0 else f"padded to {series}"
        print(f"\nPart 2 ({what}): JSON-RPC calls at a fixed rate, scraped every second")
        rows = await part2(seconds, rounds, series)
        print(
            f"{'scraped path':<16} {'calls':>6} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'p99/cycle, median':>18} {'added p99, median':>18} {'scrape ms':>9}"
        )
        for row in rows:
            scrape = f"{row['scrape_ms']:9.1f}" if row["scrape_ms"] is not None else f"{'-':>9}"
            print(
                f"{row['variant']:<16} {row['calls']:>6} {row['p50_ms']:7.2f} "
                f"{row['p99_ms']:7.2f} {row['cycle_p99_median_ms']:18.2f} "
                f"{row['paired_delta_median_ms']:+18.2f} {scrape}"
            )


if __name__ == "__main__":
    mode = sys.argv[1:2]
    if mode == ["serve"]:
        serve(int(sys.argv[2]))
    elif mode == ["mp-worker"]:
        mp_worker()
    elif mode == ["mp-scrape"]:
        mp_scrape(int(sys.argv[2]))
    else:
        args = sys.argv[1:3]
        asyncio.run(main(float(args[0]) if args else 5.0, int(args[1]) if len(args) > 1 else 12))
