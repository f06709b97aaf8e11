"""Declarations recorded beside traces: the shop's services, traced with the OpenTelemetry SDK
(tests/graph/test_traces_to_graph.py), and a Compose file that declares them under other names
become one graph: the same nodes, each with its sources and evidence; what only the file
declares is there as declared; a later reading that drops a declaration makes it go away, and
the graph as it was before still holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.graph import test_graph_api
from tests.graph.test_graph_api import Shop
from trailmap import clock
from trailmap.accounts.organizations import get_org
from trailmap.graph.ask.snapshots import snapshot_for
from trailmap.graph.declared import Declared, Evidence
from trailmap.graph.learn.declared import (
    DeclaredSource,
    declared_sources,
    forget_source,
    record_declared,
)
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Node
from trailmap.ingest.compose import read_compose

pytestmark = pytest.mark.anyio

# The shop's traced graph, built once per module and database (as in test_graph_api).
shop_database = test_graph_api.shop_database
shop = test_graph_api.shop

_STALE_US = 7 * 24 * 3_600_000_000

COMPOSE = """\
services:
  checkout-svc:
    build: ./checkout
    environment:
      OTEL_SERVICE_NAME: checkout
      PAYMENTS_URL: http://payments-svc:8080/charge
      ORDERS_ADDR: orders-svc:9000
      REDIS_ADDR: redis:6379
  payments-svc:
    build: ./payments
    environment:
      OTEL_SERVICE_NAME: payments
      FRAUD_URL: http://fraud:8000/score
  orders-svc:
    build: ./orders
    environment:
      OTEL_SERVICE_NAME: orders
      DATABASE_URL: postgres://orders@orders-db:5432/orders
  fraud:
    image: ghcr.io/example/fraud:1.2
  redis:
    image: redis:7
  orders-db:
    image: postgres:16
