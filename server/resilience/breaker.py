"""``Breaker``: a circuit breaker around the calls to one dependency.

What comes from aiobreaker 1.2.0, and what is ours
--------------------------------------------------
From aiobreaker: the three-state vocabulary and its bookkeeping. An ``aiobreaker.CircuitBreaker``
over a ``CircuitMemoryStorage`` holds the state (closed, open, half-open), the consecutive-failure
counter and ``opened_at``; its ``is_system_error`` applies the ``exclude`` rules (exception types
or predicates) that decide whether an error counts as a failure.

Ours: the call path itself. ``CircuitBreaker.call_async`` is never used, because of its pitfalls:

- It stamps ``opened_at`` with ``datetime.utcnow()`` but computes ``opens_at`` and
  ``time_until_open`` with local ``datetime.now()``: wrong off UTC, ``None`` and then a
  ``TypeError`` east of it. Its clock is the wall clock, which can step. Our reset deadline is
  on ``time.monotonic()``; wall time appears only when a snapshot converts it.
- In half-open it lets every concurrent call through. We admit exactly one trial call and
  reject the others at once.
- The call that trips it raises ``CircuitBreakerError`` in place of the caller's own error.
  Ours lets the error through unchanged.
- ``CircuitBreaker.open()`` calls ``datetime.utcnow()`` (deprecated since 3.12, an error under
  ``filterwarnings=error``), so we set the storage's state and ``opened_at`` ourselves.
- Its Redis storage calls Redis synchronously, blocking the event loop; only the in-memory
  storage is used, and no aiobreaker listener is registered.

Also ours: the call timeout, the error-rate rule over a rolling window, the operator states
(forced open, disabled), rolling statistics and totals, the state-change log and listener hook.

The call timeout
----------------
Every call of one breaker has the same timeout, so one timer serves them all:
``server.deadlines.Deadlines`` (shared with the router's call deadline) costs a dict insert and
pop per call, against 4.4-5 µs for ``asyncio.timeout`` and a budget of 5 µs for the whole
breaker (``bench/bench_breaker.py`` prints both). A call that overruns raises ``CallTimeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeAlias, TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerState
from aiobreaker.storage.memory import CircuitMemoryStorage

from server.deadlines import Deadlines, uncancel
from server.errors import CallTimeout, CircuitOpen, RpcError, Unavailable
from server.redaction import mask_secrets
from server.resilience.models import (
    BreakerState,
    BreakerStatus,
    LastFailure,
)
from server.resilience.stats import RollingWindow, Totals

if TYPE_CHECKING:
    from server.config import BreakerSettings

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("server.resilience")

Listener = Callable[["Breaker", BreakerState, BreakerState], None]

_CLOSED = CircuitBreakerState.CLOSED
_OPEN = CircuitBreakerState.OPEN
_HALF_OPEN = CircuitBreakerState.HALF_OPEN
_STATES = {
    _CLOSED: BreakerState.CLOSED,
    _OPEN: BreakerState.OPEN,
    _HALF_OPEN: BreakerState.HALF_OPEN,
}
monotonic = time.monotonic

# An exception type, or a predicate, naming errors that do not count as failures.
ErrorFilter: TypeAlias = "type[BaseException] | Callable[[BaseException], bool]"


def is_client_error(exc: BaseException) -> bool:
    """A client's own mistake (bad input, not found...) says nothing about the dependency."""
    return isinstance(exc, RpcError) and not isinstance(exc, Unavailable)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """How one breaker trips, waits and times calls out (``BreakerSettings`` gives the defaults)."""

    failure_threshold: int = 5  # consecutive failures that trip it
    error_rate: float = 50.0  # percent of failed calls in the window that trips it...
    minimum_calls: int = 10  # ...once the window holds at least this many calls
    window_seconds: float = 30.0
    reset_timeout: float = 30.0  # open -> half-open after this many seconds
    call_timeout: float | None = 5.0  # seconds; None: no timeout
    ignore: tuple[ErrorFilter, ...] = ()  # beyond client errors (non-Unavailable RpcError)
    buckets: int = 10  # slices of the rolling window
    reservoir: int = 128  # latency samples kept per slice for percentiles

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be positive (got {value!r})"
            for name, value in (
                ("failure_threshold", self.failure_threshold),
                ("minimum_calls", self.minimum_calls),
                ("window_seconds", self.window_seconds),
                ("reset_timeout", self.reset_timeout),
                ("buckets", self.buckets),
                ("reservoir", self.reservoir),
            )
            if value <= 0
        ]
        if not 0 < self.error_rate <= 100:
            problems.append(
                f"error_rate must be a percentage in (0, 100] (got {self.error_rate!r})"
            )
        if self.call_timeout is not None and self.call_timeout <= 0:
            problems.append(f"call_timeout must be positive or None (got {self.call_timeout!r})")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_settings(cls, settings: BreakerSettings) -> BreakerConfig:
        return cls(
            failure_threshold=settings.failure_threshold,
            error_rate=settings.error_rate,
            minimum_calls=settings.minimum_calls,
            window_seconds=settings.window_seconds,
            reset_timeout=settings.reset_timeout,
            call_timeout=settings.call_timeout_ms / 1000,
        )


