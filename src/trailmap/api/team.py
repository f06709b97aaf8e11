"""`/api/v1/members`, `/api/v1/invitations`, `/api/v1/audit` and `/api/v1/organization`:
the team and its rules over REST, for ADMIN keys of owners and admins, or of service accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from trailmap import clock
from trailmap.accounts.audit import list_audit
from trailmap.accounts.mail import mail_configured, send_mail
from trailmap.accounts.organizations import Organization, check_retention, get_org
from trailmap.accounts.quotas import usage_report
from trailmap.accounts.team import (
    change_role,
    invite,
    list_invitations,
    list_members,
    remove_member,
    set_org_key_rules,
    set_org_retention,
)
from trailmap.errors import ValidationFailed
from trailmap.http.auth import CurrentPrincipal, key_actor
from trailmap.http.body import read_json_body
from trailmap.http.context import context_of
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok
from trailmap.timeline.times import TimeExpressionError, parse_time_expression

_UTC = ZoneInfo("UTC")

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["team"])

_ERRORS = error_responses(
    400,
    401,
    403,
    503,
    saying={403: "Needs an ADMIN key of an owner or admin, or of a service account"},
)
_BODY_BYTES = 16 * 1024


class TeamAnswer(BaseModel):
    success: bool
    data: dict[str, Any]


def _text(body: object, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str):
        raise ValidationFailed.field(name, "give a string")
    return value


@router.get(
    "/members", summary="The organization's members", response_model=TeamAnswer, responses=_ERRORS
)
async def members(request: Request, principal: CurrentPrincipal) -> Response:
    principal.require("manage_members")
    found = await list_members(context_of(request).db, principal.org_slug, who=principal)
    return ok({"members": [m.as_json() for m in found]})


@router.patch(
    "/members/{email}",
    summary="Change a member's role",
    response_model=TeamAnswer,
    responses={**_ERRORS, **error_responses(404, 409)},
)
async def member_role(request: Request, principal: CurrentPrincipal, email: str) -> Response:
    body = await read_json_body(request, max_bytes=_BODY_BYTES, accepted=("application/json",))
    member = await change_role(
        context_of(request).db,
        principal.org_slug,
        email,
        _text(body, "role"),
        who=principal,
        by=key_actor(request, principal),
    )
    return ok(member.as_json())


@router.delete(
    "/members/{email}",
    summary="Remove a member (their personal keys are revoked)",
    response_model=TeamAnswer,
    responses={**_ERRORS, **error_responses(404, 409)},
)
async def member_remove(request: Request, principal: CurrentPrincipal, email: str) -> Response:
    revoked = await remove_member(
        context_of(request).db,
        principal.org_slug,
        email,
        who=principal,
        by=key_actor(request, principal),
    )
    keys = [{"id": k["id"], "name": k["name"], "prefix": k["prefix"]} for k in revoked]
    return ok({"removed": email.strip().lower(), "keys_revoked": keys})


@router.get(
    "/invitations", summary="Open invitations", response_model=TeamAnswer, responses=_ERRORS
)
async def invitations(request: Request, principal: CurrentPrincipal) -> Response:
    found = await list_invitations(context_of(request).db, principal.org_slug, who=principal)
    return ok({"invitations": [i.as_json() for i in found]})


@router.post(
    "/invitations",
    summary="Invite someone: the link is e-mailed, or returned when no mail server is set",
    status_code=201,
    response_model=TeamAnswer,
    responses={**_ERRORS, **error_responses(409)},
)
async def invitations_create(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    body = await read_json_body(request, max_bytes=_BODY_BYTES, accepted=("application/json",))
    role = body.get("role", "member") if isinstance(body, dict) else "member"
    invitation = await invite(
        ctx.db,
        principal.org_slug,
        _text(body, "email"),
        role if isinstance(role, str) else "",
        who=principal,
        by=key_actor(request, principal),
        days=ctx.settings.invitation_days,
    )
    link = invitation.link(ctx.settings.public_url)
    data = invitation.as_json()
    if mail_configured(ctx.settings):
        await send_mail(
            ctx.settings, invitation.email, invitation.subject, invitation.message(link)
        )
        data["emailed"] = True
    else:
        data["emailed"] = False
        data["link"] = link  # shown once: only its hash is kept
    return ok(data, status_code=201)


@router.get(
    "/audit", summary="The audit log, newest first", response_model=TeamAnswer, responses=_ERRORS
)
async def audit(
    request: Request,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[str | None, Query(description="Entries before this time (ISO 8601)")] = None,
) -> Response:
    principal.require("read_audit")
    until: datetime | None = None
    if before is not None:
        try:
            until = parse_time_expression(before, now=clock.now(), tz=_UTC)
        except TimeExpressionError as error:
            raise ValidationFailed.field("before", str(error)) from None
    entries = await list_audit(context_of(request).db, principal.org_id, limit=limit, before=until)
    return ok({"entries": [a.as_json() for a in entries]})


@router.get(
    "/organization",
    summary="The organization and its rules for API keys",
    response_model=TeamAnswer,
    responses=_ERRORS,
)
async def organization(request: Request, principal: CurrentPrincipal) -> Response:
    org = await get_org(context_of(request).db, principal.org_slug)
    return ok(_org_json(org))


@router.get(
    "/organization/usage",
    summary="What the organization uses of each quota of its plan",
    response_model=TeamAnswer,
    responses=_ERRORS,
)
async def organization_usage(request: Request, principal: CurrentPrincipal) -> Response:
    db = context_of(request).db
    org = await get_org(db, principal.org_slug)
    lines = await usage_report(db, org.id, org.plan)
    return ok({"plan": org.plan.name, "quotas": [u.as_json() for u in lines]})


@router.patch(
    "/organization",
    summary="Change the organization's rules for API keys and its retention window",
    response_model=TeamAnswer,
    responses=_ERRORS,
)
async def organization_update(request: Request, principal: CurrentPrincipal) -> Response:
    body = await read_json_body(request, max_bytes=_BODY_BYTES, accepted=("application/json",))
    if not isinstance(body, dict):
        raise ValidationFailed(
            "Send a JSON object with members_write_keys, max_key_days and/or retention_days."
        )
    writers = body.get("members_write_keys")
    if writers is not None and not isinstance(writers, bool):
        raise ValidationFailed.field("members_write_keys", "give true or false")
    days: int | bool | None = False
    if "max_key_days" in body:
        days = body["max_key_days"]
        if days is not None and (isinstance(days, bool) or not isinstance(days, int)):
            raise ValidationFailed.field("max_key_days", "give a whole number of days, or null")
    retention = body.get("retention_days")
    if retention is not None and (isinstance(retention, bool) or not isinstance(retention, int)):
        raise ValidationFailed.field("retention_days", "give a whole number of days")
    db = context_of(request).db
    principal.require("manage_settings")
    if retention is not None:  # refused before anything else changes
        check_retention(await get_org(db, principal.org_slug), retention)
    org = await set_org_key_rules(
        db,
        principal.org_slug,
        who=principal,
        by=key_actor(request, principal),
        members_write_keys=writers,
        max_key_days=days,
    )
    if retention is not None:
        org = await set_org_retention(
            db, principal.org_slug, retention, who=principal, by=key_actor(request, principal)
        )
    return ok(_org_json(org))


def _org_json(org: Organization) -> dict[str, Any]:
    return {
        "slug": org.slug,
        "name": org.name,
        "plan": org.plan.name,
        "retention_days": org.retention_days,
        "members_write_keys": org.members_write_keys,
        "max_key_days": org.max_key_days,
    }
