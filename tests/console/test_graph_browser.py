"""The Graph and Service pages in a real browser: Debian's Chromium, driven by Playwright, on
a real `trailmap serve` of the demo organization, signed in as one of its members.

Screenshots at 1280 px and 375 px wide go to test-artifacts/console-graph/ for a person to
look at. Without Chromium these tests are skipped, or fail under CI=true.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route

from tests import databases
from tests.chromium import launched_chromium
from tests.console.a11y import assert_accessible
from tests.server import running_server
from trailmap.accounts import add_user
from trailmap.storage import Database

_ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console-graph"
EMAIL = "member@demo.example"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    """`trailmap demo` loaded into its own database, a member of demo added, and served."""
    directory = tmp_path_factory.mktemp("graph-browser")
    url = databases.copy_sqlite(sqlite_template, directory / "trailmap.db")
    loaded = subprocess.run(
        [sys.executable, "-m", "trailmap.cli.main", "--database", url, "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr

    async def member() -> None:
        db = Database(url)
        try:
            await add_user(db, EMAIL, org_slug="demo", role="member", password=PASSWORD)
        finally:
            db.close()

    # Playwright's sync API keeps an event loop running in this thread: add them from another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, member()).result()
    with running_server(url, log_path=directory / "server.log") as base:
        yield base


@pytest.fixture
def page(browser: Browser, demo: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=demo)
    errors: list[str] = []
    tab = context.new_page()
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))

    def elsewhere(route: Route) -> None:
        errors.append(f"fetched {route.request.url}")
        route.abort()

    # Nothing is fetched from elsewhere.
    tab.route(re.compile(r"^(?!" + re.escape(demo) + r"/).*"), elsewhere)
    tab.goto("/login?next=/orgs/demo/graph")
    tab.locator("#email").fill(EMAIL)
    tab.locator("#password").fill(PASSWORD)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url("**/orgs/demo/graph")
    try:
        yield tab
    finally:
        context.close()
    assert errors == []


def _shots(page: Page, name: str) -> None:
    _ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(_ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def _drawn(page: Page) -> set[str]:
    names = page.locator("svg.graph a.node").evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('data-name'))"
    )
    return set(names)


def test_the_graph_page_draws_the_demo_services_in_an_svg(page: Page) -> None:
    picture = page.locator("svg.graph")
    assert picture.is_visible()
    box = picture.bounding_box()
    assert box is not None
    assert box["width"] > 300
    assert {"api-gateway", "frontend", "checkout", "payments", "orders", "inventory"} <= _drawn(
        page
    )
    assert page.get_by_role("link", name="Graph").first.is_visible()
    _shots(page, "graph")


def test_focusing_on_checkout_at_depth_one_shows_its_neighbours_only(page: Page) -> None:
    page.get_by_label("Focus on").fill("checkout")
    page.get_by_label("Depth").select_option("1")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**node=checkout**")
    drawn = _drawn(page)
    assert {"checkout", "frontend", "payments", "orders", "inventory"} <= drawn
    assert "api-gateway" not in drawn
    assert "shipping" not in drawn
    assert page.get_by_role("heading", name=re.compile(r"^checkout: both ways, depth 1")).count()
    # Hovering an arrow: its SVG title is the native tooltip, with the edge's figures.
    # (checkout also starts after payments, as the demo's Compose file declares: that is a
    # second arrow, with no traffic.)
    edge = page.locator(
        "svg.graph g.edge", has=page.locator("title", has_text="checkout → payments (calls)")
    )
    edge.locator("path").last.hover(force=True)
    title = edge.locator("title").text_content() or ""
    assert re.search(r"checkout → payments \(calls\): [0-9.]+ calls/min", title), title
    _shots(page, "graph-checkout")
    # A node on the graph opens its Service page.
    page.locator("svg.graph a.node[data-name='payments']").click()
    page.wait_for_url("**/orgs/demo/services/payments**")
    assert page.get_by_role("heading", name="payments", exact=True).is_visible()


def test_the_service_page_of_checkout_shows_neighbours_and_charts(page: Page) -> None:
    page.goto("/orgs/demo/services/checkout")
    upstream = page.locator("section", has=page.get_by_role("heading", name=re.compile("Upstream")))
    downstream = page.locator(
        "section", has=page.get_by_role("heading", name=re.compile("Downstream"))
    )
    assert "frontend" in upstream.inner_text()
    below = downstream.inner_text()
    assert all(name in below for name in ("payments", "orders", "inventory"))
    charts = page.locator(".charts svg")
    assert charts.count() == 3
    assert charts.first.locator("polyline").count() == 1
    assert (charts.first.bounding_box() or {"width": 0})["width"] > 200
    changes = page.locator("section", has=page.get_by_role("heading", name="Recent changes"))
    assert "deployment" in changes.inner_text()
    _shots(page, "service-checkout")
    # At 375 px the page does not scroll sideways (the picture scrolls within its box).
    page.set_viewport_size({"width": 375, "height": 800})
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 375 + 1


def test_the_graph_changes_page_opens_from_the_graph_and_is_accessible(page: Page) -> None:
    page.get_by_role("link", name=re.compile("What changed in the graph")).click()
    page.wait_for_url("**/orgs/demo/graph/changes")
    assert page.get_by_role("heading", name="What changed in the graph").is_visible()
    assert page.get_by_role("heading", name="Declared and observed").is_visible()
    page.get_by_label("Changes since").fill("-7d")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**from=-7d**")
    assert_accessible(page)
    _shots(page, "graph-changes")
    # A service page, with its declared-and-observed section, is accessible too.
    page.goto("/orgs/demo/services/checkout")
    assert page.get_by_role("heading", name="Declared and observed").is_visible()
    assert_accessible(page)
