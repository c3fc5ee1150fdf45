"""``database.topQueries``: the watched server's statements, from ``pg_stat_statements``.

Every role and every database of the primary: the view is server-wide. The counters in the
view run since its last reset, so the per-second figures and the window mean come from the
difference between the reading of now and one kept in memory from about ``TOP_QUERIES_WINDOW``
seconds ago (``StatementWindow``); until a first reading is that old, the window is as long as
the readings go back, and the very first reading has no window at all (``None``).

infrawatch's own statements are left out by role (``TOP_QUERIES_EXCLUDE_OWN_ROLE``): the view
has no ``application_name``. The answer names the roles it left out.

A server without the extension, without it preloaded, or a role that may not read the other
roles' statements answers ``available: false`` with the reason and what to do: never an error,
since the rest of the page still stands.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from server.config import DatabaseSettings
from server.datastores.postgres import PostgresCluster
from server.errors import SqlError

OrderBy = Literal[
    "total_time",
    "time_per_s",
    "calls",
    "calls_per_s",
    "mean_time",
    "window_mean",
    "max_time",
    "rows",
    "temp_blocks",
]
# Statement text is cut here: a generated IN list can run to megabytes.
QUERY_TEXT_LIMIT = 2000
# The slow list is for alerting: bounded, the slowest first.
SLOW_LIMIT = 50
# Statements kept from each reading for /metrics (infrawatch_pg_statement_*): the busiest.
METRICS_LIMIT = 20
# Statement texts kept in memory at most (about 2 KB each).
TEXT_CACHE_SIZE = 2000
# Readings kept for the window: one per tenth of it at most.
_SAMPLES_PER_WINDOW = 10

_CHECK_SQL = """
SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements') AS version,
       -- pg_settings hides this from a role without pg_read_all_settings: NULL, not an error
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries') AS preload,
       current_database() AS database,
       current_user AS role,
       (SELECT oid FROM pg_roles WHERE rolname = current_user)::int8 AS role_oid,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
           OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS reads_all
"""

# Phase one: every statement's counters, without its text (pg_stat_statements(false) does not
# read the query-text file): the view holds up to pg_stat_statements.max (5,000) entries.
_COUNTERS_SQL = """
SELECT s.userid::int8 AS userid, s.dbid::int8 AS dbid, s.toplevel, s.queryid,
       r.rolname AS role, d.datname AS database,
       s.calls, s.total_exec_time, s.max_exec_time, s.mean_exec_time, s.stddev_exec_time,
       s.rows, s.shared_blks_hit, s.shared_blks_read,
       s.temp_blks_read + s.temp_blks_written AS temp_blocks
FROM pg_stat_statements(false) s
LEFT JOIN pg_roles r ON r.oid = s.userid
LEFT JOIN pg_database d ON d.oid = s.dbid
WHERE s.queryid IS NOT NULL AND NOT (s.userid::int8 = ANY($1::int8[]))
"""

# Phase two: the text of the statements the answer lists.
_TEXT_SQL = """
SELECT s.userid::int8 AS userid, s.dbid::int8 AS dbid, s.toplevel, s.queryid,
       left(s.query, $1) AS query
FROM pg_stat_statements(true) s
WHERE s.queryid = ANY($2::int8[])
"""

Key = tuple[int, int, int, bool]  # userid, dbid, queryid, toplevel
Counters = tuple[int, float]  # calls, total execution ms


class StatementWindow:
    """Readings of every statement's counters, kept for about ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: deque[tuple[float, dict[Key, Counters]]] = deque()

    def baseline(self, now: float) -> tuple[float, dict[Key, Counters]] | None:
        """The newest reading at least ``window`` old, else the oldest there is."""
        chosen = self._samples[0] if self._samples else None
        for sample in self._samples:
            if now - sample[0] >= self.window:
                chosen = sample
        return chosen

    def add(self, now: float, counters: dict[Key, Counters]) -> None:
        if not self._samples or now - self._samples[-1][0] >= self.window / _SAMPLES_PER_WINDOW:
            self._samples.append((now, counters))
        # Keep one reading at least a window old, and none older than that one.
        while len(self._samples) >= 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()


