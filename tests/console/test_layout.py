"""What every console page shares, over HTTP on SQLite and PostgreSQL: the header and the
`<main>` landmark, the organization switcher, the HTML 404 a browser gets (the API keeps its
JSON), and the server's icon. The same in Chromium: test_console_browser.py."""

from __future__ import annotations

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.forms import parse, sign_in
from trailmap.accounts import add_user, create_org
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
ADA = "ada@acme.example"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
async def ada(db: Database, new_browser: NewBrowser) -> httpx.AsyncClient:
    """Ada: owner of Acme, member of Beta Labs and of Gamma."""
    await create_org(db, "acme", name="Acme")
    await create_org(db, "beta", name="Beta Labs")
    await create_org(db, "gamma", name="Gamma")
    await add_user(db, ADA, org_slug="acme", role="owner", password=PASSWORD)
    await add_user(db, ADA, org_slug="beta", role="member", password=PASSWORD)
    await add_user(db, ADA, org_slug="gamma", role="admin", password=PASSWORD)
    browser = new_browser()
    assert (await sign_in(browser, ADA, PASSWORD)).status_code == 303
    return browser


async def test_an_organization_page_has_a_header_with_the_nav_and_its_body_in_main(
    ada: httpx.AsyncClient,
) -> None:
    text = (await ada.get("/orgs/acme/keys")).text
    body = text.split("<body>", 1)[1]
    assert body.startswith("<header>")
    header, rest = body.split("</header>", 1)
    assert "<nav>" in header
    assert rest.startswith("<main><h1>API Keys · Acme</h1>")
    assert rest.endswith("</main></body></html>")
    assert text.count("<main>") == 1


async def test_the_switcher_lists_the_other_organizations_at_the_same_kind_of_page(
    ada: httpx.AsyncClient,
) -> None:
    page = parse((await ada.get("/orgs/acme/members")).text)
    hrefs = page.hrefs()
    assert "/orgs/beta/members" in hrefs
    assert "/orgs/gamma/members" in hrefs
    assert "/orgs/acme/members" in hrefs  # the nav's own link, not the switcher's
    # Below the kind of page, nothing is kept: an id of one organization means nothing in
    # another.
    text = (await ada.get("/orgs/beta/keys/some-key-id/revoke")).text
    assert "Organization: Beta Labs" in text
    assert "/orgs/acme/keys" in parse(text).hrefs()
    assert not [h for h in parse(text).hrefs() if "some-key-id" in h]
    moved = await ada.get("/orgs/beta/members")
    assert moved.status_code == 200
    assert "<h1>Members · Beta Labs</h1>" in moved.text


async def test_a_user_of_one_organization_has_no_switcher(
    db: Database, new_browser: NewBrowser
) -> None:
    await create_org(db, "solo", name="Solo")
    await add_user(db, "sam@solo.example", org_slug="solo", role="owner", password=PASSWORD)
    sam = new_browser()
    assert (await sign_in(sam, "sam@solo.example", PASSWORD)).status_code == 303
    text = (await sam.get("/orgs/solo/keys")).text
    assert "class=switcher" not in text
    assert "Organization:" not in text


@pytest.mark.parametrize(
    "path", ["/console/nothing", "/orgs/acme/keys/x/y/z", "/orgs/acme/nothing", "/nothing"]
)
async def test_a_browser_gets_an_html_404_for_an_unknown_console_address(
    new_browser: NewBrowser, path: str
) -> None:
    response = await new_browser().get(path, headers=HTML)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<main><h1>Page not found</h1>" in response.text
    assert "Content-Security-Policy" in response.headers


@pytest.mark.parametrize(
    "path", ["/api/v1/nothing", "/mcp/nothing", "/.well-known/nothing", "/console/nothing"]
)
async def test_a_program_gets_the_json_404(new_browser: NewBrowser, path: str) -> None:
    # /console/nothing asked without text/html is a program's request too.
    headers = {"Accept": "application/json"} if path.startswith("/console") else HTML
    response = await new_browser().get(path, headers=headers)
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False
    assert body["code"] == "NOT_FOUND"


async def test_a_script_in_the_missing_path_is_escaped(new_browser: NewBrowser) -> None:
    response = await new_browser().get("/console/<script>alert(1)</script>", headers=HTML)
    assert response.status_code == 404
    assert "<script>alert" not in response.text


@pytest.mark.parametrize("path", ["/favicon.ico", "/favicon.svg"])
async def test_the_server_serves_its_icon(new_browser: NewBrowser, path: str) -> None:
    response = await new_browser().get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.text.startswith("<svg")
