"""The Timeline and Event pages in a real browser: Debian's Chromium, driven by Playwright, on
a real `trailmap serve` of the demo organization, signed in as a member of it.

Screenshots at 1280 and 375 px go to test-artifacts/console-timeline/ for a person to look at.
Without Chromium these tests are skipped, or fail under CI=true (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from tests.chromium import launched_chromium
from tests.demo import serve_demo
from tests.factories import make_key, make_org
from trailmap.accounts import add_user, get_org
from trailmap.storage import Database

_PASSWORD = "correct horse battery"
_MEMBER = "ada@demo.example"
_OUTSIDER = "eve@other.example"
_SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console-timeline"
_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Demo:
    base: str
    write_key: str  # a READ_WRITE key of demo, to post events as CI would


@pytest.fixture(scope="module")
def browser(demo: Demo) -> Iterator[Browser]:
    # After the demo: Playwright's sync API keeps an event loop running, and loading the demo
    # calls asyncio.run.
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Demo]:
    """The demo loaded and served, with a member of it and a member of another organization."""
    directory = tmp_path_factory.mktemp("console-timeline")
    with serve_demo(directory, sqlite_template) as (base, _):
        url = f"sqlite:///{directory / 'trailmap.db'}"

        async def people() -> str:
            db = Database(url)
            try:
                await add_user(db, _MEMBER, org_slug="demo", role="member", password=_PASSWORD)
                await make_org(db, slug="other")
                await add_user(db, _OUTSIDER, org_slug="other", role="owner", password=_PASSWORD)
                return await make_key(db, await get_org(db, "demo"), scope="read-write")
            finally:
                db.close()

        yield Demo(base, asyncio.run(people()))


def _signed_in(browser: Browser, demo: Demo, email: str, width: int = 1280) -> Page:
    context = browser.new_context(viewport={"width": width, "height": 900}, timezone_id="UTC")
    page = context.new_page()
    page.set_default_timeout(_TIMEOUT_MS)
    page.goto(f"{demo.base}/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # The console, or straight the organization's Home for a member of one organization.
    page.wait_for_url(lambda url: url.startswith(demo.base) and "/login" not in url)
    return page


def _shot(page: Page, name: str) -> None:
    _SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(_SHOTS / name), full_page=True)


def _rows(page: Page) -> list[str]:
    return page.locator("#events > li").all_inner_texts()


def test_filtering_the_timeline_by_type_and_environment_shows_only_those(
    browser: Browser, demo: Demo
) -> None:
    page = _signed_in(browser, demo, _MEMBER)
    page.goto(f"{demo.base}/orgs/demo/keys")
    page.get_by_role("navigation").get_by_role("link", name="Timeline").click()
    expect(page.locator("h1")).to_have_text("Timeline · Demo (Acme Shop)")
    everything = _rows(page)
    assert everything
    # Unfiltered, the demo's timeline holds more than production deployments.
    assert any(not ("deployment" in row and "in production" in row) for row in everything)
    page.get_by_text("Filters and time zone").click()
    page.get_by_label("Type").fill("deployment")
    page.get_by_label("Environment").fill("production")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**type=deployment**")
    rows = _rows(page)
    assert rows
    assert all("deployment" in row and "in production" in row for row in rows)
    # One entry per change: checkout 3.10.0, reported by CI and seen in the traces, is listed
    # once, naming both sources.
    checkout = [row for row in rows if "checkout 3.10.0" in row]
    assert len(checkout) == 1
    assert "//github.com/acme/checkout and otel://checkout" in checkout[0]
    _shot(page, "timeline-1280.png")
    page.set_viewport_size({"width": 375, "height": 800})
    _shot(page, "timeline-375.png")
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 375
    page.context.close()


def test_searching_the_timeline_finds_the_words(browser: Browser, demo: Demo) -> None:
    page = _signed_in(browser, demo, _MEMBER)
    page.goto(f"{demo.base}/orgs/demo/timeline")
    page.get_by_label("Search").fill("checkout 3.10.0")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**search=**")
    rows = _rows(page)
    assert rows
    assert all("checkout" in row and "3.10.0" in row for row in rows)
    page.context.close()


def test_a_deployment_shows_its_metrics_chart_and_the_verdict(browser: Browser, demo: Demo) -> None:
    page = _signed_in(browser, demo, _MEMBER)
    page.goto(f"{demo.base}/orgs/demo/timeline?type=deployment&service=checkout")
    page.get_by_role("link", name="deployment of checkout 3.10.0").click()
    expect(page.locator("h1")).to_have_text("deployment of checkout 3.10.0")
    error_rate = page.locator("article.metric[data-metric=error_rate]")
    expect(error_rate.locator("svg")).to_be_visible()
    assert error_rate.locator("svg circle.before").count() > 5
    assert error_rate.locator("svg circle.after").count() > 5
    assert error_rate.locator("svg line.change").count() == 1
    expect(error_rate.locator(".verdict")).to_have_text("increased")
    expect(error_rate).to_contain_text("p-value")
    near = page.locator("section[aria-labelledby=near-h]")
    expect(near).to_contain_text("Changes near it in the graph")
    assert near.locator("li").count() > 0
    expect(near).to_contain_text("one hop")
    _shot(page, "event-1280.png")
    page.set_viewport_size({"width": 375, "height": 800})
    _shot(page, "event-375.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.context.close()


def test_an_event_posted_through_rest_appears_without_a_reload(
    browser: Browser, demo: Demo
) -> None:
    page = _signed_in(browser, demo, _MEMBER)
    page.goto(f"{demo.base}/orgs/demo/timeline")
    page.evaluate("window.notReloaded = true")
    posted = httpx.post(
        f"{demo.base}/api/v1/events",
        headers={"Authorization": f"Bearer {demo.write_key}"},
        json={
            "specversion": "1.0",
            "id": "browser-live-1",
            "type": "deployment",
            "source": "//github.com/acme/search",
            "time": datetime.now(UTC).isoformat(),
            "subject": "production",
            "service": "search",
            "version": "7.7.7",
        },
    )
    assert posted.status_code == 201, posted.text
    first = page.locator("#events > li").first
    expect(first).to_contain_text("search 7.7.7", timeout=20_000)
    assert page.evaluate("window.notReloaded") is True
    page.context.close()


def test_the_time_zone_starts_at_the_browsers(browser: Browser, demo: Demo) -> None:
    context = browser.new_context(timezone_id="Asia/Tokyo")
    page = context.new_page()
    page.goto(f"{demo.base}/login")
    page.get_by_label("E-mail").fill(_MEMBER)
    page.get_by_label("Password").fill(_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # The console, or straight the organization's Home for a member of one organization.
    page.wait_for_url(lambda url: url.startswith(demo.base) and "/login" not in url)
    page.goto(f"{demo.base}/orgs/demo/timeline")
    page.wait_for_url("**tz=Asia%2FTokyo**")
    expect(page.get_by_label("Time zone")).to_have_value("Asia/Tokyo")
    expect(page.locator("#events > li").first).to_contain_text("+09:00")
    context.close()


def test_someone_outside_the_demo_cannot_open_its_pages(browser: Browser, demo: Demo) -> None:
    page = _signed_in(browser, demo, _OUTSIDER)
    for path in ("/orgs/demo/timeline", "/orgs/demo/events/deploy-checkout-3.10.0"):
        response = page.goto(f"{demo.base}{path}")
        assert response is not None
        assert response.status == 404, path
        expect(page.locator("body")).not_to_contain_text("3.10.0")
    page.goto(f"{demo.base}/orgs/other/timeline")
    expect(page.locator("#events > li")).to_have_count(0)
    page.context.close()


def _serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is drawn."""
    results = Axe().run(page)
    assert results.response["testEngine"]["name"] == "axe-core"  # it ran, under the page's CSP
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes)"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


def test_neither_page_has_a_serious_accessibility_violation(browser: Browser, demo: Demo) -> None:
    page = _signed_in(browser, demo, _MEMBER)
    page.goto(f"{demo.base}/orgs/demo/timeline?type=deployment")
    assert _serious_violations(page) == []
    page.goto(f"{demo.base}/orgs/demo/events/deploy-checkout-3.10.0")
    expect(page.locator("article.metric svg").first).to_be_visible()
    assert _serious_violations(page) == []
    page.context.close()
