"""Notifications end to end: channels and rules made over REST, an event stored over REST,
the outbox's sender delivering to receivers on loopback that check each API's format."""

from __future__ import annotations

import json

import anyio
import anyio.lowlevel
import httpx
import pytest

from tests.conftest import Tenant
from tests.factories import event
from tests.notifications.receivers import HttpReceiver, SmtpReceiver, check_signature
from tests.notifications.support import (
    SECRET_KEY,
    channel_body,
    deliveries,
    drain,
    make_channel,
    make_rule,
    make_sender,
)
from trailmap.accounts.audit import list_audit
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

_KINDS = ("pagerduty", "opsgenie", "slack", "google_chat", "webhook")


async def _post_event(client: httpx.AsyncClient, tenant: Tenant, **fields: object) -> str:
    answer = await client.post("/api/v1/events", json=event(**fields), headers=tenant.auth())
    assert answer.status_code in (200, 201, 207), answer.text
    accepted = answer.json()["data"]["accepted"]
    assert accepted, answer.text
    return str(accepted[0]["id"])


async def _all_in(client: httpx.AsyncClient, tenant: Tenant, status: str, count: int) -> bool:
    found = await deliveries(client, tenant)
    return len(found) == count and all(d["status"] == status for d in found)


async def test_a_deployment_reaches_every_kind_of_receiver_in_its_own_format(
    client: httpx.AsyncClient,
    tenant: Tenant,
    db: Database,
    receivers: dict[str, HttpReceiver],
    smtp: SmtpReceiver,
) -> None:
    channels = [await make_channel(client, tenant, channel_body(k, receivers[k])) for k in _KINDS]
    channels.append(await make_channel(client, tenant, channel_body("email", smtp)))
    await make_rule(
        client,
        tenant,
        [c["id"] for c in channels],
        event_types=["deployment"],
        environments=["production"],
    )
    event_id = await _post_event(
        client,
        tenant,
        source="//github.com/acme/checkout",
        version="1.5.0",
        severity="MAJOR",
    )
    await _post_event(client, tenant, type="config-change")  # no rule asks for it
    await _post_event(client, tenant, subject="staging")  # nor for staging

    await drain(make_sender(db), lambda: _all_in(client, tenant, "sent", 6))

    pagerduty = receivers["pagerduty"].wait_for(1)[0].json()
    assert pagerduty["routing_key"] == "R0UT1NGKEY0123456789abcdefghijkl"
    assert pagerduty["event_action"] == "trigger"
    assert pagerduty["payload"]["source"] == "checkout"
    assert pagerduty["payload"]["severity"] == "error"  # MAJOR
    assert "deployment of checkout 1.5.0 to production" in pagerduty["payload"]["summary"].lower()
    assert pagerduty["payload"]["custom_details"]["event"]["id"] == event_id
    opsgenie = receivers["opsgenie"].wait_for(1)[0]
    assert opsgenie.headers["authorization"] == "GenieKey genie-key-1"
    assert opsgenie.json()["alias"].startswith("trailmap-")
    assert opsgenie.json()["priority"] == "P2"
    for chat in ("slack", "google_chat"):
        text = receivers[chat].wait_for(1)[0].json()["text"]
        assert "deployment of checkout 1.5.0 to production" in text.lower()
    hook = receivers["webhook"].wait_for(1)[0]
    assert check_signature("whsec-test-0123456789", hook.headers["x-trailmap-signature"], hook.body)
    assert not check_signature("another-secret", hook.headers["x-trailmap-signature"], hook.body)
    body = json.loads(hook.body)
    assert body["event"]["id"] == event_id
    assert body["reason"] == "event"
    assert hook.headers["idempotency-key"] == body["id"]
    recipients, mail = smtp.wait_for(1)[0]
    assert recipients == ["oncall@example.com", "team@example.com"]
    assert "checkout" in str(mail["Subject"])
    assert str(mail["Message-ID"]).endswith("@trailmap.notifications>")
    for receiver in receivers.values():
        assert receiver.problems == []
        assert len(receiver.received) == 1


async def test_a_receiver_that_fails_is_retried_with_backoff_until_it_takes_it(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, receivers: dict[str, HttpReceiver]
) -> None:
    pagerduty = receivers["pagerduty"]
    pagerduty.fail_next = 2
    channel = await make_channel(client, tenant, channel_body("pagerduty", pagerduty))
    await make_rule(client, tenant, [channel["id"]])
    await _post_event(client, tenant)
    sender = make_sender(db)

    await sender.send_due()
    first = (await deliveries(client, tenant))[0]
    assert first["status"] == "pending"
    assert first["attempts"] == 1
    assert "HTTP 503" in first["last_error"]
    assert first["next_attempt"] > first["created"]  # not due again at once

    await drain(sender, lambda: _all_in(client, tenant, "sent", 1))
    done = (await deliveries(client, tenant))[0]
    assert done["attempts"] == 3
    assert done["last_error"] is None
    assert len(pagerduty.received) == 1
    assert pagerduty.fail_next == 0


