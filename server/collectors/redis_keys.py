"""``key_stats``: how many keys each namespace holds, from a bounded SCAN sample.

The sample is the first ``sample`` keys of an unfiltered SCAN walk. SCAN visits keys in the
order of their hash, which has nothing to do with their names, so the first keys of the walk
are close to a uniform sample of the keyspace: a namespace's share of the sample, times DBSIZE,
estimates its size, with a 95 % margin from the sampling error. ``pattern`` (Redis glob, the
syntax of SCAN's MATCH) is applied to the sample here rather than passed to MATCH: a MATCH walk
returns only the matches, and would not say how much of the keyspace it looked at. When the
walk ends before the sample is full, every key was seen and the counts are exact.

Per sampled key, PTTL says whether it expires; MEMORY USAGE runs on the first
``memory_sample`` of them only (it costs Redis more than a PTTL).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.datastores.redis_gate import BATCH, RedisGate
from server.glob import Glob, caller_glob

MAX_SAMPLE = 100_000
MATCH_CHUNK = 500  # keys matched between two yields to the loop (at most ~70 ms of work)
Z95 = 1.96


class KeyStatsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Only count keys matching this Redis glob (SCAN MATCH syntax: * ? [abc] "
        "[^a-z] and \\ to escape). Unset: every key.",
    )
    sample: int = Field(
        10_000,
        ge=1,
        le=MAX_SAMPLE,
        description="Most keys to read with SCAN. When the keyspace is smaller, every key is "
        "read and the counts are exact.",
    )
    separator: str = Field(
        ":",
        min_length=1,
        max_length=8,
        description="A key's namespace is its name up to the first separator.",
    )
    memory_sample: int = Field(
        50,
        ge=0,
        le=1000,
        description="Run MEMORY USAGE on this many of the sampled keys (0: none).",
    )
    limit: int = Field(
        100, ge=1, le=1000, description="Most namespaces to list, the largest first."
    )

    @field_validator("pattern")
    @classmethod
    def _glob_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            caller_glob(value)  # ValueError with the reason (bad or too costly): invalid params
        return value


class NamespaceStats(BaseModel):
    namespace: str | None = Field(
        description="Key name up to the first separator; null for keys without the separator."
    )
    sampled: int = Field(description="Sampled keys in this namespace.")
    estimated: int = Field(description="Estimated keys in the whole keyspace (exact if exact).")
    margin: int = Field(description="95 % margin of `estimated` (0 when exact).")
    share: float = Field(description="Percentage of the matching sampled keys.")
    with_ttl: int = Field(description="Sampled keys with an expiry.")
    without_ttl: int = Field(description="Sampled keys without an expiry.")
    ttl_share: float | None = Field(
        description="Percentage of this namespace's sampled keys that expire."
    )
    memory_sampled: int = Field(description="Keys of this namespace MEMORY USAGE measured.")
    memory_mean_bytes: float | None = Field(
        description="Mean MEMORY USAGE of those keys; null when none was measured."
    )
    memory_estimated_bytes: int | None = Field(
        description="memory_mean_bytes x estimated; null when none was measured."
    )


class KeyStats(BaseModel):
    redis_configured: bool = Field(description="False when no Redis is configured (all zero).")
    pattern: str | None = Field(description="The glob applied, if any.")
    separator: str = Field(description="The namespace separator used.")
    dbsize: int = Field(description="DBSIZE of the database, read before the walk.")
    examined_keys: int = Field(description="Keys SCAN returned and this answer looked at.")
    sampled_keys: int = Field(description="Examined keys matching the pattern.")
    exact: bool = Field(description="The walk covered every key: counts are exact.")
    coverage: float = Field(description="Percentage of DBSIZE examined (100 when exact).")
    estimated_keys: int = Field(description="Estimated keys matching the pattern in all.")
    estimated_margin: int = Field(description="95 % margin of estimated_keys (0 when exact).")
    with_ttl: int = Field(description="Sampled keys with an expiry.")
    without_ttl: int = Field(description="Sampled keys without an expiry (persistent).")
    vanished: int = Field(description="Sampled keys gone (expired or deleted) before PTTL.")
    ttl_share: float | None = Field(
        description="Percentage of sampled keys that expire; null when none was sampled."
    )
    memory_sampled_keys: int = Field(description="Keys measured with MEMORY USAGE.")
    memory_sampled_bytes: int | None = Field(
        description="Their total MEMORY USAGE; null when none was measured."
    )
    memory_mean_bytes: float | None = Field(description="Mean MEMORY USAGE of those keys.")
    namespaces: list[NamespaceStats] = Field(description="Namespaces, the largest first.")
    namespaces_total: int = Field(description="Distinct namespaces in the sample.")
    truncated: bool = Field(description="More namespaces than `limit`; the largest are listed.")
    warnings: list[str] = Field(description="Commands Redis refused (e.g. MEMORY disabled).")


@dataclass(slots=True)
class _Namespace:
    sampled: int = 0
    with_ttl: int = 0
    without_ttl: int = 0
    memory: list[int] = field(default_factory=list)


async def _matching(keys: list[bytes], glob: Glob) -> list[bytes]:
    """The keys ``glob`` matches, in chunks with the loop let go between them: a sample of
    100,000 long keys against a costly (but bounded) pattern takes a while, and nobody else
    should wait for it."""
    matched: list[bytes] = []
    for start in range(0, len(keys), MATCH_CHUNK):
        matched += [key for key in keys[start : start + MATCH_CHUNK] if glob.matches(key)]
        await asyncio.sleep(0)
    return matched


async def key_stats(gate: RedisGate, inp: KeyStatsInput) -> KeyStats:
    if not gate.configured:
        return _empty(inp)
    dbsize = await gate.dbsize()
    keys, exact = await _sample(gate, inp.sample)
    matched = keys if inp.pattern is None else await _matching(keys, Glob(inp.pattern))
    warnings: list[str] = []
    ttls = await gate.pipeline([("PTTL", k) for k in matched])
    measured = matched[: inp.memory_sample]
    sizes = await gate.pipeline([("MEMORY", "USAGE", k) for k in measured])

    sep = inp.separator.encode()
    spaces: dict[bytes | None, _Namespace] = {}
    vanished = 0
    for i, (key, ttl) in enumerate(zip(matched, ttls, strict=True)):
        head, found, _ = key.partition(sep)
        ns = spaces.setdefault(head if found else None, _Namespace())
        ns.sampled += 1
        if isinstance(ttl, Exception) or ttl == -2:
            vanished += 1
        elif ttl == -1:
            ns.without_ttl += 1
        else:
            ns.with_ttl += 1
        if i < len(sizes):
            size = sizes[i]
            if isinstance(size, Exception):
                warnings.append(f"MEMORY USAGE: {size}")
                sizes = []  # refused once, refused for all: stop reading them
            elif size is not None:
                ns.memory.append(int(size))

    scale = _Scale(dbsize=dbsize, examined=len(keys), exact=exact)
    ordered = sorted(spaces.items(), key=lambda kv: (-kv[1].sampled, _name(kv[0]) or ""))
    with_ttl = sum(ns.with_ttl for ns in spaces.values())
    without_ttl = sum(ns.without_ttl for ns in spaces.values())
    memory = [size for ns in spaces.values() for size in ns.memory]
    return KeyStats(
        redis_configured=True,
        pattern=inp.pattern,
        separator=inp.separator,
        dbsize=dbsize,
        examined_keys=len(keys),
        sampled_keys=len(matched),
        exact=exact,
        coverage=scale.coverage,
        estimated_keys=scale.estimate(len(matched)),
        estimated_margin=scale.margin(len(matched)),
        with_ttl=with_ttl,
        without_ttl=without_ttl,
        vanished=vanished,
        ttl_share=_percent(with_ttl, with_ttl + without_ttl),
        memory_sampled_keys=len(memory),
        memory_sampled_bytes=sum(memory) if memory else None,
        memory_mean_bytes=round(sum(memory) / len(memory), 1) if memory else None,
        namespaces=[_namespace(name, ns, len(matched), scale) for name, ns in ordered][: inp.limit],
        namespaces_total=len(spaces),
        truncated=len(spaces) > inp.limit,
        warnings=warnings[:10],
    )


async def _sample(gate: RedisGate, size: int) -> tuple[list[bytes], bool]:
    """The first ``size`` distinct keys of a SCAN walk, and whether the walk ended.

    In Cluster mode the walk goes over each primary in turn. A key's node follows from the
    hash of its name, as its place in one node's walk does, so the sample stays close to
    uniform (hash tags aside, which put a namespace on one node on purpose)."""
    seen: dict[bytes, None] = {}  # ordered, and SCAN may return a key twice while rehashing
    count = min(BATCH, size)
    complete = True
    for node in await gate.scan_nodes():
        cursor = 0
        # Without MATCH every call returns about COUNT keys; the bound only guards the odd case.
        for _ in range(math.ceil(size / count) * 4 + 10):
            cursor, keys = await gate.scan(cursor, count, node)
            seen.update(dict.fromkeys(keys))
            if cursor == 0 or len(seen) >= size:
                break
        if cursor != 0:
            complete = False
        if len(seen) >= size:
            break
    keys = list(seen)
    return keys[:size], complete and len(keys) <= size


@dataclass(frozen=True, slots=True)
class _Scale:
    dbsize: int
    examined: int
    exact: bool

    @property
    def coverage(self) -> float:
        if self.exact or self.dbsize == 0:
            return 100.0
        return round(min(100.0, 100 * self.examined / self.dbsize), 2)

    def estimate(self, count: int) -> int:
        if self.exact or self.examined == 0:
            return count
        return round(count * self.dbsize / self.examined)

    def margin(self, count: int) -> int:
        """95 % half-width of ``estimate(count)``: a proportion's standard error, with the
        finite population correction (sampling without replacement)."""
        n, total = self.examined, max(self.dbsize, self.examined)
        if self.exact or n == 0 or total <= 1:
            return 0
        p = count / n
        fpc = (total - n) / (total - 1)
        return math.ceil(Z95 * total * math.sqrt(p * (1 - p) / n * fpc))


def _namespace(name: bytes | None, ns: _Namespace, matched: int, scale: _Scale) -> NamespaceStats:
    estimated = scale.estimate(ns.sampled)
    mean = sum(ns.memory) / len(ns.memory) if ns.memory else None
    return NamespaceStats(
        namespace=_name(name),
        sampled=ns.sampled,
        estimated=estimated,
        margin=scale.margin(ns.sampled),
        share=_percent(ns.sampled, matched) or 0.0,
        with_ttl=ns.with_ttl,
        without_ttl=ns.without_ttl,
        ttl_share=_percent(ns.with_ttl, ns.with_ttl + ns.without_ttl),
        memory_sampled=len(ns.memory),
        memory_mean_bytes=round(mean, 1) if mean is not None else None,
        memory_estimated_bytes=round(mean * estimated) if mean is not None else None,
    )


def _name(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="backslashreplace")


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def _empty(inp: KeyStatsInput) -> KeyStats:
    return KeyStats(
        redis_configured=False,
        pattern=inp.pattern,
        separator=inp.separator,
        dbsize=0,
        examined_keys=0,
        sampled_keys=0,
        exact=True,
        coverage=100.0,
        estimated_keys=0,
        estimated_margin=0,
        with_ttl=0,
        without_ttl=0,
        vanished=0,
        ttl_share=None,
        memory_sampled_keys=0,
        memory_sampled_bytes=None,
        memory_mean_bytes=None,
        namespaces=[],
        namespaces_total=0,
        truncated=False,
        warnings=[],
    )
