"""The API Keys and Service Accounts pages of an organization (who sees what: docs/api.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.accounts import create_key, list_keys, revoke_key
from trailmap.accounts.keys import ApiKey, parse_scope
from trailmap.accounts.memberships import list_memberships
from trailmap.accounts.service_accounts import create_service_account, list_service_accounts
from trailmap.accounts.team import list_members
from trailmap.accounts.tokens import display_prefix
from trailmap.console.orgs import OrgMember, org_member, org_nav, posted_form, refused, when
from trailmap.console.pages import (
    e,
    field_error,
    form_csrf,
    page,
    problem_text,
    see_other,
    to_login,
)
from trailmap.errors import TrailmapError, ValidationFailed
from trailmap.http.context import context_of
from trailmap.http.sessions import clear_cookie, cookie_name, set_cookie, signed_in
from trailmap.timeline.times import TimeExpressionError, parse_duration

__all__ = ["COPY_SCRIPT", "router"]

router = APIRouter(include_in_schema=False)

# The copy button's script, served from this server (the pages allow no inline script).
COPY_SCRIPT: Final = """\
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () {
    var text = document.getElementById(button.getAttribute("data-copy")).textContent;
    navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; });
  });
});
"""


# The token of a key just made travels from the POST to the page that shows it in this
# short-lived cookie (HttpOnly, SameSite=Strict, path /): never in a URL, where logs and
# history would keep it. The page clears it as it shows it, so a reload shows it no more and
# creates nothing (the POST answered with a redirect: post, redirect, get).
_SHOWN_ONCE_COOKIE: Final = "trailmap_new_token"
_SHOWN_ONCE_SECONDS: Final = 120


def _token_shown_once(
    request: Request, m: OrgMember, key: ApiKey, token: str, page_: str
) -> Response:
    """The answer to a POST that made a key: a 303 to the page that shows its token once."""
    response = see_other(f"/orgs/{m.slug}/{page_}/created")
    set_cookie(
        request,
        response,
        _SHOWN_ONCE_COOKIE,
        f"{key.id}:{token}",
        max_age=_SHOWN_ONCE_SECONDS,
        samesite="strict",
    )
    return response


async def _show_token_once(request: Request, slug: str, title: str, back: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    held = request.cookies.get(cookie_name(request, _SHOWN_ONCE_COOKIE), "")
    key_id, _, token = held.partition(":")
    keys = await list_keys(context_of(request).db, m.slug) if token else []
    key = next((k for k in keys if k.id == key_id and m.may_manage(k)), None)
    back_link = f"<p><a href=/orgs/{e(m.slug)}/{back}>Back</a></p>"
    if key is None or display_prefix(token) != key.prefix:
        body = (
            "<p>The token was shown once already, and Trailmap keeps only its hash: it "
            "cannot be shown again. If it was not copied, revoke the key and create another.</p>"
            + back_link
        )
        response = page(title, body, nav=org_nav(m))
    else:
        body = (
            f"<p>The token of <b>{e(key.name)}</b> ({e(key.scope)}). It is shown only now: "
            "copy it somewhere safe. Trailmap keeps only its hash.</p>"
            f"<pre id=token>{e(token)}</pre>"
            "<button type=button data-copy=token hidden>Copy</button>" + back_link
        )
        response = page(title, body, nav=org_nav(m), script=True)
    if held:
        clear_cookie(request, response, _SHOWN_ONCE_COOKIE, samesite="strict")
    return response


# -- the organizations a user belongs to ------------------------------------------------------


@router.get("/console")
async def console_home(request: Request) -> Response:
    user = await signed_in(request)
    if user is None:
        return to_login(request)
    orgs = await list_memberships(context_of(request).db, user.id)
    if len(orgs) == 1:  # one organization: its Home is the way in
        return see_other(f"/orgs/{orgs[0].org_slug}")
    items = "".join(
        f"<li><b><a href=/orgs/{e(org.org_slug)}>{e(org.org_name)}</a></b> "
        f"({e(org.org_slug)}, {e(org.role)}): "
        f"<a href=/orgs/{e(org.org_slug)}/keys>API Keys</a> · "
        f"<a href=/orgs/{e(org.org_slug)}/service-accounts>Service Accounts</a></li>"
        for org in orgs
    )
    body = f"<ul>{items}</ul>" if orgs else "<p>You are not a member of any organization.</p>"
    nav = (
        f"<nav><form class=inline method=post action=/logout>{form_csrf(user)}"
        f"<button type=submit>Sign out {e(user.email)}</button></form></nav>"
    )
    return page("Organizations", body, nav=nav)


@router.get("/console/copy.js")
async def copy_script() -> Response:
    return Response(
        COPY_SCRIPT,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# -- API keys --------------------------------------------------------------------------------


_OLD_APPROVAL = "OAuth approval by user "  # how approvals named their creator before e-mails


def _creator(key: ApiKey, emails: dict[str, str]) -> str:
    """Who made the key; for an AI client's key, the e-mail of the person who approved it."""
    if key.created_by.startswith(_OLD_APPROVAL) and key.user_id in emails:
        return emails[key.user_id]
    return key.created_by