class TopStatement(BaseModel):
    queryid: str = Field(description="pg_stat_statements queryid (a string: it is 64-bit)")
    query: str = Field(description="normalised text ($n for values), cut at 2,000 characters")
    role: str | None = Field(description="the role that ran it")
    database: str | None = Field(description="the database it ran in")
    toplevel: bool = Field(description="run by a client, not from inside a function")
    calls: int = Field(description="since the statistics were last reset")
    total_ms: float = Field(description="total execution time")
    mean_ms: float = Field(description="mean execution time")
    max_ms: float = Field(description="longest execution")
    stddev_ms: float = Field(description="standard deviation of the execution time")
    rows: int = Field(description="rows returned or affected")
    shared_hit_ratio: float | None = Field(
        description="% of shared-buffer block reads found in the cache; None without reads"
    )
    temp_blocks: int = Field(description="temporary blocks read and written (work_mem spills)")
    window_calls: int | None = Field(description="calls within the window; None: no window yet")
    calls_per_s: float | None = Field(description="calls per second over the window")
    time_ms_per_s: float | None = Field(
        description="execution ms per second over the window (1000 = one core's worth)"
    )
    window_mean_ms: float | None = Field(description="mean execution ms within the window")


class Excluded(BaseModel):
    roles: list[str] = Field(description="roles whose statements are left out")
    reason: str = Field(description="why")


class TopQueriesReport(BaseModel):
    available: bool = Field(description="pg_stat_statements could be read")
    reason: str | None = Field(default=None, description="why not")
    how_to_enable: str | None = Field(default=None, description="what makes it available")
    order_by: OrderBy = Field(description="the order of statements")
    limit: int = Field(description="statements listed at most")
    window_setting_seconds: float = Field(description="TOP_QUERIES_WINDOW")
    window_seconds: float | None = Field(
        default=None, description="the window actually measured; None on the first reading"
    )
    excluded: Excluded = Field(description="infrawatch's own statements, left out")
    statements_seen: int = Field(default=0, description="statements in the view, after exclusion")
    statements: list[TopStatement] = Field(default=[], description="the top statements")
    slow_threshold_ms: float = Field(description="SLOW_QUERY_MS")
    slow: list[TopStatement] = Field(
        default=[],
        description="statements whose window mean is at least SLOW_QUERY_MS, slowest first "
        "(50 at most), whatever order_by and limit say",
    )
    checked_at: datetime = Field(description="when the view was read")


_SORT: dict[OrderBy, str] = {
    "total_time": "total_ms",
    "time_per_s": "time_ms_per_s",
    "calls": "calls",
    "calls_per_s": "calls_per_s",
    "mean_time": "mean_ms",
    "window_mean": "window_mean_ms",
    "max_time": "max_ms",
    "rows": "rows",
    "temp_blocks": "temp_blocks",
}


