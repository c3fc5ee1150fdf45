"""Jinja filters that turn procedure figures into text for people.

Every filter shows a missing figure (``None``: no data yet) as an em dash, never as a zero:
a zero on the page must have been measured.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

MISSING = "—"


def number(value: Any, digits: int = 1) -> str:
    if value is None or isinstance(value, bool):
        return MISSING if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def percent(value: Any) -> str:
    return MISSING if value is None else f"{float(value):.1f} %"


def millis(value: Any) -> str:
    if value is None:
        return MISSING
    ms = float(value)
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:,.1f} ms"


def seconds(value: Any) -> str:
    if value is None:
        return MISSING
    s = float(value)
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def size(value: Any) -> str:
    """Bytes in IEC units (KiB, MiB, ...)."""
    if value is None:
        return MISSING
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def timestamp(value: Any) -> datetime | None:
    """An ISO 8601 string (as procedures return them) or a datetime, in UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clock(value: Any) -> str:
    moment = timestamp(value)
    return MISSING if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: Any) -> str:
    moment = timestamp(value)
    return "" if moment is None else moment.astimezone(UTC).isoformat()


def ago(value: Any, now: datetime | None = None) -> str:
    moment = timestamp(value)
    if moment is None:
        return MISSING
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    if delta < -1:
        return f"in {seconds(-delta)}"
    if delta < 1:
        return "just now"
    return f"{seconds(delta)} ago"


def label(value: Any) -> str:
    """``in_use`` / ``hit_rate`` -> ``in use`` / ``hit rate``: a field name as a heading."""
    return str(value).replace("_", " ")


def pathpart(value: Any) -> str:
    """One URL path segment: every reserved character escaped, ``/`` included."""
    return quote(str(value), safe="")


# Small HTML pieces the templates use in every row. Functions rather than Jinja macros: a
# macro call costs tens of microseconds, and a page of 50 alerts makes hundreds of them.
# Every value is escaped before it is spliced in (f-strings: Markup.format is several times
# slower).

_DASH = Markup('<span class="muted">—</span>')


def state(text: Any, kind: Any) -> Markup:
    """A badge: ``kind`` picks its colours (ok, warning, critical, bad, muted)."""
    return Markup(f'<span class="badge badge-{escape(kind)}">{escape(label(text))}</span>')  # noqa: S704


def yesno(value: Any, good: bool = True) -> Markup:
    """yes/no, green when it is the ``good`` answer; a dash when unknown."""
    if value is None:
        return _DASH
    kind = "ok" if value == good else "bad"
    return Markup('<span class="badge badge-{}">{}</span>').format(kind, "yes" if value else "no")


def when(value: Any) -> Markup:
    """A moment as "3.2 min ago", its UTC time in the title and a machine-readable datetime."""
    moment = timestamp(value)
    if moment is None:
        return _DASH
    return Markup(  # noqa: S704 - every part escaped
        f'<time datetime="{escape(iso(moment))}" title="{escape(clock(moment))}">'
        f"{escape(ago(moment))}</time>"
    )


GLOBALS = {"state": state, "yesno": yesno, "when": when}


def rows(value: Any) -> bool:
    """Jinja test: a non-empty list of mappings, best shown as a table."""
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, dict) for item in value)
    )


TESTS = {"rows": rows}

FILTERS = {
    "number": number,
    "percent": percent,
    "millis": millis,
    "seconds": seconds,
    "size": size,
    "clock": clock,
    "iso": iso,
    "ago": ago,
    "label": label,
    "pathpart": pathpart,
}
