"""`/api/v1/notifications/...`: an organization's notification channels, rules and deliveries
over REST, for ADMIN keys of owners and admins, or of service accounts. A channel's secrets are
write-only: an answer says which are set, and a webhook's signing secret made by the server is
in the answer that made it, and only there (docs/notifications.md)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from trailmap.http.auth import CurrentPrincipal, key_actor
from trailmap.http.body import read_json_body
from trailmap.http.context import context_of
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok
from trailmap.integrations.notifications import (
    create_channel,
    create_rule,
    delete_channel,
    delete_rule,
    get_channel,
    get_delivery,
    get_rule,
    list_channels,
    list_deliveries,
    list_rules,
    retry_delivery,
    send_test_notification,
    update_channel,
    update_rule,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])

_ERRORS = error_responses(
    400,
    401,
    403,
    404,
    503,
    saying={
        403: "Needs an ADMIN key of an owner or admin, or of a service account",
        404: "No channel, rule or delivery of this organization has that id",
    },
)
_BODY_BYTES: Final = 64 * 1024
_JSON: Final = ("application/json",)


class Answer(BaseModel):
    success: bool
    data: dict[str, Any]


async def _body(request: Request) -> Any:
    return await read_json_body(request, max_bytes=_BODY_BYTES, accepted=_JSON)


# -- channels ---------------------------------------------------------------------------------


@router.get(
    "/channels",
    summary="The organization's notification channels (never their secrets)",
    response_model=Answer,
    responses=_ERRORS,
)
async def channels(request: Request, principal: CurrentPrincipal) -> Response:
    found = await list_channels(context_of(request).db, principal.org_id, who=principal)
    return ok({"channels": [c.as_json() for c in found]})


@router.post(
    "/channels",
    summary="Make a channel: webhook, email, pagerduty, opsgenie, slack or google_chat",
    status_code=201,
    response_model=Answer,
    responses={**_ERRORS, **error_responses(409)},
)
async def channels_create(request: Request, principal: CurrentPrincipal) -> Response:
    principal.require("manage_settings")
    ctx = context_of(request)
    channel, made_secret = await create_channel(
        ctx.db,
        principal.org_id,
        await _body(request),
        who=principal,
        by=key_actor(request, principal),
        secret_key=ctx.settings.encryption_secret,
        outbound=ctx.settings.outbound,
    )
    shown = channel.as_json()
    if made_secret is not None:
        shown["signing_secret"] = made_secret
    return ok(shown, status_code=201)


@router.get(
    "/channels/{channel_id}", summary="One channel", response_model=Answer, responses=_ERRORS
)
async def channel(request: Request, principal: CurrentPrincipal, channel_id: str) -> Response:
    found = await get_channel(context_of(request).db, principal.org_id, channel_id, who=principal)
    return ok(found.as_json())


@router.patch(
    "/channels/{channel_id}",
    summary="Change a channel's name, enabled flag or settings (secrets not named are kept)",
    response_model=Answer,
    responses={**_ERRORS, **error_responses(409)},
)
async def channel_update(
    request: Request, principal: CurrentPrincipal, channel_id: str
) -> Response:
    principal.require("manage_settings")
    ctx = context_of(request)
    changed = await update_channel(
        ctx.db,
        principal.org_id,
        channel_id,
        await _body(request),
        who=principal,
        by=key_actor(request, principal),
        secret_key=ctx.settings.encryption_secret,
        outbound=ctx.settings.outbound,
    )
    return ok(changed.as_json())


@router.delete(
    "/channels/{channel_id}",
    summary="Remove a channel and its deliveries",
    response_model=Answer,
    responses=_ERRORS,
)
async def channel_delete(
    request: Request, principal: CurrentPrincipal, channel_id: str
) -> Response:
    removed = await delete_channel(
        context_of(request).db,
        principal.org_id,
        channel_id,
        who=principal,
        by=key_actor(request, principal),
    )
    return ok({"deleted": removed.id, "name": removed.name})


@router.post(
    "/channels/{channel_id}/test",
    summary="Send a test notification now; the answer says whether the receiver took it",
    response_model=Answer,
    responses=_ERRORS,
)
async def channel_test(request: Request, principal: CurrentPrincipal, channel_id: str) -> Response:
    ctx = context_of(request)
    outcome = await send_test_notification(
        ctx.db,
        principal.org_id,
        channel_id,
        who=principal,
        by=key_actor(request, principal),
        secret_key=ctx.settings.encryption_secret,
        outbound=ctx.settings.outbound,
        timeout_seconds=ctx.settings.notification_timeout_seconds,
    )
    return ok(outcome)


# -- rules ------------------------------------------------------------------------------------


@router.get(
    "/rules",
    summary="The organization's notification rules",
    response_model=Answer,
    responses=_ERRORS,
)
async def rules(request: Request, principal: CurrentPrincipal) -> Response:
    found = await list_rules(context_of(request).db, principal.org_id, who=principal)
    return ok({"rules": [r.as_json() for r in found]})


@router.post(
    "/rules",
    summary="Make a rule: what sets it off (on), its filters, and its channels",
    status_code=201,
    response_model=Answer,
    responses={**_ERRORS, **error_responses(409)},
)
async def rules_create(request: Request, principal: CurrentPrincipal) -> Response:
    principal.require("manage_settings")
    made = await create_rule(
        context_of(request).db,
        principal.org_id,
        await _body(request),
        who=principal,
        by=key_actor(request, principal),
    )
    return ok(made.as_json(), status_code=201)


@router.get("/rules/{rule_id}", summary="One rule", response_model=Answer, responses=_ERRORS)
async def rule(request: Request, principal: CurrentPrincipal, rule_id: str) -> Response:
    found = await get_rule(context_of(request).db, principal.org_id, rule_id, who=principal)
    return ok(found.as_json())


@router.patch(
    "/rules/{rule_id}",
    summary="Change a rule",
    response_model=Answer,
    responses={**_ERRORS, **error_responses(409)},
)
async def rule_update(request: Request, principal: CurrentPrincipal, rule_id: str) -> Response:
    principal.require("manage_settings")
    changed = await update_rule(
        context_of(request).db,
        principal.org_id,
        rule_id,
        await _body(request),
        who=principal,
        by=key_actor(request, principal),
    )
    return ok(changed.as_json())


@router.delete(
    "/rules/{rule_id}", summary="Remove a rule", response_model=Answer, responses=_ERRORS
)
async def rule_delete(request: Request, principal: CurrentPrincipal, rule_id: str) -> Response:
    removed = await delete_rule(
        context_of(request).db,
        principal.org_id,
        rule_id,
        who=principal,
        by=key_actor(request, principal),
    )
    return ok({"deleted": removed.id, "name": removed.name})


# -- deliveries -------------------------------------------------------------------------------


@router.get(
    "/deliveries",
    summary="The organization's deliveries, newest first, with status, attempts and last error",
    response_model=Answer,
    responses=_ERRORS,
)
async def deliveries(
    request: Request,
    principal: CurrentPrincipal,
    status: Annotated[str | None, Query(description="pending, sent or failed")] = None,
    channel_id: Annotated[str | None, Query(description="One channel's deliveries")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    found = await list_deliveries(
        context_of(request).db,
        principal.org_id,
        who=principal,
        status=status,
        channel_id=channel_id,
        limit=limit,
    )
    return ok({"deliveries": [d.as_json() for d in found]})


@router.get(
    "/deliveries/{delivery_id}", summary="One delivery", response_model=Answer, responses=_ERRORS
)
async def delivery(request: Request, principal: CurrentPrincipal, delivery_id: str) -> Response:
    found = await get_delivery(context_of(request).db, principal.org_id, delivery_id, who=principal)
    return ok(found.as_json())


@router.post(
    "/deliveries/{delivery_id}/retry",
    summary="Send a failed delivery again now, with its attempts counted afresh",
    response_model=Answer,
    responses={**_ERRORS, **error_responses(409)},
)
async def delivery_retry(
    request: Request, principal: CurrentPrincipal, delivery_id: str
) -> Response:
    retried = await retry_delivery(
        context_of(request).db,
        principal.org_id,
        delivery_id,
        who=principal,
        by=key_actor(request, principal),
    )
    return ok(retried.as_json())
