"""``Evaluator``: every ``ALERT_EVALUATION_INTERVAL`` seconds, read the figures, apply the rules,
record the verdict.

Figures come from the procedures themselves, called in-process through the router as the
system caller: the alerts see exactly what operators see, and a collector that is not in this
build, or is down, only leaves its own rules out of the round. One round is bounded by
``ALERT_EVALUATION_TIMEOUT`` and each figure by ``SECTION_TIMEOUT``; a round that fails or
overruns is logged and the next one starts on schedule. With several instances on one database
only the elected one evaluates (``election.py``); the others wait, ready to take over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from server.alerts.book import AlertBook
from server.alerts.rules import Rule, Verdict, evaluate
from server.rpc.reading import Reading, read_all
from server.rpc.router import Caller, Context, Router

log = logging.getLogger(__name__)

# Authenticated (so READ_TOKENS_REQUIRED lets it read), and a name no operator can have
# (operator names never hold a colon).
SYSTEM_CALLER = Caller("system:alerts")


class Evaluator:
    def __init__(
        self,
        rules: Sequence[Rule],
        book: AlertBook,
        router: Router,
        *,
        interval: float,
        timeout: float,
        section_timeout: float,
        gate: Callable[[], bool] | None = None,
        standby_poll: float | None = None,
    ) -> None:
        """``gate``: whether this instance evaluates now (the election); while it says no,
        it is asked again every ``standby_poll`` seconds, so a new evaluator starts at once."""
        self.rules = tuple(rules)
        self.book = book
        self._router = router
        self.interval = interval
        self._timeout = timeout
        self._section_timeout = section_timeout
        self._sources = sorted({rule.source for rule in self.rules})
        self.rounds = 0  # completed rounds, since start
        self.failed_rounds = 0
        self.last_readings: dict[str, Reading] = {}
        self._gate = gate
        self._standby_poll = standby_poll or interval / 4
        self.standing_by = False  # the gate said another instance evaluates

    async def run_once(self) -> Verdict:
        """One round: read, evaluate, record. Raises ``TimeoutError`` past the round bound."""
        ctx = Context(caller=SYSTEM_CALLER)
        async with asyncio.timeout(self._timeout):
            readings = await read_all(self._router, self._sources, ctx, self._section_timeout)
            verdict = evaluate(self.rules, readings)
            await self.book.record(verdict.conditions, verdict.evaluated, datetime.now(UTC))
        self.last_readings = readings
        self.rounds += 1
        return verdict

    async def run(self) -> None:
        """Rounds at a fixed rate until cancelled; a slow round delays, never piles up."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.standing_by = self._gate is not None and not self._gate()
            if self.standing_by:
                due = loop.time() + self._standby_poll
                await asyncio.sleep(self._standby_poll)
                continue
            try:
                await self.run_once()
            except TimeoutError:
                self.failed_rounds += 1
                log.warning("alert evaluation did not finish within %gs", self._timeout)
            except Exception:
                self.failed_rounds += 1
                log.exception("alert evaluation round failed")
            due = max(due + self.interval, loop.time())
            await asyncio.sleep(due - loop.time())
