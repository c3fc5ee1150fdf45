"""Waiting in tests and in the test stack: poll a condition until a deadline, never sleep a
guessed time.

One polling loop with two drivers, ``until_accepted`` (async) and ``wait_until`` (sync, for the
stack's servers and sync fixtures); ``eventually`` is ``until_accepted`` for a predicate. Each
round runs ``check`` (which may raise at once, e.g. when the process waited on has died), then
the probe; an answer ``accept`` takes ends the wait. Errors of the types in ``retry_on`` count
as "not yet" (a server still starting refuses connections). Past the deadline the wait raises
``error`` naming ``what``, the last answer and the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_NO_ANSWER = object()


@dataclass
class _Rounds(Generic[T]):
    """The loop both drivers run: each round is ``with rounds.attempt():`` around the probe,
    then a sleep of ``rounds.pause()``, which raises once the deadline has passed."""

    accept: Callable[[T], object]
    what: str
    within: float
    interval: float
    check: Callable[[], object] | None
    retry_on: tuple[type[Exception], ...]
    error: Callable[[str], Exception]
    deadline: float = field(init=False)
    last_answer: object = field(init=False, default=_NO_ANSWER)
    last_error: Exception | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.within

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """Runs ``check``, then the probe in its body; a ``retry_on`` error means "not yet"."""
        if self.check is not None:
            self.check()
        try:
            yield
        except self.retry_on as exc:
            self.last_error = exc

    def accepted(self, answer: T) -> bool:
        self.last_answer = answer
        return bool(self.accept(answer))

    def pause(self) -> float:
        """How long to wait before the next round; raises ``error`` once the deadline passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            detail = ""
            if self.last_answer is not _NO_ANSWER:
                detail += f"; last answer: {self.last_answer!r}"
            if self.last_error is not None:
                detail += f"; last error: {self.last_error!r}"
            raise self.error(f"{self.what}: not within {self.within:g}s{detail}") from (
                self.last_error
            )
        return min(self.interval, remaining)


async def until_accepted(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], object],
    *,
    what: str = "the probe's answer accepted",
    within: float = 30.0,
    interval: float = 0.05,
    check: Callable[[], object] | None = None,
    retry_on: tuple[type[Exception], ...] = (),
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """Call ``probe`` until ``accept`` takes its answer and return that answer; fails the test
    with ``what`` and the last answer after ``within`` seconds."""
    rounds = _Rounds(accept, what, within, interval, check, retry_on, error)
    while True:
        with rounds.attempt():
            if rounds.accepted(answer := await probe()):
                return answer
        await asyncio.sleep(rounds.pause())


def wait_until(
    probe: Callable[[], T],
    accept: Callable[[T], object] = bool,
    *,
    what: str,
    within: float,
    interval: float = 0.05,
    check: Callable[[], object] | None = None,
    retry_on: tuple[type[Exception], ...] = (),
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """``until_accepted`` for synchronous code (the stack's servers, sync fixtures)."""
    rounds = _Rounds(accept, what, within, interval, check, retry_on, error)
    while True:
        with rounds.attempt():
            if rounds.accepted(answer := probe()):
                return answer
        time.sleep(rounds.pause())


async def eventually(
    predicate: Callable[[], object | Awaitable[object]],
    *,
    what: str,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for polling, not for one await
    interval: float = 0.002,
) -> float:
    """Poll ``predicate`` (sync or async) until truthy; returns the seconds it took.

    Fails the test with ``what`` after ``timeout`` seconds.
    """
    started = time.monotonic()

    async def probe() -> object:
        result = predicate()
        return await result if isinstance(result, Awaitable) else result

    await until_accepted(probe, bool, what=what, within=timeout, interval=interval)
    return time.monotonic() - started
