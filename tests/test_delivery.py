"""Alert delivery against a real Alertmanager and our own webhook receiver: fire, acknowledge
(a silence appears, the alert is suppressed), resolve (the alert ends, the silence expires),
fire again (a new occurrence pages again); a receiver and an Alertmanager that are down and
come back (nothing lost, nothing twice, also across a restart of infrawatch); the outbox in
memory without a database; a bad URL in the settings."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from server.alerts import AlertBook
from server.alerts.election import APPLICATION_PREFIX, Election
from server.alerts.migrations import EVALUATOR_LOCK
from server.alerts.models import AlertQuery, Condition, Level
from server.appkeys import ALERTS, DELIVERY, ELECTION
from server.config import ConfigError, Settings
from server.delivery import MemoryOutbox, Sender
from tests.alerting import app_of, book, evaluator, start_app
from tests.pg_app import ROUNDS_OF_TERMINATION, AppFactory, PgApp, termination_pause
from tests.stack import Alertmanager
from tests.waiting import eventually, until_accepted
from tests.webhook_receiver import Receiver

SECRET = "webhook-secret-0123456789"
RULE = "delta"
DEADLINE = 20.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver(SECRET)
    await hook.start()
    yield hook
    await hook.close()


@pytest.fixture
def alertmanager(stack_dir: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    with Alertmanager(stack_dir, notify_url=receiver.page_url) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def delivery_settings(**targets: Any) -> dict[str, Any]:
    """Fast retries and re-sends, so that a test waits seconds, not minutes."""
    return {
        "alert_webhook_secret": SECRET,
        "alert_delivery_poll_interval": 0.05,
        "alert_delivery_retry_base": 0.1,
        "alert_delivery_retry_max": 0.5,
        "alert_delivery_resend_interval": 1.0,
        "alert_dashboard_url": "http://infrawatch.example/",
        "instance_id": "test-instance",
        **targets,
    }


def condition(subject: str = "orders", level: Level = "warning", value: float = 12.0) -> Condition:
    return Condition(RULE, subject, level, f"{subject} differs by {value:g}", value, 10.0)


async def fire(book: AlertBook, *conditions: Condition) -> None:
    await book.record(list(conditions), frozenset({RULE}), datetime.now(UTC))


async def firing_id(book: AlertBook, subject: str = "orders") -> str:
    [record] = [r for r in book.firing() if r.subject == subject]
    return record.id


async def am_get(http: aiohttp.ClientSession, am: Alertmanager, path: str, **params: str) -> Any:
    async with http.get(f"{am.url}/api/v2{path}", params=params, timeout=5) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def am_alerts(http: aiohttp.ClientSession, am: Alertmanager, occurrence: str) -> list[Any]:
    """The occurrence's alerts Alertmanager holds open (a resolved one is no longer listed)."""
    found: list[Any] = await am_get(http, am, "/alerts", filter=f'occurrence="{occurrence}"')
    return found


async def am_silences(http: aiohttp.ClientSession, am: Alertmanager, occurrence: str) -> list[Any]:
    found: list[Any] = await am_get(http, am, "/silences", filter=f'occurrence="{occurrence}"')
    return found


async def settled(app: PgApp, sent: int) -> dict[str, Any]:
    """``alerts.deliveries`` once every target has ``sent`` events and none pending (a receiver
    sees an event before the sender has written down its outcome)."""

    async def status() -> dict[str, Any]:
        answer: dict[str, Any] = await app.call("alerts.deliveries")
        return answer

    return await until_accepted(
        status,
        lambda s: all(t["sent"] == sent and t["pending"] == 0 for t in s["targets"]),
        what=f"{sent} deliveries recorded per target",
        within=DEADLINE,
    )


