"""``Glob``: Redis's key patterns (``SCAN MATCH``, ``KEYS``), matched the way Redis matches.

One matcher for the service: the cache's in-process tiers drop exactly the keys ``SCAN MATCH``
finds in Redis, and key statistics filter their sample with the same rules. The semantics are
Redis's ``stringmatchlen`` over key bytes: ``*`` any run of bytes, ``?`` one byte, ``[abc]``,
``[a-z]`` (either order), ``[^...]`` negated, ``\\x`` the byte ``x`` (in and out of a class);
``[]`` matches nothing and ``[^]`` any byte. A ``[`` without its ``]`` is refused: Redis reads
it in a way nobody means.

Matching never backtracks across a star. A pattern is compiled once into single-byte tests and
stars; the stars cut it into fixed-length segments, each compiled into a regular expression of
single-byte tests (no quantifier, so no backtracking inside it either). A key then matches when
the first segment matches at its start, the last at its end, and each middle segment is found,
leftmost, after the one before: with fixed-length segments the leftmost place is always the
best one, so no earlier choice is ever revisited. A match costs at most (key length) x
(segment length) steps of the regex engine (C), and usually one ``find``-like scan; the
issue's ``*******!`` over a 200-byte key is microseconds, where backtracking took seconds.

A caller's pattern goes through ``caller_glob``, which also bounds it: at most
``MAX_PATTERN_BYTES`` bytes and ``MAX_WILDCARDS`` wildcards (``*``, ``?``, ``[...]``). The same
pattern reaches Redis's own matcher (``SCAN MATCH``), which does backtrack; the bounds keep its
work small too.
"""

from __future__ import annotations

import re

MAX_PATTERN_BYTES = 256
MAX_WILDCARDS = 32

# A single-byte test: 256 flags, one per byte value. A star is None.
_Test = bytes | None
_ANY = b"\x01" * 256


class Glob:
    __slots__ = ("_head", "_middle", "_minimum", "_stars", "_tail", "_whole", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        tests = _compile(pattern.encode())
        segments: list[list[bytes]] = [[]]
        for test in tests:
            if test is None:
                segments.append([])
            else:
                segments[-1].append(test)
        self._stars = len(segments) > 1
        self._minimum = sum(len(segment) for segment in segments)
        self._whole = _regex(segments[0])
        self._head = (_regex(segments[0]), len(segments[0]))
        self._tail = (_regex(segments[-1]), len(segments[-1]))
        self._middle = [_regex(segment) for segment in segments[1:-1]]

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"

    def matches(self, key: str | bytes) -> bool:
        text = key.encode() if isinstance(key, str) else key
        n = len(text)
        if n < self._minimum:
            return False
        if not self._stars:
            return self._whole.fullmatch(text) is not None
        head, head_length = self._head
        if head_length and head.match(text) is None:
            return False
        tail, tail_length = self._tail
        end = n - tail_length  # the middle segments must end before the tail begins
        position = head_length
        for segment in self._middle:
            found = segment.search(text, position, end)
            if found is None:
                return False
            position = found.end()
        return tail_length == 0 or tail.fullmatch(text, end) is not None


def caller_glob(pattern: str) -> Glob:
    """``Glob(pattern)`` for a pattern a caller sent; ``ValueError`` (invalid params) when it
    is longer than ``MAX_PATTERN_BYTES`` or holds more than ``MAX_WILDCARDS`` wildcards."""
    size = len(pattern.encode(errors="surrogatepass"))
    if size > MAX_PATTERN_BYTES:
        raise ValueError(f"the pattern is {size} bytes long; at most {MAX_PATTERN_BYTES}")
    wildcards = _wildcards(pattern.encode(errors="surrogatepass"))
    if wildcards > MAX_WILDCARDS:
        raise ValueError(
            f"the pattern holds {wildcards} wildcards (* ? [...]); at most {MAX_WILDCARDS}"
        )
    return Glob(pattern)


def _wildcards(src: bytes) -> int:
    count, i, n = 0, 0, len(src)
    while i < n:
        c = src[i]
        if c == 0x5C:  # \x: a literal
            i += 2
            continue
        if c == 0x5B:  # [: one wildcard up to its ]
            count += 1
            i += 1
            while i < n and src[i] != 0x5D:
                i += 2 if src[i] == 0x5C else 1
        elif c in (0x2A, 0x3F):  # * ?
            count += 1
        i += 1
    return count


def _compile(src: bytes) -> list[_Test]:
    tests: list[_Test] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == 0x2A:  # *
            if not tests or tests[-1] is not None:  # a run of stars is one star
                tests.append(None)
            i += 1
        elif c == 0x3F:  # ?
            tests.append(_ANY)
            i += 1
        elif c == 0x5B:  # [
            test, i = _class(src, i + 1)
            tests.append(test)
        else:
            if c == 0x5C and i + 1 < n:  # \x: the byte x; a trailing \ is itself
                i += 1
            tests.append(_one(src[i]))
            i += 1
    return tests


def _regex(tests: list[bytes]) -> re.Pattern[bytes]:
    """Single-byte tests in a row as a regular expression (``re.S``: ``.`` takes any byte)."""
    return re.compile(b"".join(_byte_class(test) for test in tests), re.S)


def _byte_class(flags: bytes) -> bytes:
    members = [b for b in range(256) if flags[b]]
    if not members:
        return b"(?!)"  # [] matches no byte
    if len(members) == 256:
        return b"."
    if len(members) == 1:
        return re.escape(bytes(members))
    ranges = []
    low = previous = members[0]
    for b in [*members[1:], -1]:
        if b != previous + 1:
            ranges.append(
                b"\\x%02x-\\x%02x" % (low, previous) if low != previous else b"\\x%02x" % low
            )
            low = b
        previous = b
    return b"[" + b"".join(ranges) + b"]"


def _one(byte: int) -> bytes:
    flags = bytearray(256)
    flags[byte] = 1
    return bytes(flags)


def _class(src: bytes, i: int) -> tuple[bytes, int]:
    """``[...]`` from just after the ``[``; returns its test and the index after ``]``."""
    n = len(src)
    negate = i < n and src[i] == 0x5E  # ^
    i += negate
    flags = bytearray(256)
    while True:
        if i >= n:
            raise ValueError(f"pattern {src.decode(errors='replace')!r} has an unterminated [")
        c = src[i]
        if c == 0x5D:  # ]
            break
        if c == 0x5C and i + 1 < n:  # \x
            flags[src[i + 1]] = 1
            i += 2
        elif i + 2 < n and src[i + 1] == 0x2D:  # a-z, either order
            low, high = sorted((c, src[i + 2]))
            flags[low : high + 1] = b"\x01" * (high - low + 1)
            i += 3
        else:
            flags[c] = 1
            i += 1
    if negate:
        flags = bytearray(1 - f for f in flags)
    return bytes(flags), i + 1
