"""The team's lifecycle in the console, driven as browsers drive it: an owner invites, the
invited person joins and signs in, makes a key, is removed, and is locked out at once."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import make_org
from tests.forms import parse, sign_in
from trailmap.accounts import add_user
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
OWNER = "ada@acme.example"
MEMBER = "bob@acme.example"
NEWCOMER = "carol@acme.example"
_LINK = re.compile(r"http://testserver/invite/[A-Za-z0-9_-]{43}")
_TOKEN = re.compile(r"tmk_[0-9A-Za-z]{49}")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        public_url="http://testserver",
    )


async def _browser_of(new_browser: NewBrowser, email: str) -> httpx.AsyncClient:
    browser = new_browser()
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


@pytest.fixture
async def owner(db: Database, new_browser: NewBrowser) -> httpx.AsyncClient:
    await make_org(db, slug="acme")
    await add_user(db, OWNER, org_slug="acme", role="owner", password=PASSWORD)
    await add_user(db, MEMBER, org_slug="acme", role="member", password=PASSWORD)
    return await _browser_of(new_browser, OWNER)


async def _post(
    browser: httpx.AsyncClient, page_path: str, action: str, **values: str
) -> httpx.Response:
    opened = await browser.get(page_path)
    assert opened.status_code == 200, opened.text
    form = parse(opened.text).form(action)
    return await browser.post(action, data=form.data(**values))


async def test_invite_join_sign_in_remove_and_the_removed_person_is_locked_out(
    owner: httpx.AsyncClient, new_browser: NewBrowser
) -> None:
    invited = await _post(
        owner, "/orgs/acme/members", "/orgs/acme/invitations", email=NEWCOMER, role="member"
    )
    assert invited.status_code == 201, invited.text
    link = _LINK.search(invited.text)
    assert link is not None, invited.text

    # The newcomer opens the link in a browser of their own, chooses a password, and is in.
    carol = new_browser()
    opened = await carol.get(link.group(0))
    assert opened.status_code == 200
    path = link.group(0).removeprefix("http://testserver")
    form = parse(opened.text).form(path)
    joined = await carol.post(
        path, data=form.data(password="carols own password", confirm="carols own password")
    )
    assert joined.status_code == 303, joined.text
    home = await carol.get("/console")
    assert home.headers["Location"] == "/orgs/acme"  # her one organization's Home
    # The link worked once.
    assert (await new_browser().get(link.group(0))).status_code == 404

    made = await _post(
        carol, "/orgs/acme/keys", "/orgs/acme/keys", name="carol's laptop", scope="read-only"
    )
    assert made.status_code == 303, made.text  # post, redirect, get: the token's page
    shown = await carol.get(made.headers["Location"])
    token = _TOKEN.search(shown.text)
    assert token is not None
    auth = {"Authorization": f"Bearer {token.group(0)}"}
    assert (await carol.get("/api/v1/events", headers=auth)).status_code == 200

    members = await owner.get("/orgs/acme/members")
    assert NEWCOMER in members.text
    confirm = await owner.get("/orgs/acme/members/remove", params={"email": NEWCOMER})
    form = parse(confirm.text).form("/orgs/acme/members/remove")
    removed = await owner.post("/orgs/acme/members/remove", data=form.data(confirm="yes"))
    assert removed.status_code == 200, removed.text
    assert "carol&#x27;s laptop" in removed.text or "carol's laptop" in removed.text

    # Their session no longer opens the organization, and their key is refused.
    assert (await carol.get("/orgs/acme/keys")).status_code == 404
    assert (await carol.get("/api/v1/events", headers=auth)).status_code == 401
    log = await owner.get("/orgs/acme/audit")
    for action in ("member.invited", "member.joined", "key.created", "member.removed"):
        assert action in log.text


async def test_a_member_sees_the_members_but_cannot_invite_remove_or_open_the_audit_log(
    owner: httpx.AsyncClient, new_browser: NewBrowser
) -> None:
    bob = await _browser_of(new_browser, MEMBER)
    page = await bob.get("/orgs/acme/members")
    assert page.status_code == 200
    assert OWNER in page.text
    assert not parse(page.text).has_form("/orgs/acme/invitations")
    csrf = parse(page.text).csrf
    refused = await bob.post(
        "/orgs/acme/invitations", data={"csrf": csrf, "email": "x@acme.example"}
    )
    assert refused.status_code == 403
    refused = await bob.post(
        "/orgs/acme/members/remove", data={"csrf": csrf, "email": OWNER, "confirm": "yes"}
    )
    assert refused.status_code == 403
    assert (await bob.get("/orgs/acme/audit")).status_code == 403
    assert (await bob.get("/orgs/acme/settings")).status_code == 403


async def test_a_member_may_only_make_read_only_keys_until_the_owner_allows_more(
    owner: httpx.AsyncClient, new_browser: NewBrowser
) -> None:
    bob = await _browser_of(new_browser, MEMBER)
    page = parse((await bob.get("/orgs/acme/keys")).text)
    assert [o.value for o in page.form("/orgs/acme/keys").selects["scope"]] == ["read-only"]
    refused = await bob.post(
        "/orgs/acme/keys", data=page.form("/orgs/acme/keys").data(name="w", scope="read-write")
    )
    assert refused.status_code == 403

    allowed = await _post(
        owner, "/orgs/acme/settings", "/orgs/acme/settings", members_write_keys="yes"
    )
    assert allowed.status_code == 303
    page = parse((await bob.get("/orgs/acme/keys")).text)
    assert [o.value for o in page.form("/orgs/acme/keys").selects["scope"]] == [
        "read-only",
        "read-write",
    ]
    made = await bob.post(
        "/orgs/acme/keys", data=page.form("/orgs/acme/keys").data(name="w", scope="read-write")
    )
    assert made.status_code == 303
    assert made.headers["Location"] == "/orgs/acme/keys/created"


async def test_changing_the_password_in_the_console_signs_out_the_other_browsers(
    owner: httpx.AsyncClient, new_browser: NewBrowser
) -> None:
    elsewhere = await _browser_of(new_browser, OWNER)
    changed = await _post(
        owner,
        "/account",
        "/account/password",
        current=PASSWORD,
        password="a new owner password",
        confirm="a new owner password",
    )
    assert changed.status_code == 200
    assert "was changed" in changed.text
    assert (await owner.get("/orgs/acme")).status_code == 200
    assert (await elsewhere.get("/orgs/acme")).status_code == 303  # off to sign in
    assert (await sign_in(new_browser(), OWNER, "a new owner password")).status_code == 303