async def test_fire_ack_resolve_refire_through_alertmanager_and_webhook(
    make_app: AppFactory,
    make_settings: Callable[..., Settings],
    alertmanager: Alertmanager,
    receiver: Receiver,
    http: aiohttp.ClientSession,
) -> None:
    settings = make_settings(
        **delivery_settings(
            alertmanager_urls=(alertmanager.url,), alert_webhook_urls=(receiver.url,)
        )
    )
    app = await make_app(settings)
    book = app.app[ALERTS]

    # Fired: one Alertmanager alert for the occurrence, with its labels; the webhook gets it.
    await fire(book, condition())
    first = await firing_id(book)
    await eventually(lambda: receiver.of(first) == ["fired"], what="fired webhook")

    async def open_alert() -> Any:
        found = await am_alerts(http, alertmanager, first)
        return found[0] if found else None

    await eventually(open_alert, what="the alert in Alertmanager", timeout=DEADLINE)
    alert = await open_alert()
    assert alert["labels"] == {
        "alertname": RULE,
        "subject": "orders",
        "severity": "warning",
        "service": "infrawatch",
        "instance": "test-instance",
        "occurrence": first,
    }
    assert alert["annotations"]["summary"] == "orders differs by 12"
    assert alert["annotations"]["value"] == "12" and alert["annotations"]["threshold"] == "10"
    assert alert["annotations"]["dashboard"] == f"http://infrawatch.example/#alert-{first}"
    assert alert["status"]["state"] == "active"
    # Re-sent while firing: endsAt stays ahead (4 resend intervals), never a second alert.
    ends = datetime.fromisoformat(alert["endsAt"])
    assert timedelta(seconds=2) < ends - datetime.now(UTC) <= timedelta(seconds=5)
    await eventually(lambda: receiver.paged(first, "firing"), what="Alertmanager paged")

    # Webhook: the body as documented, signed (the receiver refused nothing).
    [hook] = receiver.events
    assert hook.headers["X-Infrawatch-Event"] == "fired"
    assert hook.headers["X-Infrawatch-Event-Id"] == hook.body["id"]
    assert hook.body["alert"]["state"] == "firing" and hook.body["instance"] == "test-instance"
    assert hook.body["dashboard_url"] == f"http://infrawatch.example/#alert-{first}"
    assert receiver.refused == 0

    # Acknowledged: a silence of this occurrence, by the operator, with the note.
    await app.call("alerts.acknowledge", {"id": first, "note": "looking at the migration"})

    async def suppressed() -> bool:
        found = await open_alert()
        return found is not None and found["status"]["state"] == "suppressed"

    await eventually(suppressed, what="the alert suppressed by the silence", timeout=DEADLINE)
    [silence] = await am_silences(http, alertmanager, first)
    assert silence["createdBy"] == "tester"
    assert silence["comment"] == "looking at the migration"
    assert silence["status"]["state"] == "active"
    assert {(m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]} == {
        ("alertname", RULE, True, False),
        ("subject", "orders", True, False),
        ("occurrence", first, True, False),
    }
    await eventually(lambda: receiver.of(first) == ["fired", "acknowledged"], what="ack hook")

    # Resolved: the alert ends (endsAt = the resolution time) and the silence expires.
    await fire(book)
    await eventually(
        lambda: receiver.of(first) == ["fired", "acknowledged", "resolved"], what="resolved hook"
    )

    async def ended() -> bool:
        silences = await am_silences(http, alertmanager, first)
        return await open_alert() is None and all(
            s["status"]["state"] == "expired" for s in silences
        )

    await eventually(ended, what="the alert ended and its silence expired", timeout=DEADLINE)
    resolved = receiver.events[-1].body["alert"]
    assert resolved["state"] == "resolved" and resolved["resolved_at"] is not None

    # Fired again: a new occurrence, not silenced, pages again.
    await fire(book, condition(value=15.0))
    second = await firing_id(book)
    assert second != first

    async def paged_again() -> bool:
        found = await am_alerts(http, alertmanager, second)
        return (
            bool(found)
            and found[0]["status"]["state"] == "active"
            and receiver.paged(second, "firing")
        )

    await eventually(paged_again, what="the new occurrence paged", timeout=DEADLINE)
    assert (await am_alerts(http, alertmanager, second))[0]["status"]["silencedBy"] == []
    await eventually(lambda: receiver.of(second) == ["fired"], what="second fired hook")

    # Each event once, and what alerts.deliveries says.
    ids = [e.body["id"] for e in receiver.events]
    assert len(ids) == len(set(ids)) == 4
    status = await settled(app, 4)
    assert status["durable"] is True and status["available"] is True
    by_name = {t["target"]: t for t in status["targets"]}
    hook_status = by_name[f"webhook:{receiver.url}"]
    assert hook_status["sent"] == 4 and hook_status["pending"] == 0 and hook_status["failures"] == 0
    am_status = by_name[f"alertmanager:{alertmanager.url}"]
    assert am_status["sent"] == 4 and am_status["pending"] == 0


