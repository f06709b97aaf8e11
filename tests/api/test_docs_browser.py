"""`/docs` in a real browser: Debian's Chromium, driven by Playwright, on a real `trailmap serve`.

Swagger UI renders the OpenAPI 3.1 document FastAPI writes (Swagger UI 4 said "Unable to render
this definition"), under the page's Content-Security-Policy, with every file from this server.
Without Chromium these tests are skipped, or fail under CI=true (.ci/run installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route

from tests import databases
from tests.chromium import launched_chromium
from tests.server import running_server

_RENDER_TIMEOUT_MS = 30_000
# What Swagger UI draws once it has read the document: operations, or why it could not.
_RENDERED = ".swagger-ui .opblock, .swagger-ui .version-pragma, .swagger-ui .errors-wrapper"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    # The page is the same on any database: SQLite alone.
    directory = tmp_path_factory.mktemp("docs-browser")
    url = databases.copy_sqlite(sqlite_template, directory / "trailmap.db")
    with running_server(url, log_path=directory / "server.log") as served:
        yield served


@dataclass
class Visit:
    """What a page asked for and complained about while it was open."""

    base_url: str
    requested: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # asked for elsewhere: aborted
    errors: list[str] = field(default_factory=list)  # console errors (CSP too) and exceptions

    def route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(f"{self.base_url}/"):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()

    def request(self, request: Request) -> None:
        self.requested.append(request.url)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def page_error(self, error: Exception) -> None:
        self.errors.append(f"exception: {error}")


@pytest.fixture
def docs(browser: Browser, base_url: str) -> Iterator[tuple[Page, Visit]]:
    """`/docs` opened in a fresh context, every request outside the server refused."""
    context = browser.new_context()
    visit = Visit(base_url)
    try:
        page = context.new_page()
        page.route("**/*", visit.route)
        page.on("request", visit.request)
        page.on("console", visit.console)
        page.on("pageerror", visit.page_error)
        page.goto(f"{base_url}/docs")
        page.wait_for_selector(_RENDERED, timeout=_RENDER_TIMEOUT_MS)
        yield page, visit
    finally:
        context.close()


def _listed_operations(page: Page) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation block Swagger UI drew."""
    pairs: list[list[str]] = page.eval_on_selector_all(
        ".opblock",
        """blocks => blocks.map(block => [
            block.querySelector('.opblock-summary-method').textContent.trim(),
            block.querySelector('.opblock-summary-path').getAttribute('data-path'),
        ])""",
    )
    return {(method, path) for method, path in pairs}


def test_the_docs_page_lists_the_operations_of_the_openapi_document(
    docs: tuple[Page, Visit], base_url: str
) -> None:
    page, _ = docs
    assert "Unable to render" not in page.content()
    assert page.locator(".swagger-ui .version-pragma, .swagger-ui .errors-wrapper").count() == 0
    listed = _listed_operations(page)
    assert ("POST", "/api/v1/events") in listed
    assert ("GET", "/api/v1/graph/nodes") in listed
    schema = httpx.get(f"{base_url}/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in _METHODS
    }
    assert listed == documented


def test_the_docs_page_asks_only_its_own_server_and_breaks_no_rule_of_its_policy(
    docs: tuple[Page, Visit], base_url: str
) -> None:
    page, visit = docs
    page.wait_for_load_state("networkidle")
    assert visit.refused == []
    # Not just loopback: every request went to the server the page came from (data: URLs are
    # Swagger UI's icons, drawn without a request).
    outside = [url for url in visit.requested if not url.startswith((f"{base_url}/", "data:"))]
    assert outside == []
    assert f"{base_url}/openapi.json" in visit.requested
    assert f"{base_url}/static/swagger-ui/swagger-ui-bundle.js" in visit.requested
    # A Content-Security-Policy violation is a console error; so is a failed asset.
    assert visit.errors == []


def test_an_operation_can_be_tried_from_the_docs_page(docs: tuple[Page, Visit]) -> None:
    page, visit = docs
    operation = page.locator('.opblock-get:has(.opblock-summary-path[data-path="/healthz"])')
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    answer = operation.locator(".live-responses-table tbody .response")
    answer.wait_for(timeout=_RENDER_TIMEOUT_MS)
    assert answer.locator(".response-col_status").inner_text().strip() == "200"
    assert '"status": "ok"' in answer.locator(".response-col_description").inner_text()
    assert visit.errors == []
