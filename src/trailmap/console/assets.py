"""What a browser asks of any page: the server's icon, and the page it gets for an address
that leads nowhere (an HTML 404 for people; the API keeps its JSON errors)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from trailmap.console.pages import FAVICON_SVG, e, page

__all__ = ["not_found_page", "router", "wants_page"]

router = APIRouter(include_in_schema=False)

# Paths whose clients are programs: they get the JSON error shape whatever they accept.
_PROGRAM_PATHS = ("/api/", "/mcp", "/v1/", "/.well-known/", "/oauth/", "/token", "/register")


@router.get("/favicon.ico")
@router.get("/favicon.svg")
async def favicon() -> Response:
    # SVG under both names: browsers that ask for /favicon.ico by habit draw it as well.
    return Response(
        FAVICON_SVG,
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


def wants_page(request: Request) -> bool:
    """A browser navigating (it accepts HTML) to an address outside the program surfaces."""
    path = request.url.path
    if path == "/mcp" or path.startswith(_PROGRAM_PATHS):
        return False
    return "text/html" in request.headers.get("accept", "")


def not_found_page(request: Request) -> Response | None:
    """The HTML 404 for a browser's unknown address; None for a program, which gets JSON."""
    if not wants_page(request):
        return None
    body = (
        f"<p>There is no page at <code>{e(request.url.path)}</code>.</p>"
        "<p><a href=/console>Your organizations</a> · <a href=/login>Sign in</a> · "
        "<a href=/docs>API reference</a></p>"
    )
    return page("Page not found", body, status=404)
