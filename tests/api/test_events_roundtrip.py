"""Events go in through POST /api/v1/events and come back out through the queries."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Tenant
from tests.factories import event

pytestmark = pytest.mark.anyio


async def test_a_sent_event_comes_back_from_the_last_two_hours(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sent = await client.post(
        "/api/v1/events",
        json=event(id="d-1", version="v2.0.0", data={"description": "checkout v2"}),
        headers=tenant.auth(),
    )
    assert sent.status_code == 201, sent.text
    stored_id = sent.json()["data"]["accepted"][0]["id"]

    listed = await client.get("/api/v1/events?from=-2h", headers=tenant.auth(tenant.reader))
    assert listed.status_code == 200
    events = listed.json()["data"]["events"]
    assert [e["trailmap_id"] for e in events] == [stored_id]
    assert events[0]["id"] == events[0]["event_id"] == "d-1"
    assert events[0]["service"] == "checkout"
    assert events[0]["description"] == "checkout v2"

    one = await client.get(f"/api/v1/events/{stored_id}", headers=tenant.auth(tenant.reader))
    assert one.status_code == 200
    assert one.json()["data"]["data"] == {"description": "checkout v2"}


async def test_the_same_source_and_id_is_stored_once_and_reported_as_a_duplicate(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = await client.post("/api/v1/events", json=event(id="same"), headers=tenant.auth())
    second = await client.post("/api/v1/events", json=event(id="same"), headers=tenant.auth())
    assert first.status_code == 201
    assert second.status_code == 200
    body = second.json()["data"]
    assert body["counts"] == {"accepted": 0, "duplicates": 1, "rejected": 0}
    assert body["duplicates"][0]["id"] == first.json()["data"]["accepted"][0]["id"]
    listed = await client.get("/api/v1/events", headers=tenant.auth())
    assert len(listed.json()["data"]["events"]) == 1