async def test_a_receiver_down_gets_everything_once_when_back_even_after_a_restart(
    make_app: AppFactory,
    make_settings: Callable[..., Settings],
    receiver: Receiver,
) -> None:
    settings = make_settings(**delivery_settings(alert_webhook_urls=(receiver.url,)))
    first_app = await make_app(settings)
    book = first_app.app[ALERTS]
    await receiver.stop()
    await fire(book, condition("orders"), condition("invoices"))
    orders = await firing_id(book, "orders")
    await fire(book, condition("orders", "critical", 150.0))  # invoices resolves, orders rises
    invoices = next(a.id for a in (await book.page(AlertQuery())).alerts if a.subject == "invoices")

    async def failing() -> bool:
        status = await first_app.call("alerts.deliveries")
        [target] = status["targets"]
        return (
            target["pending"] == 4 and target["failures"] >= 2 and target["last_error"] is not None
        )

    await eventually(failing, what="deliveries pending and failing", timeout=DEADLINE)
    metrics = await (await first_app.client.get("/metrics")).text()
    assert f'infrawatch_alert_deliveries_pending{{target="webhook:{receiver.url}"}} 4.0' in metrics
    assert "infrawatch_alert_deliveries_failed_total" in metrics

    # infrawatch restarts while the receiver is down: the outbox is in PostgreSQL.
    await first_app.client.close()
    second_app = await make_app(settings)
    await receiver.start()
    took = await eventually(
        lambda: len(receiver.events) == 4, what="every event after the return", timeout=DEADLINE
    )
    # Retries are capped (0.5 s here): the receiver is served within the cap, plus a poll and
    # the deliveries themselves.
    assert took <= 0.5 + 1.5
    assert receiver.of(orders) == ["fired", "level_changed"]
    assert receiver.of(invoices) == ["fired", "resolved"]
    change = next(e.body for e in receiver.events if e.body["kind"] == "level_changed")
    assert change["previous_level"] == "warning" and change["alert"]["level"] == "critical"
    ids = [e.body["id"] for e in receiver.events]
    assert len(set(ids)) == 4
    status = await settled(second_app, 4)
    [target] = status["targets"]
    assert target["pending"] == 0 and target["sent"] == 4 and target["last_success_at"] is not None
    metrics = await (await second_app.client.get("/metrics")).text()
    assert (
        f'infrawatch_alert_deliveries_sent_total{{target="webhook:{receiver.url}"}} 4.0' in metrics
    )


async def test_a_refused_event_is_final_and_does_not_hold_up_the_next(
    make_app: AppFactory,
    make_settings: Callable[..., Settings],
    receiver: Receiver,
) -> None:
    app = await make_app(make_settings(**delivery_settings(alert_webhook_urls=(receiver.url,))))
    book = app.app[ALERTS]
    receiver.status = 422  # the receiver cannot take this event, ever
    await fire(book, condition())
    occurrence = await firing_id(book)

    async def refused() -> bool:
        [target] = (await app.call("alerts.deliveries"))["targets"]
        return target["dead"] == 1 and target["pending"] == 0

    await eventually(refused, what="the event refused for good", timeout=DEADLINE)
    assert receiver.of(occurrence) == []
    receiver.status = 200
    await app.call("alerts.acknowledge", {"id": occurrence})
    await eventually(lambda: receiver.of(occurrence) == ["acknowledged"], what="the next event")

    async def recorded() -> Any:
        [target] = (await app.call("alerts.deliveries"))["targets"]
        return target if target["sent"] == 1 else None

    target = await until_accepted(recorded, bool, what="the delivery recorded")
    assert target["failures"] == 1
    assert target["last_error"] == "POST: HTTP 422"


