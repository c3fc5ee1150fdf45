"""The dashboard's HTTP handlers: the page, its refresh fragment, sign-in/out, acknowledgement.

Every figure on the page comes from the same procedures RPC clients call, run in-process
through the router as the signed-in operator (or anonymously for a signed-out visitor).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from server.appkeys import AUTH, ROUTER, SETTINGS
from server.errors import RpcError, Throttled
from server.rpc.router import ANONYMOUS, Caller, Context
from web import sections
from web.appkeys import GATHERINGS, REVOCATIONS, SESSIONS
from web.session import COOKIE_NAME, CSRF_FIELD, Session

log = logging.getLogger(__name__)

ACKNOWLEDGE = "alerts.acknowledge"
FRAGMENT_PATH = "/dashboard/sections"


# --- the page ---


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    session = await _session(request)
    if _needs_sign_in(request, session):
        return _redirect(f"/login?next={quote(request.path_qs, safe='')}")
    return await _render_dashboard(request, session, watch=_watch(request), started=started)


async def sections_fragment(request: web.Request) -> web.StreamResponse:
    """The sections alone, for the page's script to swap in place."""
    started = time.perf_counter()
    session = await _session(request)
    if _needs_sign_in(request, session):
        # The script reloads the page on 401, which then redirects to the sign-in form.
        return web.Response(status=401, text="sign in first")
    page = await _page(request, session, watch=_watch(request))
    html = _env(request).get_template("_sections.html").render(page)
    return _html(html, started=started, gathered=page["gather_seconds"])


async def _render_dashboard(
    request: web.Request,
    session: Session | None,
    *,
    watch: bool,
    started: float,
    flash: str | None = None,
    status: int = 200,
) -> web.Response:
    page = await _page(request, session, watch=watch)
    page["flash"] = flash
    html = _env(request).get_template("dashboard.html").render(page)
    return _html(html, status=status, started=started, gathered=page["gather_seconds"])


async def _page(request: web.Request, session: Session | None, *, watch: bool) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    router = request.app[ROUTER]
    operator = session.operator if session is not None else None
    caller = Caller(operator) if operator is not None else ANONYMOUS
    gathered = await request.app[GATHERINGS].run(
        caller.name or "-",
        lambda: sections.gather(router, caller, per_call_seconds=settings.rpc.section_timeout),
    )
    interactive = operator is not None and not watch
    context = _common(request, session) | {
        "interactive": interactive,
        "can_ack": interactive and sections.in_catalogue(router, ACKNOWLEDGE),
        "now": datetime.now(UTC),
        "gather_seconds": gathered.seconds,
    }
    context["sections"] = sections.render(_env(request), gathered, context)
    context["watch"] = watch
    context["refresh_url"] = FRAGMENT_PATH + ("?view=watch" if watch else "")
    return context


# --- acknowledgement ---


