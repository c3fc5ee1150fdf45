"""Alert delivery: the outbox of alert events, emptied into Alertmanager and signed webhooks.

    targets.py       Target: alertmanager:<url> / webhook:<url>, from the settings
    models.py        Delivery, TargetFigures; DeliveryStatus (alerts.deliveries)
    outbox.py        Outbox (what the sender needs), MemoryOutbox (no DATABASE_URL)
    pg_outbox.py     PostgresOutbox: claims with FOR UPDATE SKIP LOCKED and a lease
    alertmanager.py  Alertmanager API v2: alerts per occurrence, acknowledgements as silences
    webhook.py       signed JSON POSTs (X-Infrawatch-Signature)
    session.py       Session: the one aiohttp ClientSession, opened by the app
    sender.py        Sender: the background task, retries with backoff, re-sends, pruning
    exposition.py    the pending figures for /metrics

The events themselves are made by alerting (``server/alerts/events.py``), in the transaction
of the change with PostgreSQL.
"""

from __future__ import annotations

from prometheus_client import Counter

from server.config import DeliverySettings
from server.datastores.postgres import PostgresCluster
from server.delivery.alertmanager import Alertmanager
from server.delivery.exposition import DeliveryCollector
from server.delivery.models import DeliveryStatus
from server.delivery.outbox import MemoryOutbox, Outbox
from server.delivery.pg_outbox import PostgresOutbox
from server.delivery.sender import Deliverer, Sender
from server.delivery.session import Session
from server.delivery.targets import Target, targets_of
from server.delivery.webhook import Webhook

__all__ = [
    "DeliveryCollector",
    "DeliveryStatus",
    "MemoryOutbox",
    "Sender",
    "Session",
    "Target",
    "build_outbox",
    "build_sender",
    "targets_of",
]


def build_outbox(postgres: PostgresCluster | None, targets: tuple[Target, ...]) -> Outbox:
    if postgres is not None:
        return PostgresOutbox(postgres)
    return MemoryOutbox([t.name for t in targets])


def build_sender(
    settings: DeliverySettings,
    outbox: Outbox,
    session: Session,
    *,
    sent: Counter | None = None,
    failed: Counter | None = None,
) -> Sender:
    """The sender over ``session`` (opened and closed by the app's delivery context)."""
    targets = targets_of(settings)
    clients: dict[str, Deliverer] = {}
    for target in targets:
        if target.kind == "alertmanager":
            clients[target.name] = Alertmanager(
                session,
                target.url,
                timeout=settings.timeout,
                resend_interval=settings.resend_interval,
                dashboard_url=settings.dashboard_url,
            )
        else:
            assert settings.webhook_secret is not None  # checked with the settings
            clients[target.name] = Webhook(
                session,
                target.url,
                settings.webhook_secret,
                timeout=settings.timeout,
                dashboard_url=settings.dashboard_url,
            )
    return Sender(
        outbox,
        targets,
        clients,
        timeout=settings.timeout,
        poll_interval=settings.poll_interval,
        retry_base=settings.retry_base,
        retry_max=settings.retry_max,
        resend_interval=settings.resend_interval,
        retention=settings.retention,
        sent=sent,
        failed=failed,
    )
