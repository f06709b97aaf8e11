"""The console's answers from the declared graph, on SQLite and PostgreSQL: a service page
shows each dependency as observed, declared or both with where it is declared, and its owners;
the Graph changes page shows what appeared in the graph and what is declared but not called or
called but not declared; whoever is not a member sees none of it."""

from __future__ import annotations

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.console.graph_shop import record_shop
from tests.console.test_graph_pages import drawn
from tests.factories import make_org
from tests.forms import sign_in
from trailmap.accounts import add_user
from trailmap.graph.declared import Declared, Evidence
from trailmap.graph.learn.declared import DeclaredSource, record_declared
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
MEMBER = "bob@acme.example"
STRANGER = "eve@other.example"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, retention_purge_interval_seconds=0)


def _repository() -> Declared:
    """checkout -> payments declared as traced; payments -> fraud, which no trace shows;
    payments owned by @acme/payments (CODEOWNERS)."""
    declared = Declared()
    declared.node("checkout", "service", Evidence("compose", "compose.yaml", 2, "service"))
    declared.node("payments", "service", Evidence("compose", "compose.yaml", 7, "service"))
    declared.node("fraud", "service", Evidence("compose", "compose.yaml", 11, "service"))
    declared.node("@acme/payments", "team", Evidence("codeowners", ".github/CODEOWNERS", 3))
    declared.edge(
        "checkout", "payments", "calls", Evidence("compose", "compose.yaml", 5, "PAYMENTS_URL")
    )
    declared.edge("payments", "fraud", "calls", Evidence("compose", "compose.yaml", 9, "FRAUD_URL"))
    declared.edge(
        "payments",
        "@acme/payments",
        "owned_by",
        Evidence("codeowners", ".github/CODEOWNERS", 3, "/payments/ → @acme/payments"),
    )
    return declared


@pytest.fixture
async def member(db: Database, new_browser: NewBrowser) -> httpx.AsyncClient:
    org = await make_org(db, slug="acme")
    await record_shop(db, org)
    source = DeclaredSource(key="repo-1", kind="repository", label="shop", revision="abc123")
    await record_declared(db, org.id, source, _repository())
    await add_user(db, MEMBER, org_slug="acme", role="member", password=PASSWORD)
    browser = new_browser()
    assert (await sign_in(browser, MEMBER, PASSWORD)).status_code == 303
    return browser


async def _page(browser: httpx.AsyncClient, path: str, **params: str) -> str:
    response = await browser.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.text


def _row(html: str, section: str, name: str) -> str:
    part = html.split(f"<h2 id={section}>", 1)[1].split("</section>", 1)[0]
    return next(row for row in part.split("<tr>") if f">{name}</a></td>" in row)


async def test_a_service_page_shows_each_dependency_observed_declared_or_both_and_owners(
    member: httpx.AsyncClient,
) -> None:
    checkout = await _page(member, "/orgs/acme/services/checkout")
    payments_row = _row(checkout, "down", "payments")
    assert "observed and declared" in payments_row
    assert "<code>compose.yaml:5</code>" in payments_row
    assert "<code>compose.yaml:2 (compose, shop @ abc123)</code>" in checkout
    assert "observed and declared" not in _row(checkout, "down", "orders")
    assert "Declared as <strong>checkout</strong>" in checkout
    assert "Dependencies: 1 observed and declared, 2 observed only, 0 declared only." in checkout

    payments = await _page(member, "/orgs/acme/services/payments")
    assert "declared only" in _row(payments, "down", "fraud")
    # The team a CODEOWNERS rule names, and the team a trace's attribute names.
    assert "Owned by <strong>@acme/payments</strong>" in payments
    assert "<code>.github/CODEOWNERS:3 (codeowners, shop @ abc123)</code>" in payments
    assert "<strong>payments-team</strong>" in payments
    # Ownership is beside the dependencies, not among them.
    assert "@acme/payments</a></td>" not in payments
    assert "owned by @acme/payments" in payments

    fraud = await _page(member, "/orgs/acme/services/fraud")
    assert "not in traces" in fraud


async def test_the_graph_draws_declared_dependencies_but_not_owners_around_a_focus(
    member: httpx.AsyncClient,
) -> None:
    around = drawn(await _page(member, "/orgs/acme/graph", node="payments", depth="2"))
    assert {"payments", "fraud", "checkout", "api.stripe.com"} <= around
    assert "@acme/payments" not in around


async def test_the_graph_changes_page_shows_what_appeared_and_declared_against_observed(
    member: httpx.AsyncClient,
) -> None:
    graph = await _page(member, "/orgs/acme/graph")
    assert "href='/orgs/acme/graph/changes'" in graph
    html = await _page(member, "/orgs/acme/graph/changes")
    changes = html.split("<h2 id=changes>", 1)[1].split("</section>", 1)[0]
    assert "appeared" in changes
    assert ">payments</a> — calls → <a href='/orgs/acme/services/fraud'>fraud</a>" in changes
    compared = html.split("<h2 id=compare>", 1)[1]
    unused, hidden = compared.split("Called but not declared", 1)
    assert "Declared but not called (1)" in unused
    assert ">fraud</a></td><td>not instrumented</td>" in unused
    # checkout is declared, and calls orders and inventory, which no source declares.
    assert ">inventory</a></td>" in hidden
    assert ">orders</a></td>" in hidden
    assert ">frontend</a></td>" not in hidden  # frontend declares nothing

    refused = await member.get("/orgs/acme/graph/changes", params={"from": "whenever"})
    assert refused.status_code == 400
    assert "from:" in refused.text


async def test_whoever_is_not_a_member_does_not_see_the_graph_changes(
    db: Database, member: httpx.AsyncClient, new_browser: NewBrowser
) -> None:
    await make_org(db, slug="other")
    await add_user(db, STRANGER, org_slug="other", role="owner", password=PASSWORD)
    stranger = new_browser()
    assert (await sign_in(stranger, STRANGER, PASSWORD)).status_code == 303
    refused = await stranger.get("/orgs/acme/graph/changes")
    assert refused.status_code == 404
    assert "fraud" not in refused.text
    signed_out = await new_browser().get("/orgs/acme/graph/changes")
    assert signed_out.status_code == 303
