"""The Settings page, driven as a browser drives it: the plan and retention, a bar per quota
with what is used of it, the key rules and the metrics source; owners and admins only."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import event, make_org, principal_for
from tests.forms import parse, sign_in
from trailmap.accounts import add_user
from trailmap.accounts.audit import list_audit
from trailmap.accounts.organizations import Organization, get_org
from trailmap.metrics.settings import read_settings
from trailmap.settings import Settings
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
OWNER = "ada@acme.example"
MEMBER = "bob@acme.example"
SECRET = "a-secret-key-of-at-least-thirty-two-characters"
PROM_TOKEN = "Bearer PROM-SECRET-9f2c"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.model_validate(
        {
            "database_url": database_url,
            "retention_purge_interval_seconds": 0,
            "public_url": "http://testserver",
            "secret_key": SECRET,
        }
    )


async def _org_with_people(db: Database, plan: str) -> Organization:
    org = await make_org(db, slug="acme", plan=plan)
    await add_user(db, OWNER, org_slug="acme", role="owner", password=PASSWORD)
    await add_user(db, MEMBER, org_slug="acme", role="member", password=PASSWORD)
    return org


async def _signed_in(new_browser: NewBrowser, email: str) -> httpx.AsyncClient:
    browser = new_browser()
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


async def _submit(browser: httpx.AsyncClient, action: str, **values: str) -> httpx.Response:
    opened = await browser.get("/orgs/acme/settings")
    assert opened.status_code == 200, opened.text
    return await browser.post(action, data=parse(opened.text).form(action).data(**values))


def _meter(html: str, name: str) -> dict[str, str]:
    found = re.search(rf"<meter id=quota-{name} ([^>]*)>", html)
    assert found, f"no bar for {name}"
    return dict(re.findall(r"(\w+)=([\w.]+)", found.group(1)))


async def test_the_settings_page_draws_a_bar_for_each_quota_with_what_is_used_of_it(
    db: Database, new_browser: NewBrowser
) -> None:
    org = await _org_with_people(db, "free")
    sent = await ingest_events(
        db, principal_for(org), [event(id=f"e{i}") for i in range(3)], max_event_bytes=10_000
    )
    assert len(sent.accepted) == 3
    owner = await _signed_in(new_browser, OWNER)

    html = (await owner.get("/orgs/acme/settings")).text

    assert "Plan: <strong>free</strong>" in html
    assert "kept <strong>7 days</strong>" in html
    assert _meter(html, "events_per_day") == {
        "min": "0",
        "max": "100",
        "value": "3",
        "low": "75",
        "high": "90",
        "optimum": "0",
    }
    assert "3 of 100 (3%)" in html
    assert _meter(html, "events_per_month")["max"] == "1000"
    assert _meter(html, "series")["value"] == "0"
    # Two people and a plan of two: the bar is full and says so.
    members = _meter(html, "members")
    assert (members["value"], members["max"]) == ("2", "2")
    assert "<span class=over>2 of 2 (100%)</span>" in html
    # A free organization has its retention from the plan: no form to change it.
    assert "/settings/retention" not in html


async def test_a_self_hosted_organization_sets_its_retention_and_the_audit_log_says_so(
    db: Database, new_browser: NewBrowser
) -> None:
    await _org_with_people(db, "self-hosted")
    owner = await _signed_in(new_browser, OWNER)
    html = (await owner.get("/orgs/acme/settings")).text
    # No limits: the figures are shown without bars, those not counted say so.
    assert "<meter" not in html
    assert "Events this month</span>: 0 <span class=muted>· no limit" in html
    assert "MCP calls this month</span>: not counted" in html

    saved = await _submit(owner, "/orgs/acme/settings/retention", retention_days="30")

    assert saved.status_code == 303
    assert (await get_org(db, "acme")).retention_days == 30
    entries = await list_audit(db, (await get_org(db, "acme")).id, limit=5)
    newest = entries[0]
    assert (newest.action, newest.target, newest.details) == (
        "settings.changed",
        "retention",
        {"retention_days": 30, "was": 365},
    )


@pytest.mark.parametrize(
    ("days", "message"), [("soon", "give a whole number of days"), ("0", "give 1 to 36500 days")]
)
async def test_a_retention_the_organization_may_not_have_is_refused_beside_its_field(
    db: Database, new_browser: NewBrowser, days: str, message: str
) -> None:
    await _org_with_people(db, "self-hosted")
    owner = await _signed_in(new_browser, OWNER)

    refused = await _submit(owner, "/orgs/acme/settings/retention", retention_days=days)

    assert refused.status_code == 400
    assert "id=retention_days name=retention_days" in refused.text
    assert "aria-invalid=true aria-describedby=retention_days-error" in refused.text
    assert parse(refused.text).by_id["retention_days-error"] == message
    assert (await get_org(db, "acme")).retention_days == 365


async def test_the_metrics_source_keeps_its_credential_secret_and_drops_it_for_another_server(
    db: Database, new_browser: NewBrowser
) -> None:
    org = await _org_with_people(db, "self-hosted")
    owner = await _signed_in(new_browser, OWNER)

    saved = await _submit(
        owner,
        "/orgs/acme/settings/metrics",
        base_url="http://10.1.2.3:9090",
        auth_name="Authorization",
        auth_value=PROM_TOKEN,
        timeout_seconds="5",
    )

    assert saved.status_code == 303
    stored = await read_settings(db, org.id, secret_key=SECRET)
    assert stored.prometheus is not None
    assert stored.prometheus.auth_header_value == PROM_TOKEN
    assert stored.prometheus.timeout_seconds == 5.0
    html = (await owner.get("/orgs/acme/settings")).text
    assert "Prometheus at <code>http://10.1.2.3:9090</code>" in html
    assert "<code>Authorization</code> is stored (encrypted)" in html
    assert "PROM-SECRET" not in html

    # The same server again, no value: the stored credential stays.
    kept = await _submit(
        owner, "/orgs/acme/settings/metrics", base_url="http://10.1.2.3:9090/", auth_value=""
    )
    assert kept.status_code == 303
    again = await read_settings(db, org.id, secret_key=SECRET)
    assert again.prometheus is not None
    assert again.prometheus.auth_header_value == PROM_TOKEN

    # Another server: the credential given for the first is not sent to it.
    moved = await _submit(
        owner, "/orgs/acme/settings/metrics", base_url="http://10.9.9.9:9090", auth_value=""
    )
    assert moved.status_code == 303
    after = await read_settings(db, org.id, secret_key=SECRET)
    assert after.prometheus is not None
    assert after.prometheus.base_url == "http://10.9.9.9:9090"
    assert after.prometheus.auth_header_value is None
    assert not after.has_auth_header

    removed = await _submit(owner, "/orgs/acme/settings/metrics/remove")
    assert removed.status_code == 303
    assert (await read_settings(db, org.id, secret_key=SECRET)).prometheus is None


async def test_a_metrics_source_the_outbound_guard_refuses_is_named_beside_its_field(
    db: Database, new_browser: NewBrowser
) -> None:
    org = await _org_with_people(db, "self-hosted")
    owner = await _signed_in(new_browser, OWNER)

    # The cloud metadata address: refused by the guard before any connection is made.
    refused = await _submit(
        owner, "/orgs/acme/settings/metrics", base_url="http://169.254.169.254/latest"
    )

    assert refused.status_code == 400
    assert "aria-invalid=true aria-describedby=base_url-error" in refused.text
    assert "169.254.169.254" in parse(refused.text).by_id["base_url-error"]
    assert (await read_settings(db, org.id, secret_key=SECRET)).prometheus is None


@pytest.mark.parametrize(
    "action",
    [
        "/orgs/acme/settings",
        "/orgs/acme/settings/retention",
        "/orgs/acme/settings/metrics",
        "/orgs/acme/settings/metrics/remove",
    ],
)
async def test_a_member_can_neither_open_the_settings_nor_post_to_them(
    db: Database, new_browser: NewBrowser, action: str
) -> None:
    await _org_with_people(db, "self-hosted")
    bob = await _signed_in(new_browser, MEMBER)
    assert (await bob.get("/orgs/acme/settings")).status_code == 403
    csrf = parse((await bob.get("/orgs/acme/keys")).text).csrf

    refused = await bob.post(
        action,
        data={"csrf": csrf, "retention_days": "1", "base_url": "http://10.1.2.3:9090"},
    )

    assert refused.status_code == 403
    assert (await get_org(db, "acme")).retention_days == 365
    org = await get_org(db, "acme")
    assert (await read_settings(db, org.id, secret_key=SECRET)).prometheus is None
    assert "/orgs/acme/settings" not in parse((await bob.get("/orgs/acme/keys")).text).hrefs()
