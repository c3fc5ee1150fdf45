"""A call's JSON answer as both wire adapters send it: its headers built once per cache verdict
(``X-Cache``), and the response made without ``web.Response.__init__``'s general work.

On a cached hit the handler runs in a few microseconds, and building its ``web.Response`` was
the largest single part of them (``docs/performance.md``): about 1.8 µs in process, and about
twice that served. ``web.Response(body=..., content_type=..., headers=dict)`` checks text
against body and charset against type, builds a ``CIMultiDict`` from the dict, sets the type
in it and sends the body through its property. An answer here is always encoded bytes with
headers known in advance: ``JsonAnswer`` copies a prebuilt ``CIMultiDict`` and sets the fields
``StreamResponse.__init__`` and ``Response.__init__`` would have set, directly: 0.57 µs against
2.17 µs (docs/performance.md). Those fields are aiohttp's private ones, so tests/test_answer.py
holds the result to what ``web.Response`` builds, field by field and on the wire: an aiohttp
release that adds, renames or drops one fails there rather than on a request.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from multidict import CIMultiDict, CIMultiDictProxy

Headers = CIMultiDictProxy[str]

# What the cache middleware says (``ctx.meta["cache"]``); another verdict is built per answer.
VERDICTS = ("HIT", "MISS", "STALE")


class AnswerHeaders(dict[str | None, Headers]):
    """verdict (or None: the call was not cached) -> the answer's headers, shared and
    read-only: aiohttp copies them into each response."""

    def __init__(self, base: Mapping[str, str]) -> None:
        self._base = dict(base)
        super().__init__({None: _frozen(self._base)})
        for verdict in VERDICTS:
            self[verdict] = _frozen({**self._base, "X-Cache": verdict})

    def __missing__(self, verdict: str | None) -> Headers:
        return _frozen({**self._base, "X-Cache": str(verdict)})


def _frozen(headers: Mapping[str, str]) -> Headers:
    return CIMultiDictProxy(CIMultiDict(headers))


class JsonAnswer(web.Response):
    """``web.Response(body=body, headers=headers)``, status 200, built in a third of the time:
    the fields its ``__init__`` would set, set directly."""

    def __init__(self, body: bytes, headers: Headers) -> None:
        # StreamResponse.__init__ would also pass the status through int() and look its
        # reason up: known here.
        self._state = {}
        self._headers = CIMultiDict(headers)
        self._status = 200
        self._reason = "OK"
        self._body = body
        self._compressed_body = None
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None
