"""The API docs page: Swagger UI served from the package itself, never from a CDN, under a
Content-Security-Policy that lets only this server's own scripts run.

Swagger UI 5 is vendored in `swagger-ui/` (its README says which release and from where): FastAPI
writes OpenAPI 3.1, which the Swagger UI 4 of the PyPI package `swagger-ui-bundle` cannot render."""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

__all__ = ["install_docs"]

_ASSETS = Path(__file__).parent / "swagger-ui"

_STATIC = "/static/swagger-ui"
_INIT = "/docs/swagger-init.js"
_OPENAPI = "/openapi.json"
# Scripts only from this server and none inline, so an injection in the page runs nothing.
# Swagger UI sets inline styles and draws its icons from data: URLs.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# What FastAPI's own page runs inline, as a file; validatorUrl null: no badge fetched from
# swagger.io.
_INIT_JS = f"""window.ui = SwaggerUIBundle({{
  url: {json.dumps(_OPENAPI)},
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
}});
"""


def _page(title: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        f'<link rel="stylesheet" href="{_STATIC}/swagger-ui.css">'
        f'<link rel="icon" href="{_STATIC}/favicon-32x32.png">'
        "</head><body><div id=swagger-ui></div>"
        f'<script src="{_STATIC}/swagger-ui-bundle.js"></script>'
        f'<script src="{_INIT}"></script>'
        "</body></html>"
    )


def install_docs(app: FastAPI) -> None:
    app.mount(_STATIC, StaticFiles(directory=_ASSETS), name="swagger-ui")
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return HTMLResponse(_page("Trailmap API"), headers=_HEADERS)

    @router.get(_INIT)
    async def swagger_init() -> Response:
        return Response(_INIT_JS, media_type="text/javascript", headers=_HEADERS)

    app.include_router(router)