async def acknowledge(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    session = await _session(request)
    form = await _form(request)
    if not _csrf_ok(request, session, form):
        return _forbidden(request, session, "The form's security token is missing or invalid.")
    if session is None or session.operator is None:
        return _forbidden(request, session, "Sign in as an operator to acknowledge alerts.")
    alert_id = request.match_info["id"]
    note = form.get("note")
    payload: dict[str, Any] = {"id": alert_id}
    if isinstance(note, str) and note.strip():
        payload["note"] = note.strip()
    ctx = Context(caller=Caller(session.operator), protocol="internal")
    try:
        await request.app[ROUTER].call(ACKNOWLEDGE, payload, ctx)
    except RpcError as exc:
        return await _render_dashboard(
            request,
            session,
            watch=False,
            started=started,
            flash=f"Alert {alert_id} was not acknowledged: {exc.message}",
            status=exc.info.http_status,
        )
    request.app[GATHERINGS].clear()  # the page that follows shows the acknowledgement
    log.info("dashboard: alert %s acknowledged by %s", alert_id, session.operator)
    return _redirect(f"/#alert-{quote(alert_id, safe='')}")


# --- signing in and out ---


async def login_form(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    next_url = _safe_next(request.query.get("next"))
    if session is not None and session.signed_in:
        return _redirect(next_url)
    return _login_page(request, session, next_url=next_url)


async def login(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    form = await _form(request)
    if not _csrf_ok(request, session, form):
        return _forbidden(request, session, "The sign-in form expired or was not ours; try again.")
    next_url = _safe_next(_field(form, "next"))
    auth = request.app[AUTH]
    client = auth.client_of(request)
    try:
        caller = auth.check_token(_field(form, "token").strip(), client)
    except Throttled as exc:
        log.warning("dashboard: sign-in throttled for %s", client)
        wait = f"Too many failed sign-ins from this address; try again in {exc.retry_after} s."
        page = _login_page(request, session, next_url=next_url, error=wait, status=429)
        page.headers["Retry-After"] = exc.retry_after_header
        return page
    if caller is None or caller.name is None:
        log.warning("dashboard: sign-in refused (bad token) from %s", client)
        return _login_page(
            request, session, next_url=next_url, error="That token is not valid.", status=401
        )
    log.info("dashboard: operator %s signed in", caller.name)
    response = _redirect(next_url)
    # A new session id at sign-in: a visitor's id (and its CSRF token) never carries over.
    _set_session(request, response, request.app[SESSIONS].new(caller.name))
    return response


async def logout_form(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is None or not session.signed_in:
        return _redirect("/")
    html = _env(request).get_template("logout.html").render(_common(request, session))
    return _html(html)


async def logout(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    form = await _form(request)
    if not _csrf_ok(request, session, form):
        return _forbidden(request, session, "The form's security token is missing or invalid.")
    if session is not None and session.operator is not None:
        # Server-side too: a copy of the cookie is refused by every instance from now on.
        await request.app[REVOCATIONS].revoke(session)
        log.info("dashboard: operator %s signed out", session.operator)
    response = _redirect("/")
    response.del_cookie(COOKIE_NAME, path="/", samesite="Strict", httponly=True)
    return response


def _login_page(
    request: web.Request,
    session: Session | None,
    *,
    next_url: str,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    # The sign-in form needs a CSRF token too, so a visitor gets an (anonymous) session first.
    visitor = session or request.app[SESSIONS].new(None)
    context = _common(request, visitor) | {
        "next": next_url,
        "error": error,
        "operators_configured": bool(request.app[SETTINGS].auth.tokens),
    }
    html = _env(request).get_template("login.html").render(context)
    response = _html(html, status=status)
    if session is None:
        _set_session(request, response, visitor)
    return response


# --- helpers ---


def _env(request: web.Request) -> Any:
    return aiohttp_jinja2.get_env(request.app)


async def _session(request: web.Request) -> Session | None:
    """The request's session; a malformed, forged, expired or signed-out one reads as none."""
    session = request.app[SESSIONS].decode(request.cookies.get(COOKIE_NAME))
    if session is None or not session.signed_in:
        return session
    return None if await request.app[REVOCATIONS].is_revoked(session) else session


def _needs_sign_in(request: web.Request, session: Session | None) -> bool:
    signed_in = session is not None and session.signed_in
    return request.app[SETTINGS].auth.read_tokens_required and not signed_in


def _watch(request: web.Request) -> bool:
    return request.query.get("view") == "watch"


def _common(request: web.Request, session: Session | None) -> dict[str, Any]:
    codec = request.app[SESSIONS]
    return {
        "operator": session.operator if session is not None else None,
        "csrf": codec.csrf_token(session) if session is not None else None,
        "csrf_field": CSRF_FIELD,
        "refresh_seconds": request.app[SETTINGS].dashboard.refresh_interval,
    }


async def _form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form; one that cannot be read (bytes that are not UTF-8, a broken multipart
    body) reads as empty, so its CSRF check fails with 403 rather than a 500."""
    try:
        return await request.post()
    except ValueError:  # UnicodeDecodeError, malformed multipart
        return MultiDictProxy(MultiDict())


def _csrf_ok(request: web.Request, session: Session | None, form: MultiDictProxy[Any]) -> bool:
    return request.app[SESSIONS].csrf_valid(session, form.get(CSRF_FIELD))


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _safe_next(value: str | None) -> str:
    """Only a path on this site: never ``//host`` or ``/\\host`` (open redirects)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(ch in value for ch in "\r\n\t"):
        return "/"
    return value


def _is_secure(request: web.Request) -> bool:
    if request.secure:
        return True
    if not request.app[SETTINGS].dashboard.trust_forwarded_proto:
        return False
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https"


def _set_session(request: web.Request, response: web.StreamResponse, session: Session) -> None:
    codec = request.app[SESSIONS]
    response.set_cookie(
        COOKIE_NAME,
        codec.encode(session),
        max_age=codec.max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_is_secure(request),
    )


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _forbidden(request: web.Request, session: Session | None, message: str) -> web.Response:
    context = _common(request, session) | {"title": "Forbidden", "message": message}
    html = _env(request).get_template("error.html").render(context)
    return _html(html, status=403)


def _html(
    html: str, *, status: int = 200, started: float | None = None, gathered: float | None = None
) -> web.Response:
    response = web.Response(text=html, status=status, content_type="text/html")
    # Pages carry CSRF tokens and live figures: never from a cache.
    response.headers["Cache-Control"] = "no-store"
    if started is not None:
        timings = []
        if gathered is not None:
            timings.append(f"gather;dur={gathered * 1000:.2f}")
        timings.append(f"total;dur={(time.perf_counter() - started) * 1000:.2f}")
        response.headers["Server-Timing"] = ", ".join(timings)
    return response
