"""Rendering a scrape: format negotiation, ``_created`` dropped, the event loop never stalled.

prometheus-client's encoders (``generate_latest`` for the text format, its OpenMetrics twin)
render a whole registry in one synchronous call: about 4-10 µs per sample line, so tens of
milliseconds for a few thousand series, all of it on the event loop. Rendering in a worker
thread does not help: the encoders are pure Python and hold the GIL, so the loop thread gets
it back only at the interpreter's switch interval (5 ms), and again after every socket call
it makes (``bench/bench_metrics.py``: 6.3 ms between two turns of the loop at 2,000 series,
against 1.1 ms in slices).

So we render on the loop, in slices: each family is cut into chunks of ``CHUNK`` samples,
each chunk goes through the library's own encoder (its escaping, number formatting and
content types stay authoritative), and we yield to the loop whenever a slice has run for
``SLICE_SECONDS``. A chunk after a family's first has the family's header lines (``# HELP``,
``# TYPE``, ``# UNIT``) cut off, and OpenMetrics' ``# EOF`` is written once at the end.

``_created`` series are dropped here, per render: ``prometheus_client.disable_created_metrics()``
would flip a module global for every registry in the process (tests build many apps), and
the series add a line per labelled counter and histogram child that no dashboard reads.
"""

from __future__ import annotations

import asyncio
import copy
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric

CHUNK = 32
SLICE_SECONDS = 0.00025
GZIP_LEVEL = 6
_EOF = b"# EOF\n"
# Families whose ``<name>_created`` samples are the creation timestamps we drop.
_WITH_CREATED = frozenset({"counter", "histogram", "summary"})
# The text format writes these OpenMetrics-only samples as a separate gauge after the family,
# so such a family cannot be cut into chunks; it is rendered whole (none of ours is one).
_UNCUTTABLE = frozenset({"gaugehistogram"})

Encoder = Callable[..., bytes]


@dataclass(frozen=True, slots=True)
class Exposition:
    """One rendered scrape, ready to send."""

    body: bytes
    content_type: str
    content_encoding: str | None = None
    samples: int = 0


class Slicer:
    """Yields to the event loop once a slice of work has run ``budget`` seconds.

    ``if slicer.due(): await slicer.pause()`` between small pieces of work: a clock read per
    piece, a loop iteration per slice.
    """

    __slots__ = ("budget", "started")

    def __init__(self, budget: float = SLICE_SECONDS) -> None:
        self.budget = budget
        self.started = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.started >= self.budget

    async def pause(self) -> None:
        await asyncio.sleep(0)
        self.started = time.perf_counter()


class _One:
    """A collector of exactly one family: what the library's encoders take."""

    __slots__ = ("family",)

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> list[Metric]:
        return [self.family]


def negotiate(accept: str | None) -> tuple[Encoder, str]:
    """The encoder and content type the ``Accept`` header asks for (OpenMetrics or text)."""
    return choose_encoder(accept or "")


def without_created(family: Metric) -> list[object]:
    if family.type not in _WITH_CREATED:
        return list(family.samples)
    created = family.name + "_created"
    return [s for s in family.samples if s.name != created]


async def render(
    families: Iterable[Metric],
    encode: Encoder,
    content_type: str,
    *,
    slicer: Slicer | None = None,
    chunk: int = CHUNK,
) -> Exposition:
    """Encode ``families`` (a lazy ``collect()`` is fine: collectors then run between slices)."""
    slicer = slicer or Slicer()
    openmetrics = content_type.startswith("application/openmetrics-text")
    parts: list[bytes] = []
    count = 0
    for family in families:
        samples = without_created(family)
        count += len(samples)
        step = len(samples) + 1 if family.type in _UNCUTTABLE else chunk
        header = b""
        for start in range(0, max(len(samples), 1), step):
            piece = copy.copy(family)
            piece.samples = samples[start : start + step]  # type: ignore[assignment]
            out = encode(_One(piece))
            if openmetrics and out.endswith(_EOF):
                out = out[: -len(_EOF)]
            if start == 0:
                header = _header(out)
            elif out.startswith(header):
                out = out[len(header) :]
            parts.append(out)
            if slicer.due():
                await slicer.pause()
    if openmetrics:
        parts.append(_EOF)
    return Exposition(b"".join(parts), content_type, samples=count)


def _header(rendered: bytes) -> bytes:
    """The leading ``# ...`` lines of one rendered family."""
    end = 0
    while rendered.startswith(b"# ", end):
        end = rendered.index(b"\n", end) + 1
    return rendered[:end]


async def compress(exposition: Exposition, accept_encoding: str | None) -> Exposition:
    """gzip the body when the client accepts it. zlib releases the GIL while it deflates, so a
    worker thread keeps the loop free for the whole compression."""
    if not gzip_accepted(accept_encoding or ""):
        return exposition
    # wbits=31: a gzip member (header, deflate stream, CRC) in one call, mtime 0.
    body = await asyncio.to_thread(zlib.compress, exposition.body, GZIP_LEVEL, 31)
    return Exposition(body, exposition.content_type, "gzip", exposition.samples)
