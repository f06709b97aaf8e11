"""What the notification tests share: the REST calls that make channels and rules, and a
sender driven by the test itself (the app's own is off: `notification_poll_seconds=0`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

from tests.conftest import Tenant
from tests.notifications.receivers import HttpReceiver, SmtpReceiver
from trailmap.notifications.outbox import OutboxSettings, Sender
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Database

__all__ = [
    "LOOPBACK",
    "SECRET_KEY",
    "channel_body",
    "deliveries",
    "drain",
    "make_channel",
    "make_rule",
    "make_sender",
]

SECRET_KEY = "notification-tests-secret-key-0123456789abcdef"
LOOPBACK = "public,127.0.0.0/8"


def make_sender(db: Database, **overrides: Any) -> Sender:
    options: dict[str, Any] = {
        "poll_seconds": 0.01,
        "lease_seconds": 30.0,
        "timeout_seconds": 2.0,
        "max_attempts": 5,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
    }
    options.update(overrides)
    policy = OutboundPolicy.parse(options.pop("outbound", LOOPBACK))
    return Sender(db, secret_key=SECRET_KEY, outbound=policy, settings=OutboxSettings(**options))


async def drain(
    sender: Sender, done: Callable[[], Awaitable[bool]], *, within: float = 15.0
) -> None:
    """Run the sender's rounds until `done()` holds (each round sends what is due)."""
    with anyio.fail_after(within):
        while not await done():
            await sender.send_due()
            await anyio.sleep(0.02)  # let backoffs pass; bounded by the deadline above


def channel_body(
    kind: str, receiver: HttpReceiver | SmtpReceiver, name: str | None = None
) -> dict[str, Any]:
    settings: dict[str, Any]
    if isinstance(receiver, SmtpReceiver):
        settings = {
            "host": "127.0.0.1",
            "port": receiver.port,
            "security": "none",
            "username": receiver.username,
            "password": receiver.password,
            "from": "trailmap@example.com",
            "to": ["oncall@example.com", "team@example.com"],
        }
    elif kind == "pagerduty":
        settings = {"url": receiver.url, "routing_key": "R0UT1NGKEY0123456789abcdefghijkl"}
    elif kind == "opsgenie":
        settings = {"url": receiver.url, "api_key": receiver.secret}
    elif kind == "webhook":
        settings = {"url": receiver.url, "secret": receiver.secret}
    else:
        settings = {"url": receiver.url}
    return {"kind": kind, "name": name or f"{kind}-channel", "settings": settings}


async def make_channel(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]
) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/notifications/channels", json=body, headers=tenant.admin_auth()
    )
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()["data"]
    return made


async def make_rule(
    client: httpx.AsyncClient, tenant: Tenant, channel_ids: list[str], **fields: Any
) -> dict[str, Any]:
    body = {"name": fields.pop("name", "rule"), "channel_ids": channel_ids, **fields}
    answer = await client.post(
        "/api/v1/notifications/rules", json=body, headers=tenant.admin_auth()
    )
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()["data"]
    return made


async def deliveries(
    client: httpx.AsyncClient, tenant: Tenant, **params: Any
) -> list[dict[str, Any]]:
    answer = await client.get(
        "/api/v1/notifications/deliveries", params=params, headers=tenant.admin_auth()
    )
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]["deliveries"]
    return found
