"""``rpc.discover``: an OpenRPC 1.3 document built from the procedures' own pydantic models.

The document is valid against the OpenRPC meta-schema (``tests/test_openrpc.py`` checks it
with the npm package ``@open-rpc/meta-schema``). ``servers[0].url`` must be an absolute URI: it
is built per call from the address the request came to (``Context.origin``, set by the
JSON-RPC adapter from the ``Host`` header, which ``ALLOWED_HOSTS`` checks when set); an
in-process call, which came to no address, gets ``http://localhost/rpc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

import server
from server.errors import CODES, ErrorCode
from server.rpc.cost import Cost
from server.rpc.router import Context, NoInput, Procedure, query

DISCOVER = "rpc.discover"
IN_PROCESS_ORIGIN = "http://localhost"
_REF_PREFIX = "#/components/schemas/"
# Errors every procedure can end in; a procedure lists its own extra ones in ``errors``.
_COMMON: tuple[ErrorCode, ...] = (ErrorCode.BAD_REQUEST, ErrorCode.INTERNAL_SERVER_ERROR)


def _schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF_PREFIX + "{model}", mode="serialization")
    defs.update(schema.pop("$defs", {}))
    return schema


def _params(proc: Procedure, defs: dict[str, Any]) -> list[dict[str, Any]]:
    if proc.input is NoInput:
        return []
    schema = proc.input.model_json_schema(ref_template=_REF_PREFIX + "{model}", mode="validation")
    defs.update(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    return [
        {"name": name, "required": name in required, "schema": prop}
        | ({"description": prop["description"]} if "description" in prop else {})
        for name, prop in schema.get("properties", {}).items()
    ]


def _method(proc: Procedure, defs: dict[str, Any]) -> dict[str, Any]:
    result_schema = _schema(proc.output, defs) if proc.output is not None else {}
    codes = dict.fromkeys([*_COMMON, *proc.errors])
    if proc.kind == "mutation":
        codes[ErrorCode.UNAUTHORIZED] = None
    return {
        "name": proc.path,
        "summary": proc.summary,
        "paramStructure": "by-position" if proc.positional else "by-name",
        "params": _params(proc, defs),
        "result": {"name": "result", "schema": result_schema},
        "errors": [
            {"code": CODES[code].jsonrpc, "message": code.value, "data": {"code": code.value}}
            for code in codes
        ],
        "tags": [{"name": proc.kind}, {"name": proc.path.split(".")[0]}],
    }


def document(procedures: Sequence[Procedure]) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    methods = [_method(proc, defs) for proc in procedures if "jsonrpc" in proc.protocols]
    return {
        "openrpc": "1.3.2",
        "info": {
            "title": "infrawatch",
            "version": server.__version__,
            "description": "Circuit breakers, cache, pools, replicas, partitions and alerts "
            "of a PostgreSQL + Redis application. The same procedures answer on POST /rpc "
            "(JSON-RPC 2.0) and /trpc/<name> (tRPC HTTP).",
        },
        "methods": methods,
        "components": {"schemas": defs},
    }


class OpenRpcDocument(BaseModel):
    """Free-form: the document is described by the OpenRPC meta-schema, not by us."""

    model_config = {"extra": "allow"}


def discover_procedure(procedures: Sequence[Procedure]) -> Procedure:
    """``rpc.discover`` over ``procedures`` and itself; the document is built once, on first use."""
    cache: list[dict[str, Any]] = []

    async def discover(ctx: Context, _: NoInput) -> dict[str, Any]:
        if not cache:
            cache.append(document([*procedures, proc]))
        url = f"{ctx.origin or IN_PROCESS_ORIGIN}/rpc"
        return {**cache[0], "servers": [{"name": "infrawatch", "url": url}]}

    proc = query(
        DISCOVER,
        discover,
        output=OpenRpcDocument,
        summary="This service's OpenRPC 1.3 document.",
        protocols=frozenset({"jsonrpc", "internal"}),
        options=(Cost.CHEAP,),
    )
    return proc
