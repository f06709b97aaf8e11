"""What an organization's console pages share: the signed-in member, their forms, the nav."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from trailmap.accounts.audit import Actor
from trailmap.accounts.keys import ApiKey
from trailmap.accounts.memberships import Membership, find_membership, list_memberships
from trailmap.accounts.permissions import Action
from trailmap.console.pages import e, form_csrf, page, to_login
from trailmap.http.context import client_address, context_of
from trailmap.http.sessions import SignedInUser, check_csrf, read_form, signed_in

__all__ = [
    "OrgMember",
    "actor_of",
    "csrf_failed",
    "org_member",
    "org_nav",
    "org_switcher",
    "posted_form",
    "refused",
    "when",
]


class OrgMember:
    """The signed-in user (for forms and the nav) and their membership of the page's org."""

    def __init__(
        self,
        user: SignedInUser,
        membership: Membership,
        orgs: Sequence[Membership] = (),
        section: str = "keys",
    ) -> None:
        self.user = user
        self.membership = membership
        self.slug = membership.org_slug
        self.org_id = membership.org_id
        self.name = membership.org_name
        # For the organization switcher: all the user's organizations, and the kind of page
        # this is (the path's part after /orgs/<slug>/), which the switcher keeps.
        self.orgs = list(orgs)
        self.section = section

    def may(self, action: Action) -> bool:
        return self.membership.may(action)

    def may_manage(self, key: ApiKey) -> bool:
        return self.membership.may_manage_key(key.user_id)

    def actor(self, request: Request) -> Actor:
        return Actor(self.user.email, client=client_address(request), user_id=self.user.id)


async def org_member(request: Request, slug: str) -> OrgMember | Response:
    """The signed-in user's membership of `slug`, or the response to send instead."""
    user = await signed_in(request)
    if user is None:
        return to_login(request)
    db = context_of(request).db
    membership = await find_membership(db, user.id, slug)
    if membership is None:
        # The same answer whether the organization does not exist or is not theirs.
        return page("Not found", "<p>No organization of yours has that name.</p>", status=404)
    return OrgMember(user, membership, await list_memberships(db, user.id), _section(request))


def _section(request: Request) -> str:
    """The kind of page: `keys` of /orgs/acme/keys/…, the organization's home for /orgs/acme."""
    parts = request.url.path.split("/")
    return parts[3] if len(parts) > 3 and parts[3] else ""


def org_switcher(m: OrgMember) -> str:
    """The user's other organizations, each a link to the same kind of page there (no
    script: a disclosure of links)."""
    others = [o for o in m.orgs if o.org_slug != m.slug]
    if not others:
        return ""
    section = f"/{quote(m.section)}" if m.section else ""
    items = "".join(
        f"<li><a href='/orgs/{e(quote(o.org_slug))}{e(section)}'>{e(o.org_name)}</a> "
        f"<span class=muted>({e(o.org_slug)}, {e(o.role)})</span></li>"
        for o in others
    )
    return (
        f"<details class=switcher><summary>Organization: {e(m.name)}"
        f"<span class=sr> (switch organization)</span></summary><ul>{items}</ul></details>"
    )


async def posted_form(request: Request, slug: str) -> tuple[OrgMember, dict[str, str]] | Response:
    """A member's submitted form, its CSRF token checked; or the response to send instead."""
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    form = await read_form(request)
    if not check_csrf(m.user, form):
        return csrf_failed(m)
    return m, form


def org_nav(m: OrgMember) -> str:
    slug = e(m.slug)
    managed = (
        f"<a href=/orgs/{slug}/audit>Audit log</a><a href=/orgs/{slug}/integrations>Integrations"
        f"</a><a href=/orgs/{slug}/notifications>Notifications</a>"
        f"<a href=/orgs/{slug}/settings>Settings</a>"
        if m.may("read_audit")
        else ""
    )
    return org_switcher(m) + (
        f"<nav><a href=/console>Organizations</a>"
        f"<a href=/orgs/{slug}>Home</a>"
        f"<a href=/orgs/{slug}/timeline>Timeline</a>"
        f"<a href=/orgs/{slug}/dora>DORA</a>"
        f"<a href=/orgs/{slug}/guardrails>Guardrails</a>"
        f"<a href=/orgs/{slug}/connect>Connect</a>"
        f"<a href=/orgs/{slug}/quickstart>Quick start</a>"
        f"<a href=/orgs/{slug}/graph>Graph</a>"
        f"<a href=/orgs/{slug}/keys>API Keys</a>"
        f"<a href=/orgs/{slug}/service-accounts>Service Accounts</a>"
        f"<a href=/orgs/{slug}/members>Members</a>{managed}<a href=/account>Account</a>"
        f"<form class=inline method=post action=/logout>{form_csrf(m.user)}"
        f"<button type=submit>Sign out {e(m.user.email)}</button></form></nav>"
    )


def when(moment: datetime | None, never: str = "never") -> str:
    return never if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def refused(m: OrgMember, message: str, status: int = 403) -> Response:
    return page(
        "Not allowed", f"<p class=error role=alert>{e(message)}</p>", status=status, nav=org_nav(m)
    )


def csrf_failed(m: OrgMember) -> Response:
    return refused(
        m, "The form's security check failed (the page is stale, or another site sent it)."
    )


def actor_of(request: Request, user: SignedInUser) -> Actor:
    return Actor(user.email, client=client_address(request), user_id=user.id)
