"""``setup_dashboard(app)``: templates, sessions, routes and headers of the dashboard."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server import __version__
from server.appkeys import REDIS, SETTINGS
from server.rpc.cost import Coalescer
from web import views
from web.appkeys import GATHERINGS, REVOCATIONS, SESSIONS
from web.filters import FILTERS, GLOBALS, TESTS
from web.headers import add_security_headers
from web.revocations import Revocations
from web.session import SessionCodec

STATIC_DIR = Path(__file__).parent / "static"


def setup_dashboard(app: web.Application) -> None:
    """Add the dashboard to ``app`` (after ``create_app`` has set its settings and router)."""
    settings = app[SETTINGS]
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("web", "templates"),
        autoescape=jinja2.select_autoescape(default_for_string=True, default=True),
        # A procedure whose output lacks a field the template reads is an error we show in
        # that section, not an empty cell that looks like a measurement.
        undefined=jinja2.StrictUndefined,
        # Templates ship inside the package: no need to stat them on every render.
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
        default_helpers=False,
        extensions=["jinja2.ext.do"],
        filters=FILTERS,
    )
    env.tests.update(TESTS)
    env.globals.update(GLOBALS)
    # The version busts browser caches on upgrade without hashing files at start-up.
    env.globals["static"] = {
        name: f"/static/{name}?v={__version__}" for name in ("dashboard.css", "dashboard.js")
    }
    app[SESSIONS] = SessionCodec(
        settings.dashboard.session_secret, settings.auth.tokens, settings.dashboard.session_max_age
    )
    app[REVOCATIONS] = Revocations(app[REDIS])
    # The page is the costliest read of all (every section at once): a flood of page views
    # shares one gathering per caller, and one answer for a second or so (server/rpc/cost.py).
    app[GATHERINGS] = Coalescer(settings.rpc.coalesce_ttl)
    app.router.add_get("/", views.dashboard_page, name="dashboard")
    app.router.add_get(views.FRAGMENT_PATH, views.sections_fragment, name="dashboard-sections")
    app.router.add_post("/alerts/{id}/acknowledge", views.acknowledge, name="acknowledge")
    app.router.add_get("/login", views.login_form, name="login-form")
    app.router.add_post("/login", views.login, name="login")
    app.router.add_get("/logout", views.logout_form, name="logout-form")
    app.router.add_post("/logout", views.logout, name="logout")
    app.router.add_static("/static", STATIC_DIR, name="static")
    app.on_response_prepare.append(add_security_headers)
