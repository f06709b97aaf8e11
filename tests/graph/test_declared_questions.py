"""The questions the declared graph makes possible, over REST and MCP, on the shop traced with
the OpenTelemetry SDK (tests/graph/test_graph_api.py) and a Compose file and a catalog that
declare part of it under other names: which evidence a walk follows, a node's declared and
observed dependencies side by side with its owners and where each is declared, what is
declared but never called and what is called but declared nowhere, and the graph's own
changes between two times."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.graph import test_graph_api
from tests.graph.test_graph_api import Shop, _get, _mcp, _refused, _tool
from trailmap import clock
from trailmap.accounts.organizations import get_org
from trailmap.graph.declared import Declared, Evidence
from trailmap.graph.learn.declared import DeclaredSource, forget_source, record_declared
from trailmap.ingest.compose import read_compose

pytestmark = pytest.mark.anyio

shop_database = test_graph_api.shop_database
shop = test_graph_api.shop

# Declares checkout, payments and orders under their Compose names (joined to the traced ones
# by OTEL_SERVICE_NAME); payments -> fraud, a service no trace shows, and payments -> orders,
# two traced services that never call each other.
COMPOSE = """\
services:
  checkout-svc:
    build: ./checkout
    environment:
      OTEL_SERVICE_NAME: checkout
      PAYMENTS_URL: http://payments-svc:8080/charge
      ORDERS_ADDR: orders-svc:9000
  payments-svc:
    build: ./payments
    environment:
      OTEL_SERVICE_NAME: payments
      FRAUD_URL: http://fraud:8000/score
      ORDERS_URL: http://orders-svc:9000/refunds
  orders-svc:
    build: ./orders
    depends_on: [orders-db]
    environment:
      OTEL_SERVICE_NAME: orders
      DATABASE_URL: postgres://orders@orders-db:5432/orders
  fraud:
    image: ghcr.io/example/fraud:1.2
  orders-db:
    image: postgres:16
