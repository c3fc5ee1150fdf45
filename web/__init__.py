"""The dashboard: server-rendered pages over the same procedures RPC clients call."""

from web.dashboard import setup_dashboard

__all__ = ["setup_dashboard"]
