"""Guardrails over REST on both databases: a deployment against a freeze or a policy is stored
all the same, with its violations in the per-item answer and on the event; the check answers
before deploying; owners and admins (ADMIN keys) make and remove rules, audited; other keys
and members are refused; bad input is refused in the one error shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from tests.factories import event
from trailmap.accounts import add_user, create_key
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

_WEEKEND = {
    "name": "Weekend freeze",
    "reason": "No changes over the weekend",
    "environments": ["production"],
    "recurrence": {
        "days": ["fri"],
        "start": "16:00",
        "end_day": "mon",
        "end": "08:00",
        "timezone": "Europe/Paris",
    },
}
_SATURDAY = "2026-11-28T11:00:00+01:00"
_TUESDAY = "2026-12-01T11:00:00+01:00"


async def _make(
    client: httpx.AsyncClient, tenant: Tenant, what: str, body: dict[str, Any]
) -> dict[str, Any]:
    made = await client.post(f"/api/v1/guardrails/{what}", json=body, headers=tenant.admin_auth())
    assert made.status_code == 201, made.text
    data: dict[str, Any] = made.json()["data"]
    return data


async def _send(client: httpx.AsyncClient, tenant: Tenant, *events: dict[str, Any]) -> Any:
    sent = await client.post("/api/v1/events", json=list(events), headers=tenant.auth())
    assert sent.status_code in (200, 201, 207), sent.text
    return sent.json()["data"]


async def test_a_deployment_during_a_freeze_is_stored_and_flagged_in_its_answer_and_event(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    freeze = await _make(client, tenant, "freezes", _WEEKEND)
    answer = await _send(
        client,
        tenant,
        event(time=_SATURDAY),
        event(time=_TUESDAY),
        event(type="config-change", time=_SATURDAY),
    )
    assert answer["counts"]["accepted"] == 3
    flagged, calm, other = answer["accepted"]
    [violation] = flagged["violations"]
    assert violation["kind"] == "freeze"
    assert violation["id"] == freeze["id"]
    assert violation["reason"] == "No changes over the weekend"
    assert violation["window"] == {
        "start": "2026-11-27T16:00:00+01:00",
        "end": "2026-11-30T08:00:00+01:00",
    }
    assert "violations" not in calm
    assert "violations" not in other
    stored = await client.get(f"/api/v1/events/{flagged['id']}", headers=tenant.auth())
    assert stored.json()["data"]["violations"] == [violation]
    page = await client.get(
        "/api/v1/events", params={"from": "2026-11-20", "to": "2026-12-05"}, headers=tenant.auth()
    )
    shown = {e["trailmap_id"]: e for e in page.json()["data"]["events"]}
    assert shown[flagged["id"]]["violations"] == [violation]
    assert "violations" not in shown[calm["id"]]


async def test_deployments_of_one_batch_count_for_each_other_against_a_cooldown(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _make(
        client,
        tenant,
        "policies",
        {"kind": "cooldown", "name": "Half an hour apart", "settings": {"minutes": 30}},
    )
    first = await _send(client, tenant, event(time="2026-12-02T10:00:00Z"))
    assert "violations" not in first["accepted"][0]
    answer = await _send(
        client,
        tenant,
        event(time="2026-12-02T10:50:00Z"),
        event(time="2026-12-02T10:20:00Z"),
        event(time="2026-12-02T10:55:00Z", subject="staging"),
    )
    later, sooner, elsewhere = answer["accepted"]
    assert [v["kind"] for v in sooner["violations"]] == ["cooldown"]
    assert "violations" not in later  # 30 min after the 10:20 one
    assert "violations" not in elsewhere  # another environment


async def test_the_daily_cap_and_velocity_count_stored_deployments_of_the_local_day(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for body in (
        {"kind": "daily_cap", "name": "Two a day", "settings": {"max": 2,
                                                               "timezone": "America/New_York"}},
        {"kind": "max_velocity_per_hour", "name": "Two an hour", "settings": {"max": 2}},
    ):  # fmt: skip
        await _make(client, tenant, "policies", body)
    # 2026-12-01 in New York runs from 05:00 UTC; the 04:30 one was the day before.
    answer = await _send(
        client,
        tenant,
        event(time="2026-12-01T04:30:00Z"),
        event(time="2026-12-01T06:00:00Z"),
        event(time="2026-12-01T08:00:00Z"),
    )
    assert all("violations" not in a for a in answer["accepted"])
    third = await _send(client, tenant, event(time="2026-12-01T08:30:00Z"))
    assert [v["kind"] for v in third["accepted"][0]["violations"]] == ["daily_cap"]
    # Detected in traces: judged, but not counted (a producer's report may follow).
    detected = await _send(
        client,
        tenant,
        event(source="otel://checkout", service="checkout", time="2026-12-02T09:00:00Z"),
        event(time="2026-12-02T09:01:00Z"),
        event(time="2026-12-02T09:02:00Z"),
    )
    assert all("violations" not in a for a in detected["accepted"])
    fast = await _send(client, tenant, event(time="2026-12-02T09:03:00Z"))
    kinds = [v["kind"] for v in fast["accepted"][0]["violations"]]
    assert kinds == ["daily_cap", "max_velocity_per_hour"]


async def test_a_redelivered_deployment_is_not_its_own_previous_one(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    await _make(
        client, tenant, "policies", {"kind": "cooldown", "name": "c", "settings": {"minutes": 30}}
    )
    first = await _send(client, tenant, event(id="once", time="2026-12-01T10:00:00Z"))
    assert "violations" not in first["accepted"][0]
    check = await client.post(
        "/api/v1/guardrails/check",
        json={"service": "checkout", "environment": "production", "time": "2026-12-01T10:10:00Z"},
        headers=tenant.auth(tenant.reader),
    )
    [violation] = check.json()["data"]["violations"]
    assert "10 min after the previous deployment" in violation["message"]
    again = await _send(client, tenant, event(id="once", time="2026-12-01T10:00:00Z"))
    assert again["counts"]["duplicates"] == 1


async def test_the_rollback_rate_counts_stored_and_batched_deployments_not_detected_ones(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _make(
        client,
        tenant,
        "policies",
        {
            "kind": "max_rollback_rate",
            "name": "Steady",
            "settings": {"max_percent": 25, "window_days": 7, "min_deployments": 4},
        },
    )
    stored = await _send(
        client,
        tenant,
        event(time="2026-11-30T10:00:00Z"),
        event(type="rollback", time="2026-11-30T11:00:00Z"),
        # Detected in traces: not counted (its report would count the change twice).
        event(source="otel://checkout", service="checkout", time="2026-11-30T12:00:00Z"),
    )
    assert all("violations" not in a for a in stored["accepted"])
    answer = await _send(
        client,
        tenant,
        event(time="2026-12-01T10:00:00Z"),
        event(time="2026-12-01T11:00:00Z"),
    )
    # 1 rollback in 3, then in 4 (the batch's first counts for its second): 25% is allowed.
    assert all("violations" not in a for a in answer["accepted"])
    rollback = await _send(client, tenant, event(type="rollback", time="2026-12-02T10:00:00Z"))
    [violation] = rollback["accepted"][0]["violations"]
    assert violation["kind"] == "max_rollback_rate"
    assert "2 rollbacks in 5 deployments" in violation["message"]
    check = await client.post(
        "/api/v1/guardrails/check",
        json={"service": "checkout", "environment": "production", "time": "2026-12-03T10:00:00Z"},
        headers=tenant.auth(tenant.reader),
    )
    # A deployment now would make 2 in 6 (33%): still above.
    assert [v["kind"] for v in check.json()["data"]["violations"]] == ["max_rollback_rate"]


async def test_a_rollback_earlier_in_the_batch_makes_the_stored_deployments_count(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _make(
        client,
        tenant,
        "policies",
        {
            "kind": "max_rollback_rate",
            "name": "One in five",
            "settings": {"max_percent": 20, "window_days": 7, "min_deployments": 2},
        },
    )
    await _send(client, tenant, *(event(time=f"2026-11-30T1{h}:00:00Z") for h in range(3)))
    answer = await _send(
        client,
        tenant,
        event(type="rollback", time="2026-12-01T10:00:00Z"),
        event(time="2026-12-01T11:00:00Z"),
    )
    rollback, after = answer["accepted"]
    [violation] = rollback["violations"]
    assert "1 rollbacks in 4 deployments" in violation["message"]
    # 1 in 5 (20%) is allowed: the three stored ones count though none of them is a rollback.
    assert "violations" not in after


async def test_a_rule_made_or_removed_applies_to_the_next_deployment(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    calm = await _send(client, tenant, event(time="2026-12-01T10:00:00Z"))
    assert "violations" not in calm["accepted"][0]
    policy = await _make(
        client, tenant, "policies", {"kind": "cooldown", "name": "c", "settings": {"minutes": 30}}
    )
    soon = await _send(client, tenant, event(time="2026-12-01T10:10:00Z"))
    assert [v["kind"] for v in soon["accepted"][0]["violations"]] == ["cooldown"]
    freeze = await _make(client, tenant, "freezes", _WEEKEND)
    saturday = await _send(client, tenant, event(time=_SATURDAY))
    assert [v["kind"] for v in saturday["accepted"][0]["violations"]] == ["freeze"]
    for what, rule in (("policies", policy), ("freezes", freeze)):
        gone = await client.delete(
            f"/api/v1/guardrails/{what}/{rule['id']}", headers=tenant.admin_auth()
        )
        assert gone.status_code == 200, gone.text
    again = await _send(
        client, tenant, event(time="2026-12-01T10:20:00Z"), event(time="2026-11-28T12:00:00+01:00")
    )
    assert all("violations" not in a for a in again["accepted"])


async def test_the_check_answers_before_deploying_and_stores_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _make(client, tenant, "freezes", _WEEKEND)
    await _make(
        client,
        tenant,
        "policies",
        {
            "kind": "allowed_hours",
            "name": "Office hours",
            "settings": {"start": "09:00", "end": "17:00", "timezone": "Europe/Paris"},
            "services": ["checkout"],
        },
    )
    reader = tenant.auth(tenant.reader)
    body = {"service": "checkout", "environment": "production", "time": _SATURDAY}
    answer = await client.post("/api/v1/guardrails/check", json=body, headers=reader)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["clear"] is False
    assert [v["kind"] for v in data["violations"]] == ["freeze"]
    night = {"service": "checkout", "environment": "staging", "time": "2026-12-02T23:00:00+01:00"}
    data = (await client.post("/api/v1/guardrails/check", json=night, headers=reader)).json()
    assert [v["kind"] for v in data["data"]["violations"]] == ["allowed_hours"]
    calm = {"service": "payments", "environment": "staging", "time": _TUESDAY}
    data = (await client.post("/api/v1/guardrails/check", json=calm, headers=reader)).json()
    assert data["data"] == {
        "service": "payments",
        "environment": "staging",
        "time": "2026-12-01T10:00:00Z",
        "clear": True,
        "violations": [],
    }
    events = await client.get("/api/v1/events", headers=reader)
    assert events.json()["data"]["events"] == []


async def test_rules_are_listed_and_removed_and_each_change_is_audited(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    freeze = await _make(client, tenant, "freezes", _WEEKEND)
    policy = await _make(
        client,
        tenant,
        "policies",
        {"kind": "daily_cap", "name": "Five a day", "settings": {"max": 5}},
    )
    assert policy["settings"] == {"max": 5, "timezone": "UTC"}
    listed = await client.get("/api/v1/guardrails/freezes", headers=tenant.auth(tenant.reader))
    assert [f["id"] for f in listed.json()["data"]["freezes"]] == [freeze["id"]]
    listed = await client.get("/api/v1/guardrails/policies", headers=tenant.auth(tenant.reader))
    assert [p["id"] for p in listed.json()["data"]["policies"]] == [policy["id"]]
    for what, rule in (("freezes", freeze), ("policies", policy)):
        gone = await client.delete(
            f"/api/v1/guardrails/{what}/{rule['id']}", headers=tenant.admin_auth()
        )
        assert gone.json()["data"] == {"deleted": rule["id"], "name": rule["name"]}
        again = await client.delete(
            f"/api/v1/guardrails/{what}/{rule['id']}", headers=tenant.admin_auth()
        )
        assert assert_error_shape(again)["code"] == "NOT_FOUND"
    audit = await client.get("/api/v1/audit", headers=tenant.admin_auth())
    actions = [a["action"] for a in audit.json()["data"]["entries"]]
    assert {
        "guardrail.freeze_created",
        "guardrail.policy_created",
        "guardrail.freeze_deleted",
        "guardrail.policy_deleted",
    } <= set(actions)


async def test_keys_without_admin_and_members_may_not_make_or_remove_rules(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    freeze = await _make(client, tenant, "freezes", _WEEKEND)
    added = await add_user(db, "member@acme.example", org_slug=tenant.org.slug, role="member")
    _key, member_admin = await create_key(
        db, tenant.org.slug, name="m", scope="ADMIN", created_by="m", user_id=added.id
    )
    for token in (tenant.reader, tenant.writer, member_admin):
        made = await client.post(
            "/api/v1/guardrails/freezes", json=_WEEKEND, headers=tenant.auth(token)
        )
        assert assert_error_shape(made)["code"] == "FORBIDDEN"
        gone = await client.delete(
            f"/api/v1/guardrails/freezes/{freeze['id']}", headers=tenant.auth(token)
        )
        assert assert_error_shape(gone)["code"] == "FORBIDDEN"
    listed = await client.get("/api/v1/guardrails/freezes", headers=tenant.auth(tenant.reader))
    assert len(listed.json()["data"]["freezes"]) == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "freezes",
            {"name": "x", "start": "2026-12-20T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
            "end",
        ),
        (
            "freezes",
            {
                "name": "x",
                "recurrence": {
                    "days": ["fri"],
                    "start": "16:00",
                    "end": "08:00",
                    "timezone": "Mars/Olympus",
                },
            },
            "recurrence.timezone",
        ),
        ("policies", {"kind": "no_fridays", "name": "x", "settings": {}}, "kind"),
        ("check", {"service": "checkout", "time": "next friday"}, "time"),
        ("check", {"environment": "production"}, "service"),
    ],
)
async def test_bad_input_is_refused_in_the_one_error_shape(
    client: httpx.AsyncClient, tenant: Tenant, path: str, body: dict[str, Any], field: str
) -> None:
    refused = await client.post(
        f"/api/v1/guardrails/{path}", json=body, headers=tenant.admin_auth()
    )
    shaped = assert_error_shape(refused)
    assert shaped["code"] == "VALIDATION_ERROR"
    assert field in {d["field"] for d in shaped["details"]}
    not_object = await client.post(
        f"/api/v1/guardrails/{path}", json=["x"], headers=tenant.admin_auth()
    )
    assert assert_error_shape(not_object)["code"] == "VALIDATION_ERROR"
