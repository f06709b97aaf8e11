"""A watched cluster read into the declared graph, on SQLite and PostgreSQL: the
microservices-demo manifests served by a loopback Kubernetes API (tests/kube_api.py) become
the graph's nodes and edges within seconds, with the `cluster` source; a Deployment deleted
in the cluster goes away; traced services join the cluster's nodes; `env_map` puts each
namespace's nodes in its environment; deleting the integration forgets what it declared."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from tests.conftest import Tenant
from tests.factories import principal_for
from tests.graph.test_traces_to_graph import Fleet, http_call
from tests.ingest.test_manifests import DEMO, DEMO_EDGES, DEMO_NODES
from tests.integrations.support import SECRET_KEY
from tests.integrations.test_cluster_watches import make_cluster, supervisor, until
from tests.kube_api import KubeApi, kubeconfig
from trailmap import clock
from trailmap.app import create_app
from trailmap.graph.ask.snapshots import snapshot_for
from trailmap.graph.learn.declared import declared_sources
from trailmap.graph.learn.pairing import ingest_traces
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Node
from trailmap.ingest.cluster_graph import ClusterGraphOptions, declared_from_cluster
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

_STALE_US = 7 * 24 * 3_600_000_000
_SECRET_PASSWORD = "s3cr3t-Pa55word"


def demo_objects(namespace: str) -> list[dict[str, Any]]:
    """The demo's Deployments and Services, applied to `namespace` as `kubectl apply -n`."""
    found: list[dict[str, Any]] = []
    for path in sorted((DEMO / "kubernetes-manifests").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("Deployment", "Service"):
                obj = copy.deepcopy(doc)
                obj["metadata"]["namespace"] = namespace
                found.append(obj)
    return found


def load(cluster: KubeApi, objects: list[dict[str, Any]]) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    for kind, items in by_kind.items():
        cluster.load(kind, items)


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def extras(ns: str) -> list[dict[str, Any]]:
    """What the demo does not have: a nightly CronJob whose database URL is in a Secret
    (`secretKeyRef`), a Job reading its peers from a ConfigMap (`envFrom`), an Ingress, and
    the cluster's own DNS in kube-system (not the organization's service)."""
    pod = {"restartPolicy": "Never"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "report-db", "namespace": ns},
            "type": "Opaque",
            "stringData": {},
            "data": {
                "DATABASE_URL": _b64(f"postgres://report:{_SECRET_PASSWORD}@orders-db:5432/x")
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "reindex-peers", "namespace": ns},
            "data": {"CATALOG_ADDR": "productcatalogservice:3550"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "orders-db", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "orders-db"}},
                "template": {
                    "metadata": {"labels": {"app": "orders-db"}},
                    "spec": {"containers": [{"name": "db", "image": "postgres:16"}]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "orders-db", "namespace": ns},
            "spec": {"selector": {"app": "orders-db"}, "ports": [{"port": 5432}]},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly-report", "namespace": ns},
            "spec": {
                "schedule": "0 2 * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                **pod,
                                "containers": [
                                    {
                                        "name": "report",
                                        "image": "ghcr.io/example/report:1",
                                        "env": [
                                            {
                                                "name": "DATABASE_URL",
                                                "valueFrom": {
                                                    "secretKeyRef": {
                                                        "name": "report-db",
                                                        "key": "DATABASE_URL",
                                                    }
                                                },
                                            }
                                        ],
                                    }
                                ],
                            }
                        }
                    }
                },
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "reindex", "namespace": ns},
            "spec": {
                "template": {
                    "spec": {
                        **pod,
                        "containers": [
                            {
                                "name": "reindex",
                                "image": "ghcr.io/example/reindex:1",
                                "envFrom": [{"configMapRef": {"name": "reindex-peers"}}],
                            }
                        ],
                    }
                }
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": ns},
            "spec": {
                "rules": [
                    {
                        "host": "shop.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "frontend", "port": {"number": 80}}
                                    },
                                }
                            ]
                        },
                    }
                ]
            },
        },
    ]


def _b64(text: str) -> str:
    import base64  # noqa: PLC0415

    return base64.b64encode(text.encode()).decode()


