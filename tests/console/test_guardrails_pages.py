"""The Guardrails console page, driven as a browser drives it (forms with their CSRF token):
an owner adds and removes a freeze and a policy; a member reads them and is refused the
forms; a deployment during the freeze carries a badge on the timeline and its page."""

from __future__ import annotations

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import event, make_key, make_org
from tests.forms import parse, sign_in
from trailmap.accounts import add_user, get_org
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"


async def _browser(
    db: Database, new_browser: NewBrowser, email: str, role: str
) -> httpx.AsyncClient:
    await add_user(db, email, org_slug="acme", role=role, password=PASSWORD)
    browser = new_browser()
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


async def _post(browser: httpx.AsyncClient, action: str, **values: str) -> httpx.Response:
    listing = await browser.get("/orgs/acme/guardrails")
    assert listing.status_code == 200, listing.text
    form = parse(listing.text).form(action)
    return await browser.post(action, data=form.data(**values))


async def test_an_owner_adds_a_weekly_freeze_and_a_policy_and_removes_them(
    db: Database, new_browser: NewBrowser
) -> None:
    await make_org(db, slug="acme")
    owner = await _browser(db, new_browser, "ada@acme.example", "owner")
    home = await owner.get("/orgs/acme")
    assert "/orgs/acme/guardrails" in parse(home.text).hrefs()
    made = await _post(
        owner,
        "/orgs/acme/guardrails/freezes",
        freeze_name="Weekend",
        reason="Nobody on call",
        freeze_environments="production",
        days="fri",
        from_time="16:00",
        to_time="08:00",
        end_day="mon",
        freeze_timezone="Europe/Paris",
    )
    assert made.status_code == 303, made.text
    made = await _post(
        owner,
        "/orgs/acme/guardrails/policies",
        kind="cooldown",
        policy_name="Half an hour apart",
        setting_minutes="30",
    )
    assert made.status_code == 303, made.text
    shown = await owner.get("/orgs/acme/guardrails")
    assert "every fri 16:00 to mon 08:00 (Europe/Paris)" in shown.text
    assert "Nobody on call" in shown.text
    assert "minutes=30" in shown.text
    deletes = [f.action for f in parse(shown.text).forms if f.action.endswith("/delete")]
    assert len(deletes) == 2
    for action in deletes:
        gone = await _post(owner, action)
        assert gone.status_code == 303, gone.text
    emptied = await owner.get("/orgs/acme/guardrails")
    assert "No freeze windows." in emptied.text
    assert "No deployment policies." in emptied.text


async def test_a_bad_freeze_is_shown_back_with_its_problem(
    db: Database, new_browser: NewBrowser
) -> None:
    await make_org(db, slug="acme")
    owner = await _browser(db, new_browser, "ada@acme.example", "owner")
    refused = await _post(
        owner,
        "/orgs/acme/guardrails/freezes",
        freeze_name="Holidays",
        start="2026-12-24T00:00:00Z",
        end="2026-12-20T00:00:00Z",
    )
    assert refused.status_code == 400
    assert "end must be after start" in refused.text
    assert "Holidays" in refused.text


async def test_a_member_reads_the_guardrails_and_may_not_change_them(
    db: Database, new_browser: NewBrowser
) -> None:
    await make_org(db, slug="acme")
    member = await _browser(db, new_browser, "bob@acme.example", "member")
    shown = await member.get("/orgs/acme/guardrails")
    assert shown.status_code == 200
    assert not parse(shown.text).has_form("/orgs/acme/guardrails/freezes")
    # A form forged with the member's own CSRF token is refused all the same.
    token = parse(shown.text).csrf
    refused = await member.post(
        "/orgs/acme/guardrails/freezes",
        data={"csrf": token, "freeze_name": "x", "start": "2026-12-20T00:00:00Z",
              "end": "2026-12-21T00:00:00Z"},
    )  # fmt: skip
    assert refused.status_code == 403
    without_csrf = await member.post("/orgs/acme/guardrails/freezes", data={"freeze_name": "x"})
    assert without_csrf.status_code in (400, 403)


async def test_a_deployment_during_a_freeze_has_a_badge_on_the_timeline_and_its_page(
    db: Database, new_browser: NewBrowser
) -> None:
    org = await make_org(db, slug="acme")
    owner = await _browser(db, new_browser, "ada@acme.example", "owner")
    made = await _post(
        owner,
        "/orgs/acme/guardrails/freezes",
        freeze_name="Year end",
        reason="Holiday traffic",
        start="2026-11-20T00:00:00Z",
        end="2027-01-04T00:00:00Z",
    )
    assert made.status_code == 303, made.text
    key = await make_key(db, await get_org(db, org.slug))
    sent = await owner.post(
        "/api/v1/events",
        json=event(id="frozen", time="2026-12-01T10:00:00Z"),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert sent.status_code == 201, sent.text
    timeline = await owner.get("/orgs/acme/timeline", params={"from": "2026-11-30"})
    assert "1 guardrail violation" in timeline.text
    assert "Holiday traffic" in timeline.text
    shown = await owner.get("/orgs/acme/events/frozen")
    assert "Guardrail violations" in shown.text
    assert "Year end" in shown.text
