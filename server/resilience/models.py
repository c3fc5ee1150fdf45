"""What the breaker procedures take and return: every figure measured, none estimated."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"  # an operator holds it open: every call is rejected
    DISABLED = "disabled"  # an operator switched it off: every call passes, stats still kept


class LastFailure(BaseModel):
    at: datetime
    error_type: str
    message: str = Field(description="our own words: no hosts, users or SQL")
    detail: str | None = Field(
        None, description="the error's own text (passwords masked); operators only, else null"
    )


class WindowStats(BaseModel):
    """Counts over the rolling window (``window_seconds`` back from now)."""

    window_seconds: float
    calls: int = Field(description="successes + failures + timeouts (rejections are not calls)")
    successes: int
    failures: int = Field(description="failed calls, timeouts not included")
    timeouts: int
    rejections: int
    error_rate: float | None = Field(
        description="(failures + timeouts) / calls in percent; null without calls"
    )


class LatencyStats(BaseModel):
    """Call latency over the rolling window, in milliseconds; null without calls."""

    samples: int
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class BreakerTotals(BaseModel):
    """Cumulative since start; never cleared (Prometheus counters read these)."""

    calls: int = Field(
        description="calls with an outcome: successes + failures + timeouts + ignored + rejections"
    )
    successes: int
    failures: int
    timeouts: int
    ignored: int = Field(description="calls that raised an error not counted as a failure")
    rejections: int
    transitions: int


class BreakerPolicy(BaseModel):
    """The thresholds this breaker runs with."""

    failure_threshold: int
    error_rate_threshold: float
    minimum_calls: int
    window_seconds: float
    reset_timeout: float
    call_timeout: float | None


class BreakerStatus(BaseModel):
    name: str
    state: BreakerState
    forced_open: bool
    disabled: bool
    consecutive_failures: int
    window: WindowStats
    latency: LatencyStats
    last_failure: LastFailure | None
    reopens_at: datetime | None = Field(
        description="when an open breaker lets its trial call through (wall clock, UTC)"
    )
    seconds_until_half_open: float | None
    totals: BreakerTotals
    policy: BreakerPolicy


class BreakerStatusList(BaseModel):
    breakers: list[BreakerStatus]


class BreakerName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)


class SetBreakerState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    state: Literal["open", "disabled", "closed"]
