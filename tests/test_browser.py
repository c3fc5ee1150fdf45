"""The dashboard in a real browser: headless Debian chromium against a real server.

Screenshots go to ``test-output/browser/`` at the repository root (git-ignored):
``dashboard-desktop.png`` (1280 px wide) and ``dashboard-phone.png`` (390 px, mobile) of the
real catalogue; ``contract-desktop.png`` and ``contract-phone.png`` of every section, fed the
output shapes of COMMON.md (tests/dashboard_contract.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.appkeys import BREAKERS, ROUTER
from server.config import Settings
from server.rpc.router import Caller, Context
from tests.assembly import create_app_with
from tests.chromium import DevToolsPage, chromium
from tests.conftest import OPERATOR_NAME, OPERATOR_TOKEN
from tests.dashboard_contract import standins, with_catalogue
from tests.stack import PgBouncer, PostgresServer
from tests.stack.ports import HOST
from tests.waiting import until_accepted
from web.sections import SECTIONS, in_catalogue, present_sections

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

OUTPUT = Path(__file__).resolve().parents[1] / "test-output" / "browser"
NOTE = "on it <b>now</b>"
ALERT_TIMEOUT = 60.0


def _js(value: Any) -> str:
    return json.dumps(value)


async def test_operator_signs_in_sees_every_section_and_acknowledges_an_alert(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_settings: Callable[..., Settings],
    pg_dsn: str,
    postgres_replica: PostgresServer,
    pgbouncer: PgBouncer,
) -> None:
    await asyncio.to_thread(postgres_replica.wait_for_replay)
    database = urlsplit(pg_dsn).path.lstrip("/")
    settings = make_settings(
        database_replica_urls=(postgres_replica.dsn(database=database),),
        pgbouncer_admin_url=pgbouncer.admin_dsn,
        alert_evaluation_interval=0.5,
        dashboard_refresh_interval=1.0,
    )
    app = create_app(settings)
    server = await aiohttp_server(app, host=HOST)
    base = str(server.make_url("/")).rstrip("/")
    expected = [s.id for s in present_sections(app[ROUTER])]

    async with chromium() as page:
        await _sign_in(page, base)
        await _sees_every_section(page, expected)
        await _updates_in_place(page)
        if in_catalogue(app[ROUTER], "alerts.acknowledge"):
            await _acknowledges_an_alert(page, app, base)
        await _screenshots(page, "dashboard")

        # The browser holds a valid session cookie: only the missing CSRF token is wrong.
        status = await page.evaluate(
            "fetch('/alerts/1/acknowledge', {method: 'POST', credentials: 'same-origin', "
            "body: new URLSearchParams({note: 'no token'})}).then(r => r.status)"
        )
        assert status == 403

        _assert_no_page_errors(page)


async def test_every_section_in_the_browser_from_the_contract_shapes(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    make_settings: Callable[..., Settings],
) -> None:
    """All nine sections laid out by a real browser, under the real CSP, on a desk and a phone."""
    app = create_app_with(make_settings(), with_catalogue(standins(acknowledged=[])))
    server = await aiohttp_server(app, host=HOST)
    base = str(server.make_url("/")).rstrip("/")

    async with chromium() as page:
        await _sign_in(page, base)
        await _sees_every_section(page, [s.id for s in SECTIONS])
        forms = await page.evaluate("document.querySelectorAll('form.ack-form').length")
        assert forms == 2
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        assert overflow is True
        await _screenshots(page, "contract")
        # On a phone the page itself never scrolls sideways; wide tables scroll in their box.
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=390,
            height=900,
            deviceScaleFactor=1,
            mobile=True,
        )
        fits = await page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        assert fits is True
        _assert_no_page_errors(page)


async def _screenshots(page: DevToolsPage, name: str) -> None:
    for device, width, mobile in (("desktop", 1280, False), ("phone", 390, True)):
        shot = await page.screenshot(
            OUTPUT / f"{name}-{device}.png", width=width, height=900, mobile=mobile
        )
        assert shot.stat().st_size > 10_000
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    await page.send("Emulation.clearDeviceMetricsOverride")


def _assert_no_page_errors(page: DevToolsPage) -> None:
    problems = [
        event
        for event in page.events
        if event.method == "Runtime.exceptionThrown"
        or (
            event.method == "Log.entryAdded"
            and event.params["entry"]["level"] == "error"
            # A 404 favicon and a deliberate 403 are network errors, not page bugs; CSP
            # violations arrive as source "security".
            and event.params["entry"].get("source") != "network"
        )
    ]
    assert problems == [], "script errors or CSP violations in the page"


async def _sign_in(page: DevToolsPage, base: str) -> None:
    await page.goto(f"{base}/login")
    await page.evaluate("document.getElementById('token').focus()")
    await page.send("Input.insertText", text=OPERATOR_TOKEN)
    await page.load(
        lambda: page.evaluate("document.querySelector('form.stack-form button').click()")
    )
    assert await page.evaluate("location.pathname") == "/"
    account = await page.evaluate("document.querySelector('.account').innerText")
    assert f"Signed in as {OPERATOR_NAME}" in account


async def _sees_every_section(page: DevToolsPage, expected: list[str]) -> None:
    shown = await page.evaluate(
        "[...document.querySelectorAll('section[data-section]')].map(s => s.id)"
    )
    assert shown == expected
    # A healthy stack: no source failed and every template understood its procedure's output.
    errors = await page.evaluate(
        "[...document.querySelectorAll('.source-error')]"
        ".map(e => e.closest('section').id + ': ' + e.innerText)"
    )
    assert errors == []
    for section in expected:
        heading = f"document.getElementById({_js(section)}).querySelector('h2').innerText"
        assert await page.evaluate(heading)
    status = await page.evaluate("document.querySelector('.banner-status').innerText")
    assert status.split()[-1] in {"HEALTHY", "DEGRADED", "UNHEALTHY"}


async def _updates_in_place(page: DevToolsPage) -> None:
    """The script swaps sections without reloading (the page's own JS state survives)."""
    assert await page.evaluate("document.body.dataset.live") == "true"
    await page.evaluate("window.sameDocument = true")
    before = await page.evaluate("document.getElementById('updated').innerText")
    await page.wait_for(
        f"document.getElementById('updated').innerText !== {_js(before)}"
        " && window.sameDocument === true",
        within=20,
        what="the sections refreshed in place",
    )


async def _acknowledges_an_alert(page: DevToolsPage, app: web.Application, base: str) -> None:
    router = app[ROUTER]
    ctx = Context(caller=Caller(OPERATOR_NAME))
    app[BREAKERS].get("pgbouncer-admin")
    await router.call(
        "monitoring.setCircuitBreakerState", {"name": "pgbouncer-admin", "state": "open"}, ctx
    )
    alert = await _firing_alert(router, ctx)
    selector = f"#alert-{alert['id']} form.ack-form"

    await page.goto(f"{base}/")
    await page.evaluate(f"document.querySelector({_js(selector + ' input[name=note]')}).focus()")
    await page.send("Input.insertText", text=NOTE)
    # A refresh passes while the note is being typed: the alert and its note stay put.
    before = await page.evaluate("document.getElementById('updated').innerText")
    await page.wait_for(
        f"document.getElementById('updated').innerText !== {_js(before)}",
        within=20,
        what="a refresh while typing",
    )
    value = await page.evaluate(
        f"document.querySelector({_js(selector + ' input[name=note]')}).value"
    )
    assert value == NOTE

    await page.load(
        lambda: page.evaluate(f"document.querySelector({_js(selector + ' button')}).click()")
    )
    element = _js(f"alert-{alert['id']}")
    text = await page.evaluate(f"document.getElementById({element}).innerText")
    assert f"Acknowledged by {OPERATOR_NAME}" in text
    assert NOTE in text  # shown as text: the <b> was escaped, not rendered
    listed = await router.call("alerts.list", None, ctx)
    (stored,) = [a for a in listed["alerts"] if a["id"] == alert["id"]]
    assert stored["acknowledged"] is True
    assert stored["acknowledged_by"] == OPERATOR_NAME
    assert stored["note"] == NOTE


async def _firing_alert(router: Any, ctx: Context) -> dict[str, Any]:
    async def firing() -> list[dict[str, Any]]:
        listed = await router.call("alerts.list", None, ctx)
        return [a for a in listed["alerts"] if a["state"] == "firing"]

    found = await until_accepted(
        firing,
        bool,
        what="an alert fired for the forced-open breaker",
        within=ALERT_TIMEOUT,
        interval=0.2,
    )
    return found[0]
