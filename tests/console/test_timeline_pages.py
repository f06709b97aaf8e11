"""The Timeline and Event pages over plain HTTP, on SQLite and PostgreSQL: what a signed-in
member of the organization sees, filtered as REST filters, and what anyone else does not."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import event, make_org, principal_for
from tests.forms import sign_in
from trailmap.accounts import add_user
from trailmap.accounts.organizations import Organization
from trailmap.settings import Settings
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
MEMBER = "ada@acme.example"
OUTSIDER = "eve@other.example"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        public_url="http://testserver",
    )


def _ago(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


async def _send(db: Database, org: Organization, *items: dict[str, object]) -> None:
    result = await ingest_events(db, principal_for(org), list(items), max_event_bytes=10_000)
    assert not result.rejected, result.rejected


@pytest.fixture
async def acme(db: Database) -> Organization:
    org = await make_org(db, slug="acme")
    await add_user(db, MEMBER, org_slug="acme", role="member", password=PASSWORD)
    await make_org(db, slug="other")
    await add_user(db, OUTSIDER, org_slug="other", role="owner", password=PASSWORD)
    await _send(
        db,
        org,
        event(
            id="deploy-checkout-1",
            source="//github.com/acme/checkout",
            service="checkout",
            subject="production",
            version="3.10.0",
            data={
                "description": "Deploy checkout <b>3.10.0</b>",
                "commit": "abc123",
                "note": "<script>alert(1)</script>",
            },
            time=_ago(5),
        ),
        event(
            id="deploy-cart-staging",
            source="//github.com/acme/cart",
            service="cart",
            subject="staging",
            version="1.2.0",
            time=_ago(10),
        ),
        event(
            id="incident-7",
            type="incident",
            source="pagerduty",
            service="checkout",
            subject="production",
            severity="MAJOR",
            version=None,
            data={"description": "Checkout errors spike"},
            time=_ago(20),
        ),
    )
    return org


async def _signed_in(new_browser: NewBrowser, email: str) -> httpx.AsyncClient:
    browser = new_browser()
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


def _ids(text: str) -> list[str]:
    """The producers' ids the page links to, in order."""
    return [unescape(m) for m in re.findall(r"/orgs/acme/events/([^?']+)\?", text)]


async def test_the_timeline_lists_the_organizations_events_newest_first(
    acme: Organization, new_browser: NewBrowser
) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    shown = await browser.get("/orgs/acme/timeline")
    assert shown.status_code == 200, shown.text
    assert _ids(shown.text) == ["deploy-checkout-1", "deploy-cart-staging", "incident-7"]
    assert "Deploy checkout &lt;b&gt;3.10.0&lt;/b&gt;" in shown.text
    assert "<script src=/console/timeline.js defer></script>" in shown.text
    assert "connect-src 'self'" in shown.headers["Content-Security-Policy"]
    assert "<a href=/orgs/acme/timeline>Timeline</a>" in shown.text
    # Each filter suggests the values the organization has.
    environments = re.search(r"<datalist id=known-environment>(.*?)</datalist>", shown.text)
    assert environments is not None
    assert re.findall(r"value='([^']*)'", environments.group(1)) == ["production", "staging"]


async def test_filters_keep_only_the_asked_type_and_environment(
    acme: Organization, new_browser: NewBrowser
) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    shown = await browser.get(
        "/orgs/acme/timeline", params={"type": "deployment", "environment": "production"}
    )
    assert _ids(shown.text) == ["deploy-checkout-1"]
    searched = await browser.get("/orgs/acme/timeline", params={"search": "spike"})
    assert _ids(searched.text) == ["incident-7"]
    severe = await browser.get("/orgs/acme/timeline", params={"severity": "major"})
    assert _ids(severe.text) == ["incident-7"]


async def test_an_empty_answer_names_the_closest_values(
    acme: Organization, new_browser: NewBrowser
) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    shown = await browser.get("/orgs/acme/timeline", params={"environment": "prod"})
    assert shown.status_code == 200
    assert _ids(shown.text) == []
    hint = re.search(r"<p class=notice role=status id=empty-hint>(.*?)</p>", shown.text)
    assert hint is not None
    assert "production" in unescape(hint.group(1))


async def test_a_bad_time_is_told_on_the_page_not_as_a_500(
    acme: Organization, new_browser: NewBrowser
) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    shown = await browser.get("/orgs/acme/timeline", params={"from": "last tuesdayish"})
    assert shown.status_code == 400
    assert "role=alert" in shown.text
    assert "last tuesdayish" in unescape(shown.text)


