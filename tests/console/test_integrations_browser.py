"""Integrations in a real browser (Debian's Chromium, driven by Playwright, on a real `trailmap
serve`): an owner adds a GitHub integration from the navigation, copies its URL and secret
from the page, a delivery signed with them arrives and shows in the page's deliveries. Each
page passes axe-core; screenshots go to test-artifacts/console/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests import databases
from tests.chromium import launched_chromium
from tests.console.a11y import assert_accessible, screenshots
from tests.console.test_console_browser import _run
from tests.integrations.support import SECRET_KEY, fixture_bytes, github_headers
from tests.server import running_server
from trailmap.accounts import create_org
from trailmap.accounts.users import add_user
from trailmap.storage import Database

OWNER = "ada@acme.example"
PASSWORD = "a long enough password"


def _seed(database_url: str) -> None:
    async def seed() -> None:
        db = Database(database_url)
        try:
            await create_org(db, "acme", name="Acme Corporation")
            await add_user(db, OWNER, org_slug="acme", role="owner", password=PASSWORD)
        finally:
            db.close()

    _run(seed)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("integrations-browser")
    url = databases.copy_sqlite(sqlite_template, directory / "trailmap.db")
    _seed(url)
    env = {"TRAILMAP_SECRET_KEY": SECRET_KEY}
    with running_server(url, log_path=directory / "server.log", env=env) as served:
        yield served


@pytest.fixture(scope="module")
def browser(base_url: str) -> Iterator[Browser]:
    del base_url  # the server first: Playwright's loop must start after the seeding's
    with launched_chromium() as chromium:
        yield chromium


def _sign_in(page: Page, then: str) -> None:
    page.goto(f"/login?next={then}")
    page.get_by_label("E-mail").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{then}")


def test_an_owner_adds_a_github_integration_and_sees_a_signed_delivery_arrive(
    browser: Browser, base_url: str
) -> None:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        _sign_in(page, "/orgs/acme")
        page.get_by_role("navigation").get_by_role("link", name="Integrations").click()
        page.wait_for_url("**/orgs/acme/integrations")
        assert_accessible(page)
        page.get_by_label("Kind").select_option("github")
        page.get_by_label("Name", exact=True).fill("acme-github")
        page.get_by_label("Repositories and their services").fill("Codertocat/Hello-World=hello")
        page.get_by_role("button", name="Add integration").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("acme-github")
        secret = page.locator("#secret").inner_text().strip()
        url = page.locator("#webhook-url").inner_text().strip()
        assert url.startswith(base_url)
        screenshots(page, "integration-created")

        body = fixture_bytes("github-webhooks", "ping.json")
        answer = httpx.post(url, content=body, headers=github_headers(body, secret, "ping", "p1"))
        assert answer.status_code == 200, answer.text

        page.reload()
        expect(page.locator("#secret")).to_have_count(0)  # shown once
        row = page.get_by_role("row").filter(has_text="p1")
        expect(row).to_contain_text("ping")
        expect(row).to_contain_text("ignored")
        screenshots(page, "integration-deliveries")
    finally:
        context.close()