def public_message(exc: BaseException) -> str:
    """What anyone may read of a failure: our own message, the OS's reason or the SQLSTATE;
    never the driver's text, which names hosts and users (that is ``LastFailure.detail``)."""
    if isinstance(exc, RpcError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return f"SQLSTATE {sqlstate}"
    return type(exc).__name__


def _own_text(exc: BaseException) -> str:
    if isinstance(exc, RpcError) and exc.detail is not None:
        return exc.detail
    return str(exc)


class Breaker:
    """One named breaker. ``await breaker.call(fn, *args, **kwargs)`` runs ``fn`` through it.

    Trips on ``failure_threshold`` consecutive failures, or on an error rate of at least
    ``error_rate`` percent over the rolling window once it holds ``minimum_calls`` calls.
    ``reset_timeout`` seconds later the next call is the one half-open trial: success closes
    the breaker and clears the window, failure opens it for another ``reset_timeout``.
    """

    def __init__(self, name: str, config: BreakerConfig | None = None) -> None:
        self.name = name
        self.config = config = config or BreakerConfig()
        self._storage = CircuitMemoryStorage(_CLOSED)
        # fail_max and timeout_duration only keep aiobreaker's object truthful for anyone who
        # inspects it; the decisions below read self.config and our monotonic deadline.
        self._machine = CircuitBreaker(
            fail_max=config.failure_threshold,
            timeout_duration=timedelta(seconds=config.reset_timeout),
            exclude=[is_client_error, *config.ignore],
            state_storage=self._storage,
            name=name,
        )
        self._window = RollingWindow(config.window_seconds, config.buckets, config.reservoir)
        self._deadlines = Deadlines(config.call_timeout) if config.call_timeout else None
        self.totals = Totals()
        self.last_failure: LastFailure | None = None
        self._override: BreakerState | None = None  # FORCED_OPEN or DISABLED, set by operators
        self._reopen_deadline = 0.0  # monotonic; meaningful while open
        # The token of the half-open trial in flight (0: none). A token, not a flag, so that a
        # trial outliving an operator's reset cannot settle a later trial's fate.
        self._trial = 0
        self._trials = 0
        self._listeners: list[Listener] = []
        # BreakerPolicy's JSON: the config is frozen, so it is built once.
        self._policy = {
            "failure_threshold": config.failure_threshold,
            "error_rate_threshold": config.error_rate,
            "minimum_calls": config.minimum_calls,
            "window_seconds": config.window_seconds,
            "reset_timeout": config.reset_timeout,
            "call_timeout": config.call_timeout,
        }

    def __repr__(self) -> str:
        return f"<Breaker {self.name!r} {self.state.value}>"

    # --- the call path ---

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker.

        Raises ``CircuitOpen`` at once when the call is not admitted, ``CallTimeout`` when it
        runs out of time; any other error of ``fn`` propagates unchanged.
        """
        trial = 0
        if self._override is not None or self._storage.state is not _CLOSED:
            trial = self._admit()
        start = monotonic()
        deadlines = self._deadlines
        token = deadlines.enter(start) if deadlines is not None else 0
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if deadlines is not None and deadlines.leave(token):
                self._deadline_passed(exc, start, trial)
            self._errored(exc, start, trial)
            raise
        if deadlines is not None and deadlines.leave(token):
            uncancel()  # fn swallowed our cancellation and returned: undo it, as asyncio does
        now = monotonic()
        self._window.success(now, now - start)
        self.totals.successes += 1
        self._storage.reset_counter()
        if trial:
            self._trial_passed(trial)
        return result

    def is_failure(self, exc: BaseException) -> bool:
        """Does this error count against the dependency (not a client error, not ignored)?"""
        return isinstance(exc, Exception) and self._machine.is_system_error(exc)

    def _admit(self) -> int:
        """Admit a call when not plainly closed; returns the trial token, or 0 for no trial."""
        if self._override is BreakerState.DISABLED:
            return 0
        if self._override is BreakerState.FORCED_OPEN:
            self._reject()
        if self._storage.state is _OPEN:
            if monotonic() < self._reopen_deadline:
                self._reject()
            self._move(_HALF_OPEN, "reset timeout elapsed; admitting one trial call")
        elif self._trial:
            self._reject()
        self._trials += 1
        self._trial = self._trials
        return self._trial

    def _reject(self) -> NoReturn:
        self._window.rejection(monotonic())
        self.totals.rejections += 1
        raise CircuitOpen(self.name, self.state, self.reopens_at())

    def _deadline_passed(self, exc: BaseException, start: float, trial: int) -> None:
        """Our deadline cancelled the call: ``CallTimeout``, unless someone else cancelled too."""
        if uncancel() == 0 and isinstance(exc, asyncio.CancelledError):
            assert self.config.call_timeout is not None
            err = CallTimeout(self.name, self.config.call_timeout)
            now = monotonic()
            self._window.timeout(now, now - start)
            self.totals.timeouts += 1
            self._failed(err, now, trial)
            raise err from exc

    def _errored(self, exc: BaseException, start: float, trial: int) -> None:
        if not self.is_failure(exc):
            # Cancelled from outside, or a client error: no verdict on the dependency.
            if isinstance(exc, Exception):
                self.totals.ignored += 1
            if trial and trial == self._trial:
                self._trial = 0  # no verdict: the next call may be the trial
            return
        now = monotonic()
        self._window.failure(now, now - start)
        self.totals.failures += 1
        self._failed(exc, now, trial)

    def _failed(self, exc: BaseException, now: float, trial: int) -> None:
        self.last_failure = LastFailure(
            at=datetime.now(UTC),
            error_type=type(exc).__name__,
            message=public_message(exc),
            detail=mask_secrets(_own_text(exc))[:500],
        )
        self._storage.increment_counter()
        if self._override is not None:
            return  # forced open or disabled: statistics only, an operator holds the state
        if trial and trial == self._trial:
            self._trial = 0
            self._trip(now, f"trial call failed: {type(exc).__name__}")
        elif self._storage.state is _CLOSED and (reason := self._trip_reason(now)):
            self._trip(now, reason)

    def _trip_reason(self, now: float) -> str | None:
        cfg = self.config
        if (failures := self._storage.counter) >= cfg.failure_threshold:
            return f"{failures} consecutive failures"
        counts = self._window.counts(now)
        rate = counts.error_rate
        if counts.calls >= cfg.minimum_calls and rate is not None and rate >= cfg.error_rate:
            return f"error rate {rate:.1f}% over {counts.calls} calls in {cfg.window_seconds:g}s"
        return None

    def _trip(self, now: float, reason: str) -> None:
        self._reopen_deadline = now + self.config.reset_timeout
        self._move(_OPEN, reason)

    def _trial_passed(self, trial: int) -> None:
        if trial != self._trial:
            return  # an operator stepped in meanwhile
        self._trial = 0
        if self._override is None and self._storage.state is _HALF_OPEN:
            self._window.clear()  # old failures must not trip the fresh closed state
            self._move(_CLOSED, "trial call succeeded")

    # --- operators ---

    def force_open(self, reason: str) -> None:
        """Reject every call until an operator closes or resets the breaker."""
        self._hold(BreakerState.FORCED_OPEN, reason)

    def disable(self, reason: str) -> None:
        """Let every call through and never trip; statistics are still recorded."""
        self._hold(BreakerState.DISABLED, reason)

    def reset(self, reason: str) -> None:
        """Close the breaker and clear its window and failure count (totals are kept)."""
        old = self.state
        self._override = None
        self._trial = 0
        self._window.clear()
        self._set_machine(_CLOSED)
        self._storage.reset_counter()
        self._announce(old, reason)

    def _hold(self, state: BreakerState, reason: str) -> None:
        old = self.state
        self._override = state
        self._trial = 0
        self._announce(old, reason)

    # --- state ---

    @property
    def state(self) -> BreakerState:
        return self._override or _STATES[self._storage.state]

    @property
    def consecutive_failures(self) -> int:
        return int(self._storage.counter)

    def seconds_until_half_open(self) -> float | None:
        if self.state is not BreakerState.OPEN:
            return None
        return max(0.0, self._reopen_deadline - monotonic())

    def reopens_at(self) -> datetime | None:
        """The monotonic reset deadline as wall-clock UTC, converted now."""
        remaining = self.seconds_until_half_open()
        return None if remaining is None else datetime.now(UTC) + timedelta(seconds=remaining)

    def add_listener(self, listener: Listener) -> None:
        """``listener(breaker, old, new)`` runs on the event loop at each state change: keep it
        quick and free of I/O (it sits on the call path)."""
        self._listeners.append(listener)

    def _move(self, state: CircuitBreakerState, reason: str) -> None:
        old = self.state
        self._set_machine(state)
        self._announce(old, reason)

    def _set_machine(self, state: CircuitBreakerState) -> None:
        if state is _OPEN:
            # aiobreaker's convention (naive UTC), without its deprecated utcnow().
            self._storage.opened_at = datetime.now(UTC).replace(tzinfo=None)
        self._storage.state = state
        self._machine.state = state  # refresh aiobreaker's cached state object

    def _announce(self, old: BreakerState, reason: str) -> None:
        new = self.state
        if new == old:
            return
        self.totals.transitions += 1
        level = (
            logging.WARNING
            if new in (BreakerState.OPEN, BreakerState.FORCED_OPEN)
            else logging.INFO
        )
        log.log(level, "circuit breaker %s: %s -> %s (%s)", self.name, old.value, new.value, reason)
        for listener in self._listeners:
            try:
                listener(self, old, new)
            except Exception:
                log.exception("circuit breaker %s: state listener %r failed", self.name, listener)

    def snapshot(self) -> BreakerStatus:
        return BreakerStatus.model_validate(self.status())

    def status(self) -> dict[str, Any]:
        """``snapshot()`` as the JSON of ``BreakerStatus``, built without models: the live
        status read (``monitoring.circuitBreakerStatus``) answers this as it is."""
        # Each figure read once, by attribute (no enum hashing, no repeated properties): this
        # runs once per breaker per call of a status read that clients poll.
        now = monotonic()
        storage = self._storage
        state = self._override or _STATES[storage.state]
        remaining: float | None = None
        reopens_at: str | None = None
        if state is BreakerState.OPEN:
            remaining = max(0.0, self._reopen_deadline - now)
            reopens_at = _iso(datetime.now(UTC) + timedelta(seconds=remaining))
        failure = self.last_failure
        window, latency = self._window.json(now)
        return {
            "name": self.name,
            "state": state.value,
            "forced_open": state is BreakerState.FORCED_OPEN,
            "disabled": state is BreakerState.DISABLED,
            "consecutive_failures": int(storage.counter),
            "window": window,
            "latency": latency,
            "last_failure": None
            if failure is None
            else {
                "at": _iso(failure.at),
                "error_type": failure.error_type,
                "message": failure.message,
                "detail": failure.detail,
            },
            "reopens_at": reopens_at,
            "seconds_until_half_open": remaining,
            "totals": self.totals.json(),
            "policy": dict(self._policy),
        }


def _iso(at: datetime) -> str:
    """A UTC datetime as pydantic writes it in JSON (``Z``, not ``+00:00``)."""
    return at.isoformat().replace("+00:00", "Z")
