"""Integrations over REST: ADMIN keys of owners, admins or service accounts make, read,
change, rotate and remove them; the secret appears once; other keys and organizations are
refused; each change is in the audit log, never the secret."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_error_shape import assert_error_shape as _shape
from tests.conftest import Tenant
from tests.factories import make_key, make_org
from tests.integrations.support import SECRET_KEY, fixture_bytes, github_headers
from trailmap.accounts import add_user, create_key
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        secret_key=SECRET_KEY,
        public_url="https://trailmap.example.com",
    )


def assert_error_shape(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json() if status == 409 else _shape(response)  # 409 is not in its table
    assert body["code"] == code
    assert body["success"] is False


async def _admin_key_of(db: Database, tenant: Tenant, role: str) -> str:
    added = await add_user(db, f"{role}@acme.example", org_slug=tenant.org.slug, role=role)
    _key, token = await create_key(
        db, tenant.org.slug, name=f"{role} admin", scope="ADMIN", created_by=role, user_id=added.id
    )
    return token


async def _create(
    client: httpx.AsyncClient, tenant: Tenant, token: str | None = None, **body: object
) -> httpx.Response:
    payload = {"kind": "github", "name": "acme-github"} | body
    return await client.post(
        "/api/v1/integrations", json=payload, headers=tenant.auth(token or tenant.admin)
    )


async def test_an_integration_is_made_with_its_webhook_url_and_its_secret_shown_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = await _create(client, tenant, settings={"services": {"acme/checkout-web": "checkout"}})
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    assert data["kind"] == "github"
    assert data["status"] == "active"
    assert data["webhook_url"] == (
        f"https://trailmap.example.com/api/v1/integrations/{data['id']}/webhook"
    )
    assert len(data["secret"]) >= 40
    assert data["settings"] == {"services": {"acme/checkout-web": "checkout"}}
    shown = await client.get(f"/api/v1/integrations/{data['id']}", headers=tenant.admin_auth())
    listed = await client.get("/api/v1/integrations", headers=tenant.admin_auth())
    assert "secret" not in shown.json()["data"]
    assert data["secret"] not in shown.text + listed.text
    assert [i["id"] for i in listed.json()["data"]["integrations"]] == [data["id"]]
    # The secret it showed is the one deliveries are signed with.
    body = fixture_bytes("github-webhooks", "ping.json")
    ping = await client.post(
        f"/api/v1/integrations/{data['id']}/webhook",
        content=body,
        headers=github_headers(body, data["secret"], "ping"),
    )
    assert ping.status_code == 200, ping.text
    deliveries = await client.get(
        f"/api/v1/integrations/{data['id']}/deliveries", headers=tenant.admin_auth()
    )
    [delivery] = deliveries.json()["data"]["deliveries"]
    assert (delivery["event_name"], delivery["outcome"]) == ("ping", "ignored")


async def test_only_admin_keys_of_owners_admins_or_service_accounts_manage_integrations(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    owners = await _admin_key_of(db, tenant, "owner")
    admins = await _admin_key_of(db, tenant, "admin")
    members = await _admin_key_of(db, tenant, "member")
    for token, status in (
        (tenant.reader, 403),
        (tenant.writer, 403),
        (members, 403),  # an ADMIN key speaks for its person's role, no more
        (owners, 200),
        (admins, 200),
        (tenant.admin, 200),
    ):
        got = await client.get("/api/v1/integrations", headers=tenant.auth(token))
        assert got.status_code == status, got.text
        if status == 403:
            assert_error_shape(got, 403, "FORBIDDEN")
            refused = await _create(client, tenant, token, name=f"n-{token[-6:]}")
            assert refused.status_code == 403
    assert (await client.get("/api/v1/integrations")).status_code == 401


async def test_another_organizations_integration_is_not_found(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    made = (await _create(client, tenant)).json()["data"]
    other = await make_org(db)
    theirs = {"Authorization": f"Bearer {await make_key(db, other, scope='admin')}"}
    base = f"/api/v1/integrations/{made['id']}"
    for method, path in (
        ("GET", base),
        ("PATCH", base),
        ("DELETE", base),
        ("POST", f"{base}/rotate-secret"),
        ("GET", f"{base}/deliveries"),
    ):
        kwargs = {"json": {"status": "disabled"}} if method == "PATCH" else {}
        got = await client.request(method, path, headers=theirs, **kwargs)  # type: ignore[arg-type]
        assert_error_shape(got, 404, "NOT_FOUND")
    listed = await client.get("/api/v1/integrations", headers=theirs)
    assert listed.json()["data"]["integrations"] == []


async def test_bad_input_is_400_naming_the_field_and_a_taken_name_409(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for body, where in (
        ({"kind": "bitbucket"}, "kind"),
        ({"name": ""}, "name"),
        ({"settings": {"services": {"not a repo": "x"}}}, "settings.services.not a repo"),
        ({"settings": {"colour": "blue"}}, "settings.colour"),
    ):
        got = await _create(client, tenant, **body)
        assert_error_shape(got, 400, "VALIDATION_ERROR")
        assert got.json()["details"][0]["field"] == where
    assert (await _create(client, tenant)).status_code == 201
    assert_error_shape(await _create(client, tenant), 409, "CONFLICT")


async def test_changes_rotation_and_removal_are_audited_without_the_secret(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = (await _create(client, tenant)).json()["data"]
    base = f"/api/v1/integrations/{made['id']}"
    changed = await client.patch(
        base,
        json={"name": "renamed", "status": "disabled", "settings": {"branch": "trunk"}},
        headers=tenant.admin_auth(),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["name"] == "renamed"
    assert changed.json()["data"]["status"] == "disabled"
    assert changed.json()["data"]["settings"]["branch"] == "trunk"
    rotated = await client.post(
        f"{base}/rotate-secret?overlap_hours=2", headers=tenant.admin_auth()
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["data"]["secret"]
    assert new_secret != made["secret"]
    assert rotated.json()["data"]["previous_secret_until"] is not None
    removed = await client.delete(base, headers=tenant.admin_auth())
    assert removed.status_code == 200
    assert (await client.get(base, headers=tenant.admin_auth())).status_code == 404
    audit = await client.get("/api/v1/audit", headers=tenant.admin_auth())
    actions = [a["action"] for a in audit.json()["data"]["entries"]]
    assert actions[:4] == [
        "integration.deleted",
        "integration.secret_rotated",
        "integration.updated",
        "integration.created",
    ]
    assert made["secret"] not in audit.text
    assert new_secret not in audit.text


async def test_without_a_server_secret_key_no_integration_can_be_made(
    tenant: Tenant, db: Database, database_url: str
) -> None:
    from trailmap.app import create_app  # noqa: PLC0415

    plain = Settings(database_url=database_url, retention_purge_interval_seconds=0)
    transport = httpx.ASGITransport(app=create_app(plain, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        got = await _create(client, tenant)
    assert_error_shape(got, 400, "VALIDATION_ERROR")
    assert "TRAILMAP_SECRET_KEY" in got.json()["error"]
