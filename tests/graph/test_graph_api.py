"""The graph's questions over REST and over MCP, in-process, on a known shop: the traffic of
tests/graph/test_traces_to_graph.py made by the real OpenTelemetry SDK, encoded by its OTLP
encoder and ingested one service at a time, then asked what a person or a model asks.

MCP answers come from the official `mcp` SDK client and must equal the REST answers, since
both faces render the same function of graph/ask/queries.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from tests.api.test_error_shape import assert_error_shape
from tests.factories import make_key, make_org, principal_for
from tests.graph.test_traces_to_graph import (
    DECLINED,
    EXPORT_ORDER,
    FAILED_QUERIES,
    FIRST_VERSIONS,
    HISTORY,
    NODES,
    REQUESTS,
    Fleet,
    error_rate,
    per_minute,
    send_traffic,
)
from tests.server import module_database
from trailmap import clock
from trailmap.app import create_app
from trailmap.graph.learn.pairing import ingest_traces, sweep_pending
from trailmap.graph.model import NODE_KINDS
from trailmap.settings import Settings
from trailmap.storage import Database, migrate

pytestmark = pytest.mark.anyio

GRAPH = "/api/v1/graph"
_WAIT_S = 30  # ingest_traces' default pairing wait
_MCP_BASE = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Shop:
    """An organization whose graph is the shop's, and the app in-process to ask it."""

    client: httpx.AsyncClient
    settings: Settings
    db: Database
    writer: str  # READ_WRITE key
    reader: str  # READ_ONLY key

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.writer}"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shop_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[str]:
    # Built once per module: every test only reads the graph.
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_graph") as (url, _):
        yield url


@pytest.fixture(scope="module")
async def shop(shop_database: str) -> AsyncIterator[Shop]:
    """The shop's traffic ingested one service at a time, every waiting half settled."""
    db = Database(shop_database)
    try:
        migrate.upgrade(db)
        org = await make_org(db, slug="shop")
        writer, reader = await make_key(db, org), await make_key(db, org, scope="read-only")
        principal = principal_for(org)
        fleet = Fleet(FIRST_VERSIONS)
        try:
            send_traffic(fleet)
            for service in EXPORT_ORDER:
                result = await ingest_traces(db, principal, encode_spans(fleet.take(service)))
                assert (result.rejected_spans, result.problems) == (0, [])
        finally:
            fleet.shutdown()
        # The Stripe calls have no SERVER half: the sweep, once their wait is over, makes
        # them an edge to an external API.
        await sweep_pending(
            db, now_us=clock.now_us() + (_WAIT_S + 1) * 1_000_000, max_pending=10_000
        )
        settings = Settings(database_url=shop_database, retention_purge_interval_seconds=0)
        transport = httpx.ASGITransport(app=create_app(settings, database=db))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Shop(http, settings, db, writer, reader)
    finally:
        db.close()


async def _get(shop: Shop, path: str, **params: Any) -> Any:
    response = await shop.client.get(f"{GRAPH}{path}", params=params, headers=shop.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "data"}
    assert body["success"] is True
    return body["data"]


async def _refused(shop: Shop, path: str, status: int, **params: Any) -> dict[str, Any]:
    response = await shop.client.get(f"{GRAPH}{path}", params=params, headers=shop.auth())
    assert response.status_code == status, response.text
    return assert_error_shape(response)


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return [row["name"] for row in rows]


def _edges(rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(row["from"], row["to"], row["kind"]) for row in rows}


# -- REST ---------------------------------------------------------------------------------