"""


async def _snapshot(shop: Shop, org_id: str, at_us: int | None = None) -> GraphSnapshot:
    return await snapshot_for(shop.db, org_id, at_us=at_us, stale_after_us=_STALE_US)


def _named(snapshot: GraphSnapshot, name: str) -> Node:
    found = [n for n in snapshot.nodes if n.name == name]
    assert len(found) == 1, [n.name for n in snapshot.nodes]
    return found[0]


def _edge_sources(snapshot: GraphSnapshot, source: str, target: str) -> tuple[str, ...] | None:
    ids = {n.name: n.id for n in snapshot.nodes}
    for edge in snapshot.edges:
        if (edge.source_id, edge.target_id) == (ids.get(source), ids.get(target)):
            return edge.sources
    return None


async def _shop_org(shop: Shop) -> str:
    return (await get_org(shop.db, "shop")).id


async def test_a_declared_service_and_its_traced_self_are_one_node(
    shop: Shop, tmp_path: Path
) -> None:
    org_id = await _shop_org(shop)
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    before = await _snapshot(shop, org_id)
    observed_checkout = _named(before, "checkout")
    source = DeclaredSource(key="repo-1", kind="repository", label="shop repo", revision="abc123")

    recorded = await record_declared(shop.db, org_id, source, read_compose(tmp_path))
    assert recorded.removed == 0
    assert recorded.added == recorded.nodes + recorded.edges
    graph = await _snapshot(shop, org_id)

    # Joined on OTEL_SERVICE_NAME: no second checkout, payments or orders.
    checkout = _named(graph, "checkout")
    assert checkout.id == observed_checkout.id
    assert checkout.sources == ("otel", "compose")
    assert "checkout-svc" in checkout.attributes["declared"]["names"]
    evidence = checkout.attributes["declared"]["evidence"][0]
    assert evidence["file"] == "compose.yaml"
    assert evidence["revision"] == "abc123"
    assert not [n for n in graph.nodes if n.name.endswith("-svc")]
    # Joined on the name itself: the traced orders-db and redis are the declared ones.
    assert _named(graph, "orders-db").sources == ("otel", "compose")
    assert _named(graph, "redis").sources == ("otel", "compose")
    # A dependency both traced and declared has both sources; one never traced is declared.
    assert _edge_sources(graph, "checkout", "payments") == ("otel", "compose")
    assert _edge_sources(graph, "orders", "orders-db") == ("otel", "compose")
    fraud = _named(graph, "fraud")
    assert fraud.sources == ("compose",)
    assert _edge_sources(graph, "payments", "fraud") == ("compose",)
    # Traced but not declared stays observed only.
    assert _named(graph, "gateway").sources == ("otel",)
    assert _edge_sources(graph, "gateway", "frontend") == ("otel",)
    assert len(graph.nodes) == len(before.nodes) + 1

    [listed] = await declared_sources(shop.db, org_id)
    assert (listed["label"], listed["revision"], listed["error"]) == ("shop repo", "abc123", None)

    # A later commit no longer declares fraud: it goes away now, and the graph as it was
    # before that reading still holds it.
    read_at = clock.now_us()
    (tmp_path / "compose.yaml").write_text(
        COMPOSE.replace("      FRAUD_URL: http://fraud:8000/score\n", "").replace(
            "  fraud:\n    image: ghcr.io/example/fraud:1.2\n", ""
        )
    )
    later = DeclaredSource(key="repo-1", kind="repository", label="shop repo", revision="def456")
    again = await record_declared(shop.db, org_id, later, read_compose(tmp_path))
    assert again.removed == 2
    assert again.added == 0
    after = await _snapshot(shop, org_id)
    assert "fraud" not in {n.name for n in after.nodes}
    assert _edge_sources(after, "checkout", "payments") == ("otel", "compose")
    earlier = await _snapshot(shop, org_id, at_us=read_at)
    assert _edge_sources(earlier, "payments", "fraud") == ("compose",)

    # The source deleted: every declaration goes, the traced graph stays whole.
    await forget_source(shop.db, org_id, "repo-1")
    gone = await _snapshot(shop, org_id)
    assert _named(gone, "checkout").sources == ("otel",)
    assert {n.id for n in gone.nodes} == {n.id for n in before.nodes}
    assert await declared_sources(shop.db, org_id) == []


async def test_declarations_of_two_sources_join_each_other_by_alias(
    shop: Shop, tmp_path: Path
) -> None:
    """A catalog names a service `ledger`; a Compose file declares `ledger-api` with
    OTEL_SERVICE_NAME=ledger; neither is traced: one node, with both sources."""
    org_id = await _shop_org(shop)
    (tmp_path / "compose.yaml").write_text(
        "services:\n  ledger-api:\n    image: example/ledger\n"
        "    environment:\n      OTEL_SERVICE_NAME: ledger\n"
        "      DB: postgres://l@ledger-db/ledger\n  ledger-db:\n    image: postgres:16\n"
    )
    catalog = Declared()
    catalog.node("ledger", "service", Evidence("backstage", "catalog-info.yaml", 3, "Component"))
    catalog.node("team-money", "team", Evidence("backstage", "catalog-info.yaml", 7, "owner"))
    catalog.edge(
        "ledger", "team-money", "owned_by", Evidence("backstage", "catalog-info.yaml", 7, None)
    )
    repo = DeclaredSource(key="repo-2", kind="repository", label="ledger repo")
    cat = DeclaredSource(key="cat-1", kind="backstage", label="catalog")
    await record_declared(shop.db, org_id, repo, read_compose(tmp_path))
    await record_declared(shop.db, org_id, cat, catalog)
    graph = await _snapshot(shop, org_id)
    ledgers = [n for n in graph.nodes if n.name.startswith("ledger") and n.kind == "service"]
    assert len(ledgers) == 1
    assert ledgers[0].sources == ("backstage", "compose")
    assert ledgers[0].environment == "production"  # where the traced services are
    assert _edge_sources(graph, ledgers[0].name, "team-money") == ("backstage",)
    assert _edge_sources(graph, ledgers[0].name, "ledger-db") == ("compose",)
    await forget_source(shop.db, org_id, "repo-2")
    await forget_source(shop.db, org_id, "cat-1")
