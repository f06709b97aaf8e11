"""What every request handler needs from the app: its settings, database and OAuth server,
and what bounds its password hashes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from trailmap.accounts.passwords import PasswordHashing
from trailmap.oauth.provider import TrailmapOAuthProvider
from trailmap.settings import Settings

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = ["AppContext", "client_address", "context_of"]


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    db: Database
    oauth: TrailmapOAuthProvider
    # The app's own (app.py), sized by its settings; the default is for embedders.
    passwords: PasswordHashing = field(default_factory=PasswordHashing)


def context_of(request: Request) -> AppContext:
    ctx = request.app.state.trailmap
    assert isinstance(ctx, AppContext)
    return ctx


def client_address(request: Request) -> str | None:
    """The caller's address as the server sees it: the proxy's X-Forwarded-For only when
    uvicorn trusts that proxy (`TRAILMAP_FORWARDED_ALLOW_IPS`, docs/operations.md)."""
    return request.client.host if request.client else None