@pytest.mark.parametrize("attempts", range(12))
def test_backoff_doubles_with_jitter_up_to_the_cap(attempts: int) -> None:
    outbox = MemoryOutbox([])
    sender = Sender(
        outbox,
        (),
        {},
        timeout=1.0,
        poll_interval=1.0,
        retry_base=1.0,
        retry_max=30.0,
        resend_interval=60.0,
        retention=60.0,
    )
    ceiling = min(30.0, 2.0**attempts)
    delays = [sender.backoff(attempts) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 10  # jittered, not one fixed delay


async def test_alertmanager_down_then_up_gets_the_alert_and_one_silence(
    make_app: AppFactory,
    make_settings: Callable[..., Settings],
    alertmanager: Alertmanager,
    http: aiohttp.ClientSession,
) -> None:
    settings = make_settings(**delivery_settings(alertmanager_urls=(alertmanager.url,)))
    app = await make_app(settings)
    book = app.app[ALERTS]
    alertmanager.stop()
    await fire(book, condition())
    occurrence = await firing_id(book)
    await app.call("alerts.acknowledge", {"id": occurrence})

    async def failed_once() -> bool:
        [target] = (await app.call("alerts.deliveries"))["targets"]
        return target["failures"] >= 1 and target["pending"] == 2

    await eventually(failed_once, what="the Alertmanager deliveries failing", timeout=DEADLINE)
    alertmanager.start()

    async def suppressed() -> bool:
        found = await am_alerts(http, alertmanager, occurrence)
        return bool(found) and found[0]["status"]["state"] == "suppressed"

    await eventually(suppressed, what="the alert and its silence, once back", timeout=DEADLINE)
    [silence] = await am_silences(http, alertmanager, occurrence)
    assert silence["comment"] == f"acknowledged in infrawatch: {RULE} on orders"

    async def recorded() -> bool:
        # The silence is seen before its delivery's outcome is written: poll for that too.
        [target] = (await app.call("alerts.deliveries"))["targets"]
        return bool(target["pending"] == 0 and target["sent"] == 2)

    await eventually(recorded, what="both deliveries recorded")


async def test_without_a_database_the_outbox_is_in_memory(
    make_app: AppFactory,
    make_settings: Callable[..., Settings],
    receiver: Receiver,
) -> None:
    settings = make_settings(
        database_url=None, **delivery_settings(alert_webhook_urls=(receiver.url,))
    )
    app = await make_app(settings)
    book = app.app[ALERTS]
    await fire(book, condition())
    occurrence = await firing_id(book)
    await app.call("alerts.acknowledge", {"id": occurrence, "note": "mine"})
    await fire(book)
    await eventually(
        lambda: receiver.of(occurrence) == ["fired", "acknowledged", "resolved"],
        what="the events from memory",
    )
    status = await settled(app, 3)
    assert status["durable"] is False
    resp = await app.client.get("/health/detailed")
    report = await resp.json()
    assert report["alert_delivery"]["durable"] is False


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ALERTMANAGER_URLS", "alertmanager:9093", "ALERTMANAGER_URLS: 'alertmanager:9093' is not"),
        (
            "ALERT_WEBHOOK_URLS",
            "http://hooks:99999/x",
            "ALERT_WEBHOOK_URLS: 'http://hooks:99999/x' has",
        ),
        ("ALERT_DASHBOARD_URL", "ftp://x/", "ALERT_DASHBOARD_URL: 'ftp://x/' is not"),
    ],
)
def test_a_bad_url_stops_start_up_naming_its_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value, "ALERT_WEBHOOK_SECRET": SECRET})
    assert str(caught.value).startswith(message) or message in str(caught.value)


def test_webhooks_need_a_secret() -> None:
    with pytest.raises(ConfigError, match="ALERT_WEBHOOK_SECRET: must be set"):
        Settings.from_env({"ALERT_WEBHOOK_URLS": "http://hooks/x"})


