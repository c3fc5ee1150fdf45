"""Statement text with its literals taken out, for when ``pg_stat_statements`` cannot name it.

``pg_stat_activity.query`` holds the statement as the client sent it, values included (an
e-mail address, a token in a WHERE clause). Before such text leaves infrawatch, every string,
dollar-quoted string and number becomes ``?`` and comments are dropped; identifiers (quoted or
not) and ``$n`` parameters stay, so the statement is still recognisable.
"""

from __future__ import annotations

import re

_TOKENS = re.compile(
    r"""
    (?P<ident>"(?:[^"]|"")*"?)                                  # quoted identifier: kept
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))                      # comment: dropped
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?(?:\$(?P=tag)?\$|\Z))
  | (?P<string>(?:[EeBbXxNn]|[Uu]&)?'(?:[^']|'')*'?)            # unterminated when cut short
  | (?P<param>\$\d+)                                            # a parameter: kept
  | (?P<number>(?<![\w$.])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|(?<![\w$.])\.\d+(?:[eE][+-]?\d+)?)
    """,
    re.S | re.X,
)
_SPACES = re.compile(r"\s+")


def strip_literals(sql: str) -> str:
    """``sql`` with every literal replaced by ``?`` and comments removed, whitespace folded."""

    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind in ("ident", "param"):
            return match.group(0)
        if kind == "comment":
            return " "
        return "?"

    return _SPACES.sub(" ", _TOKENS.sub(replace, sql)).strip()
