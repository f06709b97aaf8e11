"""What a signed-in member reads the organization's timeline, graph and metrics as: a read-only
`Principal` of their role, the same the domain gets from a READ_ONLY key over REST or MCP."""

from __future__ import annotations

from starlette.requests import Request

from trailmap.accounts.organizations import get_org
from trailmap.accounts.principal import Principal
from trailmap.console.orgs import OrgMember
from trailmap.http.context import context_of

__all__ = ["reader_of"]


async def reader_of(request: Request, m: OrgMember) -> Principal:
    """The member as a reader of their organization (never more than READ_ONLY)."""
    org = await get_org(context_of(request).db, m.slug)
    return Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope="READ_ONLY",
        user_id=m.user.id,
        role=m.membership.role,
    )
