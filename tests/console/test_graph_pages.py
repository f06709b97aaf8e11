"""The Graph and Service pages as a browser's requests meet them, on SQLite and PostgreSQL:
a member sees the shop's graph, focuses on a node, reads an edge's figures, downloads the
Mermaid text, and opens a service; whoever is not a member sees none of it."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.console.graph_shop import record_shop
from tests.factories import make_org
from tests.forms import sign_in
from trailmap import clock
from trailmap.accounts import add_user
from trailmap.accounts.organizations import get_org
from trailmap.graph.learn.record import record_observations
from trailmap.graph.learn.spans import NodeKey, Observations
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
MEMBER = "bob@acme.example"
STRANGER = "eve@other.example"
_DRAWN = re.compile(r"<a href='[^']*' class=node data-name='([^']+)'")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, retention_purge_interval_seconds=0)


@pytest.fixture
async def member(db: Database, new_browser: NewBrowser) -> httpx.AsyncClient:
    org = await make_org(db, slug="acme")
    await record_shop(db, org)
    await add_user(db, MEMBER, org_slug="acme", role="member", password=PASSWORD)
    browser = new_browser()
    assert (await sign_in(browser, MEMBER, PASSWORD)).status_code == 303
    return browser


def drawn(html: str) -> set[str]:
    """The names of the nodes in the page's picture."""
    return set(_DRAWN.findall(html))


async def _page(browser: httpx.AsyncClient, path: str, **params: str) -> str:
    response = await browser.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


async def test_a_member_sees_every_node_of_a_small_graph_drawn_and_a_legend_of_kinds(
    member: httpx.AsyncClient,
) -> None:
    html = await _page(member, "/orgs/acme/graph")
    assert drawn(html) == {
        "frontend", "checkout", "payments", "orders", "inventory", "api.stripe.com",
        "orders-db", "search", "catalog",
    }  # fmt: skip
    assert "<a href=/orgs/acme/graph>Graph</a>" in html
    legend = html.split("class=legend", 1)[1].split("</ul>", 1)[0]
    assert re.findall(r"</svg> ([a-z ]+) <", legend) == ["database", "external api", "service"]
    # Each node links to its page.
    assert "href='/orgs/acme/services/checkout?environment=production' class=node" in html


async def test_focusing_on_checkout_at_depth_one_draws_its_neighbours_and_no_others(
    member: httpx.AsyncClient,
) -> None:
    html = await _page(member, "/orgs/acme/graph", node="checkout", depth="1")
    assert drawn(html) == {"frontend", "checkout", "payments", "orders", "inventory"}
    deeper = await _page(member, "/orgs/acme/graph", node="checkout", depth="2")
    assert drawn(deeper) == drawn(html) | {"api.stripe.com", "orders-db"}
    below = await _page(
        member, "/orgs/acme/graph", node="checkout", depth="2", direction="downstream"
    )
    assert "frontend" not in drawn(below)
    assert {"payments", "orders-db"} <= drawn(below)


async def test_an_edge_tells_its_calls_per_minute_error_rate_and_p95_on_hover(
    member: httpx.AsyncClient,
) -> None:
    html = await _page(member, "/orgs/acme/graph", node="checkout")
    titles = re.findall(r"<g class=edge><title>([^<]+)</title>", html)
    payments = [t for t in titles if t.startswith("checkout → payments")]
    # 8 calls a minute for ten minutes, over the last hour; one in eight failed.
    assert len(payments) == 1
    assert re.fullmatch(
        r"checkout → payments \(calls\): 1\.33 calls/min, 12\.50% errors, p95 [0-9.]+ ms",
        payments[0],
    )


async def test_search_lists_the_matching_nodes_with_links_that_focus_on_them(
    member: httpx.AsyncClient,
) -> None:
    html = await _page(member, "/orgs/acme/graph", q="pay")
    found = html.split("<h2 id=found>", 1)[1].split("</section>", 1)[0]
    assert "href='/orgs/acme/graph?node=payments'" in found
    assert "catalog" not in found


async def test_the_graph_as_it_was_before_the_shop_existed_is_empty(
    member: httpx.AsyncClient,
) -> None:
    html = await _page(member, "/orgs/acme/graph", at="-2h")
    assert drawn(html) == set()
    assert "No services yet" in html


async def test_the_mermaid_export_is_a_flowchart_of_what_the_page_draws(
    member: httpx.AsyncClient,
) -> None:
    html = await _page(member, "/orgs/acme/graph", node="checkout")
    assert "flowchart LR" in html
    response = await member.get("/orgs/acme/graph.mmd", params={"node": "checkout"})
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="acme-checkout.mmd"'
    text = response.text
    assert text.startswith("flowchart LR\n")
    assert "payments" in text
    assert "catalog" not in text


async def test_a_bad_depth_or_an_unknown_node_is_named_in_a_4xx_page(
    member: httpx.AsyncClient,
) -> None:
    deep = await member.get("/orgs/acme/graph", params={"node": "checkout", "depth": "9"})
    assert deep.status_code == 400
    assert "depth: must be between 1 and 4" in deep.text
    unknown = await member.get("/orgs/acme/graph", params={"node": "nowhere-at-all"})
    assert unknown.status_code == 404
    assert "No node named" in unknown.text
    when = await member.get("/orgs/acme/graph", params={"at": "last tuesdayish"})
    assert when.status_code == 400
    assert "at:" in when.text


