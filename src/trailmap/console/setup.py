"""`/setup`: the first-run page behind the one-time link `trailmap serve` prints, which creates
the organization, its owner and a first API key (docs/internals.md, console/pages.py)."""

from __future__ import annotations

import html
import secrets
from collections.abc import Sequence

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from trailmap.accounts.setup import complete_setup, setup_also_joins, setup_is_open
from trailmap.console.pages import field_error, page
from trailmap.errors import PayloadTooLarge, TrailmapError
from trailmap.http.context import context_of
from trailmap.http.sessions import clear_cookie, cookie_name, read_form, set_cookie
from trailmap.invocation import command

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_CSRF_COOKIE = "trailmap_csrf"
# The domain's names for the fields whose form names differ.
_FIELDS = {"slug": "organization", "org_slug": "organization", "org_name": "name"}


def _page(
    title: str,
    body: str,
    status: int = 200,
    *,
    csrf: str | None = None,
    request: Request | None = None,
    script: bool = False,
) -> HTMLResponse:
    """A console page; `csrf` sets the form's double-submit cookie (for the request's site:
    `__Host-` and Secure behind https, which needs the path /)."""
    response = page(title, body, status=status, script=script)
    if csrf is not None and request is not None:
        set_cookie(request, response, _CSRF_COOKIE, csrf, max_age=3600, samesite="strict")
    return response


def _closed() -> HTMLResponse:
    serve, create = command("serve"), command("user create you@example.com --org SLUG")
    return _page(
        "Setup link not valid",
        "<p>This setup link was used already (an owner account exists: "
        "<a href=/login>sign in</a>), or replaced by a newer one. Restart "
        f"<code>{html.escape(serve)}</code> to print a new link while no account exists, or "
        f"create accounts with <code>{html.escape(create)}</code>.</p>",
        status=403,
    )


def _form(
    token: str,
    csrf: str,
    values: dict[str, str],
    error: str | None = None,
    *,
    also_joins: Sequence[str] = (),
    refusal: TrailmapError | None = None,
) -> str:
    def field(name: str, label: str, kind: str = "text", extra: str = "") -> str:
        value = "" if kind == "password" else html.escape(values.get(name, ""), quote=True)
        attrs, message = field_error(name, refusal, aliases=_FIELDS)
        return (
            f"<label for={name}>{label}</label>"
            f'<input id={name} name={name} type={kind} value="{value}" required {extra}{attrs}>'
            + message
        )

    problem = (
        f"<p class=error role=alert>{html.escape(error)} Correct it and send the form again: "
        "this link still works.</p>"
        if error
        else ""
    )
    joins = (
        "<p>You will also be an owner of "
        + ", ".join(f"<b>{html.escape(slug)}</b>" for slug in also_joins)
        + " (the demo), so you can sign in and connect an assistant to it.</p>"
        if also_joins
        else ""
    )
    return (
        "<p>Create your organization and its owner account. You will get a first API key "
        f"to send events with.</p>{joins}"
        f"{problem}<form method=post action=/setup>"
        f'<input type=hidden name=token value="{html.escape(token, quote=True)}">'
        f'<input type=hidden name=csrf value="{html.escape(csrf, quote=True)}">'
        + field(
            "organization",
            "Organization (short name: letters, digits, hyphens)",
            extra="maxlength=64",
        )
        + field("name", "Organization display name", extra="maxlength=200")
        + field("email", "Your e-mail", kind="email")
        + field(
            "password", "Password (at least 10 characters)", kind="password", extra="minlength=10"
        )
        + "<button type=submit>Create</button></form>"
    )


@router.get("/setup")
async def setup_page(request: Request, token: str = "") -> HTMLResponse:
    ctx = context_of(request)
    if not token or not await setup_is_open(ctx.db, token):
        return _closed()
    csrf = secrets.token_urlsafe(32)
    also_joins = await setup_also_joins(ctx.db)
    return _page(
        "Set up Trailmap",
        _form(token, csrf, {}, also_joins=also_joins),
        csrf=csrf,
        request=request,
    )


@router.post("/setup")
async def setup_submit(request: Request) -> HTMLResponse:
    ctx = context_of(request)
    try:
        form = await read_form(request)
    except PayloadTooLarge:
        return _page("Form too large", "<p>The form is larger than it can be.</p>", 413)
    token = form.get("token", "")
    cookie = request.cookies.get(cookie_name(request, _CSRF_COOKIE), "")
    if not cookie or not secrets.compare_digest(cookie.encode(), form.get("csrf", "").encode()):
        return _page(
            "Form expired",
            "<p>The form's security check failed (cookies off, or the form is stale). "
            "Open the setup link again.</p>",
            status=403,
        )
    if not await setup_is_open(ctx.db, token):
        return _closed()
    try:
        done = await complete_setup(
            ctx.db,
            token,
            org_slug=form.get("organization", "").strip(),
            org_name=form.get("name", "").strip(),
            email=form.get("email", ""),
            password=form.get("password", ""),
            hashing=ctx.passwords,
        )
    except TrailmapError as error:
        if error.status == 403:  # another submission of the link made the owner first
            return _closed()
        status = error.status if error.status in (409, 503) else 400
        also_joins = await setup_also_joins(ctx.db)
        response = _page(
            "Set up Trailmap",
            _form(token, cookie, form, error.message, also_joins=also_joins, refusal=error),
            status=status,
        )
        if status == 503:  # no turn to hash the password in time: Retry-After says when
            response.headers.update(error.headers)
        return response
    base = ctx.settings.public_url
    orgs = ", ".join(f"<b>{html.escape(slug)}</b>" for slug in (done.org.slug, *done.also_joined))
    body = (
        f"<p>Organization <b>{html.escape(done.org.slug)}</b> and owner "
        f"<b>{html.escape(done.owner.email)}</b> are ready.</p>"
        "<p><b>Next: <a href=/login>sign in</a></b> with that e-mail and password. You are an "
        f"owner of {orgs}. To connect an assistant, give it <code>{html.escape(base)}/mcp</code> "
        "and approve it when it opens the sign-in page (docs/connect.md).</p>"
        "<p>Your first API key (READ_WRITE). It is shown only now: copy it somewhere safe.</p>"
        f"<pre id=token>{html.escape(done.token)}</pre>"
        "<button type=button data-copy=token hidden>Copy the key</button>"
        "<p>Send an event:</p><pre id=send>"
        + html.escape(
            f"curl -X POST {base}/api/v1/events \\\n"
            f"  -H 'Authorization: Bearer {done.token}' -H 'Content-Type: application/json' \\\n"
            '  -d \'{"specversion":"1.0","type":"deployment","source":"//github.com/acme/api",'
            '"time":"NOW","subject":"production"}\''
        )
        + "</pre><button type=button data-copy=send hidden>Copy the command</button>"
        "<p>The API reference is at <a href=/docs>/docs</a>.</p>"
    )
    response = _page("Trailmap is ready", body, status=201, script=True)
    clear_cookie(request, response, _CSRF_COOKIE, samesite="strict")
    return response
