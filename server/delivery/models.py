"""What delivery holds and answers: a delivery claimed from the outbox, its outcome, and the
``alerts.deliveries`` answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.alerts.models import EvaluatorStatus

Outcome = Literal["sent", "retry", "failed", "released"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one target, leased to this instance until it reports the outcome."""

    seq: int
    target: str
    alert_id: str
    kind: str
    attempts: int
    payload: dict[str, Any]


@dataclass(slots=True)
class TargetFigures:
    """A target's figures as the outbox keeps them (every instance's, with PostgreSQL)."""

    pending: int = 0
    oldest_pending_at: datetime | None = None
    sent: int = 0
    failures: int = 0
    dead: int = 0
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


class TargetStatus(BaseModel):
    target: str = Field(description="alertmanager:<url> or webhook:<url>, passwords masked")
    kind: Literal["alertmanager", "webhook"]
    configured: bool = Field(description="in this instance's settings (false: only in the outbox)")
    pending: int = Field(description="events waiting for this target")
    oldest_pending_seconds: float | None = Field(description="age of the oldest waiting event")
    sent: int = Field(description="events delivered, since the target was first used")
    failures: int = Field(description="failed attempts (each retried), since first used")
    dead: int = Field(description="events the target refused for good (a 4xx answer)")
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


class DeliveryStatus(BaseModel):
    """``alerts.deliveries``, and the delivery part of ``/health/detailed``."""

    durable: bool = Field(
        description="the outbox is in PostgreSQL (kept across restarts, shared by instances); "
        "false: in this process's memory, lost at restart"
    )
    available: bool = Field(description="the last outbox operation succeeded")
    targets: list[TargetStatus]
    last_error: str | None = Field(description="the outbox's own last error (not a target's)")
    evaluation: EvaluatorStatus | None = Field(
        default=None, description="which instance evaluates the rules (and so makes the events)"
    )
