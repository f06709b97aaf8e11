"""Filters that do not fail silently: type, subject, service and source match whatever their
case, and an empty answer to a filtered query names the closest values that exist and what
the organization does have in the range, in the domain and over REST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.factories import event, principal_for
from tests.timeline.test_queries import iso, store
from trailmap.accounts import Organization
from trailmap.errors import ValidationFailed
from trailmap.storage import Database
from trailmap.timeline import queries
from trailmap.timeline.queries import EventPage, EventQuery, closest_values, query_events

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)


def _ago(**delta: float) -> str:
    return iso(NOW - timedelta(**delta))


_EVENTS = [
    event(
        id="deploy-checkout",
        type="deployment",
        source="//github.com/acme/checkout",
        subject="production",
        service="checkout",
        time=_ago(minutes=30),
    ),
    event(
        id="deploy-payments",
        type="deployment",
        source="//github.com/acme/payments",
        subject="production",
        service="payments",
        time=_ago(hours=2),
    ),
    event(
        id="flag",
        type="feature-flag",
        source="//launchdarkly/acme",
        subject="staging",
        service="checkout",
        version=None,
        time=_ago(hours=1),
    ),
    # Older than the ranges asked below: its type exists, but not in them.
    event(
        id="old-rollback",
        type="rollback",
        source="//github.com/acme/payments",
        subject="production",
        service="payments",
        time=_ago(days=3),
    ),
]


@pytest.fixture
async def org(db: Database, tenant: Tenant) -> Organization:
    await store(db, tenant.org, _EVENTS, now=NOW)
    return tenant.org


async def _page(db: Database, org: Organization, **query: Any) -> EventPage:
    return await query_events(db, principal_for(org), EventQuery(**query), now=NOW)


def _ids(page: EventPage) -> list[str]:
    return [e["event_id"] for e in page.events]


async def test_type_subject_service_and_source_match_whatever_their_case(
    db: Database, org: Organization
) -> None:
    asked = await _page(
        db,
        org,
        from_="-6h",
        types=["Deployment"],
        subjects=["PRODUCTION"],
        services=["Checkout"],
        sources=["//GitHub.com/Acme/Checkout"],
    )
    assert _ids(asked) == ["deploy-checkout"]
    assert asked.hint is None
    assert _ids(await _page(db, org, from_="-6h", types=["FEATURE-FLAG", "deployment"])) == [
        "deploy-checkout",
        "flag",
        "deploy-payments",
    ]


async def test_services_that_differ_only_in_case_are_both_matched(
    db: Database, tenant: Tenant, org: Organization
) -> None:
    await store(
        db,
        tenant.org,
        [event(id="shouting", service="CHECKOUT", time=_ago(minutes=10))],
        now=NOW,
    )
    page = await _page(db, org, from_="-6h", services=["checkout"])
    assert _ids(page) == ["shouting", "deploy-checkout", "flag"]


async def test_an_empty_answer_names_the_closest_values_and_what_the_range_holds(
    db: Database, org: Organization
) -> None:
    page = await _page(db, org, from_="-6h", types=["deploy"], subjects=["prod"])
    assert page.events == []
    assert page.hint == {
        "unmatched": [
            {"filter": "type", "value": "deploy", "closest": ["deployment"]},
            {"filter": "subject", "value": "prod", "closest": ["production"]},
        ],
        "in_range": {
            "total": 3,
            "by_type": [
                {"value": "deployment", "count": 2},
                {"value": "feature-flag", "count": 1},
            ],
        },
    }
    assert page.note is not None
    assert "No type is called \"deploy\"; did you mean 'deployment'?" in page.note
    assert "No environment (subject) is called \"prod\"; did you mean 'production'?" in page.note
    assert "In this range the organization has 3 events: deployment 2, feature-flag 1." in (
        page.note
    )


async def test_a_misspelt_service_is_matched_to_the_nearest_name(
    db: Database, org: Organization
) -> None:
    page = await _page(db, org, from_="-6h", services=["chekout"])
    assert page.hint is not None
    assert page.hint["unmatched"] == [
        {"filter": "service", "value": "chekout", "closest": ["checkout"]}
    ]


async def test_a_type_that_exists_outside_the_range_leaves_only_what_the_range_holds(
    db: Database, org: Organization
) -> None:
    page = await _page(db, org, from_="-6h", types=["rollback"])
    assert page.events == []
    assert page.hint is not None
    assert page.hint["unmatched"] == []
    assert page.hint["in_range"]["total"] == 3
    assert page.note is not None
    assert page.note.startswith("No events of that kind in this range")
    assert page.note.endswith("3 events: deployment 2, feature-flag 1.")


async def test_a_value_like_nothing_that_exists_says_so_without_a_guess(
    db: Database, org: Organization
) -> None:
    page = await _page(db, org, from_="-6h", services=["zzz-unknown"])
    assert page.hint is not None
    assert page.hint["unmatched"] == [{"filter": "service", "value": "zzz-unknown", "closest": []}]
    assert page.note is not None
    assert 'No service is called "zzz-unknown".' in page.note


async def test_a_range_with_nothing_in_it_says_so(db: Database, org: Organization) -> None:
    page = await _page(db, org, from_="-10m", types=["deploy"])
    assert page.hint is not None
    assert page.hint["in_range"] == {"total": 0, "by_type": []}
    assert page.note is not None
    assert page.note.endswith("The organization has no events at all in this range.")


async def test_an_answer_without_filters_or_with_events_carries_no_hint(
    db: Database, org: Organization
) -> None:
    assert (await _page(db, org, from_="-10m")).hint is None
    assert (await _page(db, org, from_="-6h", types=["deployment"])).hint is None


async def test_a_facet_with_more_values_than_are_listed_still_matches_whatever_the_case(
    db: Database, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past this many values, the stored ones are found with lower() on both sides instead.
    monkeypatch.setattr(queries, "_MAX_LISTED_VALUES", 2)
    page = await _page(db, org, from_="-6h", sources=["//GITHUB.COM/ACME/PAYMENTS"])
    assert _ids(page) == ["deploy-payments"]
    empty = await _page(db, org, from_="-6h", sources=["//github.com/acme/pay"])
    assert empty.hint is not None
    (unmatched,) = empty.hint["unmatched"]
    assert unmatched["value"] == "//github.com/acme/pay"


def test_the_closest_values_begin_with_contain_or_resemble_what_was_asked() -> None:
    existing = ["production", "staging", "production-eu", "preview", "Checkout"]
    assert closest_values("prod", existing) == ["production", "production-eu"]
    assert closest_values("eu", existing) == ["production-eu"]
    assert closest_values("stagign", existing) == ["staging"]
    assert closest_values("checkout", existing) == ["Checkout"]
    assert closest_values("nothing-like-it", existing) == []


async def test_rest_carries_the_hint_in_the_page(client: httpx.AsyncClient, tenant: Tenant) -> None:
    now = [{**e, "time": "NOW"} for e in _EVENTS[:3]]
    sent = await client.post("/api/v1/events", json=now, headers=tenant.auth())
    assert sent.status_code == 201, sent.text
    reader = tenant.auth(tenant.reader)
    response = await client.get(
        "/api/v1/events", params={"from": "-2d", "type": "Deploy"}, headers=reader
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["events"] == []
    assert data["hint"]["unmatched"] == [
        {"filter": "type", "value": "Deploy", "closest": ["deployment"]}
    ]
    assert data["hint"]["in_range"]["total"] == 3
    assert "did you mean 'deployment'?" in data["range"]["note"]
    found = await client.get(
        "/api/v1/events",
        params={"from": "-2d", "type": "DEPLOYMENT", "subject": "Production"},
        headers=reader,
    )
    assert {e["event_id"] for e in found.json()["data"]["events"]} == {
        "deploy-checkout",
        "deploy-payments",
    }
    assert found.json()["data"]["hint"] is None


async def test_the_openapi_schema_describes_the_hint(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    page = schema["components"]["schemas"]["EventPageData"]
    assert "hint" in page["properties"]
    hint = schema["components"]["schemas"]["EmptyHint"]
    assert set(hint["properties"]) == {"unmatched", "in_range"}


async def test_the_changes_of_two_hundred_services_can_be_asked_at_once(
    db: Database, org: Organization
) -> None:
    """find_changes_near asks for every service near a node, up to 200; more than 20 once
    failed with a refusal of an argument the model never gave."""
    names = ["checkout", *(f"service-{i}" for i in range(199))]
    page = await _page(db, org, from_="-6h", services=names)
    assert _ids(page) == ["deploy-checkout", "flag"]
    with pytest.raises(ValidationFailed, match="at most 200"):
        await _page(db, org, from_="-6h", services=[*names, "one-more"])
