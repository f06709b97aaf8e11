"""Answers for the URLs people (and clients) try before the right one: they name `/mcp`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from trailmap.http.errors import error_response

if TYPE_CHECKING:
    from starlette.responses import Response

    from trailmap.settings import Settings

__all__ = ["near_misses"]

_PATHS = ("/api/mcp", "/api/v1/mcp", "/mcp/mcp", "/sse", "/mcp/sse")


def near_misses(settings: Settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    right = f"{settings.public_url}/mcp"

    async def explain() -> Response:
        return error_response(
            404,
            "NOT_FOUND",
            f"Trailmap's MCP endpoint is {right} (Streamable HTTP; send "
            "'Authorization: Bearer <API key>'). See docs/connect.md.",
        )

    for path in _PATHS:
        router.add_api_route(path, explain, methods=["GET", "POST", "DELETE"])
    return router
