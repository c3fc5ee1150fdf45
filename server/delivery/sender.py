"""``Sender``: the background task that empties the outbox into the targets.

Each pass claims the due deliveries (leased, in event order, at most the oldest pending one
per alert and target), serves every target concurrently and each target's deliveries one
after another, and records each outcome. A failed attempt is retried after an exponential
backoff with jitter, ``ALERT_DELIVERY_RETRY_BASE * 2**attempts`` seconds capped at
``ALERT_DELIVERY_RETRY_MAX`` (at most a minute, so a target that comes back is served within
one), and the target is held for that long (its other deliveries are released untried rather
than each failing on their own). A 4xx answer (other than 408/429) is final: that event is
marked failed and the next one goes.

Every ``ALERT_DELIVERY_RESEND_INTERVAL`` seconds each Alertmanager gets the alerts still
firing again (``endsAt`` moves ahead); every hour delivered events past
``ALERT_DELIVERY_RETENTION`` are pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Counter

from server.delivery.alertmanager import Alertmanager, DeliveryError
from server.delivery.models import (
    Delivery,
    DeliveryStatus,
    Outcome,
    TargetFigures,
    TargetStatus,
)
from server.delivery.outbox import Outbox
from server.delivery.targets import Target

log = logging.getLogger(__name__)

BATCH = 20  # deliveries per claim
PRUNE_EVERY = 3600.0
FIGURES_EVERY = 10.0  # /health/detailed reads the figures without I/O: keep them this fresh


class Deliverer(Protocol):
    async def deliver(self, delivery: Delivery) -> None: ...


class Sender:
    def __init__(
        self,
        outbox: Outbox,
        targets: Sequence[Target],
        clients: Mapping[str, Deliverer],
        *,
        timeout: float,
        poll_interval: float,
        retry_base: float,
        retry_max: float,
        resend_interval: float,
        retention: float,
        sent: Counter | None = None,
        failed: Counter | None = None,
    ) -> None:
        self.outbox = outbox
        self.targets = tuple(targets)
        self._clients = dict(clients)
        self._poll = poll_interval
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._resend_interval = resend_interval
        self._retention = retention
        # A claim outlives the slowest pass over it: every delivery of a batch timing out.
        self._lease = timeout * BATCH + 10.0
        self._held: dict[str, float] = {}  # target -> monotonic time it may be tried again
        self._sent = sent
        self._failed = failed
        self._wake = asyncio.Event()
        self._last_error: str | None = None
        self._figures: dict[str, TargetFigures] = {}
        self._claimed: dict[tuple[int, str], Delivery] = {}  # leased to us, outcome not written
        self.passes = 0

    def wake(self) -> None:
        """Deliver now rather than at the next poll (new events in memory)."""
        self._wake.set()

    # --- the task ---

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_resend = loop.time() + self._resend_interval
        next_prune = loop.time()
        next_figures = loop.time()
        while True:
            busy = False
            try:
                busy = await self.deliver_due() > 0
                if loop.time() >= next_resend:
                    next_resend = loop.time() + self._resend_interval
                    await self.resend()
                if loop.time() >= next_figures:
                    next_figures = loop.time() + FIGURES_EVERY
                    await self.refresh()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY
                    pruned = await self.outbox.prune(self._retention)
                    if pruned:
                        log.info("alert delivery: pruned %d delivered events", pruned)
                self._last_error = None
            except Exception as exc:
                if self._last_error is None:
                    log.warning("alert delivery: the outbox is not reachable: %s", exc)
                self._last_error = str(exc) or type(exc).__name__
            self.passes += 1
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)

    async def deliver_due(self) -> int:
        """One pass: claim, deliver, record; the number of deliveries claimed."""
        now = time.monotonic()
        ready = [t.name for t in self.targets if self._held.get(t.name, 0.0) <= now]
        if not ready:
            return 0
        claimed = await self.outbox.claim(ready, BATCH, self._lease)
        by_target: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in claimed:
            self._claimed[(delivery.seq, delivery.target)] = delivery
            by_target[delivery.target].append(delivery)
        await asyncio.gather(*(self._serve(t, ds) for t, ds in by_target.items()))
        return len(claimed)

    async def _serve(self, target: str, deliveries: list[Delivery]) -> None:
        client = self._clients[target]
        for i, delivery in enumerate(deliveries):
            try:
                try:
                    await client.deliver(delivery)
                except DeliveryError:
                    raise
                except Exception as exc:  # a bug of ours, not the target's: retried, loudly
                    log.exception("alert delivery to %s: unexpected failure", target)
                    raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
            except DeliveryError as exc:
                if self._failed is not None:
                    self._failed.labels(target).inc()
                if exc.permanent:
                    log.error("alert delivery to %s refused an event: %s", target, exc)
                    await self._settle(delivery, "failed", error=str(exc))
                    continue
                delay = self.backoff(delivery.attempts)
                self._held[target] = time.monotonic() + delay
                log.warning("alert delivery to %s failed (retry in %.1fs): %s", target, delay, exc)
                await self._settle(delivery, "retry", error=str(exc), retry_in=delay)
                for rest in deliveries[i + 1 :]:
                    await self._settle(rest, "released")
                return
            self._held.pop(target, None)
            if self._sent is not None:
                self._sent.labels(target).inc()
            await self._settle(delivery, "sent")

    async def _settle(
        self,
        delivery: Delivery,
        outcome: Outcome,
        *,
        error: str | None = None,
        retry_in: float = 0.0,
    ) -> None:
        await self.outbox.settle(delivery, outcome, error=error, retry_in=retry_in)
        self._claimed.pop((delivery.seq, delivery.target), None)

    async def release(self, within: float) -> None:
        """Give back what this sender claimed and did not finish (at shutdown), so that another
        instance, or this one restarted, need not wait for the leases to run out."""
        left = list(self._claimed.values())
        try:
            async with asyncio.timeout(within):
                for delivery in left:
                    await self._settle(delivery, "released")
        except Exception as exc:
            log.warning(
                "alert delivery: %d claimed deliveries not released (%s); their leases run out "
                "in %gs",
                len(self._claimed),
                exc,
                self._lease,
            )

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt: exponential, capped, with jitter (half to full)."""
        ceiling = min(self._retry_max, self._retry_base * 2.0 ** min(attempts, 30))
        return ceiling * random.uniform(0.5, 1.0)

    async def resend(self) -> None:
        """Every Alertmanager gets its firing alerts again (endsAt moves ahead)."""
        for target in self.targets:
            client = self._clients[target.name]
            if not isinstance(client, Alertmanager):
                continue
            if self._held.get(target.name, 0.0) > time.monotonic():
                continue
            try:
                await client.resend(await self.outbox.firing(target.name))
            except DeliveryError as exc:
                log.warning("alert delivery: re-sending to %s failed: %s", target.name, exc)

    # --- figures ---

    async def refresh(self) -> None:
        """Read the outbox's figures (before a scrape, and for the status)."""
        self._figures = await self.outbox.figures()

    def figures(self) -> dict[str, TargetFigures]:
        return dict(self._figures)

    async def status(self) -> DeliveryStatus:
        try:
            await self.refresh()
        except Exception as exc:
            self._last_error = str(exc) or type(exc).__name__
        return self.snapshot()

    def snapshot(self) -> DeliveryStatus:
        """The status as of the last refresh (no I/O: for /health/detailed)."""
        now = datetime.now(UTC)
        configured = {t.name for t in self.targets}
        names = [t.name for t in self.targets] + sorted(set(self._figures) - configured)
        targets = []
        for name in names:
            figures = self._figures.get(name) or TargetFigures()
            oldest = figures.oldest_pending_at
            targets.append(
                TargetStatus(
                    target=name,
                    kind="alertmanager" if name.startswith("alertmanager:") else "webhook",
                    configured=name in configured,
                    pending=figures.pending,
                    oldest_pending_seconds=(
                        round((now - oldest).total_seconds(), 3) if oldest else None
                    ),
                    sent=figures.sent,
                    failures=figures.failures,
                    dead=figures.dead,
                    last_success_at=figures.last_success_at,
                    last_error=figures.last_error,
                    last_error_at=figures.last_error_at,
                )
            )
        return DeliveryStatus(
            durable=self.outbox.durable,
            available=self._last_error is None,
            targets=targets,
            last_error=self._last_error,
        )
