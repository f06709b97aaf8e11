"""`/oauth/consent`: the page where a signed-in user approves or denies an MCP client's
authorization request for one of their organizations (docs/internals.md)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.accounts.memberships import list_memberships
from trailmap.console.orgs import actor_of
from trailmap.console.pages import e, form_csrf, page, see_other, to_login
from trailmap.errors import TrailmapError
from trailmap.http.context import context_of
from trailmap.http.sessions import SignedInUser, check_csrf, read_form, signed_in

__all__ = ["CONSENT_PATH", "router"]

CONSENT_PATH = "/oauth/consent"

router = APIRouter(include_in_schema=False)


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _problem(title: str, message: str, status: int) -> Response:
    return page(title, f"<p class=error role=alert>{e(message)}</p>", status=status)


async def _consent_page(
    request: Request, user: SignedInUser, request_id: str, error: str = "", status: int = 200
) -> Response:
    ctx = context_of(request)
    try:
        client, params = await ctx.oauth.pending(request_id)
    except TrailmapError as failure:
        return _problem("Sign-in request not found", failure.message, failure.status)
    orgs = await list_memberships(ctx.db, user.id)
    redirect_uri = str(params["redirect_uri"])
    name = client.client_name or client.client_id
    published = ""
    if client.client_id.startswith("https://"):
        published = (
            f" <span class=muted>(described at {e(urlsplit(client.client_id).netloc)})</span>"
        )
    options = "".join(
        f"<option value='{e(org.org_slug)}'>{e(org.org_name)} ({e(org.org_slug)})</option>"
        for org in orgs
    )
    chooser = (
        "<label for=organization>Organization</label>"
        f"<select id=organization name=organization required>{options}</select>"
        if orgs
        else "<p class=error>You are not a member of any organization, so there is nothing "
        "to grant. Ask an owner to add you.</p>"
    )
    approve = "<button type=submit name=action value=approve>Approve</button>" if orgs else ""
    problem = f"<p class=error role=alert>{e(error)}</p>" if error else ""
    body = (
        f"{problem}<p><b>{e(name)}</b>{published} asks to connect to Trailmap as "
        f"<b>{e(user.email)}</b>.</p>"
        f"<p>It will be sent back to <b>{e(urlsplit(redirect_uri).netloc)}</b>.</p>"
        "<p>Access: <b>read-only</b>. It can read the organization's change timeline and "
        "architecture; it cannot send events or change anything. Approving creates an API "
        f"key named <b>MCP — {e(name)}</b> on the organization's API Keys page; deleting "
        "that key revokes this access at once.</p>"
        f"<form method=post action={CONSENT_PATH}>{form_csrf(user)}"
        f"<input type=hidden name=request value='{e(request_id)}'>"
        f"{chooser}{approve}<button type=submit name=action value=deny>Deny</button></form>"
    )
    # The form's answer is a redirect to the client: form-action must allow its origin.
    return page(
        "Connect an app to Trailmap", body, status=status, form_targets=_origin(redirect_uri)
    )


@router.get(CONSENT_PATH)
async def consent_page(request: Request) -> Response:
    # The parameter is named "request", which FastAPI's own Request argument shadows.
    request_id = request.query_params.get("request", "")
    user = await signed_in(request)
    if user is None:
        return to_login(request)
    if not request_id:
        return _problem("Sign-in request not found", "No sign-in request was named.", 400)
    return await _consent_page(request, user, request_id)


@router.post(CONSENT_PATH)
async def consent_submit(request: Request) -> Response:
    ctx = context_of(request)
    form = await read_form(request)
    user = await signed_in(request)
    if user is None:
        return _problem(
            "Signed out", "Your session ended; start again from the app to sign in.", 401
        )
    if not check_csrf(user, form):
        return _problem(
            "Form expired",
            "The form's security check failed (the page is stale, or another site sent it). "
            "Start again from the app.",
            403,
        )
    request_id = form.get("request", "")
    action = form.get("action")
    try:
        actor = actor_of(request, user)
        if action == "deny":
            approval = await ctx.oauth.deny(
                request_id, actor=actor, org_slug=form.get("organization", "")
            )
        elif action == "approve":
            approval = await ctx.oauth.approve(
                request_id, user_id=user.id, org_slug=form.get("organization", ""), actor=actor
            )
        else:
            return await _consent_page(
                request, user, request_id, "Choose Approve or Deny.", status=400
            )
    except TrailmapError as failure:
        if failure.status == 404:
            return _problem("Sign-in request not found", failure.message, 404)
        return await _consent_page(request, user, request_id, failure.message, failure.status)
    return see_other(approval.redirect_to)
