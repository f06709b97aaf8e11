"""An organization's Members and Audit log pages: invitations, roles, removal."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.accounts.audit import list_audit
from trailmap.accounts.mail import mail_configured, send_mail
from trailmap.accounts.permissions import ROLES
from trailmap.accounts.team import (
    change_role,
    invite,
    list_invitations,
    list_members,
    remove_member,
    revoke_invitation,
)
from trailmap.console.orgs import OrgMember, org_member, org_nav, posted_form, refused, when
from trailmap.console.pages import e, field_error, form_csrf, page, problem_text, see_other
from trailmap.errors import TrailmapError
from trailmap.http.context import context_of

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _role_options(m: OrgMember, selected: str) -> str:
    allowed = [r for r in ROLES if r != "owner" or m.may("manage_owners")]
    return "".join(
        f"<option value={r}{' selected' if r == selected else ''}>{r}</option>" for r in allowed
    )


async def _members_page(
    request: Request,
    m: OrgMember,
    *,
    error: str = "",
    notice: str = "",
    status: int = 200,
    problem: TrailmapError | None = None,
) -> Response:
    db = context_of(request).db
    members = await list_members(db, m.slug, who=m.membership)
    manages = m.may("manage_members")
    rows = []
    for member in members:
        actions = ""
        if (
            manages
            and member.user_id != m.user.id
            and (member.role != "owner" or m.may("manage_owners"))
        ):
            actions = (
                f"<form class=inline method=post action=/orgs/{e(m.slug)}/members/role>"
                f"{form_csrf(m.user)}<input type=hidden name=email value='{e(member.email)}'>"
                f"<label class=sr for='role-{e(member.user_id)}'>Role of {e(member.email)}</label>"
                f"<select id='role-{e(member.user_id)}' name=role>"
                f"{_role_options(m, member.role)}</select>"
                "<button type=submit>Change role"
                f"<span class=sr> of {e(member.email)}</span></button></form> "
                f"<a href='/orgs/{e(m.slug)}/members/remove?email={e(quote(member.email))}'>"
                f"Remove<span class=sr> {e(member.email)}</span></a>"
            )
        status_text = "disabled" if member.disabled else "active"
        rows.append(
            f"<tr><td data-label=E-mail>{e(member.email)}</td>"
            f"<td data-label=Role>{e(member.role)}</td>"
            f"<td data-label=Joined>{when(member.joined)}</td>"
            f"<td data-label='Last sign-in'>{when(member.last_sign_in)}</td>"
            f"<td data-label=Status>{status_text}</td><td>{actions}</td></tr>"
        )
    table = (
        "<div class='wide stack' tabindex=0 role=region aria-label=Members><table><thead><tr>"
        "<th>E-mail</th><th>Role</th><th>Joined</th>"
        "<th>Last sign-in</th><th>Status</th><th><span class=sr>Actions</span></th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    invitations = ""
    email_attrs, email_error = field_error("email", problem)
    role_attrs, role_error = field_error("role", problem)
    if manages:
        open_ = await list_invitations(db, m.slug, who=m.membership)
        items = "".join(
            f"<li>{e(i.email)} as {e(i.role)}, by {e(i.invited_by)}, until {when(i.expires)} "
            f"<form class=inline method=post action=/orgs/{e(m.slug)}/invitations/{e(i.id)}"
            f"/revoke>{form_csrf(m.user)}<button type=submit>Revoke"
            f"<span class=sr> the invitation of {e(i.email)}</span></button></form></li>"
            for i in open_
        )
        invitations = (f"<h2>Open invitations</h2><ul>{items}</ul>" if items else "") + (
            f"<h2>Invite someone</h2><form method=post action=/orgs/{e(m.slug)}/invitations>"
            f"{form_csrf(m.user)}<label for=email>E-mail</label>"
            f"<input id=email name=email type=email required maxlength=320{email_attrs}>"
            f"{email_error}<label for=role>Role</label><select id=role name=role{role_attrs}>"
            f"{_role_options(m, 'member')}</select>{role_error}"
            "<button type=submit>Invite</button></form>"
        )
    alert = f"<p class=error role=alert>{e(error)}</p>" if error else ""
    told = f"<p class=notice role=status>{e(notice)}</p>" if notice else ""
    body = f"{alert}{told}{table}{invitations}"
    return page(f"Members · {m.name}", body, nav=org_nav(m), status=status)


@router.get("/orgs/{slug}/members")
async def members_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    return await _members_page(request, m)


@router.post("/orgs/{slug}/invitations")
async def invitations_create(request: Request, slug: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    ctx = context_of(request)
    try:
        invitation = await invite(
            ctx.db,
            m.slug,
            form.get("email", ""),
            form.get("role", "member"),
            who=m.membership,
            by=m.actor(request),
            days=ctx.settings.invitation_days,
        )
        link = invitation.link(ctx.settings.public_url)
        if mail_configured(ctx.settings):
            await send_mail(
                ctx.settings,
                invitation.email,
                invitation.subject,
                invitation.message(link),
            )
            return await _members_page(
                request, m, notice=f"Invitation e-mailed to {invitation.email}.", status=201
            )
    except TrailmapError as error:
        return await _members_page(
            request, m, error=problem_text(error), status=error.status, problem=error
        )
    body = (
        f"<p>Send this link to <b>{e(invitation.email)}</b>: it works once, until "
        f"{when(invitation.expires)}, and is shown only now (no mail server is configured, "
        "so Trailmap cannot e-mail it).</p>"
        f"<pre id=link>{e(link)}</pre><button type=button data-copy=link hidden>Copy</button>"
        f"<p><a href=/orgs/{e(m.slug)}/members>Back to members</a></p>"
    )
    return page("Invitation created", body, status=201, nav=org_nav(m), script=True)


@router.post("/orgs/{slug}/invitations/{invitation_id}/revoke")
async def invitations_revoke(request: Request, slug: str, invitation_id: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    try:
        await revoke_invitation(
            context_of(request).db, m.slug, invitation_id, who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return await _members_page(request, m, error=problem_text(error), status=error.status)
    return see_other(f"/orgs/{m.slug}/members")


@router.post("/orgs/{slug}/members/role")
async def members_role(request: Request, slug: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    try:
        await change_role(
            context_of(request).db,
            m.slug,
            form.get("email", ""),
            form.get("role", ""),
            who=m.membership,
            by=m.actor(request),
        )
    except TrailmapError as error:
        return await _members_page(request, m, error=problem_text(error), status=error.status)
    return see_other(f"/orgs/{m.slug}/members")


@router.get("/orgs/{slug}/members/remove")
async def members_remove_confirm(request: Request, slug: str, email: str = "") -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    if not m.may("manage_members"):
        return refused(m, "Only owners and admins remove members.")
    body = (
        f"<p>Remove <b>{e(email)}</b> from {e(m.name)}? Their own API keys here, and the AI "
        "clients they connected, stop working at once; service-account keys stay.</p>"
        f"<form method=post action=/orgs/{e(m.slug)}/members/remove>{form_csrf(m.user)}"
        f"<input type=hidden name=email value='{e(email)}'>"
        "<button type=submit name=confirm value=yes>Remove member</button>"
        f"<a href=/orgs/{e(m.slug)}/members>Cancel</a></form>"
    )
    return page("Remove member", body, nav=org_nav(m))


@router.post("/orgs/{slug}/members/remove")
async def members_remove(request: Request, slug: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    if form.get("confirm") != "yes":
        return see_other(f"/orgs/{m.slug}/members")
    email = form.get("email", "")
    try:
        revoked = await remove_member(
            context_of(request).db, m.slug, email, who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return await _members_page(request, m, error=problem_text(error), status=error.status)
    if m.user.email == email.strip().lower():
        return see_other("/console")
    keys = ", ".join(f"{k['name']} ({k['prefix']}…)" for k in revoked) or "none"
    return await _members_page(request, m, notice=f"Removed {email}; keys revoked: {keys}.")


# -- the audit log -----------------------------------------------------------------------------


@router.get("/orgs/{slug}/audit")
async def audit_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    if not m.may("read_audit"):
        return refused(m, "Only owners and admins read the audit log.")
    entries = await list_audit(context_of(request).db, m.org_id, limit=200)
    rows = "".join(
        f"<tr><td>{when(a.time)}</td><td>{e(a.action)}</td><td>{e(a.actor)}</td>"
        f"<td>{e(a.target or '')}</td><td>{e(a.client or '')}</td>"
        f"<td>{e(', '.join(f'{k}: {v}' for k, v in (a.details or {}).items()))}</td></tr>"
        for a in entries
    )
    body = (
        "<p class=muted>The latest 200 entries, newest first (all of them: "
        f"<code>trailmap audit list --org {e(m.slug)}</code> or GET /api/v1/audit).</p>"
        "<div class=wide tabindex=0 role=region aria-label='Audit log entries'><table><thead>"
        "<tr><th>Time</th><th>Action</th><th>Who</th><th>Target</th><th>From</th>"
        f"<th>Details</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
    return page(f"Audit log · {m.name}", body, nav=org_nav(m))
