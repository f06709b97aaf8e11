"""The Integrations pages, driven as a browser drives them: an owner adds a GitHub integration,
sees its URL and secret once, a signed delivery arrives and is listed; members are refused."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import make_org
from tests.forms import parse, sign_in
from tests.integrations.support import SECRET_KEY, fixture_bytes, github_headers
from trailmap.accounts import add_user
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
_SECRET = re.compile(r"<pre id=secret>([A-Za-z0-9_-]{43})</pre>")
_URL = re.compile(
    r"<code id=webhook-url>(http://testserver/api/v1/integrations/[0-9a-f-]{36}/webhook)</code>"
)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        public_url="http://testserver",
        secret_key=SECRET_KEY,
    )


async def _browser(
    db: Database, new_browser: NewBrowser, email: str, role: str
) -> httpx.AsyncClient:
    await add_user(db, email, org_slug="acme", role=role, password=PASSWORD)
    browser = new_browser()
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


@pytest.fixture
async def owner(db: Database, new_browser: NewBrowser) -> httpx.AsyncClient:
    await make_org(db, slug="acme")
    return await _browser(db, new_browser, "ada@acme.example", "owner")


async def _add(owner: httpx.AsyncClient, **values: str) -> httpx.Response:
    listing = await owner.get("/orgs/acme/integrations")
    assert listing.status_code == 200, listing.text
    form = parse(listing.text).form("/orgs/acme/integrations")
    return await owner.post("/orgs/acme/integrations", data=form.data(**values))


async def test_an_owner_adds_an_integration_sees_its_secret_once_and_its_deliveries(
    owner: httpx.AsyncClient,
) -> None:
    home = await owner.get("/orgs/acme")
    assert "/orgs/acme/integrations" in parse(home.text).hrefs()
    made = await _add(
        owner, kind="github", name="acme-github", services="Codertocat/Hello-World=hello"
    )
    assert made.status_code == 303, made.text
    shown = await owner.get(made.headers["location"])
    secret = _SECRET.search(shown.text)
    url = _URL.search(shown.text)
    assert secret is not None, shown.text
    assert url is not None
    assert "application/json" in shown.text
    again = await owner.get(made.headers["location"])
    assert secret.group(1) not in again.text  # shown once
    body = fixture_bytes("github-webhooks", "ping.json")
    delivered = await owner.post(
        url.group(1), content=body, headers=github_headers(body, secret.group(1), "ping", "p-9")
    )
    assert delivered.status_code == 200, delivered.text
    listed = await owner.get(made.headers["location"])
    assert "<tr data-delivery=p-9>" in listed.text
    assert "ignored" in listed.text
    assert "ping: GitHub checked that the webhook works" in listed.text
    overview = await owner.get("/orgs/acme/integrations")
    assert "acme-github" in overview.text


async def test_rotation_shows_a_new_secret_and_deletion_asks_first(
    owner: httpx.AsyncClient,
) -> None:
    made = await _add(owner, kind="gitlab", name="lab")
    page_path = made.headers["location"]
    first = _SECRET.search((await owner.get(page_path)).text)
    assert first is not None
    opened = parse((await owner.get(page_path)).text)
    rotated = await owner.post(
        f"{page_path}/rotate", data=opened.form(f"{page_path}/rotate").data()
    )
    assert rotated.status_code == 303
    shown = await owner.get(rotated.headers["location"])
    second = _SECRET.search(shown.text)
    assert second is not None
    assert second.group(1) != first.group(1)
    assert "accepted too until" not in shown.text  # the new secret's page shows only it
    confirm = await owner.get(f"{page_path}/delete")
    form = parse(confirm.text).form(f"{page_path}/delete")
    gone = await owner.post(f"{page_path}/delete", data=form.data(confirm="yes"))
    assert gone.status_code == 303
    assert (await owner.get(page_path)).status_code == 404


async def test_bad_input_is_shown_on_the_form_and_a_form_without_its_token_is_refused(
    owner: httpx.AsyncClient,
) -> None:
    bad = await _add(owner, kind="github", name="x", services="not a mapping")
    assert bad.status_code == 400
    assert "owner/name=service" in bad.text
    assert "aria-invalid=true" in bad.text
    forged = await owner.post(
        "/orgs/acme/integrations", data={"kind": "github", "name": "forged", "csrf": "nope"}
    )
    assert forged.status_code == 403
    assert "forged" not in (await owner.get("/orgs/acme/integrations")).text


async def test_members_are_refused_as_they_are_from_the_settings(
    owner: httpx.AsyncClient, db: Database, new_browser: NewBrowser
) -> None:
    made = await _add(owner, kind="github", name="acme-github")
    member = await _browser(db, new_browser, "bob@acme.example", "member")
    for path in ("/orgs/acme/integrations", made.headers["location"]):
        got = await member.get(path)
        assert got.status_code == 403
        assert "Only owners and admins" in got.text
    listing = parse((await member.get("/orgs/acme/timeline")).text)
    assert "/orgs/acme/integrations" not in listing.hrefs()
