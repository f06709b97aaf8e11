"""Home, Connect and Quick start in a real browser: Debian's Chromium, driven by Playwright, on
a real `trailmap serve` with the demo organization loaded and a fresh one beside it, signed in
as a member of both. The copy button really copies, the key button makes one key whatever the
reloads, an MCP call by the official client shows on Connect, and the quick start's waiting
line flips when an event arrives over REST. Screenshots at 1280 and 375 px are written to
test-artifacts/console-connect/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from playwright.sync_api import Browser, BrowserContext, Page

from tests.chromium import launched_chromium
from tests.demo import serve_demo
from tests.factories import event, make_key, make_org
from trailmap.accounts import add_user
from trailmap.storage import Database

_TIMEOUT_MS = 20_000
_PASSWORD = "correct horse battery"
_MEMBER = "bob@acme.example"
_SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console-connect"
_WIDTHS = (1280, 375)

T = TypeVar("T")


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """An async call run to its end on a thread of its own (Playwright's sync API holds an
    event loop on this one)."""

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


@dataclass(frozen=True)
class Site:
    base_url: str
    writer: str  # a READ_WRITE key of acme, to send events over REST
    quiet_writer: str  # of quiet, which only the quick start test sends to


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("console-connect")
    with serve_demo(directory, sqlite_template) as (base_url, _demo_key):
        url = f"sqlite:///{directory / 'trailmap.db'}"

        async def members() -> Site:
            db = Database(url)
            try:
                writers = []
                for slug in ("acme", "quiet"):
                    org = await make_org(db, slug=slug)
                    await add_user(db, _MEMBER, org_slug=slug, role="member", password=_PASSWORD)
                    writers.append(await make_key(db, org, scope="read-write"))
                await add_user(db, _MEMBER, org_slug="demo", role="member", password=_PASSWORD)
                return Site(base_url, *writers)
            finally:
                db.close()

        yield _run(members)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@dataclass
class Member:
    context: BrowserContext
    page: Page
    errors: list[str]  # console errors (a CSP refusal is one) and exceptions


@pytest.fixture
def member(browser: Browser, site: Site) -> Iterator[Member]:
    """A signed-in member of acme and demo, in a context that may read the clipboard; every
    request outside the server is refused."""
    context = browser.new_context(
        base_url=site.base_url, permissions=["clipboard-read", "clipboard-write"]
    )
    errors: list[str] = []
    try:
        page = context.new_page()
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(f"{site.base_url}/")
                else route.abort()
            ),
        )
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_default_timeout(_TIMEOUT_MS)
        page.goto("/login?next=/console")
        page.fill("#email", _MEMBER)
        page.fill("#password", _PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/console")
        yield Member(context, page, errors)
    finally:
        context.close()


def _screenshots(page: Page, name: str) -> None:
    """Pictures at each width, nothing wider than the screen, and no serious or critical
    accessibility violation (axe-core)."""
    found = Axe().run(page).response["violations"]
    serious = [f"{v['id']}: {v['help']}" for v in found if v["impact"] in ("serious", "critical")]
    assert serious == [], f"{name}: {serious}"
    _SHOTS.mkdir(parents=True, exist_ok=True)
    for width in _WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(_SHOTS / f"{name}-{width}.png"), full_page=True)
        # Nothing wider than the screen: a person at 375 px scrolls down, never sideways.
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} is {overflow} px too wide at {width} px"
    page.set_viewport_size({"width": 1280, "height": 900})


def _send_event(site: Site, *, key: str | None = None, **fields: object) -> None:
    sent = httpx.post(
        f"{site.base_url}/api/v1/events",
        json=event(**fields),
        headers={"Authorization": f"Bearer {key or site.writer}"},
        timeout=30,
    )
    assert sent.status_code in (200, 201, 202), sent.text


def test_the_console_lists_both_organizations_each_linking_to_its_home(member: Member) -> None:
    page = member.page
    assert page.get_by_role("link", name="acme", exact=True).get_attribute("href") == "/orgs/acme"
    page.get_by_role("link", name="Demo (Acme Shop)").click()
    page.wait_for_url("**/orgs/demo")
    assert page.locator("h1").inner_text() == "Demo (Acme Shop)"
    assert member.errors == []


def test_the_demo_s_home_shows_its_graph_and_changes_and_no_event_card(member: Member) -> None:
    page = member.page
    page.goto("/orgs/demo")
    counts = page.locator("#graph-counts").inner_text()
    services = int(page.locator("#graph-counts b").first.inner_text())
    assert services > 0, counts
    assert "edges; last seen in a trace" in counts
    assert page.locator("#latest-changes li").count() >= 1
    assert page.locator("#card-event").count() == 0
    _screenshots(page, "home-demo")
    assert member.errors == []


def test_a_new_organization_s_home_shows_both_cards_until_an_event_arrives(
    member: Member, site: Site
) -> None:
    page = member.page
    page.goto("/orgs/acme")
    assert page.get_by_role("heading", name="Connect your assistant").is_visible()
    assert page.get_by_role("heading", name="Send your first event").is_visible()
    _screenshots(page, "home-new")
    _send_event(site, source="//github.com/acme/home", version="v9.9.9")
    page.reload()
    assert page.get_by_role("heading", name="Send your first event").count() == 0
    assert "v9.9.9" in page.locator("#latest-changes").inner_text()
    assert member.errors == []


def test_connect_shows_the_url_with_the_server_s_port_and_copies_the_command(
    member: Member, site: Site
) -> None:
    page = member.page
    page.goto("/orgs/acme/connect")
    url = f"{site.base_url}/mcp"
    assert page.locator("#mcp-url").inner_text() == url
    copy = page.get_by_role("button", name="Copy the claude mcp add command", exact=True)
    copy.click()
    page.wait_for_function("b => b.textContent === 'Copied'", arg=copy.element_handle())
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"claude mcp add --transport http trailmap {url}"
    _screenshots(page, "connect")
    assert member.errors == []


def _key_rows(page: Page, name: str) -> int:
    page.goto("/orgs/acme/keys")
    return page.locator("tr[data-key-id]", has_text=name).count()


def _mcp_call(base_url: str, token: str) -> None:
    async def call() -> None:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        transport = streamable_http_client(f"{base_url}/mcp", http_client=http)
        async with http, Client(transport) as client:
            result = await client.call_tool("get_organization_context", {})
            assert not result.is_error, result.content

    _run(call)


def test_the_key_button_makes_one_read_only_key_and_its_mcp_call_shows(
    member: Member, site: Site
) -> None:
    page = member.page
    page.goto("/orgs/acme/connect")
    page.fill("#key-name", "browser assistant")
    page.get_by_role("button", name="Make a read-only key").click()
    page.wait_for_url("**/connect/key/*")
    made_at = page.url
    token = page.locator("#token").inner_text()
    assert token.startswith("tmk_")
    assert token in page.locator("#cmd-with-token").inner_text()
    _screenshots(page, "connect-key-made")
    page.reload()
    assert page.locator("#token").count() == 0
    assert "shown once" in page.locator("#token-gone").inner_text()
    assert _key_rows(page, "browser assistant") == 1
    row = page.locator("tr[data-key-id]", has_text="browser assistant")
    assert "READ_ONLY" in row.inner_text()

    key_id = made_at.rsplit("/", 1)[1]
    page.goto("/orgs/acme/connect")
    last_call = page.locator(f"#key-activity tr[data-key-id='{key_id}'] .last-call")
    assert last_call.inner_text() == "no MCP call yet"
    _mcp_call(site.base_url, token)
    page.reload()
    assert last_call.inner_text() == "connected just now"
    page.goto("/orgs/acme")
    assert page.get_by_role("heading", name="Connect your assistant").count() == 0
    assert member.errors == []


def test_quick_start_waits_for_the_first_event_and_says_when_it_is_received(
    member: Member, site: Site
) -> None:
    page = member.page
    page.goto("/orgs/quiet/quickstart")  # an organization no other test sends to
    waiting = page.locator("#first-event")
    assert waiting.inner_text() == "Waiting for your first event…"
    assert f'"{site.base_url}/api/v1/events"' in page.locator("#send-curl").inner_text()
    _screenshots(page, "quickstart")
    # The page's curl command, run as a person pastes it, with their key in the environment.
    curl = page.locator("#send-curl").inner_text()
    environment = {**os.environ, "TRAILMAP_API_KEY": site.quiet_writer}
    assert '"success":true' in _run_shell(curl, environment).replace(" ", "")
    page.wait_for_function(
        "() => document.getElementById('first-event').dataset.received === 'yes'"
    )
    received = waiting.inner_text()
    assert received.startswith("Received: deployment from //github.com/acme/checkout"), received
    # The CLI line and the CI step's script work as written too.
    _run_shell(page.locator("#send-cli").inner_text(), environment)
    step = page.locator("#send-ci").inner_text().split("run: |\n", 1)[1]
    ci = {**environment, "GITHUB_REPOSITORY": "acme/ci", "GITHUB_SHA": "0123abc"}
    assert '"success":true' in _run_shell(textwrap.dedent(step), ci).replace(" ", "")
    quick_status = page.request.get("/orgs/quiet/quickstart/status").json()
    assert quick_status["data"]["latest"]["source"] == "//github.com/acme/ci"
    assert member.errors == []


def _run_shell(script: str, environment: dict[str, str]) -> str:
    ran = subprocess.run(
        ["bash", "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, (script, ran.stdout, ran.stderr)
    return ran.stdout
