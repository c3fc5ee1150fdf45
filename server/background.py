"""Stopping the app's background tasks: bounded, and sure to happen.

A plain ``task.cancel(); await task`` can wait forever: a cancellation that lands inside
redis-py's timed reads can be absorbed there (the read's ``asyncio.timeout`` later reports a
plain timeout, and a listening loop reads on). So cancel again until the task ends, within a
bound, and say so if it never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.25


async def stop(task: asyncio.Task[object], *, within: float = 10.0) -> None:
    """Cancel ``task`` and wait for it, cancelling again every 0.25 s, for ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done():
        task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error("background task %s did not stop within %gs", task.get_name(), within)
            return
        await asyncio.wait({task}, timeout=min(RETRY_SECONDS, remaining))
    with contextlib.suppress(asyncio.CancelledError):
        if (exc := task.exception()) is not None:
            log.warning("background task %s ended with %r", task.get_name(), exc)
