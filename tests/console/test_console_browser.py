"""The console in a real browser: Debian's Chromium, driven by Playwright, on a real
`trailmap serve`: the shared layout (a header, the `<main>` landmark, the organization
switcher), the key tables on a 375 px phone, a reload of "Key created", the revoke links'
names, the HTML 404 and the icon, the setup page's copy button and sign-in link, and an
axe-core check with no serious or critical violation on each page (tests/console/a11y.py).
Screenshots at 1280 px and 375 px go to test-artifacts/console/. Without Chromium these tests
are skipped, or fail under CI=true (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests import databases
from tests.chromium import launched_chromium
from tests.console.a11y import assert_accessible, screenshots
from tests.server import running_server
from trailmap.accounts import create_key, create_org, list_keys
from trailmap.accounts.setup import issue_setup_token
from trailmap.accounts.users import add_user
from trailmap.storage import Database

OWNER = "ada@acme.example"
MEMBER = "bob@acme.example"
PASSWORD = "a long enough password"
T = TypeVar("T")
_TOKEN = re.compile(r"tmk_[0-9A-Za-z]{49}")


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run domain code to completion from a test: in a thread of its own, as Playwright's
    sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


@dataclass(frozen=True)
class Served:
    base_url: str
    database_url: str


def _seed(database_url: str) -> None:
    """Acme (Ada owns it, Bob is a member) with keys of long names; Beta, where Ada is a
    member too, for the organization switcher."""

    async def seed() -> None:
        db = Database(database_url)
        try:
            await create_org(db, "acme", name="Acme Corporation")
            await create_org(db, "beta", name="Beta Labs")
            owner = await add_user(db, OWNER, org_slug="acme", role="owner", password=PASSWORD)
            await add_user(db, OWNER, org_slug="beta", role="member", password=PASSWORD)
            await add_user(db, MEMBER, org_slug="acme", role="member", password=PASSWORD)
            for name in ("deploy pipeline for the checkout service", "ada laptop"):
                await create_key(
                    db,
                    "acme",
                    name=name,
                    scope="READ_WRITE",
                    created_by=OWNER,
                    user_id=owner.id,
                )
        finally:
            db.close()

    _run(seed)


def _key_count(database_url: str, slug: str = "acme") -> int:
    async def count() -> int:
        db = Database(database_url)
        try:
            return len(await list_keys(db, slug))
        finally:
            db.close()

    return _run(count)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Served]:
    # The layout is the same on any database: SQLite alone (the HTTP tests run on both).
    directory = tmp_path_factory.mktemp("console-browser")
    url = databases.copy_sqlite(sqlite_template, directory / "trailmap.db")
    _seed(url)
    with running_server(url, log_path=directory / "server.log") as base_url:
        yield Served(base_url, url)


@pytest.fixture
def context(browser: Browser, served: Served) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=served.base_url, viewport={"width": 1280, "height": 900})
    try:
        yield ctx
    finally:
        ctx.close()


def _sign_in(page: Page, email: str = OWNER, then: str = "/console") -> None:
    page.goto(f"/login?next={then}")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{then}")


def _fits(page: Page, width: int) -> bool:
    return bool(page.evaluate(f"document.documentElement.scrollWidth <= {width}"))


# -- sign-in and the layout ------------------------------------------------------------------


def test_the_sign_in_page_has_a_main_landmark_and_no_serious_accessibility_violation(
    context: BrowserContext,
) -> None:
    page = context.new_page()
    page.goto("/login")
    expect(page.get_by_role("main")).to_contain_text("Sign in to Trailmap")
    screenshots(page, "sign-in")
    page.get_by_label("E-mail").fill(OWNER)
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in").click()
    # The refusal is tied to the fields it is about.
    email = page.get_by_label("E-mail")
    expect(email).to_have_attribute("aria-invalid", "true")
    described = email.get_attribute("aria-describedby")
    assert described
    expect(page.locator(f"#{described}")).to_have_attribute("role", "alert")
    assert_accessible(page)


def test_the_keys_page_fits_a_375_px_screen_with_status_and_revoke_in_view(
    context: BrowserContext,
) -> None:
    page = context.new_page()
    _sign_in(page, then="/orgs/acme/keys")
    expect(page.get_by_role("banner").get_by_role("navigation")).to_be_visible()
    screenshots(page, "keys")
    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()
    assert _fits(page, 375), page.evaluate("document.documentElement.scrollWidth")
    rows = page.locator("tr[data-key-id]")
    assert rows.count() >= 2
    for index in range(rows.count()):
        row = rows.nth(index)
        for cell in (row.locator("td[data-label=Status]"), row.get_by_role("link")):
            cell.scroll_into_view_if_needed()
            box = cell.bounding_box()
            assert box is not None
            assert box["x"] >= 0, (index, box)
            assert box["x"] + box["width"] <= 375, (index, box)


def test_each_revoke_link_is_named_for_its_key(context: BrowserContext, served: Served) -> None:
    page = context.new_page()
    _sign_in(page, then="/orgs/acme/keys")
    links = page.get_by_role("link", name=re.compile(r"^Revoke"))
    count = links.count()
    assert count >= 2
    names = {(links.nth(i).text_content() or "").strip() for i in range(count)}
    assert len(names) == count, names  # the accessible names differ
    for key_name in ("deploy pipeline for the checkout service", "ada laptop"):
        named = page.get_by_role("link", name=re.compile(rf"^Revoke {re.escape(key_name)} \("))
        expect(named).to_have_count(1)
    # What the eye sees is still the one word: the key's name is visually hidden.
    hidden = links.first.locator(".sr").bounding_box()
    assert hidden is not None
    assert hidden["width"] <= 1
    assert hidden["height"] <= 1


# -- creating a key, and reloading -----------------------------------------------------------


def test_reloading_the_key_created_page_creates_no_second_key_nor_shows_the_token_again(
    context: BrowserContext, served: Served
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    _sign_in(page, then="/orgs/acme/keys")
    before = _key_count(served.database_url)
    page.get_by_label("Name").fill("reload me")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url("**/orgs/acme/keys/created")
    token = page.locator("#token").text_content() or ""
    assert _TOKEN.fullmatch(token), token
    assert token not in page.url
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == token
    screenshots(page, "key-created")
    assert _key_count(served.database_url) == before + 1

    response = page.reload()
    assert response is not None
    assert response.status == 200
    assert _key_count(served.database_url) == before + 1
    expect(page.get_by_role("main")).to_contain_text("shown once already")
    assert token not in page.content()
    assert _TOKEN.search(page.content()) is None


def test_a_key_form_mistake_is_tied_to_its_field(context: BrowserContext) -> None:
    page = context.new_page()
    _sign_in(page, then="/orgs/acme/keys")
    page.get_by_label("Name").fill("expiring")
    page.get_by_label("Expires after").fill("soon")
    page.get_by_role("button", name="Create key").click()
    expires = page.get_by_label("Expires after")
    expect(expires).to_have_attribute("aria-invalid", "true")
    expect(expires).to_have_attribute("aria-describedby", "expires-error")
    expect(page.locator("#expires-error")).not_to_be_empty()
    expect(page.get_by_label("Name")).not_to_have_attribute("aria-invalid", "true")
    assert_accessible(page)


# -- the organization switcher, the team pages -----------------------------------------------


def test_the_organization_switcher_moves_to_the_same_page_of_the_other_organization(
    context: BrowserContext,
) -> None:
    page = context.new_page()
    _sign_in(page, then="/orgs/acme/members")
    page.get_by_text("Organization: Acme Corporation").click()
    page.get_by_role("link", name="Beta Labs").click()
    page.wait_for_url("**/orgs/beta/members")
    expect(page.get_by_role("heading", level=1)).to_have_text("Members · Beta Labs")
    expect(page.get_by_text("Organization: Beta Labs")).to_be_visible()


@pytest.mark.parametrize("path", ["members", "audit", "settings", "service-accounts"])
def test_the_team_pages_have_no_serious_accessibility_violation(
    context: BrowserContext, path: str
) -> None:
    page = context.new_page()
    _sign_in(page, then=f"/orgs/acme/{path}")
    expect(page.get_by_role("main")).to_be_visible()
    screenshots(page, f"team-{path}")
    page.set_viewport_size({"width": 375, "height": 800})
    assert _fits(page, 375), page.evaluate("document.documentElement.scrollWidth")


def test_a_member_sees_the_members_page_accessibly(context: BrowserContext) -> None:
    page = context.new_page()
    _sign_in(page, MEMBER, then="/orgs/acme/members")
    screenshots(page, "team-members-as-member")


# -- what leads nowhere, and the icon --------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/nothing-here", "/orgs/acme/nothing-here", "/nope"])
def test_an_unknown_console_address_gets_an_html_404_page(
    context: BrowserContext, path: str
) -> None:
    page = context.new_page()
    response = page.goto(path)
    assert response is not None
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("main")).to_contain_text("Page not found")
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    assert_accessible(page)
    if path == "/console/nothing-here":
        screenshots(page, "not-found")


def test_the_api_keeps_its_json_404_even_for_a_browser(context: BrowserContext) -> None:
    page = context.new_page()
    response = page.goto("/api/v1/nothing-here")
    assert response is not None
    assert response.status == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == "NOT_FOUND"


def test_the_server_serves_its_icon(context: BrowserContext) -> None:
    page = context.new_page()
    for path in ("/favicon.ico", "/favicon.svg"):
        response = page.request.get(path)
        assert response.status == 200, path
        assert response.headers["content-type"] == "image/svg+xml"
        assert response.body().startswith(b"<svg")
    page.goto("/login")
    assert page.locator("link[rel=icon]").get_attribute("href") == "/favicon.svg"


# -- the setup page --------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path, sqlite_template: Path) -> Iterator[Served]:
    """A server with nobody in it yet: the setup page is open."""
    url = databases.copy_sqlite(sqlite_template, tmp_path / "trailmap.db")
    with running_server(url, log_path=tmp_path / "server.log") as base_url:
        yield Served(base_url, url)


def _setup_link(database_url: str) -> str:
    async def issue() -> str | None:
        db = Database(database_url)
        try:
            return await issue_setup_token(db)
        finally:
            db.close()

    token = _run(issue)
    assert token is not None
    return f"/setup?token={token}"


def test_the_setup_page_ties_errors_to_fields_then_offers_a_copy_button_and_sign_in(
    browser: Browser, fresh: Served
) -> None:
    context = browser.new_context(base_url=fresh.base_url)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        page.goto(_setup_link(fresh.database_url))
        screenshots(page, "setup")
        page.get_by_label("Organization (short name").fill("Not A Slug!")
        page.get_by_label("Organization display name").fill("Acme")
        page.get_by_label("Your e-mail").fill(OWNER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create").click()
        organization = page.get_by_label("Organization (short name")
        expect(organization).to_have_attribute("aria-invalid", "true")
        expect(organization).to_have_attribute("aria-describedby", "organization-error")
        expect(page.locator("#organization-error")).to_contain_text("lower-case")
        assert_accessible(page)

        organization.fill("acme")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Trailmap is ready")
        token = page.locator("#token").text_content() or ""
        assert _TOKEN.fullmatch(token), token
        page.get_by_role("button", name="Copy the key").click()
        assert page.evaluate("navigator.clipboard.readText()") == token
        page.get_by_role("button", name="Copy the command").click()
        command = page.evaluate("navigator.clipboard.readText()")
        assert command.startswith(f"curl -X POST {fresh.base_url}/api/v1/events")
        assert token in command
        screenshots(page, "setup-done")
        page.get_by_role("link", name="sign in").first.click()
        page.wait_for_url("**/login")
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Trailmap")
    finally:
        context.close()


def test_the_organizations_and_account_pages_are_accessible_and_tie_errors_to_fields(
    context: BrowserContext,
) -> None:
    page = context.new_page()
    _sign_in(page)
    expect(page.get_by_role("main")).to_contain_text("Acme Corporation")
    screenshots(page, "organizations")
    page.goto("/account")
    page.get_by_label("Current password").fill("not my password at all")
    page.get_by_label("Password (at least 10 characters)").fill("another long password")
    page.get_by_label("The same again").fill("a different long password")
    page.get_by_role("button", name="Change password").click()
    confirm = page.get_by_label("The same again")
    expect(confirm).to_have_attribute("aria-invalid", "true")
    expect(confirm).to_have_attribute("aria-describedby", "form-error")
    expect(page.locator("#form-error")).to_contain_text("differ")
    expect(page.get_by_label("Current password")).not_to_have_attribute("aria-invalid", "true")
    screenshots(page, "account-error")
