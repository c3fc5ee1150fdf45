"""``QueryStats``: every statement the datastore layer runs, timed over a rolling window.

Latency percentiles come from statements that ran (acquire waits are the pool's figure, see
``pool.py``); calls that never reached the server (breaker open, no connection) still count
towards ``count`` and ``qps``. A statement slower than the threshold is logged and kept in a
bounded table keyed by its normalised text: literals become ``?`` and lists of them ``(...)``,
comments and whitespace runs go, so ``WHERE id = 5`` and ``WHERE id IN (7, 8)`` each make one
entry whatever the values. Query parameters (``$1``
arguments) are never seen here at all: only the SQL text is.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from server.resilience.models import LatencyStats
from server.resilience.stats import RollingWindow

log = logging.getLogger("server.datastores.slow_query")

Status = Literal["ok", "error", "timeout", "rejected"]
OPERATIONS = frozenset({"select", "insert", "update", "delete", "with", "show"})
WINDOW_SECONDS = 60.0
MAX_STATEMENT_CHARS = 1000
# Distinct slow statements remembered; past this the one with the least total time goes.
MAX_SLOW_STATEMENTS = 200

_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*([A-Za-z]+)", re.S)
_TOKENS = re.compile(
    r"""
    (?P<dollar>\$\$.*?\$\$|\$(?P<tag>[A-Za-z_]\w*)\$.*?\$(?P=tag)\$)
    |(?P<string>(?<!\w)[EeBbXxNn]?'(?:[^']|'')*')
    |(?P<ident>"(?:[^"]|"")*")
    |(?P<comment>--[^\n]*|/\*.*?\*/)
    |(?P<number>(?<![\w$.])(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    """,
    re.S | re.X,
)
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_SPACE = re.compile(r"\s+")


@functools.lru_cache(maxsize=2048)
def operation_of(sql: str) -> str:
    """The statement's first keyword, lowercased, from a fixed set (a bounded metric label)."""
    match = _FIRST_WORD.match(sql)
    word = match.group(1).lower() if match else ""
    return word if word in OPERATIONS else "other"


@functools.lru_cache(maxsize=1024)
def normalise(sql: str) -> str:
    """The statement's shape: literals as ``?``, no comments, single spaces, bounded length."""
    text = _TOKENS.sub(_replace_token, sql)
    text = _LIST.sub("(...)", text)
    text = _SPACE.sub(" ", text).strip().rstrip(";").rstrip()
    if len(text) > MAX_STATEMENT_CHARS:
        text = text[: MAX_STATEMENT_CHARS - 3] + "..."
    return text


def _replace_token(match: re.Match[str]) -> str:
    if match.group("ident") is not None:
        return match.group(0)
    if match.group("comment") is not None:
        return " "
    return "?"


@dataclass(slots=True)
class SlowStatement:
    statement: str
    calls: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0
    last_seconds: float = 0.0
    last_at: datetime | None = None
    last_node: str = ""


@dataclass(frozen=True, slots=True)
class QueryStatsSnapshot:
    window_seconds: float
    count: int
    qps: float
    executed: int
    errors: int
    timeouts: int
    not_executed: int
    latency: LatencyStats
    slow_threshold_ms: float
    slow_total: int
    slow_statements: list[SlowStatement]
    totals: dict[str, int]


class QueryStats:
    """Rolling figures of one app's statements; ``record`` is called once per statement."""

    def __init__(self, slow_threshold_ms: float, window_seconds: float = WINDOW_SECONDS) -> None:
        self.slow_threshold_ms = slow_threshold_ms
        self._slow_seconds = slow_threshold_ms / 1000
        self.window_seconds = window_seconds
        self._executed = RollingWindow(window_seconds, buckets=12, reservoir=256)
        # Calls that never ran (breaker open, no connection): counted, with no latency.
        self._not_executed = RollingWindow(window_seconds, buckets=12, reservoir=1)
        self._started = time.monotonic()
        self._slow: dict[str, SlowStatement] = {}
        self.slow_total = 0
        self.totals: Counter[str] = Counter()

    def record(self, node: str, sql: str, status: Status, seconds: float | None) -> None:
        """One statement: ``seconds`` is its execution time, None when it never ran."""
        now = time.monotonic()
        self.totals[status] += 1
        if seconds is None:
            self._not_executed.rejection(now)
            return
        if status == "ok":
            self._executed.success(now, seconds)
        elif status == "timeout":
            self._executed.timeout(now, seconds)
        else:
            self._executed.failure(now, seconds)
        if seconds > self._slow_seconds:
            self._slow_query(node, sql, status, seconds)

    def _slow_query(self, node: str, sql: str, status: Status, seconds: float) -> None:
        statement = normalise(sql)
        self.slow_total += 1
        log.warning(
            "slow query on %s: %.1f ms (threshold %g ms, %s): %s",
            node,
            seconds * 1000,
            self.slow_threshold_ms,
            status,
            statement,
        )
        entry = self._slow.get(statement)
        if entry is None:
            if len(self._slow) >= MAX_SLOW_STATEMENTS:
                least = min(self._slow.values(), key=lambda e: e.total_seconds)
                del self._slow[least.statement]
            entry = self._slow[statement] = SlowStatement(statement)
        entry.calls += 1
        entry.total_seconds += seconds
        entry.max_seconds = max(entry.max_seconds, seconds)
        entry.last_seconds = seconds
        entry.last_at = datetime.now(UTC)
        entry.last_node = node

    def snapshot(self, limit: int = 20) -> QueryStatsSnapshot:
        now = time.monotonic()
        executed = self._executed.counts(now)
        skipped = self._not_executed.counts(now).rejections
        count = executed.calls + skipped
        # Until the window has filled, divide by the time actually covered.
        covered = min(self.window_seconds, max(now - self._started, 1e-3))
        top = sorted(self._slow.values(), key=lambda e: e.total_seconds, reverse=True)[:limit]
        return QueryStatsSnapshot(
            window_seconds=self.window_seconds,
            count=count,
            qps=count / covered,
            executed=executed.calls,
            errors=executed.failures,
            timeouts=executed.timeouts,
            not_executed=skipped,
            latency=self._executed.latency_stats(now),
            slow_threshold_ms=self.slow_threshold_ms,
            slow_total=self.slow_total,
            slow_statements=top,
            totals=dict(self.totals),
        )
