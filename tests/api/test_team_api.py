"""The team over REST: ADMIN keys of owners, admins and service accounts manage members,
invitations and key rules and read the audit log; every other key is refused."""

from __future__ import annotations

import email
import re
import socket
from collections.abc import AsyncIterator, Iterator
from email.message import Message

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from trailmap.accounts import add_user, create_key
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"


class _Inbox:
    """A real SMTP server on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        del server, session
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        self.messages.append(email.message_from_bytes(raw))
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[_Inbox, int]]:
    handler = _Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


async def _member_admin_key(db: Database, tenant: Tenant, role: str) -> str:
    added = await add_user(
        db, f"{role}@acme.example", org_slug=tenant.org.slug, role=role, password=PASSWORD
    )
    _key, token = await create_key(
        db, tenant.org.slug, name=f"{role} admin", scope="ADMIN", created_by=role, user_id=added.id
    )
    return token


async def test_only_admin_keys_of_owners_admins_or_service_accounts_manage_the_team(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    owners = await _member_admin_key(db, tenant, "owner")
    members = await _member_admin_key(db, tenant, "member")
    for token, status in (
        (tenant.reader, 403),
        (tenant.writer, 403),
        (members, 403),  # an ADMIN key speaks for its person's role, no more
        (owners, 200),
        (tenant.admin, 200),  # a service account's ADMIN key
    ):
        got = await client.get("/api/v1/members", headers=tenant.auth(token))
        assert got.status_code == status, got.text
        audit = await client.get("/api/v1/audit", headers=tenant.auth(token))
        assert audit.status_code == status, audit.text
        if status != 200:
            assert_error_shape(got)


async def test_an_invitation_over_rest_returns_its_link_once_when_no_mail_server_is_set(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    made = await client.post(
        "/api/v1/invitations",
        json={"email": "carol@acme.example", "role": "admin"},
        headers=tenant.admin_auth(),
    )
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    assert data["emailed"] is False
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/invite/[\w-]{43}", data["link"])
    listed = await client.get("/api/v1/invitations", headers=tenant.admin_auth())
    assert [i["email"] for i in listed.json()["data"]["invitations"]] == ["carol@acme.example"]
    assert "link" not in listed.text  # the link is shown once, never listed
    log = await client.get("/api/v1/audit", headers=tenant.admin_auth())
    entry = log.json()["data"]["entries"][0]
    assert (entry["action"], entry["target"]) == ("member.invited", "carol@acme.example")
    assert data["link"].rsplit("/", 1)[1] not in log.text


@pytest.fixture
async def mailing_client(
    database_url: str, db: Database, inbox: tuple[_Inbox, int]
) -> AsyncIterator[httpx.AsyncClient]:
    _handler, port = inbox
    settings = Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        smtp_url=f"smtp://127.0.0.1:{port}",
        mail_from="trailmap@acme.example",
        public_url="https://trailmap.acme.example",
    )
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def test_with_a_mail_server_the_invitation_is_e_mailed_and_not_returned(
    mailing_client: httpx.AsyncClient, tenant: Tenant, inbox: tuple[_Inbox, int]
) -> None:
    handler, _port = inbox
    made = await mailing_client.post(
        "/api/v1/invitations", json={"email": "dan@acme.example"}, headers=tenant.admin_auth()
    )
    assert made.status_code == 201, made.text
    assert made.json()["data"]["emailed"] is True
    assert "link" not in made.json()["data"]
    [message] = handler.messages
    assert message["To"] == "dan@acme.example"
    assert message["From"] == "trailmap@acme.example"
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert re.search(rb"https://trailmap\.acme\.example/invite/[\w-]{43}", body)


async def test_roles_change_and_members_are_removed_over_rest_with_their_keys(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    bob = await add_user(db, "bob@acme.example", org_slug=tenant.org.slug, password=PASSWORD)
    _key, bobs = await create_key(
        db, tenant.org.slug, name="bob's", scope="READ_ONLY", created_by="bob", user_id=bob.id
    )
    promoted = await client.patch(
        "/api/v1/members/bob@acme.example", json={"role": "admin"}, headers=tenant.admin_auth()
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["data"]["role"] == "admin"
    bad = await client.patch(
        "/api/v1/members/bob@acme.example", json={"role": "king"}, headers=tenant.admin_auth()
    )
    assert_error_shape(bad)
    assert bad.status_code == 400

    removed = await client.delete("/api/v1/members/bob@acme.example", headers=tenant.admin_auth())
    assert removed.status_code == 200, removed.text
    assert [k["name"] for k in removed.json()["data"]["keys_revoked"]] == ["bob's"]
    assert (await client.get("/api/v1/events", headers=tenant.auth(bobs))).status_code == 401
    gone = await client.delete("/api/v1/members/bob@acme.example", headers=tenant.admin_auth())
    assert gone.status_code == 404
    assert_error_shape(gone)


async def test_the_key_rules_are_read_by_anyone_and_changed_by_an_admin_key_only(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    shown = await client.get("/api/v1/organization", headers=tenant.auth(tenant.reader))
    assert shown.json()["data"]["max_key_days"] is None
    refused = await client.patch(
        "/api/v1/organization", json={"max_key_days": 30}, headers=tenant.auth()
    )
    assert refused.status_code == 403
    changed = await client.patch(
        "/api/v1/organization",
        json={"max_key_days": 30, "members_write_keys": True},
        headers=tenant.admin_auth(),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["max_key_days"] == 30
    assert changed.json()["data"]["members_write_keys"] is True
    for body in ({"max_key_days": "soon"}, {"max_key_days": 0}, {"members_write_keys": "yes"}):
        wrong = await client.patch("/api/v1/organization", json=body, headers=tenant.admin_auth())
        assert wrong.status_code == 400, (body, wrong.text)
        assert_error_shape(wrong)


async def test_the_retention_window_is_changed_by_an_admin_key_and_a_bad_one_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    refused = await client.patch(
        "/api/v1/organization", json={"retention_days": 30}, headers=tenant.auth()
    )
    assert refused.status_code == 403
    changed = await client.patch(
        "/api/v1/organization", json={"retention_days": 30}, headers=tenant.admin_auth()
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["retention_days"] == 30
    # A bad window beside a good key rule: refused whole, so the key rule did not change.
    for days in (0, "a month", True):
        wrong = await client.patch(
            "/api/v1/organization",
            json={"retention_days": days, "max_key_days": 7},
            headers=tenant.admin_auth(),
        )
        assert wrong.status_code == 400, (days, wrong.text)
        assert_error_shape(wrong)
        assert wrong.json()["details"][0]["field"] == "retention_days"
    shown = (await client.get("/api/v1/organization", headers=tenant.auth())).json()["data"]
    assert (shown["retention_days"], shown["max_key_days"]) == (30, None)


async def test_usage_lists_each_quota_of_the_plan_with_what_is_used_of_it(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sent = await client.post(
        "/api/v1/events",
        json=[
            {"specversion": "1.0", "type": "deployment", "source": "//ci/x", "time": "NOW"},
            {"specversion": "1.0", "type": "deployment", "source": "//ci/y", "time": "NOW"},
        ],
        headers=tenant.auth(),
    )
    assert sent.status_code in (200, 201, 207), sent.text

    answer = await client.get("/api/v1/organization/usage", headers=tenant.auth(tenant.reader))

    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["plan"] == "self-hosted"
    quotas = {q["name"]: q for q in data["quotas"]}
    assert quotas["events_per_month"] == {
        "name": "events_per_month",
        "what": "events this month",
        "used": 2,
        "limit": None,
    }
    assert quotas["api_keys"]["used"] == 3  # the tenant's writer, reader and admin keys
    assert quotas["mcp_calls_per_month"]["used"] is None  # no limit, so nothing counted
    assert list(quotas) == [
        "events_per_day",
        "events_per_month",
        "mcp_calls_per_month",
        "spans_per_day",
        "metric_points_per_day",
        "series",
        "api_keys",
        "members",
    ]
