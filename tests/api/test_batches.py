"""Batches are judged per item: valid events are stored whatever their neighbours, and every
item is reported as accepted, duplicate or rejected. Upstream CloudEvents and CDEvents
samples go in as they are published."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from tests.factories import event
from tests.upstream import UPSTREAM

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"
FIXTURES = UPSTREAM
CDEVENTS = sorted((FIXTURES / "cdevents").glob("*.json"))
# The mapped type of each CDEvents fixture.
CDEVENT_TYPES = {
    "artifact_published": "artifact-published",
    "change_merged": "change-merged",
    "incident_detected": "incident",
    "incident_resolved": "incident-resolved",
    "pipelinerun_finished": "pipeline-run",
    "service_deployed": "deployment",
    "service_rolledback": "rollback",
    "service_upgraded": "deployment",
}


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def recent(minutes: int = 10) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


async def post(
    client: httpx.AsyncClient, tenant: Tenant, body: object, media: str = "application/json"
) -> httpx.Response:
    return await client.post(
        EVENTS, content=json.dumps(body), headers={**tenant.auth(), "Content-Type": media}
    )


async def query(client: httpx.AsyncClient, tenant: Tenant, params: str) -> list[dict[str, Any]]:
    response = await client.get(f"{EVENTS}?{params}", headers=tenant.auth(tenant.reader))
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


async def test_valid_events_are_stored_and_invalid_ones_reported_by_index(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [
        event(id="ok-0"),
        event(id="bad-1", type=None),
        event(id="ok-2", severity="minor"),
        event(id="bad-3", time="2026-11-20T10:00:00", specversion="0.3"),
        "not an event",
    ]
    response = await post(client, tenant, batch)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["counts"] == {"accepted": 2, "duplicates": 0, "rejected": 4}
    assert [(a["index"], a["event_id"]) for a in data["accepted"]] == [(0, "ok-0"), (2, "ok-2")]
    rejected = [(r["index"], r.get("field"), r["code"]) for r in data["rejected"]]
    assert rejected == [
        (1, "type", "VALIDATION_ERROR"),
        (3, "specversion", "VALIDATION_ERROR"),
        (3, "time", "VALIDATION_ERROR"),
        (4, None, "VALIDATION_ERROR"),
    ]
    assert all(r["message"].strip() for r in data["rejected"])

    stored = await query(client, tenant, "from=-1h")
    assert sorted(e["event_id"] for e in stored) == ["ok-0", "ok-2"]
    by_event_id = {e["event_id"]: e["trailmap_id"] for e in stored}
    assert {a["event_id"]: a["id"] for a in data["accepted"]} == by_event_id


async def test_a_batch_with_nothing_valid_is_a_validation_error_listing_every_item(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await post(client, tenant, [event(type=None), 5, event(source="a b")])
    assert response.status_code == 400
    body = assert_error_shape(response)
    assert body["code"] == "VALIDATION_ERROR"
    assert "None of the 3 events was stored" in body["error"]
    assert [(d["index"], d.get("field")) for d in body["details"]] == [
        (0, "type"),
        (1, None),
        (2, "source"),
    ]


async def test_a_repeat_within_one_batch_is_a_duplicate_of_the_first(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [event(id="same"), event(id="other"), event(id="same", version="v9")]
    response = await post(client, tenant, batch)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["counts"] == {"accepted": 2, "duplicates": 1, "rejected": 0}
    first = next(a for a in data["accepted"] if a["event_id"] == "same")
    assert data["duplicates"] == [
        {"index": 2, "id": first["id"], "source": first["source"], "event_id": "same"}
    ]
    stored = await query(client, tenant, "from=-1h")
    assert len(stored) == 2
    assert next(e for e in stored if e["event_id"] == "same")["version"] == "v1.0.0"


async def test_a_repeat_across_requests_is_reported_with_the_stored_id(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = await post(client, tenant, [event(id="a"), event(id="b")])
    assert first.status_code == 201, first.text
    ids = {a["event_id"]: a["id"] for a in first.json()["data"]["accepted"]}

    second = await post(client, tenant, [event(id="b"), event(id="c"), event(id="a")])
    assert second.status_code == 200, second.text
    data = second.json()["data"]
    assert [(d["index"], d["id"]) for d in data["duplicates"]] == [(0, ids["b"]), (2, ids["a"])]
    assert [a["event_id"] for a in data["accepted"]] == ["c"]
    assert len(await query(client, tenant, "from=-1h")) == 3


async def test_the_same_id_from_another_source_is_another_event(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [event(id="1", source="//ci/a"), event(id="1", source="//ci/b")]
    response = await post(client, tenant, batch)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["counts"]["accepted"] == 2


async def test_a_batch_of_only_duplicates_is_not_an_error(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    assert (await post(client, tenant, [event(id="x")])).status_code == 201
    again = await post(client, tenant, [event(id="x"), event(id="x")])
    assert again.status_code == 200, again.text
    assert again.json()["data"]["counts"] == {"accepted": 0, "duplicates": 2, "rejected": 0}


async def test_a_batch_of_exactly_1000_events_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await post(client, tenant, [event(id=f"k-{i}") for i in range(1000)])
    assert response.status_code == 201, response.text[:500]
    data = response.json()["data"]
    assert data["counts"] == {"accepted": 1000, "duplicates": 0, "rejected": 0}
    assert [a["index"] for a in data["accepted"]] == list(range(1000))


async def test_a_batch_of_1001_events_is_refused_and_none_is_stored(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await post(client, tenant, [event(id=f"k-{i}") for i in range(1001)])
    assert response.status_code == 400
    assert assert_error_shape(response)["details"][0]["field"] == "body"
    assert await query(client, tenant, "from=-1h") == []


async def test_an_event_older_than_the_retention_window_is_rejected_on_time(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    old = (datetime.now(UTC) - timedelta(days=366)).isoformat()
    edge = (datetime.now(UTC) - timedelta(days=364)).isoformat()
    response = await post(client, tenant, [event(id="old", time=old), event(id="edge", time=edge)])
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [a["event_id"] for a in data["accepted"]] == ["edge"]
    [rejected] = data["rejected"]
    assert rejected["index"] == 0
    assert rejected["field"] == "time"
    assert "retention window of 365 days" in rejected["message"]


# -- CloudEvents samples (cloudevents/spec, JSON format) ----------------------------------


def cloudevents_batch(time: str | None) -> list[dict[str, Any]]:
    batch = copy.deepcopy(load(FIXTURES / "cloudevents" / "batch.json"))
    assert isinstance(batch, list)
    if time is not None:
        for item in batch:
            item["time"] = time
    return batch


async def test_the_cloudevents_sample_batch_is_too_old_for_the_retention_window_as_published(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await post(
        client, tenant, cloudevents_batch(None), "application/cloudevents-batch+json"
    )
    assert response.status_code == 400
    body = assert_error_shape(response)
    assert [(d["index"], d["field"]) for d in body["details"]] == [(0, "time"), (1, "time")]
    assert all("retention window" in d["message"] for d in body["details"])


async def test_the_cloudevents_sample_batch_is_accepted_with_its_binary_item(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await post(
        client, tenant, cloudevents_batch(recent()), "application/cloudevents-batch+json"
    )
    assert response.status_code == 201, response.text
    accepted = {a["event_id"]: a["id"] for a in response.json()["data"]["accepted"]}
    assert set(accepted) == {"B234-1234-1234", "C234-1234-1234"}

    binary = await client.get(
        f"{EVENTS}/{accepted['B234-1234-1234']}", headers=tenant.auth(tenant.reader)
    )
    stored = binary.json()["data"]
    assert stored["type"] == "com.example.someevent"
    assert stored["data_base64"] == "... base64 encoded string ..."
    assert "data" not in stored
    assert stored["datacontenttype"] == "application/vnd.apache.thrift.binary"
    assert stored["extensions"] == {"comexampleextension1": "value", "comexampleothervalue": 5}
    assert stored["service"] == "mycontext"

    structured = await client.get(
        f"{EVENTS}/{accepted['C234-1234-1234']}", headers=tenant.auth(tenant.reader)
    )
    assert structured.json()["data"]["data"] == {
        "appinfoA": "abc",
        "appinfoB": 123,
        "appinfoC": True,
    }


@pytest.mark.parametrize("name", ["structured.json-data.json", "structured.xml-string-data.json"])
async def test_a_structured_cloudevent_sample_is_accepted_as_cloudevents_json(
    client: httpx.AsyncClient, tenant: Tenant, name: str
) -> None:
    sample = load(FIXTURES / "cloudevents" / name)
    sample["time"] = recent()
    response = await post(client, tenant, sample, "application/cloudevents+json")
    assert response.status_code == 201, response.text
    stored_id = response.json()["data"]["accepted"][0]["id"]
    stored = (await client.get(f"{EVENTS}/{stored_id}", headers=tenant.auth(tenant.reader))).json()[
        "data"
    ]
    original = load(FIXTURES / "cloudevents" / name)
    assert stored["event_id"] == original["id"]
    assert stored["data"] == original["data"]
    assert stored["datacontenttype"] == original["datacontenttype"]
    # A null attribute (subject, unsetextension) is the same as an absent one.
    assert "subject" not in stored
    assert stored["extensions"] == {"comexampleextension1": "value", "comexampleothervalue": 5}


# -- CDEvents samples (cdevents/spec conformance) ----------------------------------------


def cdevent(path: Path, *, time: str | None, unique_id: bool) -> dict[str, Any]:
    """A copy of a fixture: its timestamp moved to `time`, its id made unique if asked."""
    sample = copy.deepcopy(load(path))
    assert isinstance(sample, dict)
    if time is not None:
        sample["context"]["timestamp"] = time
    if unique_id:
        sample["context"]["id"] = f"{path.stem}-{sample['context']['id']}"
    return sample


def test_every_cdevents_fixture_has_a_mapped_type_listed() -> None:
    assert {p.stem for p in CDEVENTS} == set(CDEVENT_TYPES)


async def test_the_cdevents_samples_are_too_old_for_the_retention_window_as_published(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [cdevent(p, time=None, unique_id=True) for p in CDEVENTS]
    response = await post(client, tenant, batch)
    assert response.status_code == 400
    body = assert_error_shape(response)
    assert [(d["index"], d["field"]) for d in body["details"]] == [
        (i, "time") for i in range(len(CDEVENTS))
    ]
    assert "365 days" in body["details"][0]["message"]


async def test_every_cdevents_sample_is_accepted_and_found_by_its_mapped_type(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [cdevent(p, time=recent(), unique_id=True) for p in CDEVENTS]
    response = await post(client, tenant, batch)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["counts"]["accepted"] == len(CDEVENTS)

    for mapped in sorted(set(CDEVENT_TYPES.values())):
        found = await query(client, tenant, f"type={mapped}&from=-1h")
        expected = sorted(stem for stem, t in CDEVENT_TYPES.items() if t == mapped)
        assert sorted(e["event_id"].split("-")[0] for e in found) == expected, mapped
        for item in found:
            assert item["original_type"].startswith("dev.cdevents.")
            assert item["original_type"].endswith(".0.3.0")

    [deployed] = [
        e
        for e in await query(client, tenant, "type=deployment&from=-1h")
        if e["event_id"].startswith("service_deployed")
    ]
    assert deployed["subject"] == "test123"
    assert deployed["service"] == "mySubject123"
    assert deployed["source"] == "/event/source/123"
    [incident] = await query(client, tenant, "type=incident&subject=prod1&from=-1h")
    assert incident["service"] == "myApp"
    assert incident["description"] == "Response time above threshold of 100ms"


async def test_cdevents_samples_sharing_a_context_id_and_source_are_duplicates(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # The conformance samples reuse two context ids; by CloudEvents rules (source, id) names
    # one event, so Trailmap stores the first of each and reports the rest as duplicates.
    batch = [cdevent(p, time=recent(), unique_id=False) for p in CDEVENTS]
    response = await post(client, tenant, batch)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    keys = {(s["context"]["source"], s["context"]["id"]) for s in batch}
    assert data["counts"] == {
        "accepted": len(keys),
        "duplicates": len(batch) - len(keys),
        "rejected": 0,
    }
    first_ids = {(a["source"], a["event_id"]): a["id"] for a in data["accepted"]}
    for duplicate in data["duplicates"]:
        assert duplicate["id"] == first_ids[(duplicate["source"], duplicate["event_id"])]