def coredns() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-dns"}},
                "spec": {"containers": [{"name": "coredns", "image": "coredns/coredns:1.11"}]},
            },
        },
    }


@pytest.fixture
async def cluster() -> AsyncIterator[KubeApi]:
    api = KubeApi()
    load(
        api,
        [
            namespace("shop"),
            namespace("kube-system"),
            *demo_objects("shop"),
            *extras("shop"),
            coredns(),
        ],
    )
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


async def snapshot(db: Database, tenant: Tenant) -> GraphSnapshot:
    return await snapshot_for(db, tenant.org.id, at_us=None, stale_after_us=_STALE_US)


def node(snapshot: GraphSnapshot, name: str, environment: str | None = None) -> Node | None:
    found = [
        n
        for n in snapshot.nodes
        if n.name == name and (environment is None or n.environment == environment)
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def edges(snapshot: GraphSnapshot) -> set[tuple[str, str, str]]:
    names = {n.id: n.name for n in snapshot.nodes}
    return {(names[e.source_id], names[e.target_id], e.kind) for e in snapshot.edges}


async def running(db: Database, **options: Any) -> tuple[Any, asyncio.Task[None]]:
    one = supervisor(
        db,
        "node-a",
        graph_seconds=options.pop("graph_seconds", 30.0),
        graph_min_seconds=0.05,
        **options,
    )
    return one, asyncio.create_task(one.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def http(database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        secret_key=SECRET_KEY,
        kubernetes_poll_seconds=0,
        backstage_poll_seconds=0,
    )
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_a_cluster_s_workloads_services_and_namespaces_are_in_the_graph_within_seconds(
    cluster: KubeApi, db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
    _one, task = await running(db)
    started = time.monotonic()
    try:
        await until(lambda: _has(db, tenant, "frontend"))
        took = time.monotonic() - started
        graph = await snapshot(db, tenant)
    finally:
        await stop(task)
    assert took < 5, took
    # The demo's workloads as the manifests reader reads them (tests/ingest/test_manifests.py),
    # in the environment env_map gives their namespace (make_cluster: default -> production;
    # `shop` is unmapped, so the organization's main one, `default` with nothing traced).
    for name, (kind, technology) in DEMO_NODES.items():
        found = node(graph, name)
        assert found is not None, name
        assert (found.kind, found.attributes.get("technology"), found.sources) == (
            kind,
            technology,
            ("cluster",),
        ), name
    assert node(graph, "namespace/shop") is not None
    assert node(graph, "orders-db").kind == "database"  # type: ignore[union-attr]
    assert node(graph, "nightly-report") is not None  # a CronJob
    assert node(graph, "reindex") is not None  # a Job
    assert node(graph, "coredns") is None  # kube-system is the cluster's, not the org's
    assert node(graph, "namespace/kube-system") is None
    declared = edges(graph)
    assert DEMO_EDGES - {("loadgenerator", "frontend", "starts_after")} <= declared
    assert ("frontend", "namespace/shop", "runs_in") in declared
    assert ("shop.example.com/", "frontend", "exposes") in declared  # the Ingress
    # A Secret's DSN (secretKeyRef) and a ConfigMap's address (envFrom) are dependencies.
    assert ("nightly-report", "orders-db", "reads_writes") in declared
    assert ("reindex", "productcatalogservice", "calls") in declared
    # Evidence names the object, never a value.
    frontend = node(graph, "frontend")
    assert frontend is not None
    evidence = frontend.attributes["declared"]
    assert "Deployment/shop/frontend" in orjson.dumps(evidence).decode()
    assert (
        _SECRET_PASSWORD
        not in orjson.dumps(
            [n.attributes for n in graph.nodes] + [e.attributes for e in graph.edges]
        ).decode()
    )
    sources = await declared_sources(db, tenant.org.id)
    assert [(s["kind"], s["label"], s["error"]) for s in sources] == [
        ("kubernetes", "prod-cluster", None)
    ]
    # Over REST: the node, with its sources.
    answer = await http.get(
        "/api/v1/graph/nodes", params={"query": "frontend"}, headers=tenant.auth()
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["nodes"][0]["name"] == "frontend"
    answer = await http.get("/api/v1/graph/nodes/frontend", headers=tenant.auth())
    assert answer.status_code == 200, answer.text
    assert "Deployment/shop/frontend" in answer.text


async def _has(db: Database, tenant: Tenant, name: str, environment: str | None = None) -> bool:
    return node(await snapshot(db, tenant), name, environment) is not None


async def test_a_deployment_deleted_in_the_cluster_goes_from_the_graph_and_a_new_one_comes(
    cluster: KubeApi, db: Database, tenant: Tenant
) -> None:
    await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
    # Read again on a watch event only: the periodic reading is far off.
    _one, task = await running(db, graph_seconds=600.0)
    try:
        await until(lambda: _has(db, tenant, "paymentservice"))
        before = clock.now_us()
        await cluster.delete("Deployment", "shop", "paymentservice")
        await until(lambda: _gone(db, tenant, "paymentservice"))
        added = copy.deepcopy(
            next(o for o in demo_objects("shop") if o["metadata"]["name"] == "emailservice")
        )
        added["metadata"]["name"] = "giftcardservice"
        added["metadata"]["labels"] = {"app": "giftcardservice"}
        added["spec"]["template"]["metadata"]["labels"] = {"app": "giftcardservice"}
        added["spec"]["selector"] = {"matchLabels": {"app": "giftcardservice"}}
        await cluster.apply(added)
        await until(lambda: _has(db, tenant, "giftcardservice"))
    finally:
        await stop(task)
    # The graph as it was before the deletion still holds it.
    earlier = await snapshot_for(db, tenant.org.id, at_us=before, stale_after_us=_STALE_US)
    assert node(earlier, "paymentservice") is not None


async def _gone(db: Database, tenant: Tenant, name: str) -> bool:
    return not await _has(db, tenant, name)


async def test_traced_services_join_the_cluster_s_nodes_by_name_and_otel_service_name(
    cluster: KubeApi, db: Database, tenant: Tenant
) -> None:
    checkout = next(
        o
        for o in demo_objects("shop")
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "checkoutservice"
    )
    checkout["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "OTEL_SERVICE_NAME", "value": "checkout"}
    )
    await cluster.apply(checkout)
    fleet = Fleet({"frontend": "1.0", "checkout": "1.0", "cartservice": "1.0"}, "production")
    try:
        with (
            http_call(
                fleet.tracer("frontend"), fleet.tracer("checkout"), "PlaceOrder", peer="checkout"
            ),
            http_call(
                fleet.tracer("checkout"), fleet.tracer("cartservice"), "GetCart", peer="cart"
            ),
        ):
            pass
        for service in ("frontend", "checkout", "cartservice"):
            result = await ingest_traces(
                db, principal_for(tenant.org), encode_spans(fleet.take(service))
            )
            assert result.rejected_spans == 0
    finally:
        fleet.shutdown()
    await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
    _one, task = await running(db)
    try:
        await until(lambda: _has(db, tenant, "paymentservice"))
        graph = await snapshot(db, tenant)
    finally:
        await stop(task)
    # Traced in `production`, the organization's main environment, where the cluster's
    # unmapped namespace `shop` goes: one node each, traced and declared.
    for name in ("frontend", "checkout", "cartservice"):
        found = node(graph, name)
        assert found is not None, name
        assert set(found.sources) == {"otel", "cluster"}, (name, found.sources)
        assert found.environment == "production"
    assert node(graph, "checkoutservice") is None  # joined under its traced name
    both = {e for e in edges(graph) if e[:2] == ("frontend", "checkout")}
    assert both == {("frontend", "checkout", "calls")}
    assert node(graph, "paymentservice").sources == ("cluster",)  # type: ignore[union-attr]


async def test_env_map_puts_each_namespace_s_nodes_in_its_environment(
    db: Database, tenant: Tenant
) -> None:
    cluster = KubeApi()
    load(
        cluster,
        [
            namespace("shop"),
            namespace("shop-staging"),
            namespace("tools"),
            *demo_objects("shop"),
            *demo_objects("shop-staging"),
            *[o for o in demo_objects("tools") if o["metadata"]["name"] == "loadgenerator"],
        ],
    )
    await cluster.start()
    try:
        integration = await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
        from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
        from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
        from trailmap.integrations.integrations import update_integration  # noqa: PLC0415

        await update_integration(
            db,
            tenant.org.id,
            integration.id,
            {
                "settings": {
                    "env_map": {"shop": "production", "shop-staging": "staging"},
                    "default_env": "internal",
                }
            },
            who=OPERATOR_AUTHORITY,
            by=OPERATOR,
        )
        _one, task = await running(db)
        try:
            await until(lambda: _has(db, tenant, "redis-cart", "staging"))
            await until(lambda: _has(db, tenant, "loadgenerator", "internal"))
            graph = await snapshot(db, tenant)
        finally:
            await stop(task)
    finally:
        await cluster.stop()
    for env in ("production", "staging"):
        assert node(graph, "redis-cart", env) is not None
        assert node(graph, "cartservice", env) is not None
        assert node(graph, f"namespace/{'shop' if env == 'production' else 'shop-staging'}", env)
    assert node(graph, "namespace/tools", "internal") is not None
    ids = {(n.name, n.environment): n.id for n in graph.nodes}
    reads = {(e.source_id, e.target_id) for e in graph.edges if e.kind == "reads_writes"}
    for env in ("production", "staging"):
        assert (ids[("cartservice", env)], ids[("redis-cart", env)]) in reads


async def test_deleting_the_integration_forgets_what_the_cluster_declared(
    cluster: KubeApi, db: Database, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    integration = await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
    _one, task = await running(db)
    try:
        await until(lambda: _has(db, tenant, "frontend"))
    finally:
        await stop(task)
    answer = await http.delete(
        f"/api/v1/integrations/{integration.id}", headers=tenant.admin_auth()
    )
    assert answer.status_code == 200, answer.text
    graph = await snapshot(db, tenant)
    assert node(graph, "frontend") is None
    assert await declared_sources(db, tenant.org.id) == []


async def test_a_cluster_that_refuses_the_reading_says_why_on_the_source_and_keeps_the_graph(
    cluster: KubeApi, db: Database, tenant: Tenant
) -> None:
    await make_cluster(db, tenant, kubeconfig(cluster.url, cluster.token))
    cluster.forbidden = {"ingresses", "secrets"}  # RBAC without these: read without them
    _one, task = await running(db, graph_seconds=0.2)
    try:
        await until(lambda: _has(db, tenant, "frontend"))
        sources = await declared_sources(db, tenant.org.id)
        assert sources[0]["error"] is None
        assert {
            "file": "Ingress",
            "reason": "listing Ingress: 403 cannot list resource 'ingresses'",
        } in sources[0]["skipped"]
        graph = await snapshot(db, tenant)
        # Without the Secret, the CronJob's DSN is unknown: no edge, nothing made up.
        assert ("nightly-report", "orders-db", "reads_writes") not in edges(graph)
        cluster.token = "rotated"
        await until(lambda: _source_error(db, tenant))
    finally:
        await stop(task)
    error = await _source_error(db, tenant)
    assert "401" in str(error)
    assert await _has(db, tenant, "frontend")  # what it declared before stays


async def _source_error(db: Database, tenant: Tenant) -> str | None:
    sources = await declared_sources(db, tenant.org.id)
    return sources[0]["error"] if sources else None


def test_two_environments_keep_two_nodes_of_one_name_and_unmapped_namespaces_are_the_main_one() -> (
    None
):
    objects = [*demo_objects("a"), *demo_objects("b"), *demo_objects("c")]
    declared = declared_from_cluster(objects, ClusterGraphOptions(env_map={"a": "prod", "b": "qa"}))
    envs = sorted(
        {n.attributes.get("environment") for d in declared for n in d.nodes.values()},
        key=str,
    )
    assert envs == [None, "prod", "qa"]
    assert sum("redis-cart" in d.nodes for d in declared) == 3