async def test_times_are_shown_in_the_asked_time_zone(
    acme: Organization, new_browser: NewBrowser
) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    paris = await browser.get("/orgs/acme/timeline", params={"tz": "Asia/Kolkata"})
    assert "+05:30" in paris.text
    assert "<option value='Asia/Kolkata' selected>" in paris.text
    utc = await browser.get("/orgs/acme/timeline")
    assert "+05:30" not in utc.text


async def test_older_pages_follow_the_cursor(
    acme: Organization, db: Database, new_browser: NewBrowser
) -> None:
    await _send(
        db, acme, *(event(id=f"bulk-{i}", version=f"0.0.{i}", time=_ago(30 + i)) for i in range(30))
    )
    browser = await _signed_in(new_browser, MEMBER)
    first = await browser.get("/orgs/acme/timeline")
    assert len(_ids(first.text)) == 25
    older = re.search(r"<a rel=next href='([^']+)'>Older</a>", first.text)
    assert older is not None
    second = await browser.get(unescape(older.group(1)))
    assert len(_ids(second.text)) == 8
    assert not set(_ids(first.text)) & set(_ids(second.text))
    assert "rel=next" not in second.text


async def test_the_rows_feed_gives_new_events_as_the_page_draws_them(
    acme: Organization, db: Database, new_browser: NewBrowser
) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    await _send(db, acme, event(id="fresh-one", service="search", version="9.0.0", time=_ago(1)))
    rows = await browser.get("/orgs/acme/timeline/rows", params={"type": "deployment"})
    assert rows.status_code == 200
    html = [row["html"] for row in rows.json()["rows"]]
    assert "fresh-one" in html[0]
    assert all("incident" not in h for h in html)


async def test_the_event_page_shows_all_of_the_event_with_its_data_escaped(
    acme: Organization, new_browser: NewBrowser
) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    shown = await browser.get(
        "/orgs/acme/events/deploy-checkout-1", params={"source": "//github.com/acme/checkout"}
    )
    assert shown.status_code == 200, shown.text
    assert "<h1>deployment of checkout 3.10.0</h1>" in shown.text
    assert "&quot;commit&quot;: &quot;abc123&quot;" in shown.text
    assert "<script>alert" not in shown.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
    # No metric was sent: each standard metric says why it cannot be compared.
    assert "Metrics of checkout" in shown.text
    assert "not enough data" in shown.text
    assert "Changes near it in the graph" in shown.text


async def test_an_unknown_event_is_a_404_page(acme: Organization, new_browser: NewBrowser) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    shown = await browser.get("/orgs/acme/events/no-such-event")
    assert shown.status_code == 404
    assert "No event with the id" in unescape(shown.text)


async def test_someone_outside_the_organization_sees_neither_page(
    acme: Organization, new_browser: NewBrowser
) -> None:
    outsider = await _signed_in(new_browser, OUTSIDER)
    for path in (
        "/orgs/acme/timeline",
        "/orgs/acme/timeline/rows",
        "/orgs/acme/events/deploy-checkout-1",
    ):
        refused = await outsider.get(path)
        assert refused.status_code == 404, path
        assert "deploy-checkout-1" not in refused.text
    # Their own organization's timeline does not show acme's events.
    own = await outsider.get("/orgs/other/timeline")
    assert own.status_code == 200
    assert _ids(own.text) == []
    assert "deploy-checkout-1" not in own.text
    anonymous = await new_browser().get("/orgs/acme/timeline")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login?next=")


async def test_an_id_two_producers_used_asks_which_source(
    acme: Organization, db: Database, new_browser: NewBrowser
) -> None:
    await _send(db, acme, event(id="deploy-checkout-1", source="//gitlab.com/acme/checkout"))
    browser = await _signed_in(new_browser, MEMBER)
    asked = await browser.get("/orgs/acme/events/deploy-checkout-1")
    assert asked.status_code == 400
    assert "//gitlab.com/acme/checkout" in asked.text
    assert "//github.com/acme/checkout" in asked.text
    chosen = await browser.get(
        "/orgs/acme/events/deploy-checkout-1", params={"source": "//gitlab.com/acme/checkout"}
    )
    assert chosen.status_code == 200
    assert "//gitlab.com/acme/checkout" in chosen.text


async def test_only_a_page_that_ends_now_follows_new_events(
    acme: Organization, new_browser: NewBrowser
) -> None:
    browser = await _signed_in(new_browser, MEMBER)
    now = await browser.get("/orgs/acme/timeline", params={"type": "deployment"})
    assert "data-feed='/orgs/acme/timeline/rows?type=deployment'" in now.text
    past = await browser.get("/orgs/acme/timeline", params={"from": "-2d", "to": "-1d"})
    assert "data-feed=''" in past.text
