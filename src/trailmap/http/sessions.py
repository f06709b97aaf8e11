"""Browser sessions: the session cookie, the signed-in user it names, form bodies and the
CSRF token every form carries (docs/internals.md, console)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from trailmap.accounts.signin import csrf_token, same_token, session_user
from trailmap.errors import PayloadTooLarge
from trailmap.http.context import context_of

__all__ = [
    "MAX_FORM_BYTES",
    "SESSION_COOKIE",
    "SignedInUser",
    "check_csrf",
    "clear_cookie",
    "cookie_name",
    "form_token_ok",
    "give_form_token",
    "new_csrf",
    "read_form",
    "set_cookie",
    "signed_in",
]

MAX_FORM_BYTES: Final = 16 * 1024
SESSION_COOKIE: Final = "trailmap_session"


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each), refusing one over 16 KiB."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise PayloadTooLarge("The form is larger than any of Trailmap's forms can be.")
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def _secure(request: Request) -> bool:
    return context_of(request).settings.public_url.startswith("https://")


def cookie_name(request: Request, name: str) -> str:
    """`__Host-<name>` behind https: Secure, host-only, path /."""
    return f"__Host-{name}" if _secure(request) else name


def set_cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    max_age: int | None,
    samesite: str = "lax",
) -> None:
    response.set_cookie(
        cookie_name(request, name),
        value,
        max_age=max_age,
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite=samesite,  # type: ignore[arg-type]
    )


def clear_cookie(request: Request, response: Response, name: str, *, samesite: str = "lax") -> None:
    """Delete a cookie with the attributes it was set with: a browser ignores a `__Host-`
    cookie's deletion that lacks `Secure`."""
    set_cookie(request, response, name, "", max_age=0, samesite=samesite)


@dataclass(frozen=True, slots=True)
class SignedInUser:
    id: str
    email: str
    csrf: str  # the token this session's forms carry


async def signed_in(request: Request) -> SignedInUser | None:
    session = request.cookies.get(cookie_name(request, SESSION_COOKIE))
    user = await session_user(context_of(request).db, session)
    if user is None or session is None:
        return None
    return SignedInUser(id=user["id"], email=user["email"], csrf=csrf_token(session))


def check_csrf(user: SignedInUser, form: dict[str, str]) -> bool:
    return same_token(form.get("csrf", ""), user.csrf)


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def give_form_token(request: Request, response: Response, cookie: str, token: str) -> None:
    """For a form shown to someone not signed in: the double-submit CSRF token's cookie
    (strict: no other site's form may send it back)."""
    set_cookie(request, response, cookie, token, max_age=3600, samesite="strict")


def form_token_ok(request: Request, form: dict[str, str], cookie: str) -> bool:
    """Whether a form posted by someone not signed in carries its cookie's CSRF token."""
    expected = request.cookies.get(cookie_name(request, cookie), "")
    return bool(expected) and same_token(form.get("csrf", ""), expected)
