"""Breaker, registry and rolling window, with real coroutines and real time.

Timings are kept tiny (reset timeouts of 50 ms, call timeouts of 20 ms) and every wait is
bounded, so the whole file runs in well under a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import pytest

from server.config import Settings
from server.errors import CallTimeout, CircuitOpen, ErrorCode, InvalidInput, RpcError, Unavailable
from server.resilience import Breaker, BreakerConfig, BreakerRegistry, BreakerState
from server.resilience.stats import RollingWindow, percentile
from tests.waiting import eventually

# Tests wait out the reset timeout with ``asyncio.sleep(RESET * 1.2)`` on purpose: the time
# passing is what they test, not a guess at when something else has happened.
RESET = 0.05


class Boom(Exception):
    pass


async def ok(value: object = "ok") -> object:
    return value


async def fail(message: str = "boom") -> None:
    raise Boom(message)


async def slow(seconds: float, value: object = "slow") -> object:
    await asyncio.sleep(seconds)
    return value


def make(**overrides: object) -> Breaker:
    config = {"failure_threshold": 3, "reset_timeout": RESET, "call_timeout": 1.0, **overrides}
    return Breaker("db", BreakerConfig(**config))  # type: ignore[arg-type]


async def trip(breaker: Breaker) -> None:
    for _ in range(breaker.config.failure_threshold):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN


# --- closed state, tripping ---


async def test_success_passes_the_result_and_counts() -> None:
    breaker = make()
    assert await breaker.call(ok, 42) == 42
    assert await breaker.call(ok, value="kw") == "kw"
    snap = breaker.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert (snap.window.calls, snap.window.successes, snap.totals.calls) == (2, 2, 2)
    assert snap.latency.samples == 2
    assert snap.latency.p99_ms is not None and snap.latency.p99_ms < 50


async def test_consecutive_failures_trip_and_errors_pass_unchanged() -> None:
    breaker = make()
    for i in range(3):
        with pytest.raises(Boom, match=f"fail {i}"):  # the tripping call's error too
            await breaker.call(fail, f"fail {i}")
    assert breaker.state is BreakerState.OPEN
    assert breaker.consecutive_failures == 3
    snap = breaker.snapshot()
    assert snap.last_failure is not None
    assert (snap.last_failure.error_type, snap.last_failure.message) == ("Boom", "Boom")
    assert snap.last_failure.detail == "fail 2"
    assert snap.totals.failures == 3
    assert snap.totals.transitions == 1


async def test_a_success_resets_the_consecutive_count() -> None:
    breaker = make(error_rate=100.0)
    for _ in range(5):
        with pytest.raises(Boom):
            await breaker.call(fail)
        with pytest.raises(Boom):
            await breaker.call(fail)
        await breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


async def test_open_breaker_rejects_at_once_without_calling() -> None:
    breaker = make()
    await trip(breaker)
    called = 0

    async def counted() -> None:
        nonlocal called
        called += 1

    start = time.perf_counter()
    with pytest.raises(CircuitOpen) as info:
        await breaker.call(counted)
    elapsed = time.perf_counter() - start
    # No waiting: far below any call timeout. (Not 1 ms: one preemption of a shared CI core
    # can take that long.)
    assert elapsed < 0.05
    assert called == 0
    err = info.value
    assert isinstance(err, Unavailable) and err.code is ErrorCode.SERVICE_UNAVAILABLE
    assert "'db'" in err.message and "open until" in err.message
    assert err.reopens_at is not None and err.reopens_at > datetime.now(UTC)
    assert err.details is not None and err.details["breaker"] == "db"
    assert breaker.snapshot().totals.rejections == 1
    assert breaker.snapshot().window.rejections == 1


async def test_client_errors_do_not_count() -> None:
    breaker = make()
    for _ in range(5):
        with pytest.raises(InvalidInput):
            await breaker.call(_raise, InvalidInput("bad"))
        with pytest.raises(RpcError):
            await breaker.call(_raise, RpcError(ErrorCode.NOT_FOUND, "no such row"))
    snap = breaker.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert (snap.totals.ignored, snap.totals.failures, snap.window.calls) == (10, 0, 0)


async def test_unavailable_counts_as_failure() -> None:
    breaker = make()
    for _ in range(3):
        with pytest.raises(Unavailable):
            await breaker.call(_raise, Unavailable("redis unreachable"))
    assert breaker.state is BreakerState.OPEN


async def test_ignore_takes_types_and_predicates() -> None:
    breaker = make(ignore=(KeyError, lambda exc: str(exc) == "benign"))
    for exc in (KeyError("k"), Boom("benign")) * 3:
        with pytest.raises(type(exc)):
            await breaker.call(_raise, exc)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().totals.ignored == 6


async def test_error_rate_trips_once_minimum_calls_are_reached() -> None:
    breaker = make(failure_threshold=100, error_rate=50.0, minimum_calls=10)
    for _ in range(4):  # 100% errors, but below the minimum volume
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is BreakerState.CLOSED
    for _ in range(5):
        await breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED  # 9 calls, 44%
    with pytest.raises(Boom):
        await breaker.call(fail)  # 10 calls, 50%
    assert breaker.snapshot().state is BreakerState.OPEN


async def test_error_rate_below_threshold_does_not_trip() -> None:
    breaker = make(failure_threshold=100, error_rate=50.0, minimum_calls=10)
    for _ in range(10):
        await breaker.call(ok)
        await breaker.call(ok)
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().window.error_rate == pytest.approx(33.33, abs=0.01)


# --- call timeout ---


async def test_timeout_raises_call_timeout_and_counts_as_failure() -> None:
    breaker = make(call_timeout=0.02, failure_threshold=2)
    start = time.perf_counter()
    with pytest.raises(CallTimeout) as info:
        await breaker.call(slow, 1.0)
    assert time.perf_counter() - start < 0.5
    assert isinstance(info.value, Unavailable)
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert "0.02s" in info.value.message
    with pytest.raises(CallTimeout):
        await breaker.call(slow, 1.0)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.OPEN
    assert (snap.totals.timeouts, snap.window.timeouts, snap.totals.failures) == (2, 2, 0)
    assert snap.last_failure is not None and snap.last_failure.error_type == "CallTimeout"
    # The task's cancellation count is restored, as asyncio.timeout restores it.
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_only_calls_past_their_deadline_time_out() -> None:
    breaker = make(call_timeout=0.05, failure_threshold=100)
    results = await asyncio.gather(
        breaker.call(slow, 0.001, "fast"),
        breaker.call(slow, 1.0),
        breaker.call(slow, 0.02, "medium"),
        return_exceptions=True,
    )
    assert results[0] == "fast" and results[2] == "medium"
    assert isinstance(results[1], CallTimeout)
    # The single timer re-arms: a later call still times out.
    with pytest.raises(CallTimeout):
        await breaker.call(slow, 1.0)


async def test_timeout_error_of_the_callee_is_a_plain_failure() -> None:
    breaker = make()
    with pytest.raises(TimeoutError):
        await breaker.call(_raise, TimeoutError("driver timeout"))
    snap = breaker.snapshot()
    assert (snap.totals.failures, snap.totals.timeouts) == (1, 0)


async def test_outer_timeout_wins_and_is_not_counted() -> None:
    breaker = make(call_timeout=1.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await breaker.call(slow, 1.0)
    totals = breaker.snapshot().totals
    assert (totals.calls, totals.timeouts, totals.failures) == (0, 0, 0)


async def test_outer_cancellation_propagates_and_is_not_counted() -> None:
    breaker = make(call_timeout=1.0)
    entered = asyncio.Event()

    async def in_flight() -> object:
        entered.set()
        return await slow(1.0)

    task = asyncio.create_task(breaker.call(in_flight))
    await eventually(entered.is_set, what="the call in flight")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.snapshot().totals.calls == 0


def test_call_timeout_works_on_a_second_event_loop() -> None:
    breaker = make(call_timeout=0.02)

    async def timed_out() -> bool:
        try:
            await breaker.call(slow, 1.0)
        except CallTimeout:
            return True
        return False

    assert asyncio.run(timed_out())
    assert asyncio.run(timed_out())


# --- half-open ---


async def test_exactly_one_trial_call_in_half_open() -> None:
    breaker = make()
    await trip(breaker)
    await asyncio.sleep(RESET * 1.2)
    started = 0

    async def trial() -> str:
        nonlocal started
        started += 1
        await asyncio.sleep(0.02)
        return "recovered"

    results = await asyncio.gather(
        *(breaker.call(trial) for _ in range(20)), return_exceptions=True
    )
    assert started == 1
    assert results.count("recovered") == 1
    rejected = [r for r in results if isinstance(r, CircuitOpen)]
    assert len(rejected) == 19
    assert all(r.state is BreakerState.HALF_OPEN for r in rejected)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert snap.window.calls == 0  # cleared on closing
    assert snap.totals.rejections == 19


async def test_open_breaker_waits_its_reset_timeout() -> None:
    breaker = make()
    await trip(breaker)
    remaining = breaker.seconds_until_half_open()
    assert remaining is not None and 0 < remaining <= RESET
    with pytest.raises(CircuitOpen):
        await breaker.call(ok)
    await asyncio.sleep(RESET * 1.2)
    assert breaker.seconds_until_half_open() == 0
    assert await breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_failed_trial_reopens_with_a_new_timer() -> None:
    breaker = make()
    await trip(breaker)
    await asyncio.sleep(RESET * 1.2)
    with pytest.raises(Boom):  # the trial's own error, unchanged
        await breaker.call(fail, "still down")
    assert breaker.state is BreakerState.OPEN
    remaining = breaker.seconds_until_half_open()
    assert remaining is not None and remaining > RESET * 0.5
    with pytest.raises(CircuitOpen):
        await breaker.call(ok)


async def test_timed_out_trial_reopens() -> None:
    breaker = make(call_timeout=0.02)
    await trip(breaker)
    await asyncio.sleep(RESET * 1.2)
    with pytest.raises(CallTimeout):
        await breaker.call(slow, 1.0)
    assert breaker.state is BreakerState.OPEN


async def test_cancelled_trial_frees_the_slot() -> None:
    breaker = make()
    await trip(breaker)
    await asyncio.sleep(RESET * 1.2)
    task = asyncio.create_task(breaker.call(slow, 1.0))
    await eventually(lambda: breaker.state is BreakerState.HALF_OPEN, what="the trial in flight")
    assert breaker.state is BreakerState.HALF_OPEN
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(ok) == "ok"
    assert breaker.snapshot().state is BreakerState.CLOSED


async def test_a_trial_that_outlives_a_reset_settles_nothing() -> None:
    breaker = make(failure_threshold=1)
    with pytest.raises(Boom):
        await breaker.call(fail)
    await asyncio.sleep(RESET * 1.2)

    async def late_failure() -> None:
        await asyncio.sleep(0.02)
        raise Boom("late")

    task = asyncio.create_task(breaker.call(late_failure))
    await eventually(lambda: breaker.state is BreakerState.HALF_OPEN, what="the trial in flight")
    breaker.reset("operator")
    await breaker.call(ok)
    with pytest.raises(Boom):
        await task
    # Counted as an ordinary closed-state failure (threshold 1), not as the old trial's verdict.
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot().totals.failures == 2


# --- operators, listeners, logging ---


async def test_force_open_rejects_until_reset() -> None:
    breaker = make()
    breaker.force_open("maintenance")
    assert breaker.state is BreakerState.FORCED_OPEN
    with pytest.raises(CircuitOpen, match="forced open"):
        await breaker.call(ok)
    await asyncio.sleep(RESET * 1.2)  # no reset timeout applies
    with pytest.raises(CircuitOpen):
        await breaker.call(ok)
    snap = breaker.snapshot()
    assert snap.forced_open and not snap.disabled
    assert snap.reopens_at is None and snap.seconds_until_half_open is None
    breaker.reset("done")
    assert await breaker.call(ok) == "ok"


async def test_disabled_passes_calls_records_stats_and_never_trips() -> None:
    breaker = make()
    await trip(breaker)
    breaker.disable("debugging")
    for _ in range(10):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert await breaker.call(ok) == "ok"
    snap = breaker.snapshot()
    assert snap.state is BreakerState.DISABLED and snap.disabled
    assert snap.totals.failures == 13 and snap.totals.successes == 1
    breaker.reset("back to normal")
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().window.calls == 0
    assert breaker.snapshot().totals.failures == 13  # totals survive a reset


async def test_listeners_and_log_see_each_change_once(caplog: pytest.LogCaptureFixture) -> None:
    breaker = make(failure_threshold=1)
    seen: list[tuple[str, str]] = []
    breaker.add_listener(lambda b, old, new: seen.append((old.value, new.value)))
    caplog.set_level(logging.INFO, logger="server.resilience")
    with pytest.raises(Boom):
        await breaker.call(fail)
    with pytest.raises(CircuitOpen):
        await breaker.call(ok)  # a rejection is no state change
    await asyncio.sleep(RESET * 1.2)
    await breaker.call(ok)
    breaker.reset("no-op: already closed")
    breaker.force_open("op")
    breaker.force_open("op again")
    breaker.disable("op")
    breaker.reset("op")
    assert seen == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("closed", "forced_open"),
        ("forced_open", "disabled"),
        ("disabled", "closed"),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "server.resilience"]
    assert len(lines) == len(seen)
    assert lines[0] == "circuit breaker db: closed -> open (1 consecutive failures)"
    assert breaker.snapshot().totals.transitions == len(seen)


async def test_a_failing_listener_does_not_break_calls(caplog: pytest.LogCaptureFixture) -> None:
    breaker = make(failure_threshold=1)

    def broken(b: Breaker, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken)
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    assert "state listener" in caplog.text


async def test_snapshot_reopens_at_is_wall_time() -> None:
    breaker = make(reset_timeout=30.0)
    await trip(breaker)
    snap = breaker.snapshot()
    assert snap.reopens_at is not None and snap.seconds_until_half_open is not None
    assert 29 < snap.seconds_until_half_open <= 30
    delta = (snap.reopens_at - datetime.now(UTC)).total_seconds()
    assert 29 < delta <= 30
    assert snap.policy.reset_timeout == 30.0
    data = snap.model_dump(mode="json")
    assert data["state"] == "open" and data["reopens_at"].endswith("Z")


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="failure_threshold must be positive"):
        BreakerConfig(failure_threshold=0)
    with pytest.raises(ValueError, match=r"error_rate must be a percentage"):
        BreakerConfig(error_rate=150)
    with pytest.raises(ValueError, match="call_timeout"):
        BreakerConfig(call_timeout=0)


# --- rolling window ---


def test_window_forgets_old_buckets() -> None:
    window = RollingWindow(10.0, buckets=10)
    window.failure(100.0, 0.01)
    window.success(105.0, 0.02)
    assert window.counts(105.0).calls == 2
    assert window.counts(110.5).calls == 1  # the failure's bucket fell out
    assert window.counts(116.0).calls == 0
    window.success(200.0, 0.03)  # reusing a stale bucket wipes it first
    c = window.counts(200.0)
    assert (c.successes, c.failures) == (1, 0)


def test_window_latency_percentiles_and_bounded_reservoir() -> None:
    window = RollingWindow(10.0, buckets=1, reservoir=100)
    for ms in range(1, 1001):
        window.success(5.0, ms / 1000)
    stats = window.latency_stats(5.0)
    assert stats.samples == 1000
    assert stats.mean_ms == pytest.approx(500.5)
    # Only the newest 100 samples (901..1000 ms) are kept for percentiles.
    assert (stats.p50_ms, stats.p95_ms, stats.p99_ms) == (950.0, 995.0, 999.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0


# --- registry ---


def test_registry_from_settings_and_overrides() -> None:
    settings = Settings(breaker_reset_timeout=7.0, breaker_call_timeout_ms=250)
    registry = BreakerRegistry.from_settings(settings.breakers)
    pg = registry.get("postgres")
    assert pg.config.reset_timeout == 7.0 and pg.config.call_timeout == 0.25
    assert registry.get("postgres") is pg
    redis = registry.get("redis", call_timeout=0.1)
    assert redis.config.call_timeout == 0.1 and redis.config.reset_timeout == 7.0
    assert registry.get("redis", call_timeout=0.1) is redis
    with pytest.raises(ValueError, match="already exists"):
        registry.get("redis", call_timeout=2.0)
    with pytest.raises(ValueError, match="unknown breaker setting"):
        registry.get("x", timeout=1)
    assert [b.name for b in registry.all()] == ["postgres", "redis"]
    assert "postgres" in registry and len(registry) == 2


def test_registry_find_unknown_is_not_found() -> None:
    registry = BreakerRegistry()
    registry.get("postgres")
    with pytest.raises(RpcError) as info:
        registry.find("postgress")
    assert info.value.code is ErrorCode.NOT_FOUND
    assert "postgress" in info.value.message and "postgres" in info.value.message


async def test_registry_listeners_reach_present_and_future_breakers() -> None:
    registry = BreakerRegistry(BreakerConfig(failure_threshold=1))
    seen: list[tuple[str, str]] = []
    registry.get("a")
    registry.add_listener(lambda b, old, new: seen.append((b.name, new.value)))
    registry.get("b")
    for name in ("a", "b"):
        with pytest.raises(Boom):
            await registry.get(name).call(fail)
    assert seen == [("a", "open"), ("b", "open")]


async def _raise(exc: BaseException) -> None:
    raise exc


def test_the_rolling_window_json_is_reused_only_while_nothing_changed() -> None:
    window = RollingWindow(10.0, buckets=10, reservoir=8)

    def fresh(now: float) -> tuple[dict[str, object], dict[str, object]]:
        return window.window_json(now), window.latency_json(now)

    assert window.json(100.0) == fresh(100.0)
    window.success(100.2, 0.010)
    assert window.json(100.3) == fresh(100.3)
    assert window.json(100.4)[1]["samples"] == 1  # an observation is seen at once
    window.failure(101.5, 0.030)
    window.rejection(101.6)
    assert window.json(101.7) == fresh(101.7)
    assert window.json(101.7)[0]["rejections"] == 1
    # Buckets age out with time alone: no observation, a new answer.
    assert window.json(110.9) == fresh(110.9)
    assert window.json(110.9)[0]["calls"] == 1
    assert window.json(125.0) == fresh(125.0)
    assert window.json(125.0)[1]["samples"] == 0
    window.success(125.0, 0.005)
    window.clear()
    assert window.json(125.1) == fresh(125.1)
    # Copies: changing an answer does not change the next.
    window.json(125.2)[0]["calls"] = 99
    assert window.json(125.2)[0]["calls"] == 0
