"""What alerting holds and answers: conditions found by one round, stored alerts, and the
procedure inputs and outputs.

An alert is one *occurrence* of a condition: it fires, is updated while the condition holds
(value, level, ``last_fired_at``), resolves when it clears, and a later return of the condition
is a new occurrence with a new id. Its ``fingerprint`` is ``rule:subject``; at most one
occurrence per fingerprint is firing at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Level = Literal["warning", "critical"]
State = Literal["firing", "resolved"]
LEVELS: tuple[Level, ...] = ("warning", "critical")  # in rising severity
NOTE_MAX_LENGTH = 1000


def rank(level: Level) -> int:
    return LEVELS.index(level)


def fingerprint(rule: str, subject: str) -> str:
    return f"{rule}:{subject}"


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule that holds for one subject in one round, at its highest matching level."""

    rule: str
    subject: str
    level: Level
    message: str
    value: float | None
    threshold: float | None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.subject)


@dataclass(frozen=True, slots=True)
class Round:
    """One evaluation's verdict, as a store applies it.

    ``evaluated`` names the rules whose figures were read this round: a firing alert of such a
    rule that is not among ``conditions`` has cleared *as far as this instance can tell*. It
    resolves once no other instance has reported it within ``stale_after`` seconds, so two
    instances that see different figures (each has its own breakers and caches) do not resolve
    each other's alerts, and an instance that stops reporting stops holding its alerts open.
    ``ids`` proposes the id of each occurrence a condition would start.
    """

    at: datetime
    instance: str
    conditions: tuple[Condition, ...]
    evaluated: frozenset[str]
    stale_after: float
    ids: Mapping[str, str] = field(default_factory=dict)

    @property
    def stale_before(self) -> float:
        """Reports older than this (epoch seconds) no longer hold an alert open."""
        return self.at.timestamp() - self.stale_after

    def proposed_id(self, fingerprint: str) -> str:
        return self.ids.get(fingerprint) or str(uuid.uuid4())

    def with_ids(self, ids: Mapping[str, str]) -> Round:
        return replace(self, ids=dict(ids))


@dataclass(slots=True)
class AlertRecord:
    """One occurrence as a store keeps it; ``reporters`` maps instance -> last report (epoch)."""

    id: str
    fingerprint: str
    rule: str
    subject: str
    level: Level
    state: State
    message: str
    value: float | None
    threshold: float | None
    first_fired_at: datetime
    last_fired_at: datetime
    resolved_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    note: str | None = None
    reporters: dict[str, float] = field(default_factory=dict)

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def model(self) -> Alert:
        return Alert(
            id=self.id,
            fingerprint=self.fingerprint,
            rule=self.rule,
            subject=self.subject,
            level=self.level,
            state=self.state,
            message=self.message,
            value=self.value,
            threshold=self.threshold,
            first_fired_at=self.first_fired_at,
            last_fired_at=self.last_fired_at,
            resolved_at=self.resolved_at,
            acknowledged=self.acknowledged,
            acknowledged_by=self.acknowledged_by,
            acknowledged_at=self.acknowledged_at,
            note=self.note,
        )


# --- procedure inputs and outputs ---


class Alert(BaseModel):
    id: str
    fingerprint: str = Field(description="rule:subject; one firing occurrence per fingerprint")
    rule: str
    subject: str
    level: Level
    state: State
    message: str
    value: float | None = Field(description="the figure that tripped the rule, at its last report")
    threshold: float | None = Field(description="the threshold of the level it fires at")
    first_fired_at: datetime
    last_fired_at: datetime
    resolved_at: datetime | None
    acknowledged: bool
    acknowledged_by: str | None = Field(description="the operator's token name")
    acknowledged_at: datetime | None
    note: str | None = Field(description="as the operator wrote it: escape it when rendering")


Source = Literal["database", "memory"]


class AlertPage(BaseModel):
    alerts: list[Alert]
    total: int = Field(description="alerts matching the filters, on every page")
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")
    source: Source = Field(
        description="database: the durable store; memory: this instance's own view, served "
        "while the database cannot be reached (or when none is configured)"
    )
    durable: bool = Field(description="alerts are kept in PostgreSQL (DATABASE_URL is set)")


class AlertQuery(BaseModel):
    """``alerts.list`` input: every filter optional; newest occurrence first."""

    model_config = ConfigDict(extra="forbid")

    state: State | None = None
    level: Level | None = None
    acknowledged: bool | None = None
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class AcknowledgeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Any id is accepted and looked up: one that names no alert (an integer, a typo) is
    # NOT_FOUND, the answer a client can act on, not a validation error.
    id: str | int = Field(description="the alert's id, as alerts.list gives it")
    note: str | None = Field(default=None, max_length=NOTE_MAX_LENGTH)


class StoreStatus(BaseModel):
    """How alerting keeps its alerts (for ``/health/detailed`` and the dashboard)."""

    durable: bool = Field(description="PostgreSQL holds the alerts (DATABASE_URL is set)")
    available: bool = Field(description="the last store operation reached PostgreSQL")
    pending_rounds: int = Field(
        description="evaluations kept in memory until the database answers again"
    )
    dropped_rounds: int = Field(description="evaluations lost to the pending bound, since start")
    last_error: str | None


class EvaluatorStatus(BaseModel):
    """Which instance evaluates the alert rules (for ``/health/detailed`` and the dashboard)."""

    instance: str = Field(description="this instance (INSTANCE_ID)")
    elected: bool = Field(
        description="chosen by a PostgreSQL advisory lock among the instances on the database; "
        "false: no database, or ALERT_EVALUATION_ENABLED=false"
    )
    evaluating: bool = Field(description="this instance evaluates the rules now")
    evaluator: str | None = Field(
        description="the instance that evaluates, as PostgreSQL knows it (null: none known)"
    )
    since: datetime | None = Field(description="this instance evaluates since")
    database_reachable: bool = Field(description="the election's own connection answers")
    last_error: str | None
