"""The API's documentation pages, served with no internet: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

Owned by ``kaas_api``; ``create_app`` calls ``mount_docs``. FastAPI's own pages load their scripts and styles
from a CDN, so on an air-gapped network (our users' normal case: a private cloud) they stay blank. Here the
same pages (FastAPI's ``get_swagger_ui_html`` / ``get_redoc_html``) load their assets from kaas itself,
under ``/docs/assets``: the files of the ``fastapi-offline`` package, a kept copy of the Swagger UI and
ReDoc bundles, so nothing is copied into this repository by hand. ReDoc is told not to fetch Google Fonts,
and both pages carry a Content-Security-Policy that lets them load nothing but kaas's own (the ReDoc
bundle would otherwise fetch its vendor's logo from a CDN): an air-gapped browser asks nothing outside.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_PATH = "/docs/assets"
# both pages start with an inline script (FastAPI's); ReDoc also builds web workers from blobs
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'"
)


def mount_docs(app: FastAPI, *, docs_path: str = "/docs", redoc_path: str = "/redoc") -> None:
    """Serve the two pages and their assets on ``app`` (create it with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    # plain routes, as FastAPI adds its own docs pages: they are no API operations
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _confined(
            get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            )
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _confined(
            get_redoc_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
                with_google_fonts=False,
            )
        )

    app.add_route(docs_path, swagger_ui, include_in_schema=False)
    app.add_route(redoc_path, redoc, include_in_schema=False)


def _confined(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page