"""
# A later commit: fraud is gone, and checkout now names shipping.
COMPOSE_LATER = (
    COMPOSE.replace("      FRAUD_URL: http://fraud:8000/score\n", "")
    .replace("  fraud:\n    image: ghcr.io/example/fraud:1.2\n", "")
    .replace(
        "      ORDERS_ADDR: orders-svc:9000\n",
        "      ORDERS_ADDR: orders-svc:9000\n      SHIPPING_URL: http://shipping:8080/\n",
    )
    + "  shipping:\n    image: ghcr.io/example/shipping:3.0\n"
)
REPO = DeclaredSource(key="repo-q", kind="repository", label="shop repo", revision="abc123")
CATALOG = DeclaredSource(key="catalog-q", kind="backstage", label="catalog")


def _catalog() -> Declared:
    """payments owned by team-payments, as a Backstage catalog says it."""
    said = Evidence("backstage", "catalog-info.yaml", 7, "owner team-payments")
    catalog = Declared()
    catalog.node("payments", "service", Evidence("backstage", "catalog-info.yaml", 3, "Component"))
    catalog.node("team-payments", "team", said)
    catalog.edge("payments", "team-payments", "owned_by", said)
    return catalog


@pytest.fixture
async def declared(shop: Shop, tmp_path: Path) -> AsyncIterator[str]:
    """The shop with the Compose file and the catalog recorded; forgotten afterwards, since
    the shop is shared by the module."""
    org_id = (await get_org(shop.db, "shop")).id
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    await record_declared(shop.db, org_id, REPO, read_compose(tmp_path))
    await record_declared(shop.db, org_id, CATALOG, _catalog())
    try:
        yield org_id
    finally:
        await forget_source(shop.db, org_id, REPO.key)
        await forget_source(shop.db, org_id, CATALOG.key)


def _walked(data: dict[str, Any]) -> list[str]:
    return [n["name"] for n in data["nodes"]]


def _pairs(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(row["from"], row["to"]) for row in rows}


# -- before anything is declared ----------------------------------------------------------


async def test_with_nothing_declared_the_comparison_says_so_and_finds_nothing(
    shop: Shop,
) -> None:
    compared = await _get(shop, "/compare")
    assert compared["declared_nodes"] == 0
    assert compared["note"].startswith("Nothing is declared")
    assert compared["declared_not_observed"] == []
    assert compared["observed_not_declared"] == []
    # Every traced edge reads as observed only, and a declared walk follows nothing.
    walked = await _get(shop, "/nodes/checkout/dependencies", max_depth=1)
    assert {e["sources"] for e in walked["edges"]} == {"otel"}
    declared_only = await _get(
        shop, "/nodes/checkout/dependencies", max_depth=1, evidence="declared"
    )
    assert _walked(declared_only) == ["checkout"]


# -- evidence=observed|declared|all -------------------------------------------------------


async def test_each_evidence_walks_its_own_edges(shop: Shop, declared: str) -> None:
    def walk(evidence: str) -> Any:
        return _get(shop, "/nodes/checkout/dependencies", max_depth=2, evidence=evidence)

    every = await walk("all")
    observed = await walk("observed")
    said = await walk("declared")
    assert "evidence" not in every
    assert (observed["evidence"], said["evidence"]) == ("observed", "declared")
    # Traces: checkout calls payments and orders, reads redis; payments calls Stripe.
    assert set(_walked(observed)) == {
        "checkout",
        "payments",
        "orders",
        "redis",
        "api.stripe.com",
        "orders-db",
        "order-events",
    }
    # The Compose file: no redis, no Stripe; fraud, which no trace shows.
    assert set(_walked(said)) == {"checkout", "payments", "orders", "fraud", "orders-db"}
    assert set(_walked(every)) == set(_walked(observed)) | {"fraud"}
    sources = {(e["from"], e["to"]): e["sources"] for e in every["edges"]}
    assert sources[("checkout", "payments")] == "otel+compose"
    assert sources[("checkout", "redis")] == "otel"
    assert sources[("payments", "fraud")] == "compose"
    # orders waits for orders-db to start and reads it: the walk lists the stronger edge.
    assert [
        e["kind"] for e in every["edges"] if (e["from"], e["to"]) == ("orders", "orders-db")
    ] == ["reads_writes"]
    assert sources[("orders", "orders-db")] == "otel+compose"
    orders = await _get(shop, "/nodes/orders")
    assert {(e["to"], e["kind"]) for e in orders["downstream"]} >= {
        ("orders-db", "reads_writes"),
        ("orders-db", "starts_after"),
    }

    # A path only declarations make, and none that traces alone know of.
    path = await _get(shop, "/paths", **{"from": "checkout", "to": "fraud"})
    assert path["paths"][0]["nodes"] == ["checkout", "payments", "fraud"]
    assert [e["sources"] for e in path["paths"][0]["edges"]] == ["otel+compose", "compose"]
    none = await _get(shop, "/paths", **{"from": "checkout", "to": "fraud", "evidence": "observed"})
    assert none["paths"] == []
    assert "No path" in none["note"]
    # The gateway is traced, not declared: no declared path starts there.
    gateway = await _get(
        shop, "/paths", **{"from": "gateway", "to": "orders-db", "evidence": "declared"}
    )
    assert gateway["paths"] == []

    # What fails with fraud: by declarations, payments and checkout; traces know no fraud.
    blast = await _get(shop, "/nodes/fraud/impact")
    assert [(i["name"], i["depth"]) for i in blast["impacted"]][:2] == [
        ("payments", 1),
        ("checkout", 2),
    ]
    assert blast["impacted"][0]["sources"] == "compose"
    assert {i["name"] for i in blast["impacted"]} == {"payments", "checkout", "frontend", "gateway"}
    declared_blast = await _get(shop, "/nodes/fraud/impact", evidence="declared")
    assert {i["name"] for i in declared_blast["impacted"]} == {"payments", "checkout"}
    assert (await _get(shop, "/nodes/fraud/impact", evidence="observed"))["impacted_count"] == 0

    # The changes near checkout are looked for among fewer nodes by declarations alone.
    near_all = await _get(shop, "/nodes/checkout/changes-near", **{"from": "-7d"})
    near_declared = await _get(
        shop, "/nodes/checkout/changes-near", **{"from": "-7d", "evidence": "declared"}
    )
    assert near_declared["evidence"] == "declared"
    assert near_declared["nodes_searched"] < near_all["nodes_searched"]


async def test_ownership_is_no_dependency_of_a_walk_an_impact_or_a_ranking(
    shop: Shop, declared: str
) -> None:
    walked = await _get(shop, "/nodes/payments/dependencies", max_depth=3)
    assert "team-payments" not in _walked(walked)
    team = await _get(shop, "/nodes/team-payments/impact")
    assert team["impacted_count"] == 0
    asked = await _get(shop, "/nodes/payments/dependencies", max_depth=1, edge_kind="owned_by")
    assert _walked(asked) == ["payments", "team-payments"]


# -- get_node: side by side, owners, where declared ---------------------------------------


async def test_a_node_shows_declared_and_observed_dependencies_side_by_side_with_owners(
    shop: Shop, declared: str
) -> None:
    payments = await _get(shop, "/nodes/payments")
    assert payments["sources"] == ["otel", "backstage", "compose"]
    down = {e["to"]: e for e in payments["downstream"]}
    assert {to: e["seen"] for to, e in down.items()} == {
        "api.stripe.com": "observed",
        "fraud": "declared",
        "orders": "declared",
    }
    assert down["fraud"]["declared_at"] == "compose.yaml:12"
    assert "declared_at" not in down["api.stripe.com"]
    (checkout,) = payments["upstream"]
    assert (checkout["from"], checkout["seen"], checkout["sources"]) == (
        "checkout",
        "both",
        "otel+compose",
    )
    assert payments["dependencies"] == {"observed": 1, "declared": 2, "both": 0}
    assert payments["dependents"] == {"observed": 0, "declared": 0, "both": 1}
    # Ownership is beside the dependencies, not among them.
    assert "team-payments" not in down
    (owner,) = payments["owners"]
    assert owner["name"] == "team-payments"
    assert owner["declared_at"] == ["catalog-info.yaml:7 (backstage, catalog)"]
    assert payments["related"] == [
        {
            "kind": "owned_by",
            "to": "team-payments",
            "sources": "backstage",
            "declared_at": "catalog-info.yaml:7",
        }
    ]
    # Where the node itself is declared, and under which names; the raw evidence is not
    # repeated among the attributes.
    assert "payments-svc" in payments["declared"]["names"]
    assert "compose.yaml:8 (compose, shop repo @ abc123)" in payments["declared"]["declared_at"]
    assert "declared" not in payments["attributes"]

    # The team lists whom it owns only as related edges, not as connected services.
    team = await _get(shop, "/nodes/team-payments")
    assert team["connected_services"] == []
    assert team["related"][0] == {
        "kind": "owned_by",
        "from": "payments",
        "sources": "backstage",
        "declared_at": "catalog-info.yaml:7",
    }


async def test_a_node_is_found_by_a_name_it_is_declared_under(shop: Shop, declared: str) -> None:
    found = await _get(shop, "/nodes", query="payments-svc")
    assert (found["nodes"][0]["name"], found["nodes"][0]["match"]) == ("payments", "alias")
    by_alias = await _get(shop, "/nodes/checkout-svc")
    assert by_alias["name"] == "checkout"


# -- declared against observed ------------------------------------------------------------


async def test_the_comparison_finds_declared_never_called_and_hidden_dependencies(
    shop: Shop, declared: str
) -> None:
    compared = await _get(shop, "/compare", **{"from": "-7d"})
    assert compared["scope"] == {"graph": "whole"}
    assert compared["declared_nodes"] >= 5
    unused = {(e["from"], e["to"]): e for e in compared["declared_not_observed"]}
    # fraud is never traced: it cannot say whether payments calls it.
    assert unused[("payments", "fraud")]["likely"] == "not instrumented"
    assert unused[("payments", "fraud")]["declared_at"] == "compose.yaml:12"
    # Both traced, no call between them in the window: unused.
    assert unused[("payments", "orders")]["likely"] == "unused"
    # Declared and called: in neither list.
    assert ("checkout", "payments") not in unused
    assert compared["declared_not_observed_total"] == len(unused) == 2
    hidden = _pairs(compared["observed_not_declared"])
    assert {("checkout", "redis"), ("payments", "api.stripe.com")} <= hidden
    assert ("orders", "order-events") in hidden
    # The gateway and the frontend declare nothing: their calls hide nothing.
    assert not {p for p in hidden if p[0] in ("gateway", "frontend", "shipping")}
    stripe = next(e for e in compared["observed_not_declared"] if e["to"] == "api.stripe.com")
    assert stripe["calls"] > 0

    one = await _get(shop, "/compare", service="payments")
    assert one["scope"]["service"] == "payments"
    assert _pairs(one["declared_not_observed"]) == {("payments", "fraud"), ("payments", "orders")}
    assert _pairs(one["observed_not_declared"]) == {("payments", "api.stripe.com")}
    capped = await _get(shop, "/compare", limit=1)
    assert len(capped["declared_not_observed"]) == 1
    assert capped["more"] >= 1
    assert capped["next"].startswith("call again with limit=")

    gateway = await _get(shop, "/compare", service="gateway")
    assert gateway["note"].startswith("Nothing is declared for gateway")


# -- the graph's own changes --------------------------------------------------------------


async def test_the_graph_changes_name_what_was_declared_and_removed_after_a_time(
    shop: Shop, declared: str, tmp_path: Path
) -> None:
    org_id = declared
    before = clock.now()
    (tmp_path / "compose.yaml").write_text(COMPOSE_LATER)
    later = DeclaredSource(key=REPO.key, kind="repository", label="shop repo", revision="def456")
    await record_declared(shop.db, org_id, later, read_compose(tmp_path))

    since = before.isoformat()
    data = await _get(shop, "/changes", **{"from": since})
    assert data["summary"]["edges_appeared"] == 1
    assert data["summary"]["edges_went_away"] == 1
    changes = {(c["change"], c.get("from"), c.get("to"), c.get("node")): c for c in data["changes"]}
    appeared = changes[("appeared", "checkout", "shipping", None)]
    assert (appeared["kind"], appeared["sources"]) == ("calls", "compose")
    assert appeared["declared_at"].startswith("compose.yaml:")
    gone = changes[("went_away", "payments", "fraud", None)]
    assert gone["why"] == "no longer declared"
    assert changes[("went_away", None, None, "fraud")]["why"] == "no longer declared"
    # shipping was traced already: it gained a source, it did not appear.
    assert ("appeared", None, None, "shipping") not in changes
    # Dependencies come first.
    assert "node" not in data["changes"][0]

    # Before that reading nothing had changed since the time asked; a day's changes hold
    # every declaration made today.
    quiet = await _get(shop, "/changes", **{"from": "-1d", "to": since})
    assert quiet["summary"]["edges_appeared"] >= 4  # the first reading's edges
    assert ("payments", "fraud") in {
        (c.get("from"), c.get("to")) for c in quiet["changes"] if c["change"] == "appeared"
    }
    paged = await _get(shop, "/changes", **{"from": "-1d", "to": since, "limit": 1})
    assert len(paged["changes"]) == 1
    assert paged["next"] == "call again with offset=1"
    second = await _get(shop, "/changes", **{"from": "-1d", "to": since, "limit": 1, "offset": 1})
    assert second["changes"] != paged["changes"]


# -- refusals -----------------------------------------------------------------------------


async def test_a_bad_evidence_window_or_limit_is_refused_in_the_one_error_shape(
    shop: Shop,
) -> None:
    for path in (
        "/nodes/checkout/dependencies",
        "/nodes/checkout/impact",
        "/nodes/checkout/changes-near",
    ):
        refused = await _refused(shop, path, 400, evidence="rumour")
        assert [d["field"] for d in refused["details"]] == ["evidence"]
    await _refused(shop, "/paths", 400, **{"from": "gateway", "to": "orders", "evidence": "x"})
    bad_from = await _refused(shop, "/changes", 400, **{"from": "soon"})
    assert [d["field"] for d in bad_from["details"]] == ["from"]
    await _refused(shop, "/changes", 400, **{"from": "now", "to": "-1h"})
    await _refused(shop, "/changes", 400, offset=-1)
    await _refused(shop, "/compare", 400, to="whenever")
    await _refused(shop, "/compare", 400, limit=0)
    unknown = await _refused(shop, "/compare", 404, service="inventory")
    assert unknown["code"] == "NOT_FOUND"


# -- MCP ----------------------------------------------------------------------------------


async def test_the_mcp_tools_answer_as_the_rest_api_does(shop: Shop, declared: str) -> None:
    async with _mcp(shop.settings, shop.db, shop.reader) as mcp:
        compared = await _tool(mcp, "compare_declared_and_observed", {"service": "payments"})
        assert compared == await _get(shop, "/compare", service="payments")
        result = await mcp.call_tool("compare_declared_and_observed", {})
        text = result.content[0].text  # type: ignore[union-attr]
        assert "payments -calls-> fraud [compose]" in text
        assert "likely not instrumented" in text

        changes = await _tool(mcp, "get_graph_changes", {"from": "-1d"})
        rest = await _get(shop, "/changes", **{"from": "-1d"})
        assert changes["summary"] == rest["summary"]
        assert changes["changes"] == rest["changes"]
        said = await mcp.call_tool("get_graph_changes", {"from": "-1d"})
        assert "appeared: payments -calls-> fraud [compose]" in said.content[0].text  # type: ignore[union-attr]

        path = await _tool(
            mcp, "find_path", {"from": "checkout", "to": "fraud", "evidence": "observed"}
        )
        assert path["paths"] == []
        impact = await _tool(mcp, "get_impact", {"node": "fraud", "evidence": "declared"})
        assert {i["name"] for i in impact["impacted"]} == {"payments", "checkout"}
        walked = await _tool(
            mcp, "traverse_dependencies", {"node": "checkout", "evidence": "declared"}
        )
        assert "fraud" in _walked(walked)
        near = await _tool(mcp, "find_changes_near", {"node": "checkout", "evidence": "observed"})
        assert near["evidence"] == "observed"

        node = await mcp.call_tool("get_node", {"node": "payments"})
        text = node.content[0].text  # type: ignore[union-attr]
        assert "Owners: team-payments (catalog-info.yaml:7 (backstage, catalog))" in text
        assert "declared only 2" in text
        assert "payments -calls-> fraud [compose] (declared at compose.yaml:12)" in text

        refused = await mcp.call_tool("get_impact", {"node": "fraud", "evidence": "hearsay"})
        assert refused.is_error
