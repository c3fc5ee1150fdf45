"""``Glob``: Redis's key patterns (``SCAN MATCH``, ``KEYS``), matched the way Redis matches.

One matcher for the service: the cache's in-process tiers drop exactly the keys ``SCAN MATCH``
finds in Redis, and key statistics filter their sample with the same rules. The semantics are
Redis's ``stringmatchlen`` over key bytes: ``*`` any run of bytes, ``?`` one byte, ``[abc]``,
``[a-z]`` (either order), ``[^...]`` negated, ``\\x`` the byte ``x`` (in and out of a class);
``[]`` matches nothing and ``[^]`` any byte. A ``[`` without its ``]`` is refused: Redis reads
it in a way nobody means.

Matching never backtracks into the pattern: a pattern is compiled once into single-byte tests
and stars, and a key is matched with the two-pointer method (resume after the last star), so a
match costs at most (key length) x (pattern length) steps, whatever the pattern.

A caller's pattern goes through ``caller_glob``, which also bounds it: at most
``MAX_PATTERN_BYTES`` bytes and ``MAX_WILDCARDS`` wildcards (``*``, ``?``, ``[...]``). The same
pattern reaches Redis's own matcher (``SCAN MATCH``), which does backtrack; the bounds keep its
work small too.
"""

from __future__ import annotations

MAX_PATTERN_BYTES = 256
MAX_WILDCARDS = 32

# A single-byte test: 256 flags, one per byte value. A star is None.
_Test = bytes | None
_ANY = b"\x01" * 256


class Glob:
    __slots__ = ("_tests", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._tests = _compile(pattern.encode())

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"

    def matches(self, key: str | bytes) -> bool:
        text = key.encode() if isinstance(key, str) else key
        tests = self._tests
        n, m = len(text), len(tests)
        i = j = 0
        star, resume = -1, 0
        while i < n:
            test = tests[j] if j < m else _END
            if test is None:  # a star: first try it empty, remember where to resume
                star, resume = j, i
                j += 1
            elif test is not _END and test[text[i]]:
                i += 1
                j += 1
            elif star >= 0:  # let the last star take one more byte
                resume += 1
                i, j = resume, star + 1
            else:
                return False
        while j < m and tests[j] is None:
            j += 1
        return j == m


_END = b""  # past the pattern's end: matches no byte


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
