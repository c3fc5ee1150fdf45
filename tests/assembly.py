"""The real app with its procedure catalogue edited: stand-ins in place of real procedures, or a
test's own procedures beside them.

``create_app`` builds each resource (breakers, cache, pools, the alert book, ...) and the
catalogue over them; its ``procedures=`` argument replaces the whole catalogue, which suits the
wire adapters' tests only. Where a test needs the real procedures of *this* app (its breakers,
its cache, its database) next to its own, the catalogue is edited as ``create_app`` builds it,
over that app's own resources.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any
from unittest import mock

from aiohttp import web

import server.app
from server.app import create_app
from server.config import Settings
from server.rpc.router import Procedure

# The real catalogue in, the one the app serves out.
Edit = Callable[[list[Procedure]], list[Procedure]]


def replacing(extra: Iterable[Procedure], *, without: Collection[str] = ()) -> Edit:
    """The real catalogue with ``extra`` in place of any procedure of the same path (the others
    added), and the paths in ``without`` left out."""
    extra = list(extra)
    dropped = {p.path for p in extra} | set(without)

    def edit(real: list[Procedure]) -> list[Procedure]:
        return [p for p in real if p.path not in dropped] + extra

    return edit


def create_app_with(settings: Settings, edit: Edit) -> web.Application:
    """``create_app(settings)``, serving ``edit(real catalogue)``: the real procedures are built
    over this app's own resources, as ``create_app`` builds them."""
    build = server.app.catalogue

    def edited(*args: Any, **kwargs: Any) -> list[Procedure]:
        return edit(list(build(*args, **kwargs)))

    with mock.patch.object(server.app, "catalogue", edited):
        return create_app(settings)


def real_catalogue(settings: Settings | None = None) -> list[Procedure]:
    """The catalogue as ``create_app`` builds it (no I/O: nothing is started)."""
    seen: list[Procedure] = []

    def keep(real: list[Procedure]) -> list[Procedure]:
        seen.extend(real)
        return real

    create_app_with(settings or Settings(), keep)
    return seen
