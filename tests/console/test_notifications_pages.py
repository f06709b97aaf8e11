"""The Notifications page, driven as a browser drives it: an owner adds a channel (its secret
never shown back) and a rule, a stored event is delivered, a failed delivery shows its last
error and is retried; members are refused, and a form without its CSRF token changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import event, make_key, make_org
from tests.forms import parse, sign_in
from tests.notifications.receivers import HttpReceiver
from tests.notifications.support import LOOPBACK, SECRET_KEY, make_sender
from trailmap.accounts import add_user
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
_PAGE = "/orgs/acme/notifications"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        notification_poll_seconds=0,
        outbound_allowed_networks=LOOPBACK,
        public_url="http://testserver",
        secret_key=SECRET_KEY,
    )


@pytest.fixture
def slack() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver("slack").start()
    try:
        yield receiver
    finally:
        receiver.stop()


async def _browser(
    db: Database, new_browser: NewBrowser, email: str, role: str
) -> httpx.AsyncClient:
    await add_user(db, email, org_slug="acme", role=role, password=PASSWORD)
    browser = new_browser()
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


async def test_an_owner_sets_up_a_channel_and_rule_sees_deliveries_and_retries_a_failed_one(
    db: Database, new_browser: NewBrowser, slack: HttpReceiver
) -> None:
    org = await make_org(db, slug="acme")
    owner = await _browser(db, new_browser, "ada@acme.example", "owner")
    home = await owner.get("/orgs/acme")
    assert _PAGE in parse(home.text).hrefs()

    listing = parse((await owner.get(_PAGE)).text)
    made = await owner.post(
        f"{_PAGE}/channels",
        data=listing.form(f"{_PAGE}/channels").data(kind="slack", name="ops-slack", url=slack.url),
    )
    assert made.status_code == 303, made.text
    shown = await owner.get(_PAGE)
    assert "ops-slack" in shown.text
    assert slack.url not in shown.text  # the URL holds Slack's token: never shown back
    form = parse(shown.text).form(f"{_PAGE}/rules")
    channel_field = next(k for k in form.inputs if k.startswith("channel_"))
    rule = await owner.post(
        f"{_PAGE}/rules",
        data=form.data(
            name="production deploys",
            on_event="on",
            environments="production",
            **{channel_field: "on"},
        ),
    )
    assert rule.status_code == 303, rule.text

    slack.fail_next = 2
    key = await make_key(db, org)
    stored = await new_browser().post(
        "/api/v1/events", json=event(), headers={"Authorization": f"Bearer {key}"}
    )
    assert stored.status_code == 201, stored.text
    sender = make_sender(db, max_attempts=1)
    await sender.send_due()
    page = await owner.get(_PAGE)
    assert "HTTP 503" in page.text
    retry_action = next(f.action for f in parse(page.text).forms if f.action.endswith("/retry"))
    retried = await owner.post(retry_action, data=parse(page.text).form(retry_action).data())
    assert retried.status_code == 303
    await sender.send_due()  # the receiver fails once more
    again = parse((await owner.get(_PAGE)).text)
    await owner.post(retry_action, data=again.form(retry_action).data())
    await sender.send_due()
    done = await owner.get(_PAGE)
    assert not parse(done.text).has_form(retry_action)
    assert len(slack.wait_for(1)) == 1

    test_action = next(f.action for f in parse(done.text).forms if f.action.endswith("/test"))
    tested = await owner.post(test_action, data=parse(done.text).form(test_action).data())
    assert "The test notification was taken" in tested.text


async def test_a_member_is_refused_and_a_form_without_its_csrf_token_changes_nothing(
    db: Database, new_browser: NewBrowser
) -> None:
    await make_org(db, slug="acme")
    member = await _browser(db, new_browser, "bob@acme.example", "member")
    assert (await member.get(_PAGE)).status_code == 403
    owner = await _browser(db, new_browser, "ada@acme.example", "owner")
    forged = await owner.post(
        f"{_PAGE}/channels", data={"kind": "slack", "name": "forged", "url": "http://10.0.0.1/"}
    )
    assert forged.status_code == 403
    assert "forged" not in (await owner.get(_PAGE)).text