async def test_a_receiver_that_answers_slowly_times_out_and_is_tried_again(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, receivers: dict[str, HttpReceiver]
) -> None:
    slack = receivers["slack"]
    slack.slow_next, slack.slow_seconds = 1, 1.5
    channel = await make_channel(client, tenant, channel_body("slack", slack))
    await make_rule(client, tenant, [channel["id"]])
    await _post_event(client, tenant)
    sender = make_sender(db, timeout_seconds=0.5)

    await sender.send_due()
    first = (await deliveries(client, tenant))[0]
    assert first["status"] == "pending"
    assert "0.5 s" in first["last_error"]

    await drain(sender, lambda: _all_in(client, tenant, "sent", 1))
    assert (await deliveries(client, tenant))[0]["attempts"] == 2


async def test_a_receiver_down_during_a_restart_gets_the_notification_once_it_is_back(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, receivers: dict[str, HttpReceiver]
) -> None:
    webhook = receivers["webhook"]
    channel = await make_channel(client, tenant, channel_body("webhook", webhook))
    await make_rule(client, tenant, [channel["id"]])
    webhook.stop()
    await _post_event(client, tenant)
    sender = make_sender(db)

    await sender.send_due()
    first = (await deliveries(client, tenant))[0]
    assert first["status"] == "pending"
    assert "could not reach 127.0.0.1" in first["last_error"]

    webhook.start()  # the same port
    await drain(sender, lambda: _all_in(client, tenant, "sent", 1))
    assert len(webhook.wait_for(1)) == 1


