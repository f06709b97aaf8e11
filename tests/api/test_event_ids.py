"""Over HTTP: an event comes back as its producer sent it, is fetched by the producer's id or
Trailmap's, and an event over the size limit is refused as PAYLOAD_TOO_LARGE."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from tests.factories import event

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"
CHECKOUT = "//github.com/acme/checkout"
PAYMENTS = "//github.com/acme/payments"
MAX_EVENT_BYTES = 10 * 1024


async def send(client: httpx.AsyncClient, tenant: Tenant, body: Any) -> httpx.Response:
    return await client.post(EVENTS, json=body, headers=tenant.auth())


async def fetch(
    client: httpx.AsyncClient, tenant: Tenant, event_id: str, **params: str
) -> httpx.Response:
    return await client.get(
        f"{EVENTS}/{event_id}", params=params, headers=tenant.auth(tenant.reader)
    )


async def test_the_event_comes_back_with_the_id_and_source_its_producer_sent(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sent = await send(client, tenant, event(id="d-41", source=CHECKOUT))
    assert sent.status_code == 201, sent.text
    trailmap_id = sent.json()["data"]["accepted"][0]["id"]

    by_producer_id = await fetch(client, tenant, "d-41")
    assert by_producer_id.status_code == 200, by_producer_id.text
    shown = by_producer_id.json()["data"]
    assert (shown["specversion"], shown["id"], shown["source"]) == ("1.0", "d-41", CHECKOUT)
    assert shown["trailmap_id"] == trailmap_id

    by_trailmap_id = await fetch(client, tenant, trailmap_id)
    assert by_trailmap_id.status_code == 200, by_trailmap_id.text
    assert by_trailmap_id.json()["data"] == shown


async def test_an_id_with_slashes_is_fetched_as_listed(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sent = await send(client, tenant, event(id="production/checkout/1.5.0", source=CHECKOUT))
    assert sent.status_code == 201, sent.text
    listed = await client.get(EVENTS, headers=tenant.auth(tenant.reader))
    (shown,) = listed.json()["data"]["events"]
    response = await fetch(client, tenant, shown["id"])
    assert response.status_code == 200, response.text
    assert response.json()["data"]["id"] == "production/checkout/1.5.0"
    metrics = await client.get(
        f"{EVENTS}/{shown['id']}/metrics", headers=tenant.auth(tenant.reader)
    )
    assert metrics.status_code == 200, metrics.text
    assert metrics.json()["data"]["event"]["id"] == "production/checkout/1.5.0"


async def test_an_id_two_sources_sent_is_refused_listing_them_until_a_source_is_given(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    both = [event(id="release-7", source=CHECKOUT), event(id="release-7", source=PAYMENTS)]
    sent = await send(client, tenant, both)
    assert sent.status_code == 201, sent.text

    ambiguous = await fetch(client, tenant, "release-7")
    assert ambiguous.status_code == 400, ambiguous.text
    body = assert_error_shape(ambiguous)
    assert body["code"] == "VALIDATION_ERROR"
    assert CHECKOUT in body["error"]
    assert PAYMENTS in body["error"]
    assert [d["field"] for d in body["details"]] == ["source"]

    chosen = await fetch(client, tenant, "release-7", source=PAYMENTS)
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["data"]["source"] == PAYMENTS

    metrics = await client.get(f"{EVENTS}/release-7/metrics", headers=tenant.auth(tenant.reader))
    assert metrics.status_code == 400, metrics.text
    assert PAYMENTS in assert_error_shape(metrics)["error"]
    metrics = await client.get(
        f"{EVENTS}/release-7/metrics",
        params={"source": CHECKOUT},
        headers=tenant.auth(tenant.reader),
    )
    assert metrics.status_code == 200, metrics.text
    assert metrics.json()["data"]["event"]["source"] == CHECKOUT


async def test_a_source_that_did_not_send_the_id_is_not_found(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    assert (await send(client, tenant, event(id="d-41", source=CHECKOUT))).status_code == 201
    response = await fetch(client, tenant, "d-41", source=PAYMENTS)
    assert response.status_code == 404, response.text
    assert PAYMENTS in assert_error_shape(response)["error"]


def _event_of_size(size: int, **overrides: Any) -> dict[str, Any]:
    item = event(data="", **overrides)
    item["data"] = "x" * (size - len(orjson.dumps(item)))
    assert len(orjson.dumps(item)) == size
    return item


async def test_a_single_event_over_10_kb_is_payload_too_large(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await send(client, tenant, _event_of_size(MAX_EVENT_BYTES + 1))
    assert response.status_code == 413, response.text
    body = assert_error_shape(response)
    assert body["code"] == "PAYLOAD_TOO_LARGE"
    assert f"at most {MAX_EVENT_BYTES}" in body["error"]
    assert [d["code"] for d in body["details"]] == ["PAYLOAD_TOO_LARGE"]
    listed = await client.get(EVENTS, headers=tenant.auth(tenant.reader))
    assert listed.json()["data"]["events"] == []


async def test_an_event_of_exactly_10_kb_is_stored(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await send(client, tenant, _event_of_size(MAX_EVENT_BYTES))
    assert response.status_code == 201, response.text


async def test_in_a_batch_only_the_event_over_10_kb_is_rejected_as_too_large(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [
        event(id="small-0"),
        _event_of_size(MAX_EVENT_BYTES + 500, id="big-1"),
        event(id="small-2"),
    ]
    response = await send(client, tenant, batch)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [a["event_id"] for a in data["accepted"]] == ["small-0", "small-2"]
    assert [(r["index"], r["code"]) for r in data["rejected"]] == [(1, "PAYLOAD_TOO_LARGE")]


async def test_a_batch_of_only_oversized_events_is_payload_too_large(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [_event_of_size(MAX_EVENT_BYTES + 1, id=f"big-{n}") for n in range(2)]
    response = await send(client, tenant, batch)
    assert response.status_code == 413, response.text
    body = assert_error_shape(response)
    assert body["code"] == "PAYLOAD_TOO_LARGE"
    assert [(d["index"], d["code"]) for d in body["details"]] == [
        (0, "PAYLOAD_TOO_LARGE"),
        (1, "PAYLOAD_TOO_LARGE"),
    ]


async def test_a_batch_too_large_and_otherwise_invalid_is_a_validation_error_saying_each(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [_event_of_size(MAX_EVENT_BYTES + 1, id="big"), event(time="yesterday-ish")]
    response = await send(client, tenant, batch)
    assert response.status_code == 400, response.text
    body = assert_error_shape(response)
    assert body["code"] == "VALIDATION_ERROR"
    assert [(d["index"], d["code"]) for d in body["details"]] == [
        (0, "PAYLOAD_TOO_LARGE"),
        (1, "VALIDATION_ERROR"),
    ]
