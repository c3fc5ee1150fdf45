"""Job functions the real RQ and Celery workers of ``tests/test_queue_libraries.py`` run: RQ
imports them by dotted path, as an application's worker would."""

from __future__ import annotations


def double(n: int) -> int:
    return 2 * n


def explode() -> None:
    raise RuntimeError("this job fails on purpose")
