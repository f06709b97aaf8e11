"""The Helm values and Skaffold readers on the microservices-demo chart values and Skaffold
configuration, against what was written by hand from those files."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.ingest.forges import mutations
from tests.upstream import UPSTREAM
from trailmap.graph.declared import Declared
from trailmap.ingest.helm import read_helm_values, read_skaffold
from trailmap.ingest.manifests import read_manifests

DEMO = UPSTREAM / "repositories" / "microservices-demo"

# helm-chart/values.yaml: eleven blocks with `create: true` and a `name`
# (shoppingAssistantService has `create: false`), and `cartDatabase` (type redis,
# inClusterRedis.name redis-cart, connectionString "redis-cart:6379"), the cart's store.
VALUES_NODES = {
    "adservice": "service",
    "cartservice": "service",
    "checkoutservice": "service",
    "currencyservice": "service",
    "emailservice": "service",
    "frontend": "service",
    "loadgenerator": "service",
    "paymentservice": "service",
    "productcatalogservice": "service",
    "recommendationservice": "service",
    "shippingservice": "service",
    "redis-cart": "cache",
}

# skaffold.yaml: the `app` config's eleven artifacts and the `loadgenerator` config's one.
SKAFFOLD_CONTEXTS = {
    "emailservice": "src/emailservice",
    "productcatalogservice": "src/productcatalogservice",
    "recommendationservice": "src/recommendationservice",
    "shoppingassistantservice": "src/shoppingassistantservice",
    "shippingservice": "src/shippingservice",
    "checkoutservice": "src/checkoutservice",
    "paymentservice": "src/paymentservice",
    "currencyservice": "src/currencyservice",
    "cartservice": "src/cartservice/src",
    "frontend": "src/frontend",
    "adservice": "src/adservice",
    "loadgenerator": "src/loadgenerator",
}


def test_the_demo_chart_values_declare_its_services_and_the_carts_redis() -> None:
    declared = read_helm_values(DEMO)
    assert {n.name: n.kind for n in declared.nodes.values()} == VALUES_NODES
    assert declared.nodes["redis-cart"].technology == "redis"
    assert set(declared.edges) == {("cartservice", "redis-cart", "reads_writes")}
    (evidence,) = declared.edges[("cartservice", "redis-cart", "reads_writes")].evidence
    assert (evidence.file, evidence.line) == ("helm-chart/values.yaml", 200)
    assert declared.skipped == []


def test_the_chart_values_agree_with_the_manifests_on_the_carts_store() -> None:
    manifests = read_manifests(DEMO)
    values = read_helm_values(DEMO)
    assert set(values.nodes) <= set(manifests.nodes)
    assert values.dependencies() <= manifests.dependencies()


def test_skaffold_artifacts_become_image_and_build_context_attributes() -> None:
    declared = read_skaffold(DEMO)
    assert {n.name: n.attributes["build_context"] for n in declared.nodes.values()} == (
        SKAFFOLD_CONTEXTS
    )
    assert declared.nodes["cartservice"].attributes["image"] == "cartservice"
    assert declared.edges == {}


def test_chart_metadata_and_address_values_are_read(tmp_path: Path) -> None:
    chart = tmp_path / "charts" / "shop"
    chart.mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: shop\nversion: 1.4.0\nappVersion: '2.0'\n"
    )
    (chart / "values.yaml").write_text(
        "orders:\n  name: orders\n  env:\n    PAYMENTS_URL: http://payments:8080\n"
        "    DB_PASSWORD: hunter2\n"
        "payments:\n  name: payments\n"
        "ordersDatabase:\n  type: postgresql\n  connectionString: postgres://u:pw@orders-pg:5432/o\n"
        "legacy:\n  name: legacy\n  create: false\n"
    )
    (chart / "templates").mkdir()
    (chart / "templates" / "deployment.yaml").write_text("kind: {{ .Values.kind }}\n")
    declared = read_helm_values(tmp_path)
    assert {n.name: n.kind for n in declared.nodes.values()} == {
        "orders": "service",
        "payments": "service",
        "orders-pg": "database",
    }
    assert declared.nodes["orders"].attributes == {
        "helm_chart": "shop",
        "chart_version": "1.4.0",
        "app_version": "2.0",
    }
    assert set(declared.edges) == {
        ("orders", "payments", "calls"),
        ("orders", "orders-pg", "reads_writes"),
    }
    assert "hunter2" not in repr(declared)
    assert "pw@" not in repr(declared)


def test_malformed_values_never_raise(tmp_path: Path) -> None:
    values = yaml.safe_load((DEMO / "helm-chart" / "values.yaml").read_text())
    small = {
        "cartService": {"create": True, "name": "cartservice"},
        "cartDatabase": values["cartDatabase"],
        "frontend": {"name": "frontend", "env": {"CART_ADDR": "cartservice:7070"}},
    }
    count = 0
    for label, damaged in mutations(small):
        try:
            text = yaml.safe_dump(damaged)
        except yaml.YAMLError:
            continue
        (tmp_path / "values.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        declared = read_helm_values(tmp_path)
        assert isinstance(declared, Declared), label
        count += 1
    assert count > 100


def test_a_hostile_values_file_is_skipped_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("a: &a [1, 2]\n" + "b: " + "[" * 100 + "]" * 100 + "\n")
    declared = read_helm_values(tmp_path)
    assert [(s.file, s.reason) for s in declared.skipped] == [
        ("values.yaml", "nested deeper than 64 levels")
    ]