async def test_search_finds_nodes_by_the_names_people_use(
    shop: Shop,
) -> None:
    async def best(query: str, **params: Any) -> tuple[str, str, str]:
        data = await _get(shop, "/nodes", query=query, **params)
        assert data["total_nodes"] == len(NODES)
        top = data["nodes"][0]
        return top["name"], top["kind"], top["match"]

    assert await best("checkout") == ("checkout", "service", "exact")
    assert await best("Payment") == ("payments", "service", "prefix")
    assert await best("order service") == ("orders", "service", "tokens")
    assert await best("orders db") == ("orders-db", "database", "exact")
    assert await best("stripe") == ("api.stripe.com", "external_api", "substring")
    assert await best("order", kind="topic") == ("order-events", "topic", "prefix")
    assert await best("databases") == ("orders-db", "database", "kind")
    assert await best("the cache") == ("redis", "cache", "kind")
    found = await _get(shop, "/nodes", query="order")
    assert _names(found["nodes"]) == ["orders", "orders-db", "order-events"]
    nothing = await _get(shop, "/nodes", query="inventory")
    assert nothing["nodes"] == []


async def test_an_empty_query_lists_every_node_services_first_busiest_first_in_pages(
    shop: Shop,
) -> None:
    everything = await _get(shop, "/nodes", limit=100)
    rows = everything["nodes"]
    assert {(row["name"], row["kind"]) for row in rows} == NODES
    assert "more" not in everything
    kinds = [row["kind"] for row in rows]
    assert kinds == sorted(kinds, key=NODE_KINDS.index)
    rates = [row.get("calls_per_minute", 0) for row in rows if row["kind"] == "service"]
    assert rates == sorted(rates, reverse=True)
    assert rates[0] > 0
    # Page by page, each saying how many are left and how to get them, the same list.
    pages: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await _get(shop, "/nodes", query="", limit=4, offset=offset)
        pages += page["nodes"]
        if "more" not in page:
            break
        assert page["more"] == len(NODES) - offset - 4
        assert page["next"] == f"call again with offset={offset + 4}"
        offset += 4
    assert pages == rows
    stores = await _get(shop, "/nodes", kind=["database", "cache"])
    assert [(n["name"], n["kind"]) for n in stores["nodes"]] == [
        ("orders-db", "database"),
        ("redis", "cache"),
    ]


async def test_a_capped_search_says_how_many_more_match(shop: Shop) -> None:
    first = await _get(shop, "/nodes", query="order", limit=1)
    assert _names(first["nodes"]) == ["orders"]
    assert (first["more"], first["next"]) == (2, "call again with offset=1")
    rest = await _get(shop, "/nodes", query="order", offset=1)
    assert _names(rest["nodes"]) == ["orders-db", "order-events"]
    assert "more" not in rest


async def test_a_database_lists_the_services_that_use_it_with_their_traffic(
    shop: Shop,
) -> None:
    database = await _get(shop, "/nodes/orders-db")
    assert (database["name"], database["kind"], database["environment"]) == (
        "orders-db",
        "database",
        "production",
    )
    assert database["connected_services"] == ["orders", "shipping"]
    assert _edges(database["upstream"]) == {
        ("orders", "orders-db", "reads_writes"),
        ("shipping", "orders-db", "reads_writes"),
    }
    assert database["downstream"] == []
    orders = next(e for e in database["upstream"] if e["from"] == "orders")
    assert (orders["calls_per_minute"], orders["error_rate"]) == (
        per_minute(REQUESTS),
        error_rate(REQUESTS, len(FAILED_QUERIES)),
    )
    # What the database served is what its callers saw.
    last_hour = database["last_hour"]
    assert (last_hour["calls"], last_hour["errors"]) == (2 * REQUESTS, len(FAILED_QUERIES))
    assert database["recent_changes"] == []


async def test_a_service_shows_what_calls_it_and_what_it_calls(
    shop: Shop,
) -> None:
    payments = await _get(shop, "/nodes/paymnts")
    assert payments["name"] == "payments"
    assert payments["matched"] == "'paymnts' was taken to mean 'payments'"
    assert "connected_services" not in payments
    assert payments["attributes"]["service.version"] == "1.4.0"
    assert _edges(payments["upstream"]) == {("checkout", "payments", "calls")}
    assert _edges(payments["downstream"]) == {("payments", "api.stripe.com", "calls")}
    (stripe,) = payments["downstream"]
    assert stripe["error_rate"] == error_rate(REQUESTS, len(DECLINED))
    last_hour = payments["last_hour"]
    assert (last_hour["calls"], last_hour["errors"]) == (REQUESTS, len(DECLINED))

    frontend = await _get(shop, "/nodes/frontend")
    assert _edges(frontend["downstream"]) == {
        ("frontend", "checkout", "calls"),
        ("frontend", "orders", "calls"),
    }
    history = next(e for e in frontend["downstream"] if e["to"] == "orders")
    assert history["calls_per_minute"] == per_minute(len(HISTORY))


