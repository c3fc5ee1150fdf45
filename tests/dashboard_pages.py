"""Reading dashboard pages in tests: sections, table rows, form tokens (stdlib parser only)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from aiohttp.test_utils import TestClient

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class SectionText:
    id: str
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)


class _Sections(HTMLParser):
    """Collects each ``<section data-section>``: its text and its table rows (cell texts)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, SectionText] = {}
        self._current: SectionText | None = None
        self._depth = 0
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section" and "data-section" in attributes and self._current is None:
            self._current = SectionText(attributes.get("id") or "")
            self.sections[self._current.id] = self._current
            self._depth = 1
            return
        if self._current is None:
            return
        if tag == "section":
            self._depth += 1
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if self._current is None:
            return
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._current.rows.append(self._row)
            self._row = None
        elif tag == "section":
            self._depth -= 1
            if self._depth == 0:
                self._current.text = " ".join(self._current.text.split())
                self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is None:
            return
        self._current.text += data
        if self._cell is not None:
            self._cell.append(data)


def sections_of(html: str) -> dict[str, SectionText]:
    parser = _Sections()
    parser.feed(html)
    parser.close()
    return parser.sections


def row_of(section: SectionText, first_cell: str) -> list[str]:
    for row in section.rows:
        if row and row[0] == first_cell:
            return row
    raise AssertionError(f"no row starting {first_cell!r} in {section.id}: {section.rows}")


def csrf_in(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


async def sign_in(client: TestClient, token: str) -> str:
    """Sign in through the form as a browser would; the CSRF token of the new session."""
    form = await client.get("/login")
    assert form.status == 200
    response = await client.post(
        "/login",
        data={"token": token, "csrf_token": csrf_in(await form.text()), "next": "/"},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    page = await client.get("/")
    return csrf_in(await page.text())
