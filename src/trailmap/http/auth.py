"""Resolving the caller: `Authorization: Bearer <key>` into a `Principal`, once per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from trailmap.accounts import Principal, authenticate
from trailmap.accounts.audit import Actor
from trailmap.errors import Unauthorized
from trailmap.http.context import client_address, context_of

__all__ = ["CurrentPrincipal", "bearer_token", "current_principal", "key_actor"]

_QUERY_SECRETS = ("api_key", "apikey", "key", "token", "access_token")


def bearer_token(request: Request) -> str | None:
    if any(name in request.query_params for name in _QUERY_SECRETS):
        # A key in a URL ends up in logs and browser history: refuse it outright.
        raise Unauthorized(
            "Send the API key in the Authorization header ('Authorization: Bearer <key>'), "
            "never in the query string; consider this key exposed and rotate it.",
            error="invalid_request",
        )
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "The Authorization header must be 'Bearer <key>'.", error="invalid_request"
        )
    return token.strip()


async def current_principal(request: Request) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    ctx = context_of(request)
    principal = await authenticate(
        ctx.db,
        bearer_token(request),
        last_used_resolution_s=ctx.settings.last_used_resolution_seconds,
    )
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def key_actor(request: Request, principal: Principal) -> Actor:
    """The caller as the audit log names them: the key, and its person when it has one."""
    return Actor(
        f"API key {principal.key_name}", client=client_address(request), user_id=principal.user_id
    )
