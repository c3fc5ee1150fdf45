"""Security headers on what a browser renders: pages, static files and error pages (aiohttp's own
404 and 405 among them); not on the JSON API's answers."""

from __future__ import annotations

from aiohttp import hdrs, web

JSON = "application/json"

# Everything from our own origin, nothing inline: the page's script and styles are static
# files, so no 'unsafe-inline' is needed anywhere.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    )
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # frame-ancestors for browsers that predate CSP level 2.
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    # Pages, their assets and error pages; not the JSON API (no browser renders it: the raw
    # header, not the parsed property, is read) and not an answer with no content (a JSON-RPC
    # notification's 204). The RPC routes' answers do not come here at all
    # (server/exact_routes.py); other routes' JSON answers do.
    if response.status == 204 or response.headers.get(hdrs.CONTENT_TYPE, "").startswith(JSON):
        return
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
