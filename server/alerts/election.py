"""``Election``: one evaluating instance among those sharing a database, chosen by PostgreSQL.

The evaluator is the instance that holds the session advisory lock ``EVALUATOR_LOCK`` on a
connection of its own (not the pool's: a session lock lives and dies with its connection).
Every ``check_interval`` (a quarter of the evaluation interval) each instance confirms its hold
or tries to take the lock, so when the holder stops, dies or loses its connection, PostgreSQL
frees the lock with its session and another instance takes it within one interval. The
connection asks the server for TCP keepalives so that a holder whose host vanishes is dropped
within seconds, not at the kernel's two hours.

While this instance cannot reach PostgreSQL at all it keeps the part it had: the last holder
goes on evaluating (into memory, written when the database answers, as before elections), and
an instance that has never reached the database evaluates too. Once it reaches the database
again the lock decides. So a database outage never stops evaluation, and for a short while
after one two instances may both evaluate, which the store tolerates (see ``models.Round``).

Who evaluates is read from PostgreSQL itself: the lock's holder in ``pg_locks``, named by its
connection's ``application_name`` (``infrawatch-evaluator <INSTANCE_ID>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import asyncpg

from server.alerts.migrations import EVALUATOR_LOCK
from server.alerts.models import EvaluatorStatus
from server.datastores.sqlstate import DRIVER_ERRORS

log = logging.getLogger(__name__)

APPLICATION_PREFIX = "infrawatch-evaluator "
# PostgreSQL truncates application_name to 63 bytes.
NAME_LIMIT = 63 - len(APPLICATION_PREFIX)

_HOLDER = """
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LIMIT 1
"""


class Election:
    def __init__(self, dsn: str, instance: str, *, check_interval: float, timeout: float) -> None:
        self.instance = instance
        self._dsn = dsn
        self.check_interval = check_interval
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None
        self._holds = False
        self._reachable = False
        self._ever_reached = False
        self._was_leading = False
        self.leader: str | None = None
        self.since: datetime | None = None
        self.last_error: str | None = None

    @property
    def leading(self) -> bool:
        """Evaluate now? Holding the lock, or cut off from the database after holding it (or
        before ever reaching it)."""
        if self._reachable:
            return self._holds
        return self._was_leading or not self._ever_reached

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:
                # A bug here must not leave this instance believing it still holds the lock.
                log.exception("alert evaluation: the election check failed")
                self._lost(exc)
            await asyncio.sleep(self.check_interval)

    async def check(self) -> None:
        """Confirm the hold, or try to take the lock; never raises for the database."""
        try:
            async with asyncio.timeout(self._timeout):
                conn = await self._connection()
                if self._holds:
                    await conn.fetchval("SELECT 1")  # the session, and so the lock, lives
                else:
                    got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", EVALUATOR_LOCK)
                    self._take(bool(got))
                holder = await conn.fetchval(
                    _HOLDER, EVALUATOR_LOCK >> 32, EVALUATOR_LOCK & 0xFFFF_FFFF
                )
        except DRIVER_ERRORS as exc:
            self._lost(exc)
            return
        self._reachable = self._ever_reached = True
        self._was_leading = self._holds
        self.last_error = None
        self.leader = holder.removeprefix(APPLICATION_PREFIX) if holder else None

    def _take(self, got: bool) -> None:
        if got:
            log.info("alert evaluation: this instance (%s) evaluates now", self.instance)
            self.since = datetime.now(UTC)
        self._holds = got

    def _lost(self, exc: BaseException) -> None:
        if self._holds:
            log.warning(
                "alert evaluation: lost the database (%s); evaluating in memory until it answers",
                exc,
            )
        self._holds = False
        self._reachable = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._drop()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._drop()
            self._holds = False  # a new session holds nothing
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self._timeout,
                statement_cache_size=0,
                server_settings={
                    "application_name": APPLICATION_PREFIX + self.instance[:NAME_LIMIT],
                    # A holder that vanishes without closing is dropped (and its lock freed)
                    # after about 5 + 3 * 2 seconds.
                    "tcp_keepalives_idle": "5",
                    "tcp_keepalives_interval": "2",
                    "tcp_keepalives_count": "3",
                },
            )
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.terminate()
            self._conn = None

    async def close(self) -> None:
        """Give the lock up at once (the next instance need not wait for a check)."""
        conn, self._conn = self._conn, None
        self._holds = False
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), self._timeout)
            except Exception:
                conn.terminate()

    def status(self) -> EvaluatorStatus:
        return EvaluatorStatus(
            instance=self.instance,
            elected=True,
            evaluating=self.leading,
            evaluator=self.instance if self.leading and not self._reachable else self.leader,
            since=self.since if self._holds else None,
            database_reachable=self._reachable,
            last_error=self.last_error,
        )


def standalone_status(instance: str, evaluating: bool) -> EvaluatorStatus:
    """Without an election: no database (this instance alone), or evaluation turned off."""
    return EvaluatorStatus(
        instance=instance,
        elected=False,
        evaluating=evaluating,
        evaluator=instance if evaluating else None,
        since=None,
        database_reachable=False,
        last_error=None,
    )