async def test_the_service_page_shows_callers_callees_charts_changes_and_owners(
    member: httpx.AsyncClient,
) -> None:
    html = await _page(member, "/orgs/acme/services/checkout")
    upstream = html.split("<h2 id=up>", 1)[1].split("</section>", 1)[0]
    downstream = html.split("<h2 id=down>", 1)[1].split("</section>", 1)[0]
    assert re.findall(r">([a-z.-]+)</a></td>", upstream) == ["frontend"]
    assert re.findall(r">([a-z.-]+)</a></td>", downstream) == ["inventory", "orders", "payments"]
    # checkout -> payments: 1.33 calls/min, one call in eight failed.
    assert "<td>1.33</td><td>12.50%</td>" in downstream
    charts = html.split("<h2 id=hour>", 1)[1].split("</section>", 1)[0]
    assert charts.count("<svg") == 3
    assert "Calls per minute: latest 8 calls/min" in charts
    assert "<polyline" in charts
    changes = html.split("<h2 id=changes>", 1)[1]
    assert "deployment" in changes
    assert "v2.1.0" in changes
    assert "href='/orgs/acme/events/" in changes  # each change leads to its Event page
    assert "Owned by" not in html
    payments = await _page(member, "/orgs/acme/services/payments")
    assert "Owned by <strong>payments-team</strong>" in payments


async def test_an_unknown_service_is_a_404_page_that_offers_a_search(
    member: httpx.AsyncClient,
) -> None:
    response = await member.get("/orgs/acme/services/no-such-thing-here")
    assert response.status_code == 404
    assert "href='/orgs/acme/graph?q=no-such-thing-here'" in response.text


async def test_whoever_is_not_a_member_sees_neither_page(
    db: Database, member: httpx.AsyncClient, new_browser: NewBrowser
) -> None:
    await make_org(db, slug="other")
    await add_user(db, STRANGER, org_slug="other", role="owner", password=PASSWORD)
    stranger = new_browser()
    assert (await sign_in(stranger, STRANGER, PASSWORD)).status_code == 303
    for path in ("/orgs/acme/graph", "/orgs/acme/services/checkout", "/orgs/acme/graph.mmd"):
        refused = await stranger.get(path)
        assert refused.status_code == 404, path
        assert "checkout" not in refused.text
        signed_out = await new_browser().get(path)
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/login?next=")


async def _hub(db: Database, callers: int) -> None:
    """`callers` services calling one hub, the busiest (callers with a higher number) calling
    it more often."""
    org = await make_org(db, slug="big")
    await add_user(db, MEMBER, org_slug="big", role="member", password=PASSWORD)
    now = clock.now_us()
    obs = Observations()
    hub: NodeKey = ("service", "production", "hub")
    for i in range(callers):
        caller: NodeKey = ("service", "production", f"caller-{i:03d}")
        for call in range(1 + i % 7):
            obs.edge(caller, hub, "calls", (now - 120_000_000 + call, 10.0, False))
    await db.write(record_observations, org.id, obs, now)


async def test_a_large_graph_is_drawn_as_its_30_busiest_nodes_or_150_around_a_focus(
    db: Database, new_browser: NewBrowser
) -> None:
    await _hub(db, 200)
    browser = new_browser()
    assert (await sign_in(browser, MEMBER, PASSWORD)).status_code == 303
    html = await _page(browser, "/orgs/big/graph")
    assert "The 30 busiest of 201 nodes" in html
    busiest = drawn(html)
    assert len(busiest) == 30
    assert "hub" in busiest
    # After the hub, the 28 callers that called 7 times, then one that called 6 times.
    calls = sorted(1 + int(name[-3:]) % 7 for name in busiest - {"hub"})
    assert calls == [6] + [7] * 28
    focused = await _page(browser, "/orgs/big/graph", node="hub")
    assert len(drawn(focused)) == 150
    assert "51 more nodes are within reach" in focused


async def test_a_database_page_names_the_services_that_use_it_and_draws_no_charts(
    member: httpx.AsyncClient,
) -> None:
    html = await _page(member, "/orgs/acme/services/orders-db")
    assert "A database in <strong>production</strong>" in html
    assert (
        "Used by the services <a href='/orgs/acme/services/orders?environment=production'>" in html
    )
    assert "<h2 id=hour>" not in html


async def test_choosing_an_environment_draws_only_its_nodes_and_keeps_it_in_every_link(
    db: Database, member: httpx.AsyncClient
) -> None:
    org = await get_org(db, "acme")
    now = clock.now_us()
    obs = Observations()
    web: NodeKey = ("service", "staging", "frontend")
    shop: NodeKey = ("service", "staging", "checkout")
    obs.edge(web, shop, "calls", (now - 60_000_000, 12.0, False))
    await db.write(record_observations, org.id, obs, now)

    everything = await _page(member, "/orgs/acme/graph")
    assert "<option>production</option><option>staging</option>" in everything
    staging = await _page(member, "/orgs/acme/graph", environment="staging")

    assert drawn(staging) == {"frontend", "checkout"}
    assert "<option selected>staging</option>" in staging
    assert "All 2 nodes and 1 edges in staging" in staging
    assert "href='/orgs/acme/services/checkout?environment=staging' class=node" in staging
    assert "href='/orgs/acme/graph.mmd?environment=staging'" in staging
    # Focusing keeps to the environment: staging's checkout, whose only caller is frontend.
    focused = await _page(member, "/orgs/acme/graph", environment="staging", node="checkout")
    assert drawn(focused) == {"frontend", "checkout"}
    mermaid = await member.get(
        "/orgs/acme/graph.mmd", params={"environment": "staging", "node": "checkout"}
    )
    assert mermaid.status_code == 200
    assert "payments" not in mermaid.text
    assert "checkout" in mermaid.text
