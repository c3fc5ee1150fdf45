"""The real app with its procedure catalogue edited: stand-ins in place of real procedures, or a
test's own procedures beside them.

``create_app`` builds each resource (breakers, cache, pools, the alert book, ...) and the
catalogue over them; its ``procedures=`` argument replaces the whole catalogue (the wire
adapters' tests) or, given a function, edits the real catalogue built over that app's own
resources (its breakers, its cache, its database): that is what these helpers do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable

from aiohttp import web

from server.app import create_app
from server.config import Settings
from server.rpc.cost import Cost
from server.rpc.router import Procedure

# The real catalogue in, the one the app serves out.
Edit = Callable[[list[Procedure]], list[Procedure]]


def replacing(extra: Iterable[Procedure], *, without: Collection[str] = ()) -> Edit:
    """The real catalogue with ``extra`` in place of any procedure of the same path (the others
    added), and the paths in ``without`` left out."""
    extra = list(extra)
    dropped = {p.path for p in extra} | set(without)

    def edit(real: list[Procedure]) -> list[Procedure]:
        classes = {p.path: p.option(Cost) for p in real}
        kept = [p for p in real if p.path not in dropped]
        return kept + [_with_cost(p, classes.get(p.path)) for p in extra]

    return edit


def _with_cost(proc: Procedure, real: Cost | None) -> Procedure:
    """A stand-in declares the cost class of the procedure it stands in for (the router
    refuses a procedure without one); a test's own procedure, the plain class of its kind."""
    if proc.option(Cost) is not None:
        return proc
    cost = real or (Cost.OPERATOR if proc.kind == "mutation" else Cost.CHEAP)
    return dataclasses.replace(proc, options=(cost, *proc.options))


def create_app_with(settings: Settings, edit: Edit) -> web.Application:
    """``create_app(settings)``, serving ``edit(real catalogue)``: the real procedures are built
    over this app's own resources, as ``create_app`` builds them."""
    return create_app(settings, procedures=edit)


def real_catalogue(settings: Settings | None = None) -> list[Procedure]:
    """The catalogue as ``create_app`` builds it (no I/O: nothing is started)."""
    seen: list[Procedure] = []

    def keep(real: list[Procedure]) -> list[Procedure]:
        seen.extend(real)
        return real

    create_app_with(settings or Settings(), keep)
    return seen
