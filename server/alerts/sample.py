"""``Sample``: one ``(subject, value)`` figure a rule's extractor reads from a procedure's output.

Its own module, as ``Rule`` has (``rule.py``): the rules of each watched system
(``watched_postgres.py``, ``watched_redis.py``) and the set that gathers them (``rules.py``)
import both, and neither imports the set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sample:
    subject: str
    value: float | None
    detail: str = ""


Extractor = Callable[[Any], Iterable[Sample]]
