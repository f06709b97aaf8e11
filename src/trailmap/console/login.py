"""`/login` and `/logout`: the console's sign-in, used by the OAuth consent flow too
(docs/internals.md); and `/`, which leads to it or, signed in, to the console."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.accounts.rate_limits import Limit, RateLimits
from trailmap.accounts.signin import SESSION_SECONDS, TooManyAttempts, end_session, sign_in
from trailmap.accounts.signin import same_token as _same
from trailmap.console.pages import e, form_error, local_path, page, see_other
from trailmap.errors import PayloadTooLarge, Unauthorized, Unavailable
from trailmap.http.context import client_address, context_of
from trailmap.http.sessions import (
    SESSION_COOKIE,
    check_csrf,
    clear_cookie,
    cookie_name,
    new_csrf,
    read_form,
    set_cookie,
    signed_in,
)

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_LOGIN_CSRF = "trailmap_login_csrf"


def _login_page(
    request: Request, next_path: str, *, email: str = "", error: str = "", status: int = 200
) -> Response:
    """The form, with a fresh double-submit CSRF token in a cookie and a hidden field; a
    refused e-mail and password are marked invalid and described by the refusal."""
    csrf = new_csrf()
    body = (
        "<form method=post action=/login>"
        f"<input type=hidden name=csrf value='{e(csrf)}'>"
        f"<input type=hidden name=next value='{e(next_path)}'>"
        "<label for=email>E-mail</label>"
        f"<input id=email name=email type=email autocomplete=username required value='{e(email)}'>"
        "<label for=password>Password</label>"
        "<input id=password name=password type=password autocomplete=current-password required>"
        "<button type=submit>Sign in</button></form>"
    )
    fields = ("email", "password") if status == 401 else ()
    response = page("Sign in to Trailmap", form_error(body, error, fields), status=status)
    set_cookie(request, response, _LOGIN_CSRF, csrf, max_age=3600, samesite="strict")
    return response


@router.get("/")
async def home(request: Request) -> Response:
    """The server's address leads a person in: to the console signed in, else to sign-in."""
    return see_other("/console" if await signed_in(request) is not None else "/login")


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:  # noqa: A002
    target = local_path(next)
    if await signed_in(request) is not None:
        return see_other(target)
    return _login_page(request, target)


@router.post("/login")
async def login_submit(request: Request) -> Response:
    try:
        form = await read_form(request)
    except PayloadTooLarge as error:
        return page("Form too large", f"<p>{e(error.message)}</p>", status=413)
    target = local_path(form.get("next"))
    email = form.get("email", "")
    cookie = request.cookies.get(cookie_name(request, _LOGIN_CSRF), "")
    if not cookie or not _same(form.get("csrf", ""), cookie):
        return _login_page(
            request,
            target,
            email=email,
            error="The form's security check failed (cookies blocked, or the page was stale). "
            "Please sign in again.",
            status=403,
        )
    ctx = context_of(request)
    client = client_address(request)
    per_minute = Limit("login", ctx.settings.unauthenticated_requests_per_minute, 60)
    wait = await RateLimits(ctx.db).retry_after(per_minute, client)
    try:
        if wait is not None:
            raise TooManyAttempts(  # noqa: TRY301 - answered as the throttle's refusal is
                f"Too many sign-in attempts from this address; try again in {wait} seconds.",
                retry_after=wait,
            )
        done = await sign_in(
            ctx.db, email, form.get("password", ""), client=client, hashing=ctx.passwords
        )
    except TooManyAttempts as error:
        response = _login_page(request, target, email=email, error=error.message, status=429)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    except Unavailable as error:  # no turn to check the password in time, or no database
        response = _login_page(request, target, email=email, error=error.message, status=503)
        response.headers.update(error.headers)
        return response
    except Unauthorized as error:
        return _login_page(request, target, email=email, error=error.message, status=401)
    response = see_other(target)
    set_cookie(request, response, SESSION_COOKIE, done.session, max_age=SESSION_SECONDS)
    clear_cookie(request, response, _LOGIN_CSRF, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    user = await signed_in(request)
    try:
        form = await read_form(request)
    except PayloadTooLarge:
        form = {}
    if user is not None and check_csrf(user, form):
        await end_session(
            context_of(request).db, request.cookies.get(cookie_name(request, SESSION_COOKIE))
        )
    elif user is not None:
        return page("Sign out", "<p class=error>The form's security check failed.</p>", status=403)
    response = see_other("/login")
    clear_cookie(request, response, SESSION_COOKIE)
    return response
