"""The dashboard's typed application keys (the service's own live in ``server/appkeys.py``)."""

from __future__ import annotations

from aiohttp import web

from web.revocations import Revocations
from web.session import SessionCodec

SESSIONS = web.AppKey("dashboard_sessions", SessionCodec)
REVOCATIONS = web.AppKey("dashboard_revocations", Revocations)