def test_a_url_password_never_shows() -> None:
    settings = Settings.from_env(
        {"ALERTMANAGER_URLS": "http://user:s3cret-pass@am:9093", "ALERT_WEBHOOK_SECRET": SECRET}
    )
    assert "s3cret-pass" not in repr(settings.delivery)
    assert "s3cret-pass" not in str(settings.describe())
    assert SECRET not in str(settings.describe())


async def test_two_instances_elect_one_evaluator_and_send_each_event_once(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    receiver: Receiver,
    pg_dsn: str,
) -> None:
    interval = 1.0

    def settings_of(name: str) -> Settings:
        return make_settings(
            alert_evaluation_interval=interval,
            cache_enabled=False,
            **delivery_settings(alert_webhook_urls=(receiver.url,), instance_id=name),
        )

    one = await start_app(aiohttp_client, settings_of("one"))
    two = await start_app(aiohttp_client, settings_of("two"))
    elections = {name: app_of(c)[ELECTION] for name, c in (("one", one), ("two", two))}

    def decided() -> bool:
        leading = [e for e in elections.values() if e is not None and e.leading]
        return len(leading) == 1 and all(
            e is not None and e.leader == leading[0].instance for e in elections.values()
        )

    await eventually(decided, what="one evaluator, known to both", timeout=DEADLINE)
    leader_name = next(n for n, e in elections.items() if e is not None and e.leading)
    leader, follower = (one, two) if leader_name == "one" else (two, one)
    assert evaluator(follower).standing_by
    resp = await follower.get("/health/detailed")
    evaluation = (await resp.json())["alert_evaluator"]
    assert evaluation["evaluating"] is False and evaluation["evaluator"] == leader_name
    page = await (await follower.get("/")).text()
    assert re.search(rf"Rules evaluated by\s*<code>{leader_name}</code>", page), page

    # Both senders poll one outbox: 20 events, each delivered once.
    subjects = [f"table{i}" for i in range(10)]
    await fire(book(leader), *(condition(s) for s in subjects))
    await fire(book(leader))

    def ours() -> list[str]:
        return [e.body["id"] for e in receiver.events if e.body["alert"]["rule"] == RULE]

    await eventually(lambda: len(ours()) >= 20, what="20 events delivered", timeout=DEADLINE)
    # Both senders look at the outbox again (several passes each) before the count is final.
    passes = {s: app_of(s)[DELIVERY].passes for s in (one, two)}
    await eventually(
        lambda: all(app_of(s)[DELIVERY].passes >= passes[s] + 3 for s in (one, two)),
        what="three more passes of each sender",
    )
    assert len(ours()) == len(set(ours())) == 20

    # The evaluator loses its database session (as when its host vanishes): PostgreSQL frees
    # the lock, and within one interval one instance holds it again, known to both.
    conn = await asyncpg.connect(pg_dsn)
    try:
        [old_pid] = [
            row["pid"]
            for row in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                f"infrawatch-evaluator {leader_name}",
            )
        ]
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", old_pid)

        async def held_anew() -> bool:
            holder = await conn.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objid = $1::bigint::oid",
                EVALUATOR_LOCK & 0xFFFF_FFFF,
            )
            return holder is not None and holder != old_pid and decided()

        took = await eventually(held_anew, what="one evaluator again", timeout=DEADLINE)
    finally:
        await conn.close()
    assert took <= interval
    leader_name = next(n for n, e in elections.items() if e is not None and e.leading)
    leader, follower = (one, two) if leader_name == "one" else (two, one)

    # The evaluator stops: the other takes over within one evaluation interval.
    rounds = evaluator(follower).rounds
    await leader.close()
    took = await eventually(
        lambda: elections["two" if leader_name == "one" else "one"].leading,  # type: ignore[union-attr]
        what="the other instance takes over",
        timeout=DEADLINE,
    )
    assert took <= interval
    await eventually(lambda: evaluator(follower).rounds > rounds, what="a round by the new one")


