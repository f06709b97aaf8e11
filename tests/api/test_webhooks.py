"""The webhook route: GitHub's signature and GitLab's token checked before anything is parsed,
redeliveries answered as duplicates, and every bad delivery a 4xx or an ignored one, never a
5xx and never an event (the forges' mappings are stood in for here: tests/ingest has theirs)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.integrations.support import (
    SECRET_KEY,
    fixture_bytes,
    github_headers,
    gitlab_headers,
    make_integration,
    sign,
)
from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.ingest import deliveries
from trailmap.ingest.webhooks import ForgeContext, Mapped
from trailmap.integrations.deliveries import list_deliveries
from trailmap.integrations.integrations import rotate_secret, update_integration
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

_DEPLOYED = "deployment_status.created.success.json"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, retention_purge_interval_seconds=0, secret_key=SECRET_KEY
    )


def _stand_in(event_name: str, payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    """A mapping of the right shape, not GitHub's (that is ingest/github.py's)."""
    if event_name not in ("deployment_status", "Deployment Hook"):
        return Mapped.ignore(f"{event_name} events are not read")
    repo = payload.get("project") or payload["repository"]
    name = repo.get("full_name") or repo.get("path_with_namespace") or repo["name"]
    return Mapped(
        events=(
            {
                "specversion": "1.0",
                "type": "deployment",
                "source": f"//forge/{name}",
                "id": f"{context.delivery_id}/deployment",
                "time": "NOW",
                "service": context.services.get(name, name.rsplit("/", 1)[-1]),
            },
        )
    )


@pytest.fixture(autouse=True)
def stand_in_mappers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(deliveries.MAPPERS, "github", _stand_in)
    monkeypatch.setitem(deliveries.MAPPERS, "gitlab", _stand_in)


async def _events(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/events?since=1d", headers=tenant.auth(tenant.reader))
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["data"]["events"]
    return events


def _url(integration_id: str) -> str:
    return f"/api/v1/integrations/{integration_id}/webhook"


async def test_a_signed_github_delivery_becomes_an_event_and_a_delivery_record(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(
        db, tenant.org, settings={"services": {"Codertocat/Hello-World": "hello"}}
    )
    body = fixture_bytes("github-webhooks", _DEPLOYED)
    headers = github_headers(body, secret, "deployment_status", "d-1")
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["outcome"] == "accepted"
    assert len(data["event_ids"]) == 1
    [event] = await _events(client, tenant)
    assert event["service"] == "hello"
    assert event["trailmap_id"] == data["event_ids"][0]
    [record] = await list_deliveries(db, tenant.org.id, integration.id, who=OPERATOR_AUTHORITY)
    assert (record.delivery_id, record.event_name, record.outcome) == (
        "d-1",
        "deployment_status",
        "accepted",
    )
    assert list(record.event_ids) == data["event_ids"]


async def test_a_bad_signature_is_401_and_stores_nothing(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = fixture_bytes("github-webhooks", _DEPLOYED)
    for signature in (sign(body, "not-the-secret"), sign(body + b" ", secret), "sha1=abc", ""):
        headers = github_headers(body, secret, "deployment_status")
        headers["X-Hub-Signature-256"] = signature
        answer = await client.post(_url(integration.id), content=body, headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "UNAUTHORIZED"
    headers = github_headers(body, secret, "deployment_status")
    del headers["X-Hub-Signature-256"]
    assert (
        await client.post(_url(integration.id), content=body, headers=headers)
    ).status_code == 401
    assert await _events(client, tenant) == []
    assert await list_deliveries(db, tenant.org.id, integration.id, who=OPERATOR_AUTHORITY) == []


async def test_a_body_that_is_not_json_is_refused_only_after_its_signature_is_checked(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = b'{"action": "created", "deployment_status": '
    unsigned = github_headers(body, "wrong", "deployment_status")
    assert (
        await client.post(_url(integration.id), content=body, headers=unsigned)
    ).status_code == 401
    headers = github_headers(body, secret, "deployment_status", "broken-1")
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert "not valid JSON" in answer.json()["error"]
    [record] = await list_deliveries(db, tenant.org.id, integration.id, who=OPERATOR_AUTHORITY)
    assert (record.delivery_id, record.outcome) == ("broken-1", "refused")
    assert record.reason is not None
    assert "JSON" in record.reason
    assert await _events(client, tenant) == []


async def test_a_delivery_without_its_delivery_id_is_400(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = fixture_bytes("github-webhooks", _DEPLOYED)
    headers = github_headers(body, secret, "deployment_status")
    del headers["X-GitHub-Delivery"]
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["details"][0]["field"] == "x-github-delivery"
    headers["X-GitHub-Delivery"] = "x" * 201
    too_long = await client.post(_url(integration.id), content=body, headers=headers)
    assert too_long.status_code == 400
    assert await _events(client, tenant) == []


async def test_a_redelivered_github_delivery_is_a_duplicate(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = fixture_bytes("github-webhooks", _DEPLOYED)
    headers = github_headers(body, secret, "deployment_status", "again")
    first = await client.post(_url(integration.id), content=body, headers=headers)
    second = await client.post(_url(integration.id), content=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json()["data"]["outcome"] == "duplicate"
    assert second.json()["data"]["event_ids"] == first.json()["data"]["event_ids"]
    assert len(await _events(client, tenant)) == 1
    records = await list_deliveries(db, tenant.org.id, integration.id, who=OPERATOR_AUTHORITY)
    assert [r.outcome for r in records] == ["accepted"]


async def test_a_ping_is_answered_and_recorded(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = fixture_bytes("github-webhooks", "ping.json")
    headers = github_headers(body, secret, "ping", "ping-1")
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json()["data"]["outcome"] == "ignored"
    assert "ping" in answer.json()["data"]["reason"]
    [record] = await list_deliveries(db, tenant.org.id, integration.id, who=OPERATOR_AUTHORITY)
    assert (record.event_name, record.outcome) == ("ping", "ignored")
    assert await _events(client, tenant) == []


async def test_an_event_the_mapping_does_not_read_is_ignored_with_its_reason(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = fixture_bytes("github-webhooks", "push.new-branch.json")
    headers = github_headers(body, secret, "push", "push-1")
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json()["data"] == {
        "delivery_id": "push-1",
        "outcome": "ignored",
        "reason": "push events are not read",
        "event_ids": [],
    }
    assert await _events(client, tenant) == []


async def test_a_payload_of_an_unexpected_shape_is_refused_not_a_500(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = b'{"action": "created", "repository": 7}'
    headers = github_headers(body, secret, "deployment_status", "odd-1")
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    [record] = await list_deliveries(db, tenant.org.id, integration.id, who=OPERATOR_AUTHORITY)
    assert record.outcome == "refused"


async def test_a_huge_body_is_413_before_it_is_read_whole(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    headers = github_headers(body, secret, "deployment_status")
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 413
    assert answer.json()["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_form_encoded_delivery_is_refused_with_what_to_change(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = b"payload=%7B%7D"
    headers = github_headers(body, secret, "deployment_status", "form-1")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 415
    assert "application/json" in answer.json()["error"]


async def test_an_unknown_or_disabled_integration_is_the_same_404(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org)
    body = fixture_bytes("github-webhooks", _DEPLOYED)
    headers = github_headers(body, secret, "deployment_status")
    unknown = await client.post(_url("0" * 36), content=body, headers=headers)
    await update_integration(
        db,
        tenant.org.id,
        integration.id,
        {"status": "disabled"},
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
    )
    disabled = await client.post(_url(integration.id), content=body, headers=headers)
    assert unknown.status_code == disabled.status_code == 404
    assert unknown.json() == disabled.json()
    assert await _events(client, tenant) == []


async def test_a_rotated_secret_overlaps_the_old_one_then_only_the_new_is_accepted(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, old = await make_integration(db, tenant.org)
    body = fixture_bytes("github-webhooks", "ping.json")

    async def status(secret: str) -> int:
        headers = github_headers(body, secret, "ping")
        return (await client.post(_url(integration.id), content=body, headers=headers)).status_code

    _, new = await rotate_secret(
        db,
        tenant.org.id,
        integration.id,
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
        secret_key=SECRET_KEY,
    )
    assert new != old
    assert (await status(old), await status(new)) == (200, 200)
    _, newest = await rotate_secret(
        db,
        tenant.org.id,
        integration.id,
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
        secret_key=SECRET_KEY,
        overlap=timedelta(0),
    )
    assert (await status(old), await status(new), await status(newest)) == (401, 401, 200)


async def test_a_gitlab_delivery_is_checked_by_its_token(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(db, tenant.org, kind="gitlab", name="lab")
    body = fixture_bytes("gitlab-webhooks", "deployment.json")
    wrong = await client.post(
        _url(integration.id), content=body, headers=gitlab_headers("nope", "Deployment Hook")
    )
    assert wrong.status_code == 401
    headers = gitlab_headers(secret, "Deployment Hook", "lab-1")
    first = await client.post(_url(integration.id), content=body, headers=headers)
    again = await client.post(_url(integration.id), content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert (first.json()["data"]["outcome"], again.json()["data"]["outcome"]) == (
        "accepted",
        "duplicate",
    )
    assert len(await _events(client, tenant)) == 1
    # A GitHub signature means nothing to a GitLab integration.
    signed = github_headers(body, secret, "deployment_status")
    assert (
        await client.post(_url(integration.id), content=body, headers=signed)
    ).status_code == 401


async def test_a_repository_not_mapped_belongs_to_the_integrations_service_when_it_names_one(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    integration, secret = await make_integration(
        db, tenant.org, settings={"services": {"acme/other": "other"}, "service": "platform"}
    )
    body = fixture_bytes("github-webhooks", _DEPLOYED)
    headers = github_headers(body, secret, "deployment_status")
    answer = await client.post(_url(integration.id), content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    [event] = await _events(client, tenant)
    assert event["service"] == "platform"