async def test_dependencies_are_walked_either_way_to_the_asked_depth(
    shop: Shop,
) -> None:
    one_hop = await _get(shop, "/nodes/checkout/dependencies", max_depth=1)
    assert [(n["name"], n["depth"]) for n in one_hop["nodes"]] == [
        ("checkout", 0),
        ("orders", 1),
        ("payments", 1),
        ("redis", 1),
    ]
    assert _edges(one_hop["edges"]) == {
        ("checkout", "orders", "calls"),
        ("checkout", "payments", "calls"),
        ("checkout", "redis", "reads_writes"),
    }
    two_hops = await _get(shop, "/nodes/checkout/dependencies", max_depth=2)
    assert {(n["name"], n["depth"]) for n in two_hops["nodes"] if n["depth"] == 2} == {
        ("api.stripe.com", 2),
        ("orders-db", 2),
        ("order-events", 2),
    }
    upstream = await _get(shop, "/nodes/orders-db/dependencies", direction="upstream", max_depth=10)
    assert [(n["name"], n["depth"]) for n in upstream["nodes"]] == [
        ("orders-db", 0),
        ("orders", 1),
        ("shipping", 1),
        ("checkout", 2),
        ("frontend", 2),
        ("gateway", 3),
    ]
    only_services = await _get(
        shop,
        "/nodes/gateway/dependencies",
        max_depth=10,
        node_kind="database",
        edge_kind=["calls", "reads_writes"],
    )
    assert [(n["name"], n["depth"]) for n in only_services["nodes"]] == [
        ("gateway", 0),
        ("orders-db", 3),
    ]


async def test_paths_come_shortest_first_and_a_backwards_question_says_so(
    shop: Shop,
) -> None:
    forward = await _get(shop, "/paths", **{"from": "gateway", "to": "orders-db"})
    assert [p["nodes"] for p in forward["paths"]] == [
        ["gateway", "frontend", "orders", "orders-db"],
        ["gateway", "frontend", "checkout", "orders", "orders-db"],
        # A request also reaches the database through the topic and its consumer.
        ["gateway", "frontend", "orders", "order-events", "shipping", "orders-db"],
    ]
    assert [p["hops"] for p in forward["paths"]] == [3, 4, 5]
    assert "note" not in forward
    shortest = await _get(shop, "/paths", **{"from": "gateway", "to": "orders-db", "max_paths": 1})
    assert shortest["paths"] == forward["paths"][:1]

    backwards = await _get(shop, "/paths", **{"from": "payments", "to": "gateway"})
    assert [p["nodes"] for p in backwards["paths"]] == [
        ["gateway", "frontend", "checkout", "payments"]
    ]
    assert backwards["note"] == (
        "Nothing flows from payments to gateway; these paths go the other way."
    )
    apart = await _get(shop, "/paths", **{"from": "redis", "to": "api.stripe.com"})
    assert apart["paths"] == []
    assert apart["note"] == "No path connects redis and api.stripe.com in either direction."


