"""Issue 22's "done when", end to end over the real faces: a deployment during a freeze is
flagged in its answer, on the timeline and to the webhook and e-mail receivers; a deployment
that raised the error rate gets a "regressed" verdict on its own and pages PagerDuty's
receiver. Guardrails, the verdict job, the notification rules and the outbox's sender each do
their part; the receivers on loopback check each API's format."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from tests.conftest import Tenant
from tests.factories import event, principal_for
from tests.metrics.test_verdicts import _deployment, _error_rate
from tests.notifications.receivers import HttpReceiver, SmtpReceiver, check_signature
from tests.notifications.support import (
    channel_body,
    deliveries,
    drain,
    make_channel,
    make_rule,
    make_sender,
)
from trailmap import clock
from trailmap.metrics.verdicts import reach_due_verdicts
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

_FREEZE = {
    "name": "Year-end freeze",
    "reason": "Holiday traffic",
    "environments": ["production"],
}


async def _sent(client: httpx.AsyncClient, tenant: Tenant, count: int) -> bool:
    found = await deliveries(client, tenant)
    return len(found) == count and all(d["status"] == "sent" for d in found)


async def test_a_deployment_in_a_freeze_is_flagged_in_its_answer_its_timeline_and_to_receivers(
    client: httpx.AsyncClient,
    tenant: Tenant,
    db: Database,
    receivers: dict[str, HttpReceiver],
    smtp: SmtpReceiver,
) -> None:
    now = clock.now()
    freeze = {
        **_FREEZE,
        "start": (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "end": (now + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
    }
    made = await client.post("/api/v1/guardrails/freezes", json=freeze, headers=tenant.admin_auth())
    assert made.status_code == 201, made.text
    webhook = await make_channel(client, tenant, channel_body("webhook", receivers["webhook"]))
    email = await make_channel(client, tenant, channel_body("email", smtp))
    await make_rule(client, tenant, [webhook["id"], email["id"]], on=["violation"])

    answer = await client.post(
        "/api/v1/events",
        json=event(service="checkout", subject="production", version="2.0.0"),
        headers=tenant.auth(),
    )
    assert answer.status_code in (200, 201), answer.text
    [accepted] = answer.json()["data"]["accepted"]
    # Stored all the same (advisory), with what it went against.
    assert [v["kind"] for v in accepted["violations"]] == ["freeze"]
    assert "Holiday traffic" in accepted["violations"][0]["message"]
    # A deployment outside the freeze's scope is no violation, and notifies no one.
    staging = await client.post(
        "/api/v1/events",
        json=event(service="checkout", subject="staging", version="2.0.0"),
        headers=tenant.auth(),
    )
    assert "violations" not in staging.json()["data"]["accepted"][0]

    shown = await client.get(f"/api/v1/events/{accepted['id']}", headers=tenant.auth())
    assert [v["kind"] for v in shown.json()["data"]["violations"]] == ["freeze"]
    timeline = await client.get(
        "/api/v1/events", params={"from": "-1h", "type": "deployment"}, headers=tenant.auth()
    )
    flagged = {e["trailmap_id"]: e.get("violations") for e in timeline.json()["data"]["events"]}
    assert flagged[accepted["id"]]
    assert len([v for v in flagged.values() if v]) == 1

    await drain(make_sender(db), lambda: _sent(client, tenant, 2))
    [posted] = receivers["webhook"].wait_for(1)
    assert check_signature(
        "whsec-test-0123456789", posted.headers["x-trailmap-signature"], posted.body
    )
    body = posted.json()
    assert body["violations"][0]["kind"] == "freeze"
    assert body["event"]["service"] == "checkout"
    [(recipients, mail)] = smtp.wait_for(1)
    assert recipients
    text = mail.as_string()
    assert "freeze" in text.lower()
    assert "checkout" in str(mail["Subject"])


async def test_a_deployment_that_raised_errors_is_regressed_on_its_own_and_pages_pagerduty(
    client: httpx.AsyncClient,
    tenant: Tenant,
    db: Database,
    receivers: dict[str, HttpReceiver],
) -> None:
    pagerduty = await make_channel(
        client, tenant, channel_body("pagerduty", receivers["pagerduty"])
    )
    await make_rule(client, tenant, [pagerduty["id"]], on=["regressed"])
    principal = principal_for(tenant.org)
    deployed = clock.now().replace(microsecond=0) - timedelta(hours=5)
    event_id = await _deployment(db, principal, deployed)
    await _error_rate(db, principal, deployed, before=0.01, after=0.08)

    # Nobody asks: the job any app node runs reaches the verdict once the window has passed.
    done = await reach_due_verdicts(db, node="a", outbound=OutboundPolicy())
    assert done.reached == 1
    shown = await client.get(f"/api/v1/events/{event_id}", headers=tenant.auth())
    assert shown.json()["data"]["verdict"] == "regressed"

    await drain(make_sender(db), lambda: _sent(client, tenant, 1))
    [page] = receivers["pagerduty"].wait_for(1)
    sent = page.json()
    assert sent["event_action"] == "trigger"
    assert sent["payload"]["source"] == "checkout"
    assert "regress" in sent["payload"]["summary"].lower()
    # Its dedup key is the verdict's: a second run of the job pages no one again.
    again = await reach_due_verdicts(db, node="b", outbound=OutboundPolicy())
    assert again.reached == 0
    assert len(await deliveries(client, tenant)) == 1