def _keys_table(m: OrgMember, keys: list[ApiKey], emails: dict[str, str] | None = None) -> str:
    emails = {m.user.id: m.user.email, **(emails or {})}
    rows = []
    for key in keys:
        action = ""
        if key.status == "active" and m.may_manage(key):
            action = (
                f"<a href=/orgs/{e(m.slug)}/keys/{e(key.id)}/revoke>Revoke"
                f"<span class=sr> {e(key.name)} ({e(key.prefix)}…)</span></a>"
            )
        cells = (
            ("Name", e(key.name)),
            ("Prefix", f"<code>{e(key.prefix)}…</code>"),
            ("Scope", e(key.scope)),
            ("Kind", e(key.kind)),
            ("Creator", e(_creator(key, emails))),
            ("Created", when(key.created)),
            ("Last used", when(key.last_used)),
            ("Expires", when(key.expires, "no expiry")),
            ("Status", e(key.status)),
        )
        row = "".join(f"<td data-label='{label}'>{value}</td>" for label, value in cells)
        rows.append(f"<tr data-key-id='{e(key.id)}'>{row}<td>{action}</td></tr>")
    if not rows:
        return "<p>No keys yet.</p>"
    return (
        "<div class='wide stack' tabindex=0 role=region aria-label=Keys><table><thead><tr>"
        "<th>Name</th><th>Prefix</th><th>Scope</th>"
        "<th>Kind</th><th>Creator</th><th>Created</th><th>Last used</th><th>Expires</th>"
        "<th>Status</th><th><span class=sr>Actions</span></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _create_form(
    m: OrgMember, values: dict[str, str] | None = None, error: TrailmapError | None = None
) -> str:
    values = values or {}
    scope = values.get("scope", "read-only")
    choices = [("read-only", "Read-only (query, MCP)", "create_key")]
    choices += [("read-write", "Read-write (send events)", "create_write_key")]
    choices += [("admin", "Admin (manage the organization over the API)", "create_admin_key")]
    options = "".join(
        f"<option value={v}{' selected' if v == scope else ''}>{label}</option>"
        for v, label, action in choices
        if m.may(action)  # type: ignore[arg-type]
    )
    name_attrs, name_error = field_error("name", error)
    scope_attrs, scope_error = field_error("scope", error)
    expires_attrs, expires_error = field_error("expires", error)
    return (
        f"<h2>Create a key</h2><form method=post action=/orgs/{e(m.slug)}/keys>{form_csrf(m.user)}"
        "<label for=name>Name</label>"
        f"<input id=name name=name required maxlength=200 value='{e(values.get('name', ''))}'"
        f"{name_attrs}>{name_error}"
        f"<label for=scope>Scope</label><select id=scope name=scope{scope_attrs}>{options}"
        f"</select>{scope_error}"
        "<label for=expires>Expires after (optional, such as 90d)</label>"
        f"<input id=expires name=expires value='{e(values.get('expires', ''))}'{expires_attrs}>"
        f"{expires_error}<button type=submit>Create key</button></form>"
    )


