"""``Sample``: one ``(subject, value)`` figure a rule's extractor reads from a procedure's output.

Its own module so that the extractors of each watched system (``watched_redis.py``) and the
rule set that registers them (``rules.py``) both import it, and neither imports the other.
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
