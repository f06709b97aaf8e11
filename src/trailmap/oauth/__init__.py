"""OAuth 2.1 for MCP clients: the authorization server behind sign-in, consent and tokens."""

from trailmap.oauth.provider import (
    SCOPE,
    TrailmapAccessToken,
    TrailmapOAuthProvider,
    is_loopback_redirect,
)

__all__ = ["SCOPE", "TrailmapAccessToken", "TrailmapOAuthProvider", "is_loopback_redirect"]