async def _keys_page(
    request: Request,
    m: OrgMember,
    *,
    error: TrailmapError | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    db = context_of(request).db
    keys = await list_keys(db, m.slug)
    shown = keys if m.may("manage_all_keys") else [k for k in keys if k.user_id == m.user.id]
    who = "every key of" if m.may("manage_all_keys") else "your keys in"
    emails: dict[str, str] = {}
    if any(k.created_by.startswith(_OLD_APPROVAL) for k in shown):
        emails = {p.user_id: p.email for p in await list_members(db, m.slug, who=m.membership)}
    problem = f"<p class=error role=alert>{e(problem_text(error))}</p>" if error else ""
    body = (
        f"{problem}<p class=muted>Showing {who} <b>{e(m.name)}</b>. Keys named "
        "“MCP — …” were created when someone approved an AI client; revoking one ends that "
        "client's access at once.</p>"
        + _keys_table(m, shown, emails)
        + _create_form(m, values, error)
    )
    status = error.status if error is not None else 200
    return page(f"API Keys · {m.name}", body, nav=org_nav(m), status=status)


@router.get("/orgs/{slug}/keys")
async def keys_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    return await _keys_page(request, m)


def _expiry(text: str) -> timedelta | None:
    if not text.strip():
        return None
    try:
        return parse_duration(text)
    except TimeExpressionError as error:
        raise ValidationFailed.field("expires", str(error)) from None


@router.post("/orgs/{slug}/keys")
async def keys_create(request: Request, slug: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    try:
        scope = parse_scope(form.get("scope", ""))
        m.membership.require_key_scope(scope)
        key, token = await create_key(
            context_of(request).db,
            m.slug,
            name=form.get("name", ""),
            scope=scope,
            expires_in=_expiry(form.get("expires", "")),
            created_by=m.user.email,
            user_id=m.user.id,
            actor=m.actor(request),
        )
    except TrailmapError as error:
        return await _keys_page(request, m, error=error, values=form)
    return _token_shown_once(request, m, key, token, "keys")


@router.get("/orgs/{slug}/keys/created")
async def key_created(request: Request, slug: str) -> Response:
    return await _show_token_once(request, slug, "Key created", "keys")


async def _manageable(request: Request, m: OrgMember, key_id: str) -> ApiKey | None:
    keys = await list_keys(context_of(request).db, m.slug)
    found = next((k for k in keys if k.id == key_id), None)
    return found if found is not None and m.may_manage(found) else None


@router.get("/orgs/{slug}/keys/{key_id}/revoke")
async def revoke_confirm(request: Request, slug: str, key_id: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    key = await _manageable(request, m, key_id)
    if key is None:
        return refused(m, "No key of yours has that id.", 404)
    body = (
        f"<p>Revoke <b>{e(key.name)}</b> (<code>{e(key.prefix)}…</code>, {e(key.kind)})? "
        "Anything using it, including an AI client connected through it, is refused from its "
        "next request. This cannot be undone.</p>"
        f"<form method=post action=/orgs/{e(m.slug)}/keys/{e(key.id)}/revoke>"
        f"{form_csrf(m.user)}<button type=submit name=confirm value=yes>Revoke key</button>"
        f"<a href=/orgs/{e(m.slug)}/keys>Cancel</a></form>"
    )
    return page("Revoke key", body, nav=org_nav(m))


@router.post("/orgs/{slug}/keys/{key_id}/revoke")
async def revoke_submit(request: Request, slug: str, key_id: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    key = await _manageable(request, m, key_id)
    if key is None:
        return refused(m, "No key of yours has that id.", 404)
    if form.get("confirm") != "yes":
        return see_other(f"/orgs/{m.slug}/keys/{key.id}/revoke")
    await revoke_key(context_of(request).db, key.id, org_id=m.org_id, actor=m.actor(request))
    return see_other(f"/orgs/{m.slug}/keys")


# -- service accounts ------------------------------------------------------------------------


async def _accounts_page(
    request: Request, m: OrgMember, error: str = "", status: int = 200
) -> Response:
    db = context_of(request).db
    accounts = await list_service_accounts(db, m.slug)
    keys = [k for k in await list_keys(db, m.slug) if k.service_account_id is not None]
    sections = []
    for account in accounts:
        own = [k for k in keys if k.service_account_id == account.id]
        generate = ""
        if m.may("manage_service_accounts"):
            generate = (
                f"<form method=post action=/orgs/{e(m.slug)}/service-accounts/{e(account.id)}"
                f"/tokens>{form_csrf(m.user)}<label for=scope-{e(account.id)}>Scope</label>"
                f"<select id=scope-{e(account.id)} name=scope><option value=read-write>"
                "Read-write (push events)</option><option value=read-only>Read-only</option>"
                "<option value=admin>Admin (manage the organization over the API)</option>"
                "</select><button type=submit>Generate token</button></form>"
            )
        sections.append(
            f"<h2>{e(account.name)}</h2><p class=muted>Created {when(account.created)}</p>"
            + (_keys_table(m, own) if own else "<p>No tokens yet.</p>")
            + generate
        )
    create = ""
    if m.may("manage_service_accounts"):
        create = (
            f"<h2>Create a service account</h2><form method=post "
            f"action=/orgs/{e(m.slug)}/service-accounts>{form_csrf(m.user)}"
            "<label for=name>Name (such as github-actions)</label>"
            "<input id=name name=name required maxlength=100>"
            "<button type=submit>Create</button></form>"
        )
    problem = f"<p class=error role=alert>{e(error)}</p>" if error else ""
    body = (
        f"{problem}<p class=muted>Service accounts own keys that belong to no person, for CI "
        "jobs and other headless senders.</p>"
        + ("".join(sections) or "<p>No service accounts yet.</p>")
        + create
    )
    return page(f"Service Accounts · {m.name}", body, nav=org_nav(m), status=status)


@router.get("/orgs/{slug}/service-accounts")
async def accounts_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    return await _accounts_page(request, m)


@router.post("/orgs/{slug}/service-accounts")
async def accounts_create(request: Request, slug: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    if not m.may("manage_service_accounts"):
        return refused(m, "Only owners and admins manage service accounts.")
    try:
        await create_service_account(context_of(request).db, m.slug, form.get("name", ""))
    except TrailmapError as error:
        message = problem_text(error)
        return await _accounts_page(request, m, message, error.status)
    return see_other(f"/orgs/{m.slug}/service-accounts")


@router.post("/orgs/{slug}/service-accounts/{account_id}/tokens")
async def accounts_token(request: Request, slug: str, account_id: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    if not m.may("manage_service_accounts"):
        return refused(m, "Only owners and admins manage service accounts.")
    db = context_of(request).db
    account = next((a for a in await list_service_accounts(db, m.slug) if a.id == account_id), None)
    if account is None:
        return refused(m, "No service account of this organization has that id.", 404)
    try:
        key, token = await create_key(
            db,
            m.slug,
            name=f"{account.name} token",
            scope=parse_scope(form.get("scope", "read-write")),
            created_by=m.user.email,
            service_account=account.name,
            actor=m.actor(request),
        )
    except TrailmapError as error:
        return await _accounts_page(request, m, error.message, error.status)
    return _token_shown_once(request, m, key, token, "service-accounts")


@router.get("/orgs/{slug}/service-accounts/created")
async def token_generated(request: Request, slug: str) -> Response:
    return await _show_token_once(request, slug, "Token generated", "service-accounts")