async def test_the_impact_of_payments_is_checkout_frontend_and_gateway_by_distance(
    shop: Shop,
) -> None:
    impact = await _get(shop, "/nodes/payments/impact")
    assert [(i["name"], i["depth"], i["via"]) for i in impact["impacted"]] == [
        ("checkout", 1, "payments"),
        ("frontend", 2, "checkout"),
        ("gateway", 3, "frontend"),
    ]
    assert (impact["impacted_count"], impact["impacted_services"], impact["max_depth"]) == (3, 3, 3)
    # checkout sends a quarter of its calls to payments (the rest to orders and redis), the
    # frontend three quarters of its calls to checkout, the gateway all of its to the frontend.
    assert [i["share_of_traffic"] for i in impact["impacted"]] == [0.25, 0.75, 1.0]
    assert impact["by_depth"] == [
        {"depth": 1, "nodes": 1, "services": 1},
        {"depth": 2, "nodes": 1, "services": 1},
        {"depth": 3, "nodes": 1, "services": 1},
    ]
    assert impact["truncated"] is False


async def test_an_impact_lists_the_nearest_up_to_the_limit_and_counts_them_all(
    shop: Shop,
) -> None:
    nearest = await _get(shop, "/nodes/payments/impact", limit=2)

    assert [i["name"] for i in nearest["impacted"]] == ["checkout", "frontend"]
    assert (nearest["impacted_count"], nearest["max_depth"], nearest["truncated"]) == (3, 3, True)
    assert [d["nodes"] for d in nearest["by_depth"]] == [1, 1, 1]
    for limit in (0, 101):
        refused = await _refused(shop, "/nodes/payments/impact", 400, limit=limit)
        assert [d["field"] for d in refused["details"]] == ["limit"]


async def test_services_are_ranked_by_how_many_depend_on_them(
    shop: Shop,
) -> None:
    ranked = await _get(shop, "/critical", by="dependents")
    assert [(s["name"], s["dependents"], s["direct_dependents"]) for s in ranked["services"]] == [
        ("orders", 3, 2),
        ("payments", 3, 1),
        ("checkout", 2, 1),
        ("frontend", 1, 1),
        ("gateway", 0, 0),
        ("shipping", 0, 0),
    ]
    top = await _get(shop, "/critical", limit=2)
    assert _names(top["services"]) == ["orders", "payments"]


async def test_the_mermaid_format_adds_a_flowchart_of_the_answer(
    shop: Shop,
) -> None:
    plain = await _get(shop, "/nodes/payments/impact")
    assert "mermaid" not in plain
    drawn = await _get(shop, "/nodes/payments/impact", format="mermaid")
    chart = drawn["mermaid"]
    assert chart.startswith("flowchart LR\n")
    for name in ("payments", "checkout", "frontend", "gateway"):
        assert f'("{name}<br/>service")' in chart
    assert chart.count("-->") == 3
    path = await _get(shop, "/paths", **{"from": "orders", "to": "orders-db", "format": "mermaid"})
    assert '[("orders-db<br/>database")]' in path["mermaid"]


async def test_the_graph_as_it_was_before_any_trace_is_empty(
    shop: Shop,
) -> None:
    before = await _get(shop, "/nodes", query="checkout", at="-1h")
    assert (before["nodes"], before["total_nodes"]) == ([], 0)
    assert "as_of" in before
    gone = await _refused(shop, "/nodes/checkout", 404, at="-1h")
    assert "checkout" in gone["error"]
    ranked = await _get(shop, "/critical", at="-1h")
    assert ranked["services"] == []
    now = await _get(shop, "/nodes", query="checkout", at="now")
    assert now["total_nodes"] == len(NODES)


async def test_every_refusal_has_the_one_error_shape(
    shop: Shop,
) -> None:
    unknown = await _refused(shop, "/nodes/inventory", 404)
    assert unknown["code"] == "NOT_FOUND"
    assert "search_nodes" in unknown["error"]
    # A fragment that fits several nodes equally well is not guessed: they are suggested.
    ambiguous = await _refused(shop, "/nodes/n/impact", 404)
    assert ambiguous["error"].startswith("No node named 'n'. Did you mean: ")
    assert {"frontend", "payments", "shipping"} <= set(
        ambiguous["error"].removesuffix("?").split(": ", 1)[1].split(", ")
    )
    await _refused(shop, "/paths", 404, **{"from": "gateway", "to": "inventory"})

    bad_kind = await _refused(shop, "/nodes", 400, query="db", kind="spaceship")
    assert [d["field"] for d in bad_kind["details"]] == ["kind.0"]
    await _refused(shop, "/nodes/checkout/dependencies", 400, edge_kind="knows")
    await _refused(shop, "/nodes/checkout/dependencies", 400, direction="sideways")
    await _refused(shop, "/nodes/checkout/dependencies", 400, max_depth=11)
    await _refused(shop, "/critical", 400, by="vibes")
    await _refused(shop, "/nodes", 400, offset=-1)
    await _refused(shop, "/paths", 400, to="checkout")
    bad_time = await _refused(shop, "/nodes/checkout", 400, at="yesterday-ish")
    assert [d["field"] for d in bad_time["details"]] == ["at"]
    anonymous = await shop.client.get(f"{GRAPH}/nodes/checkout")
    assert anonymous.status_code == 401
    assert_error_shape(anonymous)


