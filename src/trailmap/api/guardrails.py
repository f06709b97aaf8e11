"""`/api/v1/guardrails`: the check a caller makes before deploying (any key of the
organization), and its freezes and policies (listed by any key; made and removed with an
ADMIN key of an owner or admin, or of a service account)."""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from trailmap.errors import ValidationFailed
from trailmap.guardrails.guardrails import (
    check_deployment,
    create_freeze,
    create_policy,
    delete_freeze,
    delete_policy,
    list_freezes,
    list_policies,
)
from trailmap.http.auth import CurrentPrincipal, key_actor
from trailmap.http.body import read_json_body
from trailmap.http.context import context_of
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/guardrails", tags=["guardrails"])

_ERRORS = error_responses(
    400,
    401,
    403,
    415,
    503,
    saying={403: "Making or removing a rule needs an ADMIN key of an owner or admin"},
)
_NOT_FOUND = error_responses(404, saying={404: "No rule of this organization has that id"})
_BODY_BYTES: Final = 16 * 1024
_JSON: Final = ("application/json",)


class CheckIn(BaseModel):
    service: str = Field(examples=["checkout"])
    environment: str | None = Field(default=None, examples=["production"])
    time: str | None = Field(
        default=None,
        examples=["2026-12-11T16:30:00+01:00"],
        description="When the deployment would happen (ISO 8601 with its zone); now when left out",
    )


class FreezeIn(BaseModel):
    name: str = Field(examples=["Weekend freeze"])
    reason: str = Field(default="", examples=["No changes over the weekend"])
    environments: list[str] = Field(default=[], examples=[["production"]])
    services: list[str] = Field(default=[], description="Empty: every service")
    start: str | None = Field(default=None, description="A one-off window's start, with its zone")
    end: str | None = Field(default=None, description="A one-off window's end, with its zone")
    recurrence: dict[str, Any] | None = Field(
        default=None,
        examples=[
            {
                "days": ["fri"],
                "start": "16:00",
                "end_day": "mon",
                "end": "08:00",
                "timezone": "Europe/Paris",
            }
        ],
        description="A weekly window: days, start, end (HH:MM), optional end_day, timezone",
    )
    enabled: bool = True


class PolicyIn(BaseModel):
    kind: str = Field(
        examples=["allowed_hours"],
        description="blocked_days, allowed_hours, daily_cap, cooldown, max_rollback_rate, "
        "max_velocity_per_hour",
    )
    name: str = Field(examples=["Office hours"])
    settings: dict[str, Any] = Field(
        examples=[{"start": "09:00", "end": "17:00", "timezone": "Europe/Paris"}]
    )
    environments: list[str] = Field(default=[], examples=[["production"]])
    services: list[str] = Field(default=[])
    enabled: bool = True


class GuardrailAnswer(BaseModel):
    success: bool
    data: dict[str, Any]


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def _object(request: Request, what: str) -> dict[str, Any]:
    body = await read_json_body(request, max_bytes=_BODY_BYTES, accepted=_JSON)
    if not isinstance(body, dict):
        raise ValidationFailed(f"Send a JSON object: {what}.")
    return body


@router.post(
    "/check",
    summary="Would a deployment go against a freeze or a policy? (it only tells; nothing stops)",
    response_model=GuardrailAnswer,
    responses=_ERRORS,
    openapi_extra=_body_schema(CheckIn),
)
async def guardrails_check(request: Request, principal: CurrentPrincipal) -> Response:
    body = await _object(request, "service, environment and (optionally) time")
    check = await check_deployment(
        context_of(request).db,
        principal,
        service=body.get("service"),
        environment=body.get("environment"),
        time=body.get("time"),
    )
    return ok(check.as_json())


@router.get(
    "/freezes",
    summary="The organization's freeze windows",
    response_model=GuardrailAnswer,
    responses=_ERRORS,
)
async def freezes(request: Request, principal: CurrentPrincipal) -> Response:
    found = await list_freezes(context_of(request).db, principal.org_id, who=principal)
    return ok({"freezes": [f.as_json() for f in found]})


@router.post(
    "/freezes",
    summary="Make a freeze window: one-off (start, end) or weekly (recurrence)",
    status_code=201,
    response_model=GuardrailAnswer,
    responses=_ERRORS,
    openapi_extra=_body_schema(FreezeIn),
)
async def freezes_create(request: Request, principal: CurrentPrincipal) -> Response:
    principal.require("manage_settings")
    body = await _object(request, "name, reason, and start and end or recurrence")
    made = await create_freeze(
        context_of(request).db,
        principal.org_id,
        body,
        who=principal,
        by=key_actor(request, principal),
    )
    return ok(made.as_json(), status_code=201)


@router.delete(
    "/freezes/{freeze_id}",
    summary="Remove a freeze window",
    response_model=GuardrailAnswer,
    responses={**_ERRORS, **_NOT_FOUND},
)
async def freeze_delete(request: Request, principal: CurrentPrincipal, freeze_id: str) -> Response:
    gone = await delete_freeze(
        context_of(request).db,
        principal.org_id,
        freeze_id,
        who=principal,
        by=key_actor(request, principal),
    )
    return ok({"deleted": gone.id, "name": gone.name})


@router.get(
    "/policies",
    summary="The organization's deployment policies",
    response_model=GuardrailAnswer,
    responses=_ERRORS,
)
async def policies(request: Request, principal: CurrentPrincipal) -> Response:
    found = await list_policies(context_of(request).db, principal.org_id, who=principal)
    return ok({"policies": [p.as_json() for p in found]})


@router.post(
    "/policies",
    summary="Make a deployment policy of one of six kinds",
    status_code=201,
    response_model=GuardrailAnswer,
    responses=_ERRORS,
    openapi_extra=_body_schema(PolicyIn),
)
async def policies_create(request: Request, principal: CurrentPrincipal) -> Response:
    principal.require("manage_settings")
    body = await _object(request, "kind, name and settings")
    made = await create_policy(
        context_of(request).db,
        principal.org_id,
        body,
        who=principal,
        by=key_actor(request, principal),
    )
    return ok(made.as_json(), status_code=201)


@router.delete(
    "/policies/{policy_id}",
    summary="Remove a deployment policy",
    response_model=GuardrailAnswer,
    responses={**_ERRORS, **_NOT_FOUND},
)
async def policy_delete(request: Request, principal: CurrentPrincipal, policy_id: str) -> Response:
    gone = await delete_policy(
        context_of(request).db,
        principal.org_id,
        policy_id,
        who=principal,
        by=key_actor(request, principal),
    )
    return ok({"deleted": gone.id, "name": gone.name})
