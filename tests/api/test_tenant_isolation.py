"""Tenant isolation: with one organization's key, no endpoint ever shows another's data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.factories import event, make_key, make_org, principal_for
from trailmap.storage import Database
from trailmap.timeline.queries import list_facet

pytestmark = pytest.mark.anyio

# Organization B's events: every attribute distinctive, plus one that shares A's values.
_B_EVENTS = [
    event(
        id="b-1",
        type="bravo-type",
        source="//github.com/bravo/secret",
        subject="bravo-env",
        severity="CRITICAL",
        service="bravo-svc",
        version="b9.9.9",
        data={"description": "bravo secret plan"},
    ),
    event(
        id="shared-1",
        type="deployment",
        source="//github.com/acme/checkout",
        subject="production",
        severity="LOW",
        version="v1.0.0",
        data={"description": "bravo shipped checkout"},
    ),
]
_A_EVENTS = [
    event(id="a-1", type="deployment", source="//github.com/acme/checkout", severity="LOW"),
    event(id="a-2", type="rollback", source="//github.com/acme/payments", subject="staging"),
]


@dataclass(frozen=True)
class Tenants:
    a: Tenant  # the caller
    b: Tenant  # the other organization
    b_ids: dict[str, str]  # producer id -> Trailmap id
    a_ids: dict[str, str]


async def _send(
    client: httpx.AsyncClient, tenant: Tenant, items: list[dict[str, Any]]
) -> dict[str, str]:
    sent = await client.post("/api/v1/events", json=items, headers=tenant.auth())
    assert sent.status_code == 201, sent.text
    return {a["event_id"]: a["id"] for a in sent.json()["data"]["accepted"]}


@pytest.fixture
async def tenants(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> Tenants:
    org_b = await make_org(db)
    b = Tenant(
        org=org_b,
        writer=await make_key(db, org_b, scope="read-write"),
        reader=await make_key(db, org_b, scope="read-only"),
        admin=await make_key(db, org_b, scope="admin"),
    )
    b_ids = await _send(client, b, _B_EVENTS)
    a_ids = await _send(client, tenant, _A_EVENTS)
    return Tenants(a=tenant, b=b, b_ids=b_ids, a_ids=a_ids)


async def _listed(
    client: httpx.AsyncClient, tenant: Tenant, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    response = await client.get(
        "/api/v1/events", params=[("from", "-1h"), *params], headers=tenant.auth(tenant.reader)
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


_EVERY_FILTER: list[list[tuple[str, str]]] = [
    [],
    [("type", "bravo-type")],
    [("type", "deployment,bravo-type")],
    [("source", "//github.com/bravo/secret")],
    [("subject", "bravo-env")],
    [("severity", "CRITICAL")],
    [("severity", "LOW")],
    [("service", "bravo-svc")],
    [("service", "checkout")],
    [("search", "bravo")],
    [("search", "secret plan")],
    [("search", "checkout")],
    [("type", "deployment"), ("source", "//github.com/acme/checkout"), ("subject", "production")],
    [("limit", "1")],
    [("timezone", "Europe/Paris")],
]


async def test_organization_b_has_the_data_the_other_tests_look_for(
    client: httpx.AsyncClient, tenants: Tenants
) -> None:
    # Without this, "A sees none of B's events" could pass on an empty database.
    seen = await _listed(client, tenants.b, [])
    assert {e["event_id"] for e in seen} == {"b-1", "shared-1"}


async def test_no_filter_on_the_list_ever_shows_another_organizations_events(
    client: httpx.AsyncClient, tenants: Tenants
) -> None:
    b_ids = set(tenants.b_ids.values())
    leaks = {}
    for params in _EVERY_FILTER:
        for token in (tenants.a.writer, tenants.a.reader):
            response = await client.get(
                "/api/v1/events",
                params=[("from", "-1h"), *params],
                headers=tenants.a.auth(token),
            )
            assert response.status_code == 200, response.text
            ids = {e["trailmap_id"] for e in response.json()["data"]["events"]}
            if ids & b_ids or not ids <= set(tenants.a_ids.values()):
                leaks[repr(params)] = sorted(ids)
    assert leaks == {}


async def test_the_summary_counts_only_the_callers_organization(
    client: httpx.AsyncClient, tenants: Tenants
) -> None:
    response = await client.get("/api/v1/events/summary", headers=tenants.a.auth(tenants.a.reader))
    data = response.json()["data"]
    assert data["total"] == 2
    assert {e["trailmap_id"] for e in data["latest"]} == set(tenants.a_ids.values())
    shown = {
        f["value"]
        for name in ("by_type", "by_subject", "by_source", "by_severity")
        for f in data[name]
    }
    assert not shown & {"bravo-type", "bravo-env", "//github.com/bravo/secret", "CRITICAL"}
    assert [(f["value"], f["count"]) for f in data["by_type"]] == [
        ("deployment", 1),
        ("rollback", 1),
    ]


async def test_another_organizations_event_is_not_found_exactly_like_a_missing_one(
    client: httpx.AsyncClient, tenants: Tenants
) -> None:
    b_id = tenants.b_ids["b-1"]
    # The same shape as a real id, so only the lookup could tell them apart.
    missing_id = b_id[:-12] + "000000000000"
    theirs = await client.get(f"/api/v1/events/{b_id}", headers=tenants.a.auth())
    missing = await client.get(f"/api/v1/events/{missing_id}", headers=tenants.a.auth())
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == {
        **missing.json(),
        "error": missing.json()["error"].replace(missing_id, b_id),
    }
    assert theirs.headers.get("content-type") == missing.headers.get("content-type")
    # B itself still sees it.
    mine = await client.get(f"/api/v1/events/{b_id}", headers=tenants.b.auth())
    assert mine.status_code == 200


async def test_the_same_source_and_id_as_another_organizations_event_is_new_not_a_duplicate(
    client: httpx.AsyncClient, tenants: Tenants
) -> None:
    copy = event(
        id="shared-1",
        source="//github.com/acme/checkout",
        version="v7",
        data={"description": "acme's own"},
    )
    sent = await client.post("/api/v1/events", json=copy, headers=tenants.a.auth())
    assert sent.status_code == 201, sent.text
    body = sent.json()["data"]
    assert body["counts"] == {"accepted": 1, "duplicates": 0, "rejected": 0}
    new_id = body["accepted"][0]["id"]
    assert new_id != tenants.b_ids["shared-1"]

    ours = await client.get(f"/api/v1/events/{new_id}", headers=tenants.a.auth())
    assert ours.json()["data"]["data"] == {"description": "acme's own"}
    theirs = await client.get(
        f"/api/v1/events/{tenants.b_ids['shared-1']}", headers=tenants.b.auth()
    )
    assert theirs.json()["data"]["data"] == {"description": "bravo shipped checkout"}
    assert theirs.json()["data"]["version"] == "v1.0.0"

    # Sent again by A, it is now A's duplicate, and B still has exactly its own two.
    again = await client.post("/api/v1/events", json=copy, headers=tenants.a.auth())
    assert again.json()["data"]["duplicates"][0]["id"] == new_id
    assert {e["event_id"] for e in await _listed(client, tenants.b, [])} == {"b-1", "shared-1"}


async def test_a_cursor_from_another_organizations_page_shows_only_the_callers_events(
    client: httpx.AsyncClient, tenants: Tenants
) -> None:
    first = await client.get(
        "/api/v1/events", params={"from": "-1h", "limit": 1}, headers=tenants.b.auth()
    )
    cursor = first.json()["data"]["next_cursor"]
    assert cursor is not None
    response = await client.get(
        "/api/v1/events", params={"from": "-1h", "cursor": cursor}, headers=tenants.a.auth()
    )
    assert response.status_code == 200
    ids = {e["trailmap_id"] for e in response.json()["data"]["events"]}
    assert ids <= set(tenants.a_ids.values())


async def test_facets_list_only_the_callers_values(tenants: Tenants, db: Database) -> None:
    principal = principal_for(tenants.a.org)
    for facet in ("type", "source", "subject", "severity", "service"):
        values = {f["value"] for f in await list_facet(db, principal, facet)}
        assert not values & {
            "bravo-type",
            "//github.com/bravo/secret",
            "bravo-env",
            "CRITICAL",
            "bravo-svc",
        }, facet
    types = await list_facet(db, principal, "type")
    assert [(f["value"], f["count"]) for f in types] == [("deployment", 1), ("rollback", 1)]