class TopQueries:
    """The collector: one per app, holding the window's readings."""

    def __init__(
        self, cluster: PostgresCluster, *, window: float, exclude_own_role: bool, slow_ms: float
    ) -> None:
        self._cluster = cluster
        self._window = StatementWindow(window)
        self._exclude_own_role = exclude_own_role
        self._slow_ms = slow_ms
        # The last reading, whoever asked: /metrics exports it (the busiest statements).
        self.last: TopQueriesReport | None = None
        self.last_busiest: list[Figures] = []
        self.last_at: float | None = None  # time.monotonic()
        self._text_cache: dict[Key, str] = {}

    @classmethod
    def over(cls, cluster: PostgresCluster, settings: DatabaseSettings) -> TopQueries:
        """The collector of ``TOP_QUERIES_WINDOW``, ``TOP_QUERIES_EXCLUDE_OWN_ROLE`` and
        ``SLOW_QUERY_MS``."""
        return cls(
            cluster,
            window=settings.top_queries_window,
            exclude_own_role=settings.top_queries_exclude_own_role,
            slow_ms=settings.slow_query_ms,
        )

    async def report(self, order_by: OrderBy, limit: int) -> TopQueriesReport:
        checked_at = datetime.now(UTC)
        check = await self._cluster.primary.fetchrow(_CHECK_SQL)
        own = str(check["role"])
        excluded = (
            Excluded(
                roles=[own],
                reason=f"infrawatch connects as {own!r}; TOP_QUERIES_EXCLUDE_OWN_ROLE=false "
                "counts that role too (when the application shares it)",
            )
            if self._exclude_own_role
            else Excluded(roles=[], reason="TOP_QUERIES_EXCLUDE_OWN_ROLE=false")
        )
        base = TopQueriesReport(
            available=False,
            order_by=order_by,
            limit=limit,
            window_setting_seconds=self._window.window,
            excluded=excluded,
            slow_threshold_ms=self._slow_ms,
            checked_at=checked_at,
        )
        missing = _missing(check)
        if missing is not None:
            reason, how = missing
            self.last = base.model_copy(update={"reason": reason, "how_to_enable": how})
            self.last_at, self.last_busiest = time.monotonic(), []
            return self.last
        own_oids = [int(check["role_oid"])] if self._exclude_own_role else []
        try:
            rows = await self._cluster.primary.fetch(_COUNTERS_SQL, own_oids)
        except SqlError as exc:
            return base.model_copy(
                update={
                    "reason": f"pg_stat_statements could not be read: {exc.message}",
                    "how_to_enable": _HOW_PRELOAD,
                }
            )
        now = time.monotonic()
        baseline = self._window.baseline(now)
        counters = {_key(row): (int(row["calls"]), float(row["total_exec_time"])) for row in rows}
        self._window.add(now, counters)
        span = now - baseline[0] if baseline is not None else None
        figures = [_figures(row, baseline, span) for row in rows]
        top = _top(figures, _SORT[order_by], limit)
        slow = _top(
            [
                f
                for f in figures
                if f.window_mean_ms is not None and f.window_mean_ms >= self._slow_ms
            ],
            "window_mean_ms",
            SLOW_LIMIT,
        )
        texts = await self._texts([*top, *slow])
        self.last_busiest = _top(figures, "time_ms_per_s", METRICS_LIMIT)
        self.last_at = now
        report = base.model_copy(
            update={
                "available": True,
                "window_seconds": round(span, 3) if span is not None else None,
                "statements_seen": len(figures),
                "statements": [f.statement(texts) for f in top],
                "slow": [f.statement(texts) for f in slow],
            }
        )
        self.last = report
        return report

    async def _texts(self, chosen: list[Figures]) -> dict[Key, str]:
        """The text of each chosen statement: from memory, else read (the text of an entry
        never changes, and reading any text makes the server load its whole text file)."""
        missing = list({f.key[2] for f in chosen if f.key not in self._text_cache})
        if missing:
            try:
                rows = await self._cluster.primary.fetch(_TEXT_SQL, QUERY_TEXT_LIMIT, missing)
            except SqlError:
                rows = []  # the figures stand without their text
            if len(self._text_cache) + len(rows) > TEXT_CACHE_SIZE:
                self._text_cache.clear()
            self._text_cache.update((_key(row), str(row["query"])) for row in rows)
        return self._text_cache


_HOW_PRELOAD = (
    "add pg_stat_statements to shared_preload_libraries in postgresql.conf and restart the "
    "server, then run CREATE EXTENSION pg_stat_statements; in the database of DATABASE_URL"
)


