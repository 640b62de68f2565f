"""The headers that protect browsers, on every response: HSTS over HTTPS, and the dashboard's policy.

Owned by ``kaas_api``; ``SecurityHeadersMiddleware`` is installed by ``kaas_api.app.create_app`` as the
outermost of its middlewares, so it sees every response the app sends: pages, 303 redirects, error pages
rendered by the exception handlers, 404s of unknown paths, streamed proxy responses (a pure ASGI
middleware: bodies pass through untouched). Starlette answers an unhandled exception outside every user
middleware, so that 500 is sent from here instead, with the same headers.

- ``Strict-Transport-Security`` on every response that arrived over HTTPS (``kaas api`` with
  ``KAAS_TLS_CERT_FILE``, ``kaas up``): once a browser has seen kaas over HTTPS, it never sends a
  dashboard cookie or a token to it over plain HTTP. Not on plain HTTP, where the header means nothing;
  behind a TLS-terminating proxy, the proxy sets it (or passes the scheme on, see uvicorn's
  ``--proxy-headers``).
- ``DASHBOARD_HEADERS`` on every response under ``DASHBOARD_PREFIX``: a strict Content-Security-Policy (no
  inline script or style, no framing, forms post only to kaas), frame denial for old browsers, no MIME
  sniffing, no cross-origin referrers, and never cached unless the response chose its own caching (the
  static CSS and JS do).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DASHBOARD_PREFIX = "/admin"
HSTS_VALUE = "max-age=31536000"  # a year; no includeSubDomains: other hosts under kaas's name are not ours
DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self';"
    " img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
DASHBOARD_DEFAULT_CACHE_CONTROL = "no-store"


def is_dashboard_path(path: str) -> bool:
    return path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/")


class SecurityHeadersMiddleware:
    """Adds HSTS (HTTPS) and the dashboard's headers (``/admin``) to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        dashboard = is_dashboard_path(scope.get("path", ""))
        if not https and not dashboard:
            await self.app(scope, receive, send)
            return
        started = False

        def add_headers(message: Message) -> None:
            headers = MutableHeaders(scope=message)
            if https:
                headers["Strict-Transport-Security"] = HSTS_VALUE
            if dashboard:
                for name, value in DASHBOARD_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = DASHBOARD_DEFAULT_CACHE_CONTROL

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                add_headers(message)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:
                # Starlette's ServerErrorMiddleware would answer outside of us, without the headers; it
                # sends nothing once a response has started, and still logs the exception we re-raise.
                body = b"Internal Server Error"
                message: Message = {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
                await send_with_headers(message)
                await send({"type": "http.response.body", "body": body})
            raise
