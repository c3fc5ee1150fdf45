"""Every typed key the aiohttp application holds: a str key warns, and tests fail on warnings."""

from __future__ import annotations

from aiohttp import web

from server.auth import Authenticator
from server.config import Settings
from server.rpc.router import Router
from server.services import Services

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
ROUTER = web.AppKey("router", Router)
AUTH = web.AppKey("auth", Authenticator)
