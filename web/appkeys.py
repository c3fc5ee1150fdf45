"""The dashboard's typed application keys (the service's own live in ``server/appkeys.py``)."""

from __future__ import annotations

from aiohttp import web

from server.rpc.cost import Coalescer
from web.revocations import Revocations
from web.sections import Gathered
from web.session import SessionCodec

SESSIONS = web.AppKey("dashboard_sessions", SessionCodec)
REVOCATIONS = web.AppKey("dashboard_revocations", Revocations)
# One gathering of the page's procedures per caller at a time, shared for RPC_COALESCE_TTL.
GATHERINGS: web.AppKey[Coalescer[Gathered]] = web.AppKey("dashboard_gatherings")
