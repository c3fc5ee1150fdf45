"""``JsonAnswer`` is the ``web.Response`` aiohttp would build, field by field, and goes out on
the wire the same; ``AnswerHeaders`` gives each answer its own copy of the headers."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.wire.answer import AnswerHeaders, JsonAnswer

BODY = orjson.dumps({"jsonrpc": "2.0", "result": {"ok": True}, "id": 7})
BASE = {"Content-Type": "application/json", "Vary": "trpc-accept, accept"}


def fields(response: web.Response) -> dict[str, Any]:
    """Everything the constructor set, with the headers as a plain list of pairs."""
    found = dict(vars(response))
    found["_headers"] = list(response.headers.items())
    return found


def test_a_json_answer_has_the_fields_web_response_gives_it() -> None:
    # An aiohttp release that sets a new field in Response.__init__ (or StreamResponse's)
    # fails here, not on a request.
    headers = AnswerHeaders(BASE)
    for verdict in (None, "HIT", "MISS", "STALE", "SOMETHING-ELSE"):
        made = JsonAnswer(BODY, headers[verdict])
        expected = web.Response(body=BODY, headers=headers[verdict])
        assert fields(made) == fields(expected)
        assert type(made).__mro__[1:] == web.Response.__mro__


def test_answer_headers_carry_the_verdict_and_are_copied_per_answer() -> None:
    headers = AnswerHeaders({"Content-Type": "application/json"})
    assert dict(headers[None]) == {"Content-Type": "application/json"}
    assert dict(headers["HIT"]) == {"Content-Type": "application/json", "X-Cache": "HIT"}
    assert headers["odd"]["X-Cache"] == "odd"  # a verdict not known in advance is built
    first, second = JsonAnswer(BODY, headers["HIT"]), JsonAnswer(BODY, headers["HIT"])
    first.headers["X-Extra"] = "1"  # a receiver may change one answer's headers ...
    assert "X-Extra" not in second.headers  # ... and no other answer's
    assert "X-Extra" not in headers["HIT"]


async def test_a_json_answer_goes_out_as_web_response_does() -> None:
    headers = AnswerHeaders(BASE)

    async def ours(_: web.Request) -> web.StreamResponse:
        return JsonAnswer(BODY, headers["HIT"])

    async def aiohttps(_: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY, headers=headers["HIT"])

    app = web.Application()
    app.router.add_get("/ours", ours)
    app.router.add_get("/aiohttp", aiohttps)
    async with TestClient(TestServer(app)) as client:
        answers = []
        for path in ("/ours", "/aiohttp"):
            response = await client.get(path, headers={"Accept-Encoding": "identity"})
            seen = {k: v for k, v in response.headers.items() if k != "Date"}
            answers.append((response.status, response.reason, seen, await response.read()))
    assert answers[0] == answers[1]
    status, reason, seen, body = answers[0]
    assert (status, reason, body) == (200, "OK", BODY)
    assert seen["X-Cache"] == "HIT" and seen["Content-Length"] == str(len(BODY))
