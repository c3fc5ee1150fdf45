"""``Target``: one place alerts are delivered to, an Alertmanager or a webhook URL.

A target's ``name`` (``alertmanager:<url>``, ``webhook:<url>``) is how the outbox, the
metrics and ``alerts.deliveries`` know it: the URL with any password masked, so that no
secret reaches the database, an answer or a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.config import DeliverySettings, mask_url

TargetKind = Literal["alertmanager", "webhook"]


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    url: str  # as configured (it may hold credentials): never shown

    @property
    def name(self) -> str:
        return f"{self.kind}:{mask_url(self.url)}"


def targets_of(settings: DeliverySettings) -> tuple[Target, ...]:
    """Every configured target, each once (a URL listed twice is one target)."""
    found: dict[str, Target] = {}
    for url in settings.alertmanager_urls:
        target = Target("alertmanager", url)
        found.setdefault(target.name, target)
    for url in settings.webhook_urls:
        target = Target("webhook", url)
        found.setdefault(target.name, target)
    return tuple(found.values())