# -- MCP ----------------------------------------------------------------------------------


@asynccontextmanager
async def _mcp(settings: Settings, db: Database, key: str) -> AsyncIterator[Client]:
    """The official MCP client, talking Streamable HTTP to the app in-process."""
    app = create_app(settings, database=db)
    async with app.router.lifespan_context(app):
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            base_url=_MCP_BASE,
            headers={"Authorization": f"Bearer {key}"},
        )
        async with (
            http,
            Client(streamable_http_client(f"{_MCP_BASE}/mcp", http_client=http)) as mcp,
        ):
            yield mcp


async def _tool(mcp: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await mcp.call_tool(name, args)
    assert not result.is_error, result.content
    answer: dict[str, Any] | None = result.structured_content
    assert answer is not None
    return answer


async def test_the_mcp_tools_answer_the_same_questions_as_the_rest_api(
    shop: Shop,
) -> None:
    async with _mcp(shop.settings, shop.db, shop.reader) as mcp:
        path = await _tool(mcp, "find_path", {"from": "gateway", "to": "orders-db"})
        assert path["paths"][0]["nodes"] == [
            "gateway",
            "frontend",
            "orders",
            "orders-db",
        ]
        assert path == await _get(shop, "/paths", **{"from": "gateway", "to": "orders-db"})

        impact = await _tool(mcp, "get_impact", {"node": "payments", "limit": 2})
        assert [(i["name"], i["depth"]) for i in impact["impacted"]] == [
            ("checkout", 1),
            ("frontend", 2),
        ]
        assert impact == await _get(shop, "/nodes/payments/impact", limit=2)

        database = await _tool(mcp, "get_node", {"node": "orders-db"})
        assert database["connected_services"] == ["orders", "shipping"]
        assert database == await _get(shop, "/nodes/orders-db")

        ranked = await _tool(mcp, "rank_critical_services", {"by": "dependents", "limit": 3})
        assert [(s["name"], s["dependents"]) for s in ranked["services"]] == [
            ("orders", 3),
            ("payments", 3),
            ("checkout", 2),
        ]
        assert ranked == await _get(shop, "/critical", by="dependents", limit=3)

        search = await _tool(mcp, "search_nodes", {"query": "order service"})
        assert search["nodes"][0]["name"] == "orders"
        assert search == await _get(shop, "/nodes", query="order service")

        walked = await _tool(
            mcp, "traverse_dependencies", {"node": "orders-db", "direction": "upstream"}
        )
        assert _names(walked["nodes"]) == [
            "orders-db",
            "orders",
            "shipping",
            "checkout",
            "frontend",
            "gateway",
        ]


async def test_search_nodes_with_no_query_lists_the_nodes_as_the_rest_api_does(
    shop: Shop,
) -> None:
    async with _mcp(shop.settings, shop.db, shop.reader) as mcp:
        first = await mcp.call_tool("search_nodes", {"query": "", "limit": 3})
        assert first.structured_content == await _get(shop, "/nodes", limit=3)
        (text,) = first.content
        assert isinstance(text, TextContent)
        assert text.text.endswith(f"\n{len(NODES) - 3} more: call again with offset=3.")
        assert all(line.endswith("(service, production)") for line in text.text.splitlines()[:3])
        # The call the discover_architecture prompt tells the model to make.
        stores = await _tool(
            mcp,
            "search_nodes",
            {"query": "", "kinds": ["database", "cache", "queue", "topic", "external_api"]},
        )
        assert _names(stores["nodes"]) == ["orders-db", "redis", "order-events", "api.stripe.com"]
        everything = await _tool(mcp, "search_nodes", {"limit": 100})
        assert {(n["name"], n["kind"]) for n in everything["nodes"]} == NODES


async def test_a_tool_given_an_argument_it_does_not_take_names_it_and_does_nothing(
    shop: Shop,
) -> None:
    async with _mcp(shop.settings, shop.db, shop.reader) as mcp:
        guessed = await mcp.call_tool("find_changes_near", {"node": "checkout", "since": "-7d"})
        assert guessed.is_error
        (text,) = guessed.content
        assert isinstance(text, TextContent)
        assert text.text.startswith("find_changes_near takes no argument 'since';")
        assert "node, from, to, max_depth, direction, limit" in text.text

        several = await mcp.call_tool("search_nodes", {"query": "orders", "kind": [], "max": 1})
        assert several.is_error
        (text,) = several.content
        assert isinstance(text, TextContent)
        assert "takes no arguments 'kind', 'max';" in text.text
        assert "kinds" in text.text

        # The arguments it takes, `from` among them, still work.
        right = await mcp.call_tool("find_changes_near", {"node": "checkout", "from": "-7d"})
        assert not right.is_error, right.content


async def test_the_mcp_tools_write_their_answer_in_words_and_refuse_unknown_nodes(
    shop: Shop,
) -> None:
    async with _mcp(shop.settings, shop.db, shop.reader) as mcp:
        impact = await mcp.call_tool("get_impact", {"node": "payments", "format": "mermaid"})
        (text,) = impact.content
        assert isinstance(text, TextContent)
        assert text.text.startswith(
            "If payments (service, production) fails: 3 nodes depend on it (3 services)"
        )
        assert "```mermaid\nflowchart LR\n" in text.text
        nearest = await mcp.call_tool("get_impact", {"node": "payments", "limit": 1})
        (text,) = nearest.content
        assert isinstance(text, TextContent)
        assert text.text.splitlines()[1:] == [
            "By depth: 1: 1 node (1 service), 2: 1 node (1 service), 3: 1 node (1 service).",
            "The nearest 1:",
            "- depth 1: checkout (service, production) via payments, 25% of its calls",
            "2 more: call again with limit=3.",
        ]

        ranked = await mcp.call_tool("rank_critical_services", {"by": "dependents", "limit": 6})
        (text,) = ranked.content
        assert isinstance(text, TextContent)
        counted = [line.rsplit(": ", 1)[1] for line in text.text.splitlines()[1:]]
        assert counted == [
            "3 dependents",
            "3 dependents",
            "2 dependents",
            "1 dependent",
            "0 dependents",
            "0 dependents",
        ]
        assert text.text.splitlines()[1].endswith("(service, production): 3 dependents")
        by_traffic = await mcp.call_tool("rank_critical_services", {"by": "traffic", "limit": 1})
        (text,) = by_traffic.content
        assert isinstance(text, TextContent)
        first = text.text.splitlines()[1]
        assert re.fullmatch(
            r"1\. \S+ \(service, production\): [0-9.]+ calls/min, \d+ dependents?", first
        )
        by_pagerank = await mcp.call_tool("rank_critical_services", {"by": "pagerank", "limit": 1})
        (text,) = by_pagerank.content
        assert isinstance(text, TextContent)
        assert re.fullmatch(r"1\. .+: pagerank 0\.\d+, \d+ dependents?", text.text.splitlines()[1])

        unknown = await mcp.call_tool("get_node", {"node": "inventory"})
        assert unknown.is_error
        (message,) = unknown.content
        assert isinstance(message, TextContent)
        assert "No node named 'inventory'" in message.text
