"""The values settings hold, each parsed from the text of one environment variable (or list
entry), and the error that names the bad variables.

Parsers raise ``ValueError`` with what was wrong and what was expected; the slices
(``server/config/slices.py``) put the variable's name in front.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

# Re-exported: the config's callers mask with these.
from server.redaction import mask_secrets as mask_secrets
from server.redaction import mask_url as mask_url

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


class ConfigError(ValueError):
    """One line per bad variable: ``NAME: what was wrong; expected ...``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class TableName:
    """A table name from configuration, checked to be ``[schema.]identifier``."""

    schema: str | None
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        parts = text.strip().split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError(f"{text!r} is not a table name ([schema.]identifier)")
        return cls(parts[0], parts[1]) if len(parts) == 2 else cls(None, parts[0])

    @property
    def quoted(self) -> str:
        """The name ready to splice into SQL: every part double-quoted."""
        name = f'"{self.name}"'
        return f'"{self.schema}".{name}' if self.schema else name

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True, slots=True)
class PartitionPair:
    """One entry of ``PARTITION_PAIRS``: ``legacy_table:partitioned_table``."""

    legacy: TableName
    partitioned: TableName

    @classmethod
    def parse(cls, text: str) -> PartitionPair:
        legacy, sep, partitioned = text.partition(":")
        if not sep:
            raise ValueError(f"{text!r} is not legacy_table:partitioned_table")
        return cls(TableName.parse(legacy), TableName.parse(partitioned))

    @property
    def name(self) -> str:
        return f"{self.legacy}:{self.partitioned}"


QUEUE_KINDS = ("bullmq", "rq", "celery")


@dataclass(frozen=True, slots=True)
class QueueName:
    """One entry of ``QUEUE_NAMES``: ``kind:name``, or a plain ``name`` whose kind is detected.

    ``bullmq:prefix:name`` names a BullMQ queue under a key prefix other than ``bull``
    (BullMQ forbids ``:`` in queue names, so the last segment is always the name).
    """

    kind: str | None  # one of QUEUE_KINDS; None: detected from the keys present
    name: str
    prefix: str | None = None  # BullMQ key prefix; None means BullMQ's default "bull"

    @classmethod
    def parse(cls, text: str) -> QueueName:
        head, sep, rest = text.partition(":")
        kind = head.lower()
        if not sep or kind not in QUEUE_KINDS:
            return cls(None, text)  # a plain name, ':' and all
        if not rest:
            raise ValueError(f"{text!r} names no queue after {head}:")
        if kind == "bullmq" and ":" in rest:
            prefix, _, name = rest.rpartition(":")
            if not prefix or not name:
                raise ValueError(f"{text!r} is not bullmq:[prefix:]name")
            return cls(kind, name, prefix)
        return cls(kind, rest)

    def __str__(self) -> str:
        if self.kind is None:
            return self.name
        if self.prefix is not None:
            return f"{self.kind}:{self.prefix}:{self.name}"
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not host:port")
        try:
            number = int(port)
        except ValueError:
            raise ValueError(f"{port!r} is not an integer") from None
        if not 0 < number < 65536:
            raise ValueError(f"{text!r} has a port out of range")
        return cls(host, number)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class BasicAuth(NamedTuple):
    """``user:password`` (``METRICS_BASIC_AUTH``); a tuple, so ``user, password = auth`` works."""

    user: str
    password: str

    @classmethod
    def parse(cls, text: str) -> BasicAuth:
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise ValueError("expected user:password")
        return cls(user, password)

    def __repr__(self) -> str:
        return f"BasicAuth(user={self.user!r}, password='***')"
