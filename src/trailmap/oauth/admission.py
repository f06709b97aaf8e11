"""Admitting a bearer credential at a protected resource: an API key, or an OAuth access
token issued for that resource with the scope it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trailmap.accounts import Principal, authenticate
from trailmap.accounts import tokens as token_format
from trailmap.errors import Unauthorized
from trailmap.oauth.provider import SCOPE

if TYPE_CHECKING:
    from trailmap.oauth.provider import TrailmapOAuthProvider
    from trailmap.storage import Database

__all__ = ["InsufficientScope", "admit"]


class InsufficientScope(Exception):
    """A valid token without the scope the resource needs."""


async def admit(
    db: Database,
    oauth: TrailmapOAuthProvider,
    token: str,
    *,
    last_used_resolution_s: int,
) -> Principal:
    """Who `token` speaks for at the MCP resource; `Unauthorized` or `InsufficientScope`."""
    if not token.startswith(token_format.ACCESS_TOKEN_PREFIX):
        return await authenticate(
            db, token, last_used_resolution_s=last_used_resolution_s, mcp=True
        )
    access = await oauth.load_access_token(token)
    if access is None:
        raise Unauthorized(
            "This access token is not valid: it expired, was revoked, or its API key was "
            "deleted. Sign in again."
        )
    if (access.resource or "").rstrip("/") != oauth.resource.rstrip("/"):
        raise Unauthorized(
            f"This access token was issued for {access.resource}, not for {oauth.resource}."
        )
    if SCOPE not in access.scopes:
        raise InsufficientScope(f"This MCP endpoint needs the '{SCOPE}' scope.")
    await oauth.touch(access, last_used_resolution_s)
    return access.principal