async def test_a_failed_delivery_shows_its_last_error_and_is_sent_when_retried(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, receivers: dict[str, HttpReceiver]
) -> None:
    opsgenie = receivers["opsgenie"]
    opsgenie.fail_next, opsgenie.fail_status = 2, 500
    channel = await make_channel(client, tenant, channel_body("opsgenie", opsgenie))
    await make_rule(client, tenant, [channel["id"]])
    await _post_event(client, tenant)
    sender = make_sender(db, max_attempts=2)

    await drain(sender, lambda: _all_in(client, tenant, "failed", 1))
    failed = await deliveries(client, tenant, status="failed")
    assert len(failed) == 1
    assert "HTTP 500" in failed[0]["last_error"]
    assert failed[0]["attempts"] == 2
    assert failed[0]["channel"] == {
        "id": channel["id"],
        "name": "opsgenie-channel",
        "kind": "opsgenie",
    }

    retried = await client.post(
        f"/api/v1/notifications/deliveries/{failed[0]['id']}/retry", headers=tenant.admin_auth()
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["data"]["status"] == "pending"
    assert retried.json()["data"]["attempts"] == 0
    await drain(sender, lambda: _all_in(client, tenant, "sent", 1))
    assert len(opsgenie.received) == 1

    again = await client.post(
        f"/api/v1/notifications/deliveries/{failed[0]['id']}/retry", headers=tenant.admin_auth()
    )
    assert again.status_code == 409
    assert again.json()["success"] is False


async def test_the_outbound_guard_refuses_a_channel_to_loopback_without_connecting(
    db: Database, tenant: Tenant, receivers: dict[str, HttpReceiver], client: httpx.AsyncClient
) -> None:
    guarded = Settings(
        database_url=db.url,
        retention_purge_interval_seconds=0,
        notification_poll_seconds=0,
        secret_key=SECRET_KEY,
    )  # the default networks: public and private ranges, never loopback
    app = create_app(guarded, database=db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as strict:
        answer = await strict.post(
            "/api/v1/notifications/channels",
            json=channel_body("slack", receivers["slack"]),
            headers=tenant.admin_auth(),
        )
    assert answer.status_code == 400
    assert answer.json()["success"] is False
    assert "loopback" in answer.json()["error"]
    assert answer.json()["details"][0]["field"] == "settings.url"

    # Saved while loopback was allowed, then sent by a node whose guard refuses it.
    channel = await make_channel(client, tenant, channel_body("slack", receivers["slack"]))
    await make_rule(client, tenant, [channel["id"]])
    await _post_event(client, tenant)
    await make_sender(db, outbound="public", max_attempts=1).send_due()
    failed = await deliveries(client, tenant, status="failed")
    assert "refused by the outbound guard" in failed[0]["last_error"]
    assert receivers["slack"].received == []
    assert receivers["slack"].problems == []


async def test_a_channels_secrets_are_never_shown_after_it_is_made(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, receivers: dict[str, HttpReceiver]
) -> None:
    body = channel_body("pagerduty", receivers["pagerduty"])
    made = await make_channel(client, tenant, body)
    assert made["secrets_set"] == ["routing_key"]
    hook = await make_channel(
        client,
        tenant,
        {"kind": "webhook", "name": "made-secret", "settings": {"url": receivers["webhook"].url}},
    )
    assert len(hook["signing_secret"]) >= 40  # made by the server, shown this once
    for path in (
        "/api/v1/notifications/channels",
        f"/api/v1/notifications/channels/{made['id']}",
        f"/api/v1/notifications/channels/{hook['id']}",
    ):
        text = (await client.get(path, headers=tenant.admin_auth())).text
        assert "R0UT1NGKEY" not in text
        assert hook["signing_secret"] not in text
        assert receivers["webhook"].url not in text  # a webhook URL may hold a token
    changed = await client.patch(
        f"/api/v1/notifications/channels/{made['id']}",
        json={"name": "renamed"},
        headers=tenant.admin_auth(),
    )
    assert changed.status_code == 200
    assert changed.json()["data"]["secrets_set"] == ["routing_key"]  # kept
    logged = [e.action for e in await list_audit(db, tenant.org.id)]
    assert logged.count("notification_channel.created") == 2
    assert "notification_channel.updated" in logged


async def test_a_test_send_says_whether_the_receiver_took_it(
    client: httpx.AsyncClient, tenant: Tenant, receivers: dict[str, HttpReceiver]
) -> None:
    google = receivers["google_chat"]
    channel = await make_channel(client, tenant, channel_body("google_chat", google))
    answer = await client.post(
        f"/api/v1/notifications/channels/{channel['id']}/test", headers=tenant.admin_auth()
    )
    assert answer.json()["data"]["sent"] is True
    assert "test notification" in google.wait_for(1)[0].json()["text"]
    google.fail_next = 1
    failed = await client.post(
        f"/api/v1/notifications/channels/{channel['id']}/test", headers=tenant.admin_auth()
    )
    assert failed.json()["data"] == {
        "sent": False,
        "error": '127.0.0.1 answered HTTP 503: {"error":"unavailable"}',
        "delivery_id": failed.json()["data"]["delivery_id"],
    }


async def test_only_owners_and_admins_manage_notifications(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for path in ("channels", "rules", "deliveries"):
        answer = await client.get(f"/api/v1/notifications/{path}", headers=tenant.auth())
        assert answer.status_code == 403
        assert answer.json()["success"] is False


async def test_a_bad_channel_names_each_problem_in_the_one_error_shape(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    answer = await client.post(
        "/api/v1/notifications/channels",
        json={"kind": "email", "name": "mail", "settings": {"port": 0, "to": "x", "bogus": 1}},
        headers=tenant.admin_auth(),
    )
    assert answer.status_code == 400
    fields = {d["field"] for d in answer.json()["details"]}
    assert {"settings.port", "settings.to", "settings.bogus", "settings.host"} <= fields
    kind = await client.post(
        "/api/v1/notifications/channels",
        json={"kind": "fax", "name": "x"},
        headers=tenant.admin_auth(),
    )
    assert kind.status_code == 400
    assert kind.json()["details"][0]["field"] == "kind"
    rule = await client.post(
        "/api/v1/notifications/rules",
        json={"name": "r", "on": ["sometimes"], "channel_ids": ["nope"]},
        headers=tenant.admin_auth(),
    )
    assert rule.status_code == 400
    assert rule.json()["success"] is False


async def test_a_disabled_rule_queues_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, receivers: dict[str, HttpReceiver]
) -> None:
    channel = await make_channel(client, tenant, channel_body("slack", receivers["slack"]))
    rule = await make_rule(client, tenant, [channel["id"]])
    await client.patch(
        f"/api/v1/notifications/rules/{rule['id']}",
        json={"enabled": False},
        headers=tenant.admin_auth(),
    )
    await _post_event(client, tenant)
    assert await deliveries(client, tenant) == []
    await anyio.lowlevel.checkpoint()


async def test_an_smtp_server_that_refuses_the_password_is_shown_as_the_last_error(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, smtp: SmtpReceiver
) -> None:
    body = channel_body("email", smtp)
    body["settings"]["password"] = "not-the-password"
    channel = await make_channel(client, tenant, body)
    await make_rule(client, tenant, [channel["id"]])
    await _post_event(client, tenant)
    await make_sender(db).send_due()
    (first,) = await deliveries(client, tenant)
    assert first["status"] == "pending"
    assert "answered SMTP 535" in first["last_error"]
    assert "not-the-password" not in first["last_error"]
    fixed = await client.patch(
        f"/api/v1/notifications/channels/{channel['id']}",
        json={"settings": {"password": smtp.password}},
        headers=tenant.admin_auth(),
    )
    assert fixed.status_code == 200, fixed.text
    await drain(make_sender(db), lambda: _all_in(client, tenant, "sent", 1))
    assert len(smtp.wait_for(1)) == 1
