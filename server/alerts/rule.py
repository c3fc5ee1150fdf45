"""One alert rule as data: what it reads, how it compares, and its message.

``rules.py`` holds the built-in set and evaluates it; ``watched_postgres.py`` and
``watched_redis.py`` declare the rules on the watched systems with ``levels``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from server.alerts.models import Condition, Level
from server.alerts.sample import Extractor

Comparison = Literal[">", ">=", "<", "=="]
_COMPARE: dict[Comparison, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule at one level.

    ``subject`` says what a sample's subject names (a pair, a replica...). ``message`` is a
    ``str.format`` template over ``subject``, ``value``, ``threshold`` and ``detail``.
    ``setting`` is the environment variable holding ``threshold``. ``unavailable_subject``: the
    source raising ``Unavailable`` is itself this condition (Redis down fails the cache stats).
    """

    name: str
    level: Level
    source: str
    extractor: Extractor
    comparison: Comparison
    threshold: float
    subject: str
    message: str
    setting: str | None = None
    unavailable_subject: str | None = None

    def holds(self, value: float) -> bool:
        return _COMPARE[self.comparison](value, self.threshold)

    def condition(self, subject: str, value: float | None, detail: str) -> Condition:
        text = self.message.format(
            subject=subject, value=value, threshold=self.threshold, detail=detail
        )
        return Condition(self.name, subject, self.level, text, value, self.threshold)


def levels(
    name: str,
    source: str,
    extractor: Extractor,
    comparison: Comparison,
    subject: str,
    message: str,
    *levels: tuple[Level, float, str],
) -> list[Rule]:
    """One rule per (level, threshold, setting): a rule name at each of its levels."""
    return [
        Rule(name, level, source, extractor, comparison, threshold, subject, message, setting)
        for level, threshold, setting in levels
    ]
