"""`/api/v1/integrations`: an organization's integrations over REST, for ADMIN keys of owners
and admins, or of service accounts; a secret is in the answer that makes it, and only there."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from trailmap.errors import ValidationFailed
from trailmap.graph.learn.declared import forget_source
from trailmap.http.auth import CurrentPrincipal, key_actor
from trailmap.http.body import read_json_body
from trailmap.http.context import context_of
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok
from trailmap.ingest.clone import check_repository_settings
from trailmap.ingest.repository_indexer import repository_view
from trailmap.integrations.deliveries import KEEP_DELIVERIES, list_deliveries
from trailmap.integrations.integrations import (
    DEFAULT_OVERLAP,
    Integration,
    create_integration,
    delete_integration,
    get_integration,
    list_integrations,
    rotate_secret,
    update_integration,
)
from trailmap.integrations.repositories import REPOSITORY_KIND, request_index

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["integrations"])

_ERRORS = error_responses(
    400,
    401,
    403,
    404,
    503,
    saying={
        403: "Needs an ADMIN key of an owner or admin, or of a service account",
        404: "No integration of this organization has that id",
    },
)
_BODY_BYTES: Final = 64 * 1024
_JSON: Final = ("application/json",)


class IntegrationIn(BaseModel):
    kind: str = Field(
        examples=["github"],
        description="github or gitlab (webhooks); kubernetes, eks, repository, backstage",
    )
    name: str = Field(max_length=100, examples=["acme-github"])
    settings: dict[str, Any] | None = Field(
        default=None,
        examples=[{"services": {"acme/checkout-web": "checkout"}, "branch": "main"}],
        description="services: a repository's full name to its service; service: the one "
        "every other repository belongs to (else each is a service of its own name); branch: "
        "the default branch, overriding the forge's; url, context, region, cluster where the "
        "kind uses them; a cluster's namespaces (a list; every one if empty), env_map (a "
        "namespace to its environment) and default_env; kubeconfig, stored encrypted and "
        "never shown (a token or client certificate; no exec, auth-provider or file paths)",
    )


class IntegrationAnswer(BaseModel):
    success: bool
    data: dict[str, Any]


def _shown(request: Request, integration: Integration) -> dict[str, Any]:
    return integration.as_json(context_of(request).settings.public_url)


async def _shown_with_index(request: Request, integration: Integration) -> dict[str, Any]:
    """A repository integration with its indexing: last reading, asked for, running."""
    shown = _shown(request, integration)
    if integration.kind == REPOSITORY_KIND:
        shown["index"] = await repository_view(context_of(request).db, integration)
    return shown


def _check_repository_url(request: Request, kind: object, settings: object) -> None:
    check_repository_settings(
        kind, settings, local_roots=context_of(request).settings.repository_roots
    )


@router.get(
    "/integrations",
    summary="The organization's integrations (never their secrets)",
    response_model=IntegrationAnswer,
    responses=_ERRORS,
)
async def integrations(request: Request, principal: CurrentPrincipal) -> Response:
    found = await list_integrations(context_of(request).db, principal.org_id, who=principal)
    return ok({"integrations": [_shown(request, i) for i in found]})


@router.post(
    "/integrations",
    summary="Make an integration: its webhook secret is in this answer, and never again",
    status_code=201,
    response_model=IntegrationAnswer,
    responses={**_ERRORS, **error_responses(409)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": IntegrationIn.model_json_schema()}},
        }
    },
)
async def integrations_create(request: Request, principal: CurrentPrincipal) -> Response:
    principal.require("manage_settings")
    ctx = context_of(request)
    body = await read_json_body(request, max_bytes=_BODY_BYTES, accepted=_JSON)
    if not isinstance(body, dict):
        raise ValidationFailed("Send a JSON object with kind, name and (optionally) settings.")
    _check_repository_url(request, body.get("kind"), body.get("settings"))
    integration, secret = await create_integration(
        ctx.db,
        principal.org_id,
        who=principal,
        by=key_actor(request, principal),
        kind=body.get("kind"),
        name=body.get("name"),
        settings=body.get("settings"),
        secret_key=ctx.settings.encryption_secret,
    )
    if integration.kind == REPOSITORY_KIND:
        # Connecting starts an index in the background; the answer says so, and GET shows it.
        await request_index(ctx.db, principal.org_id, integration.id, who=None, reason="connected")
    shown = await _shown_with_index(request, integration)
    return ok(shown | {"secret": secret}, status_code=201)


@router.get(
    "/integrations/{integration_id}",
    summary="One integration",
    response_model=IntegrationAnswer,
    responses=_ERRORS,
)
async def integration(
    request: Request, principal: CurrentPrincipal, integration_id: str
) -> Response:
    found = await get_integration(
        context_of(request).db, principal.org_id, integration_id, who=principal
    )
    return ok(await _shown_with_index(request, found))


@router.patch(
    "/integrations/{integration_id}",
    summary="Change an integration's name, status (active or disabled) or settings",
    response_model=IntegrationAnswer,
    responses={**_ERRORS, **error_responses(409)},
)
async def integration_update(
    request: Request, principal: CurrentPrincipal, integration_id: str
) -> Response:
    principal.require("manage_settings")
    body = await read_json_body(request, max_bytes=_BODY_BYTES, accepted=_JSON)
    if isinstance(body, dict) and isinstance(body.get("settings"), dict):
        current = await get_integration(
            context_of(request).db, principal.org_id, integration_id, who=principal
        )
        _check_repository_url(request, current.kind, body["settings"])
    changed = await update_integration(
        context_of(request).db,
        principal.org_id,
        integration_id,
        body,
        who=principal,
        by=key_actor(request, principal),
        secret_key=context_of(request).settings.encryption_secret,
    )
    if (
        changed.kind == REPOSITORY_KIND
        and changed.status == "active"
        and isinstance(body, dict)
        and ("settings" in body or body.get("status") == "active")
    ):
        # A new remote, branch or token, or enabled again: read it afresh.
        await request_index(
            context_of(request).db, principal.org_id, changed.id, who=None, reason="changed"
        )
    return ok(await _shown_with_index(request, changed))


@router.delete(
    "/integrations/{integration_id}",
    summary="Remove an integration and its deliveries (the events it made stay)",
    response_model=IntegrationAnswer,
    responses=_ERRORS,
)
async def integration_delete(
    request: Request, principal: CurrentPrincipal, integration_id: str
) -> Response:
    removed = await delete_integration(
        context_of(request).db,
        principal.org_id,
        integration_id,
        who=principal,
        by=key_actor(request, principal),
    )
    # What it declared (a cluster's, a catalog's, a repository's) goes from the graph.
    await forget_source(context_of(request).db, principal.org_id, removed.id)
    return ok({"deleted": removed.id, "name": removed.name})


@router.post(
    "/integrations/{integration_id}/index",
    summary="Index a repository integration now (in the background): its remote is fetched "
    "and read, and what it declares recorded",
    status_code=202,
    response_model=IntegrationAnswer,
    responses=_ERRORS,
)
async def integration_index(
    request: Request, principal: CurrentPrincipal, integration_id: str
) -> Response:
    principal.require("manage_settings")
    ctx = context_of(request)
    found = await request_index(
        ctx.db, principal.org_id, integration_id, who=principal, reason="asked for"
    )
    return ok(await _shown_with_index(request, found), status_code=202)


@router.post(
    "/integrations/{integration_id}/rotate-secret",
    summary="A new webhook secret (in this answer only); the previous one works for the overlap",
    response_model=IntegrationAnswer,
    responses=_ERRORS,
)
async def integration_rotate(
    request: Request,
    principal: CurrentPrincipal,
    integration_id: str,
    overlap_hours: Annotated[
        float,
        Query(ge=0, le=168, description="How long the previous secret is still accepted"),
    ] = DEFAULT_OVERLAP.total_seconds() / 3600,
) -> Response:
    ctx = context_of(request)
    rotated, secret = await rotate_secret(
        ctx.db,
        principal.org_id,
        integration_id,
        who=principal,
        by=key_actor(request, principal),
        secret_key=ctx.settings.encryption_secret,
        overlap=timedelta(hours=overlap_hours),
    )
    return ok(_shown(request, rotated) | {"secret": secret})


@router.get(
    "/integrations/{integration_id}/deliveries",
    summary="The integration's recent deliveries, newest first, with what each became",
    response_model=IntegrationAnswer,
    responses=_ERRORS,
)
async def integration_deliveries(
    request: Request,
    principal: CurrentPrincipal,
    integration_id: str,
    limit: Annotated[int, Query(ge=1, le=KEEP_DELIVERIES)] = 50,
) -> Response:
    found = await list_deliveries(
        context_of(request).db, principal.org_id, integration_id, who=principal, limit=limit
    )
    return ok({"deliveries": [d.as_json() for d in found]})
