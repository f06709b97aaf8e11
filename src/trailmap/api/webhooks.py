"""`POST /api/v1/integrations/{integration_id}/webhook`: where GitHub and GitLab deliver. No
API key: the delivery's signature (GitHub) or token (GitLab) is its authentication."""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from trailmap.http.body import media_type, read_body
from trailmap.http.context import context_of
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok
from trailmap.ingest.deliveries import WebhookDelivery, receive_delivery

__all__ = ["MAX_DELIVERY_BYTES", "router"]

router = APIRouter(prefix="/api/v1", tags=["integrations"])

# A forge's delivery is a few kilobytes; a push of many commits some hundreds.
MAX_DELIVERY_BYTES: Final = 1024 * 1024
_HEADERS: Final = (
    "x-github-event",
    "x-github-delivery",
    "x-hub-signature-256",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "x-gitlab-token",
)


class DeliveryAnswerBody(BaseModel):
    success: bool
    data: dict[str, Any]


def _too_large(limit: int, size: int | None) -> str:
    got = f" ({size} bytes)" if size is not None else ""
    return f"A webhook delivery is at most {limit} bytes; this one is larger{got}."


@router.post(
    "/integrations/{integration_id}/webhook",
    summary="Receive a GitHub or GitLab webhook delivery (authenticated by its signature)",
    description=(
        "The URL an integration shows. GitHub: X-Hub-Signature-256 (HMAC-SHA256 of the body "
        "with the integration's secret), X-GitHub-Event and X-GitHub-Delivery. GitLab: "
        "X-Gitlab-Token (the secret), X-Gitlab-Event and X-Gitlab-Event-UUID. The answer says "
        "what the delivery became: accepted (with the events made), duplicate (a redelivery), "
        "or ignored (and why); a refused delivery is a 4xx in the one error shape."
    ),
    response_model=DeliveryAnswerBody,
    responses=error_responses(
        400,
        401,
        404,
        413,
        415,
        429,
        503,
        saying={
            401: "The signature or token does not match the integration's secret",
            404: "No such integration, or it is disabled",
        },
    ),
)
async def webhook(request: Request, integration_id: str) -> Response:
    ctx = context_of(request)
    body = await read_body(request, max_bytes=MAX_DELIVERY_BYTES, too_large=_too_large)
    delivery = WebhookDelivery(
        integration_id=integration_id,
        body=body,
        content_type=media_type(request),
        headers={name: value for name in _HEADERS if (value := request.headers.get(name))},
    )
    answer = await receive_delivery(
        ctx.db,
        delivery,
        secret_key=ctx.settings.encryption_secret,
        max_event_bytes=ctx.settings.max_event_bytes,
    )
    return ok(answer.as_json())
