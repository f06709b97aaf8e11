"""The team in a real browser (Debian's Chromium, driven by Playwright, on a real `trailmap
serve`): an owner invites someone, who accepts, lands in the organization and signs in again
with the password they chose; a member finds no way to the Settings page, which an owner
sees with a bar per quota. Each page passes axe-core; screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests import databases
from tests.chromium import launched_chromium
from tests.console.a11y import assert_accessible, screenshots
from tests.console.test_console_browser import _run, _sign_in
from tests.server import running_server
from trailmap.accounts import create_org
from trailmap.accounts.users import add_user
from trailmap.storage import Database

OWNER = "ada@acme.example"
MEMBER = "bob@acme.example"
NEWCOMER = "carol@acme.example"
PASSWORD = "a long enough password"
CAROLS = "carol's own passphrase"


def _seed(database_url: str) -> None:
    async def seed() -> None:
        db = Database(database_url)
        try:
            # Acme for the invitation, Beta (on the starter plan) for the settings: each test
            # sees only what it did.
            await create_org(db, "acme", name="Acme Corporation")
            await create_org(db, "beta", name="Beta Labs", plan="starter")
            for slug in ("acme", "beta"):
                await add_user(db, OWNER, org_slug=slug, role="owner", password=PASSWORD)
                await add_user(db, MEMBER, org_slug=slug, role="member", password=PASSWORD)
        finally:
            db.close()

    _run(seed)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("team-browser")
    url = databases.copy_sqlite(sqlite_template, directory / "trailmap.db")
    _seed(url)
    with running_server(url, log_path=directory / "server.log") as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def new_context(browser: Browser, base_url: str) -> Iterator[Callable[[], BrowserContext]]:
    opened: list[BrowserContext] = []

    def new() -> BrowserContext:
        ctx = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
        opened.append(ctx)
        return ctx

    yield new
    for ctx in opened:
        ctx.close()


def _sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login**")


def test_an_invited_person_accepts_lands_in_the_organization_and_signs_in_again(
    new_context: Callable[[], BrowserContext],
) -> None:
    owner = new_context().new_page()
    _sign_in(owner, OWNER, then="/orgs/acme/members")
    owner.get_by_label("E-mail").fill(NEWCOMER)
    owner.get_by_label("Role", exact=True).select_option("member")
    owner.get_by_role("button", name="Invite").click()
    expect(owner.get_by_role("heading", name="Invitation created")).to_be_visible()
    link = owner.locator("#link").inner_text().strip()
    assert "/invite/" in link
    screenshots(owner, "team-invitation-created")

    carol = new_context().new_page()
    carol.goto(link)
    expect(carol.get_by_text("Join Acme Corporation as member")).to_be_visible()
    assert_accessible(carol)
    carol.get_by_label("Password (at least 10 characters)").fill(CAROLS)
    carol.get_by_label("The same again").fill(CAROLS)
    carol.get_by_role("button", name="Create account and join").click()
    # Carol is a member of one organization: she is taken to its Home.
    carol.wait_for_url("**/orgs/acme")
    expect(carol.get_by_role("heading", level=1)).to_contain_text("Acme Corporation")

    # The link worked once: opened again, it is refused.
    again = new_context().new_page()
    refused = again.goto(link)
    assert refused is not None
    assert refused.status == 404
    expect(again.get_by_text("used, revoked, or has expired")).to_be_visible()

    _sign_out(carol)
    carol.goto("/login?next=/console")
    carol.get_by_label("E-mail").fill(NEWCOMER)
    carol.get_by_label("Password").fill(CAROLS)
    carol.get_by_role("button", name="Sign in").click()
    carol.wait_for_url("**/orgs/acme")

    # The owner sees Carol among the members, as a member who has signed in.
    owner.goto("/orgs/acme/members")
    row = owner.get_by_role("row").filter(has_text=NEWCOMER)
    expect(row).to_contain_text("member")
    expect(row).to_contain_text("active")
    expect(row).not_to_contain_text("never")
    screenshots(owner, "team-members")


def test_a_member_finds_no_way_to_the_settings_an_owner_sees_with_a_bar_per_quota(
    new_context: Callable[[], BrowserContext],
) -> None:
    bob = new_context().new_page()
    _sign_in(bob, MEMBER, then="/orgs/beta/members")
    nav = bob.get_by_role("navigation")
    expect(nav.get_by_role("link", name="Members")).to_be_visible()
    expect(nav.get_by_role("link", name="Settings")).to_have_count(0)
    expect(nav.get_by_role("link", name="Audit log")).to_have_count(0)
    refused = bob.goto("/orgs/beta/settings")
    assert refused is not None
    assert refused.status == 403
    expect(
        bob.get_by_text("Only owners and admins change the organization's settings.")
    ).to_be_visible()
    expect(bob.locator("meter")).to_have_count(0)
    assert_accessible(bob)

    owner = new_context().new_page()
    _sign_in(owner, OWNER, then="/orgs/beta")
    owner.get_by_role("navigation").get_by_role("link", name="Settings").click()
    owner.wait_for_url("**/orgs/beta/settings")
    expect(owner.get_by_text("Plan: starter")).to_be_visible()
    # Each quota of the starter plan has its labelled bar; two members of ten.
    members = owner.get_by_role("meter", name="Members")
    expect(members).to_have_attribute("value", "2")
    expect(members).to_have_attribute("max", "10")
    expect(owner.get_by_role("meter")).to_have_count(8)
    screenshots(owner, "settings")
