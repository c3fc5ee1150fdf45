"""``FailureThrottle``: how often one client address may fail to authenticate.

A client that presented ``AUTH_FAILURE_LIMIT`` wrong credentials (bearer tokens, the sign-in
form) within ``AUTH_FAILURE_WINDOW`` seconds is refused for the rest of that window before any
token is compared, so guessing costs the guesser time, not us. Per process: each worker and
instance counts its own (a guesser spread over N workers gets N times the limit, still bounded).

Memory is bounded twice: at most ``limit`` failure times per address, and at most
``max_clients`` addresses (the least recently failing one is forgotten first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_CLIENTS = 10_000


class FailureThrottle:
    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or max_clients < 1:
            raise ValueError("a throttle needs limit >= 1, window > 0 and max_clients >= 1")
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until ``client`` may try again, or ``None`` when it may now."""
        failures = self._failures.get(client)
        if failures is None or len(failures) < self.limit:
            return None
        wait = failures[0] + self.window - self._clock()
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))

    def failed(self, client: str) -> None:
        now = self._clock()
        failures = self._failures.pop(client, None)
        if failures is None:
            failures = deque(maxlen=self.limit)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        failures.append(now)
        self._failures[client] = failures  # most recent last
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
