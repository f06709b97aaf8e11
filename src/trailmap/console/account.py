"""A person's own pages: joining through an invitation, changing and resetting a password."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.accounts.audit import Actor
from trailmap.accounts.mail import mail_configured, send_mail
from trailmap.accounts.signin import SESSION_SECONDS, sign_in
from trailmap.accounts.team import (
    accept_invitation,
    change_password,
    invitation_for,
    issue_password_reset,
    reset_link_is_live,
    reset_password,
)
from trailmap.accounts.users import user_exists
from trailmap.console.pages import (
    e,
    form_csrf,
    form_error,
    page,
    problem_text,
    see_other,
    to_login,
)
from trailmap.errors import PayloadTooLarge, TrailmapError
from trailmap.http.context import client_address, context_of
from trailmap.http.sessions import (
    SESSION_COOKIE,
    check_csrf,
    cookie_name,
    form_token_ok,
    give_form_token,
    read_form,
    set_cookie,
    signed_in,
)

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_FORM_CSRF = "trailmap_form_csrf"
_STALE = "The form's security check failed (cookies blocked, or the page was stale); try again."


def _public_form(
    request: Request, title: str, action: str, fields: str, *, error: str = "", status: int = 200
) -> Response:
    """A form for someone not signed in, with a double-submit CSRF token."""
    token = secrets.token_urlsafe(32)
    problem = f"<p class=error role=alert>{e(error)}</p>" if error else ""
    body = (
        f"{problem}<form method=post action={e(action)}>"
        f"<input type=hidden name=csrf value='{e(token)}'>{fields}</form>"
    )
    response = page(title, body, status=status)
    give_form_token(request, response, _FORM_CSRF, token)
    return response


_CHOOSE_FIELDS = (  # the form fields for choosing a new password
    "<label for=password>Password (at least 10 characters)</label>"
    "<input id=password name=password type=password autocomplete=new-password required "
    "minlength=10 maxlength=1024>"
    "<label for=confirm>The same again</label>"
    "<input id=confirm name=confirm type=password autocomplete=new-password required>"
)


async def _form(request: Request) -> dict[str, str] | Response:
    try:
        return await read_form(request)
    except PayloadTooLarge as error:
        return page("Form too large", f"<p>{e(error.message)}</p>", status=413)


# -- joining through an invitation -------------------------------------------------------------


def _invite_page(
    request: Request,
    token: str,
    email: str,
    org: str,
    role: str,
    *,
    existing: bool,
    error: str = "",
    status: int = 200,
) -> Response:
    intro = f"<p>Join <b>{e(org)}</b> as <b>{e(role)}</b>, with the account <b>{e(email)}</b>.</p>"
    if existing:
        fields = (
            f"{intro}<label for=password>Your Trailmap password</label>"
            "<input id=password name=password type=password autocomplete=current-password "
            "required><button type=submit>Join</button>"
        )
    else:
        fields = f"{intro}<p>Choose a password to sign in with.</p>{_CHOOSE_FIELDS}"
        fields += "<button type=submit>Create account and join</button>"
    return _public_form(
        request, "Join an organization", f"/invite/{token}", fields, error=error, status=status
    )


async def _has_account(request: Request, email: str) -> bool:
    return await user_exists(context_of(request).db, email)


@router.get("/invite/{token}")
async def invite_page(request: Request, token: str) -> Response:
    invitation = await invitation_for(context_of(request).db, token)
    if invitation is None:
        return page(
            "Invitation not valid",
            "<p>This invitation link was used, revoked, or has expired; ask for a new one.</p>",
            status=404,
        )
    existing = await _has_account(request, invitation.email)
    return _invite_page(
        request, token, invitation.email, invitation.org_name, invitation.role, existing=existing
    )


@router.post("/invite/{token}")
async def invite_submit(request: Request, token: str) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    db = context_of(request).db
    invitation = await invitation_for(db, token)
    if invitation is None:
        return page("Invitation not valid", "<p>This invitation link is not valid.</p>", status=404)
    existing = await _has_account(request, invitation.email)

    def again(error: str, status: int) -> Response:
        return _invite_page(
            request,
            token,
            invitation.email,
            invitation.org_name,
            invitation.role,
            existing=existing,
            error=error,
            status=status,
        )

    if not form_token_ok(request, form, _FORM_CSRF):
        return again(_STALE, 403)
    password = form.get("password", "")
    if not existing and password != form.get("confirm", ""):
        return again("The two passwords differ.", 400)
    client = client_address(request)
    try:
        hashing = context_of(request).passwords
        await accept_invitation(db, token, password, client=client, hashing=hashing)
        done = await sign_in(db, invitation.email, password, client=client, hashing=hashing)
    except TrailmapError as error:
        return again(problem_text(error), error.status)
    response = see_other("/console")
    set_cookie(request, response, SESSION_COOKIE, done.session, max_age=SESSION_SECONDS)
    return response


# -- changing one's password -------------------------------------------------------------------


def _account_page(
    email: str,
    csrf_field: str,
    *,
    error: str = "",
    notice: str = "",
    status: int = 200,
    fields: tuple[str, ...] = (),
) -> Response:
    """`fields`: the inputs the refusal `error` is about (marked invalid, described by it)."""
    told = f"<p class=notice role=status>{e(notice)}</p>" if notice else ""
    form = (
        f"<form method=post action=/account/password>{csrf_field}"
        "<label for=current>Current password</label>"
        "<input id=current name=current type=password autocomplete=current-password required>"
        f"{_CHOOSE_FIELDS}<button type=submit>Change password</button></form>"
    )
    body = (
        f"{told}<p>Signed in as <b>{e(email)}</b>.</p><h2>Change password</h2>"
        + form_error(form, error, fields)
        + "<p class=muted>Changing it signs you out everywhere else.</p>"
        "<p><a href=/console>Back to the console</a></p>"
    )
    return page("Your account", body, status=status)


@router.get("/account")
async def account_page(request: Request) -> Response:
    user = await signed_in(request)
    if user is None:
        return to_login(request)
    return _account_page(user.email, form_csrf(user))


@router.post("/account/password")
async def account_password(request: Request) -> Response:
    user = await signed_in(request)
    if user is None:
        return to_login(request)
    form = await _form(request)
    if isinstance(form, Response):
        return form
    if not check_csrf(user, form):
        return _account_page(user.email, form_csrf(user), error=_STALE, status=403)
    if form.get("password", "") != form.get("confirm", ""):
        return _account_page(
            user.email,
            form_csrf(user),
            error="The two new passwords differ.",
            status=400,
            fields=("confirm",),
        )
    try:
        await change_password(
            context_of(request).db,
            user.id,
            form.get("current", ""),
            form.get("password", ""),
            keep_session=request.cookies.get(cookie_name(request, SESSION_COOKIE)),
            client=client_address(request),
            hashing=context_of(request).passwords,
        )
    except TrailmapError as error:
        about = tuple(d.field for d in error.details if d.field) or ("current",)
        return _account_page(
            user.email,
            form_csrf(user),
            error=problem_text(error),
            status=error.status,
            fields=about,
        )
    return _account_page(user.email, form_csrf(user), notice="Your password was changed.")


# -- resetting a forgotten password ------------------------------------------------------------


@router.get("/forgot")
async def forgot_page(request: Request) -> Response:
    if not mail_configured(context_of(request).settings):
        return page(
            "Forgot your password?",
            "<p>This Trailmap cannot send e-mail. Ask its operator for a reset link: "
            "<code>trailmap user reset-password you@example.com</code>.</p>",
        )
    fields = (
        "<label for=email>Your e-mail</label>"
        "<input id=email name=email type=email autocomplete=username required>"
        "<button type=submit>E-mail me a reset link</button>"
    )
    return _public_form(request, "Forgot your password?", "/forgot", fields)


@router.post("/forgot")
async def forgot_submit(request: Request) -> Response:
    ctx = context_of(request)
    form = await _form(request)
    if isinstance(form, Response):
        return form
    if not mail_configured(ctx.settings) or not form_token_ok(request, form, _FORM_CSRF):
        return see_other("/forgot")
    told = page(
        "Check your e-mail",
        "<p>If that address has an account, a link to set a new password is on its way.</p>",
    )
    try:
        token = await issue_password_reset(
            ctx.db,
            form.get("email", ""),
            minutes=ctx.settings.reset_link_minutes,
            by=Actor("password reset form", client=client_address(request)),
        )
    except TrailmapError:
        return told  # the same answer for every address: nothing to learn about accounts
    if token is not None:
        await send_mail(
            ctx.settings,
            form.get("email", "").strip().lower(),
            "Set a new Trailmap password",
            f"Open this link to set a new password (it works once, for "
            f"{ctx.settings.reset_link_minutes} minutes):\n\n{ctx.settings.public_url}/reset/"
            f"{token}\n\nIf you did not ask for it, ignore this message.\n",
        )
    return told


def _reset_form(request: Request, token: str, *, error: str = "", status: int = 200) -> Response:
    fields = f"{_CHOOSE_FIELDS}<button type=submit>Set password</button>"
    return _public_form(
        request, "Set a new password", f"/reset/{token}", fields, error=error, status=status
    )


_BAD_RESET = "<p>This reset link was used or has expired; ask for a new one.</p>"


@router.get("/reset/{token}")
async def reset_page(request: Request, token: str) -> Response:
    if not await reset_link_is_live(context_of(request).db, token):
        return page("Reset link not valid", _BAD_RESET, status=404)
    return _reset_form(request, token)


@router.post("/reset/{token}")
async def reset_submit(request: Request, token: str) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    if not form_token_ok(request, form, _FORM_CSRF):
        return _reset_form(request, token, error=_STALE, status=403)
    if form.get("password", "") != form.get("confirm", ""):
        return _reset_form(request, token, error="The two passwords differ.", status=400)
    try:
        ctx = context_of(request)
        await reset_password(
            ctx.db,
            token,
            form.get("password", ""),
            client=client_address(request),
            hashing=ctx.passwords,
        )
    except TrailmapError as error:
        if error.status == 404:
            return page("Reset link not valid", _BAD_RESET, status=404)
        return _reset_form(request, token, error=problem_text(error), status=error.status)
    return see_other("/login")