def _missing(check: Any) -> tuple[str, str] | None:
    if check["preload"] is not None:
        preload = [name.strip() for name in str(check["preload"]).split(",")]
        if "pg_stat_statements" not in preload:
            return "pg_stat_statements is not in shared_preload_libraries", _HOW_PRELOAD
    database = check["database"]
    if check["version"] is None:
        return (
            f"the pg_stat_statements extension is not installed in database {database!r}",
            f"CREATE EXTENSION pg_stat_statements; in database {database!r} (as a superuser "
            "or the database owner)",
        )
    if not check["reads_all"]:
        role = check["role"]
        return (
            f"role {role!r} may read only its own statements' text",
            f"GRANT pg_read_all_stats TO {role};",
        )
    return None


def _key(row: Any) -> Key:
    return (int(row["userid"]), int(row["dbid"]), int(row["queryid"]), bool(row["toplevel"]))


@dataclass(slots=True)
class Figures:
    """One statement's numbers, before its text is fetched (only the listed ones need it)."""

    key: Key
    role: str | None
    database: str | None
    calls: int
    total_ms: float
    mean_ms: float
    max_ms: float
    stddev_ms: float
    rows: int
    shared_hit_ratio: float | None
    temp_blocks: int
    window_calls: int | None
    calls_per_s: float | None
    time_ms_per_s: float | None
    window_mean_ms: float | None

    @property
    def queryid(self) -> str:
        return str(self.key[2])

    def statement(self, texts: dict[Key, str]) -> TopStatement:
        return TopStatement(
            queryid=self.queryid,
            query=texts.get(self.key, "(text not available)"),
            role=self.role,
            database=self.database,
            toplevel=self.key[3],
            calls=self.calls,
            total_ms=self.total_ms,
            mean_ms=self.mean_ms,
            max_ms=self.max_ms,
            stddev_ms=self.stddev_ms,
            rows=self.rows,
            shared_hit_ratio=self.shared_hit_ratio,
            temp_blocks=self.temp_blocks,
            window_calls=self.window_calls,
            calls_per_s=self.calls_per_s,
            time_ms_per_s=self.time_ms_per_s,
            window_mean_ms=self.window_mean_ms,
        )


def _figures(
    row: Any, baseline: tuple[float, dict[Key, Counters]] | None, span: float | None
) -> Figures:
    key = _key(row)
    hit, read = int(row["shared_blks_hit"]), int(row["shared_blks_read"])
    calls, total = int(row["calls"]), float(row["total_exec_time"])
    window_calls: int | None = None
    calls_per_s = time_per_s = window_mean = None
    if baseline is not None and span is not None and span > 0:
        before_calls, before_total = baseline[1].get(key, (0, 0.0))
        # Fewer calls than before: the statistics were reset (or the entry evicted).
        if calls >= before_calls:
            window_calls = calls - before_calls
            window_total = max(0.0, total - before_total)
            calls_per_s = round(window_calls / span, 3)
            time_per_s = round(window_total / span, 3)
            window_mean = round(window_total / window_calls, 3) if window_calls else None
    return Figures(
        key=key,
        role=row["role"],
        database=row["database"],
        calls=calls,
        total_ms=round(total, 3),
        mean_ms=round(float(row["mean_exec_time"]), 3),
        max_ms=round(float(row["max_exec_time"]), 3),
        stddev_ms=round(float(row["stddev_exec_time"]), 3),
        rows=int(row["rows"]),
        shared_hit_ratio=round(100.0 * hit / (hit + read), 2) if hit + read else None,
        temp_blocks=int(row["temp_blocks"]),
        window_calls=window_calls,
        calls_per_s=calls_per_s,
        time_ms_per_s=time_per_s,
        window_mean_ms=window_mean,
    )


def _top(figures: list[Figures], field: str, limit: int) -> list[Figures]:
    # Figures not known yet (no window) sort last, not first.
    def key(f: Figures) -> tuple[bool, float]:
        value = getattr(f, field)
        return (value is None, -(value or 0))

    return heapq.nsmallest(limit, figures, key=key)
