"""What every console page shares: the layout, headers, forms, cookies and the signed-in user.

Pages are plain HTML forms. The only script is the copy button's, served by this server
(`/console/copy.js`); the Content-Security-Policy allows nothing else and no framing.
Cookies are HttpOnly and SameSite, and behind https they are `Secure` with the `__Host-`
prefix (so no other host or path can plant or read them).
"""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from trailmap.accounts.signin import csrf_token, same_token, session_user
from trailmap.api.context import context_of
from trailmap.errors import PayloadTooLarge

__all__ = [
    "SignedInUser",
    "check_csrf",
    "clear_cookie",
    "cookie_name",
    "e",
    "form_csrf",
    "local_path",
    "page",
    "read_form",
    "see_other",
    "set_cookie",
    "signed_in",
    "to_login",
]

MAX_FORM_BYTES: Final = 16 * 1024
SESSION_COOKIE: Final = "trailmap_session"
_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
label{display:block;margin-top:1rem;font-weight:600}
input,select{width:100%;max-width:30rem;padding:.5rem;font:inherit;box-sizing:border-box}
button{margin-top:1rem;margin-right:.5rem;padding:.6rem 1.2rem;font:inherit}
.error{color:#a00}.muted{color:#666}nav{margin-bottom:1rem}nav a{margin-right:1rem}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ddd;font-size:.92rem}
code,pre{background:#f4f4f4;padding:.2rem .4rem;word-break:break-all;white-space:pre-wrap}
.inline{display:inline}.inline button{margin:0}
"""
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; "
    "form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
)


def e(text: object) -> str:
    """Text escaped for HTML, quotes included."""
    return html.escape(str(text), quote=True)


def page(
    title: str,
    body: str,
    *,
    status: int = 200,
    nav: str = "",
    script: bool = False,
    form_targets: str = "",
) -> HTMLResponse:
    """A whole page. `form_targets` widens form-action for a page whose form redirects on."""
    scripts = "<script src=/console/copy.js defer></script>" if script else ""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        f"<title>{e(title)} · Trailmap</title><style>{_STYLE}</style>{scripts}</head>"
        f"<body>{nav}<h1>{e(title)}</h1>{body}</body></html>"
    )
    response = HTMLResponse(document, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    form_action = " ".join(["'self'", *form_targets.split()])
    response.headers["Content-Security-Policy"] = _CSP.format(form_action=form_action)
    return response


def see_other(location: str) -> RedirectResponse:
    response = RedirectResponse(location, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def local_path(target: str | None, default: str = "/console") -> str:
    """`target` if it is a path on this server, else `default`: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 or c == "\\" for c in target):
        return default
    return target


def to_login(request: Request) -> RedirectResponse:
    """Off to sign in, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return see_other("/login?next=" + quote(here, safe=""))


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


def form_csrf(user: SignedInUser) -> str:
    return f"<input type=hidden name=csrf value='{e(user.csrf)}'>"


def check_csrf(user: SignedInUser, form: dict[str, str]) -> bool:
    return same_token(form.get("csrf", ""), user.csrf)


def new_csrf() -> str:
    return secrets.token_urlsafe(32)
