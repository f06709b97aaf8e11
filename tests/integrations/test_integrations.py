"""Integrations in the domain: secrets encrypted at rest and opened only with the server's
keys, the rotation's overlap, delivery records trimmed to the newest and purged with the
organization's window."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.factories import make_org
from tests.integrations.support import SECRET_KEY, make_integration, sign
from trailmap import clock
from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.memberships import Membership
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.errors import Forbidden
from trailmap.integrations import deliveries
from trailmap.integrations.deliveries import list_deliveries, record_delivery
from trailmap.integrations.integrations import (
    get_integration,
    list_integrations,
    rotate_secret,
    update_integration,
)
from trailmap.integrations.secrets import github_signature_ok, gitlab_token_ok
from trailmap.jobs.retention import purge_expired
from trailmap.storage import Database
from trailmap.storage import integrations as store

pytestmark = pytest.mark.anyio


async def test_the_secret_is_stored_encrypted_and_opens_only_with_the_servers_keys(
    db: Database,
) -> None:
    org = await make_org(db)
    integration, secret = await make_integration(db, org)
    row = await db.read(store.get_integration, org.id, integration.id)
    assert row is not None
    assert secret not in str(row)
    now = clock.now()
    assert integration.accepted_secrets(SECRET_KEY, now) == [secret]
    assert integration.accepted_secrets("another-server-key-0123456789abcdef", now) == []
    assert integration.accepted_secrets(None, now) == []
    # A retired key (TRAILMAP_OLD_SECRET_KEYS) still opens what it encrypted.
    rotated_keys = "a-brand-new-server-key-0123456789abcdef\n" + SECRET_KEY
    assert integration.accepted_secrets(rotated_keys, now) == [secret]


async def test_the_previous_secret_is_accepted_until_the_overlap_ends(db: Database) -> None:
    org = await make_org(db)
    integration, old = await make_integration(db, org)
    rotated, new = await rotate_secret(
        db,
        org.id,
        integration.id,
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
        secret_key=SECRET_KEY,
        overlap=timedelta(hours=2),
    )
    now = clock.now()
    assert rotated.accepted_secrets(SECRET_KEY, now) == [new, old]
    assert rotated.accepted_secrets(SECRET_KEY, now + timedelta(hours=3)) == [new]


def test_signatures_and_tokens_are_checked_against_every_accepted_secret() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    assert github_signature_ok(body, sign(body, "b"), ["a", "b"])
    assert github_signature_ok(body, sign(body, "b").upper().replace("SHA256=", "sha256="), ["b"])
    assert not github_signature_ok(body, sign(body, "c"), ["a", "b"])
    assert not github_signature_ok(body, sign(body, "a")[7:], ["a"])  # no sha256= prefix
    assert not github_signature_ok(body, None, ["a"])
    assert not github_signature_ok(body, sign(body, "a"), [])
    assert gitlab_token_ok("b", ["a", "b"])
    assert not gitlab_token_ok("", ["a"])
    assert not gitlab_token_ok("ab", ["a", "b"])


async def test_only_owners_and_admins_may_see_integrations(db: Database) -> None:
    org = await make_org(db)
    member = Membership("u1", org.id, org.slug, org.name, "member")
    admin = Membership("u2", org.id, org.slug, org.name, "admin")
    integration, _secret = await make_integration(db, org)
    with pytest.raises(Forbidden):
        await list_integrations(db, org.id, who=member)
    assert await get_integration(db, org.id, integration.id, who=admin) == integration


async def test_an_integration_keeps_only_its_newest_deliveries(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliveries, "KEEP_DELIVERIES", 3)
    monkeypatch.setattr(deliveries, "TRIM_EVERY", 1)
    org = await make_org(db)
    integration, _secret = await make_integration(db, org)
    for n in range(5):
        await record_delivery(
            db, integration, delivery_id=f"d{n}", event_name="push", outcome="ignored"
        )
    kept = await list_deliveries(db, org.id, integration.id, who=OPERATOR_AUTHORITY)
    assert [d.delivery_id for d in kept] == ["d4", "d3", "d2"]


async def test_delivery_records_are_purged_with_the_organizations_window(db: Database) -> None:
    org = await make_org(db)
    integration, _secret = await make_integration(db, org)
    await record_delivery(db, integration, delivery_id="old", event_name="push", outcome="ignored")
    report = await purge_expired(db, now=clock.now() + timedelta(days=org.retention_days + 1))
    assert report.deliveries == 1
    assert await list_deliveries(db, org.id, integration.id, who=OPERATOR_AUTHORITY) == []
    assert await list_integrations(db, org.id, who=OPERATOR_AUTHORITY) != []


async def test_a_kubeconfig_is_stored_encrypted_never_shown_and_can_be_removed(
    db: Database,
) -> None:
    org = await make_org(db)
    kubeconfig = "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user: {token: s3cr3t-t0ken}\n"
    integration, _secret = await make_integration(
        db,
        org,
        kind="kubernetes",
        name="prod-cluster",
        settings={"kubeconfig": kubeconfig, "context": "prod"},
    )
    row = await db.read(store.get_integration, org.id, integration.id)
    assert "s3cr3t-t0ken" not in str(row)
    shown = integration.as_json()
    assert shown["kubeconfig_set"] is True
    assert shown["settings"] == {"services": {}, "context": "prod"}
    assert "s3cr3t" not in str(shown)
    assert integration.secret_settings(SECRET_KEY) == {"kubeconfig": kubeconfig}
    assert integration.secret_settings("another-server-key-0123456789abcdef") == {}
    changed = await update_integration(
        db,
        org.id,
        integration.id,
        {"settings": {"kubeconfig": None}},
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
        secret_key=SECRET_KEY,
    )
    assert changed.as_json()["kubeconfig_set"] is False
    assert changed.settings.as_json() == {"services": {}, "context": "prod"}