async def test_the_evaluator_whose_session_ends_takes_the_lock_again(pg_dsn: str) -> None:
    # A check sent just after PostgreSQL ended the election's session can fail with asyncpg's
    # InternalClientError (not an InterfaceError). It once ended the election's task, leaving
    # the instance sure it still held the lock while another took it: two evaluators.
    election = Election(pg_dsn, "solo", check_interval=1.0, timeout=5.0)
    admin = await asyncpg.connect(pg_dsn)
    seen: set[str] = set()
    try:
        await election.check()
        for i in range(ROUNDS_OF_TERMINATION):
            if "InternalClientError" in seen:
                break
            assert election.leading and election.leader == "solo"
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                APPLICATION_PREFIX + "solo",
            )
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            await asyncio.sleep(termination_pause(i))
            await election.check()  # at once: never raises, whatever the driver says
            if election.last_error is not None:
                seen.add(election.last_error.split(":")[0])
                await election.check()  # a new session takes the lock again
    finally:
        await admin.close()
        await election.close()
    # The race this test is for was run into (asyncpg 0.32: in about a third of the rounds).
    assert "InternalClientError" in seen, seen


async def test_delivered_events_of_resolved_alerts_are_pruned_after_the_retention(
    make_app: AppFactory,
    make_settings: Callable[..., Settings],
    receiver: Receiver,
    pg_dsn: str,
) -> None:
    app = await make_app(make_settings(**delivery_settings(alert_webhook_urls=(receiver.url,))))
    book = app.app[ALERTS]
    await fire(book, condition("orders"), condition("invoices"))
    await fire(book, condition("invoices"))  # orders resolves; invoices still fires
    await settled(app, 3)
    outbox = app.app[DELIVERY].outbox
    assert await outbox.prune(3600.0) == 0  # younger than the retention
    # Past it: the resolved alert's two events go, with their deliveries; the firing alert's
    # event stays (the Alertmanager re-send needs it).
    assert await outbox.prune(0.0) == 2
    conn = await asyncpg.connect(pg_dsn)
    try:
        kinds = await conn.fetch(
            "SELECT e.kind, a.subject, count(d.*) AS deliveries FROM infrawatch.alert_events e "
            "JOIN infrawatch.alerts a ON a.id = e.alert_id "
            "LEFT JOIN infrawatch.alert_deliveries d ON d.event_seq = e.seq "
            "GROUP BY e.kind, a.subject"
        )
    finally:
        await conn.close()
    assert [tuple(row) for row in kinds] == [("fired", "invoices", 1)]


def test_serve_refuses_a_bad_alertmanager_url_at_start_up() -> None:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "ALERTMANAGER_URLS": "http://alertmanager:9093,alertmanager:9094",
    }
    done = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "infrawatch: invalid configuration: ALERTMANAGER_URLS: 'alertmanager:9094' is not a URL "
        "of the form http://[user[:password]@]host[:port]/..."
    )


async def test_a_level_change_moves_the_alert_and_resends_keep_it_open(
    make_app: AppFactory,
    make_settings: Callable[..., Settings],
    alertmanager: Alertmanager,
    http: aiohttp.ClientSession,
) -> None:
    settings = make_settings(**delivery_settings(alertmanager_urls=(alertmanager.url,)))
    app = await make_app(settings)
    book = app.app[ALERTS]
    await fire(book, condition())
    occurrence = await firing_id(book)

    async def open_severities() -> list[str]:
        return sorted(
            a["labels"]["severity"] for a in await am_alerts(http, alertmanager, occurrence)
        )

    await until_accepted(open_severities, lambda s: s == ["warning"], what="the warning")
    await fire(book, condition(level="critical", value=150.0))
    # One occurrence, one open alert: the warning ends as the critical one starts.
    await until_accepted(open_severities, lambda s: s == ["critical"], what="only the critical")

    async def ends_at() -> datetime:
        [alert] = await am_alerts(http, alertmanager, occurrence)
        return datetime.fromisoformat(alert["endsAt"])

    first = await ends_at()
    # Re-sent every second (the resend interval here): endsAt moves ahead while it fires.
    later = await until_accepted(ends_at, lambda at: at > first, what="endsAt moved by a re-send")
    assert later - first >= timedelta(milliseconds=500)
    assert await open_severities() == ["critical"]
