"""The Kubernetes manifests reader on the microservices-demo manifests (against a graph
written by hand from them), on Kustomize bases, and on hostile and malformed files."""

from __future__ import annotations

import base64
import copy
import time
from pathlib import Path
from typing import Any

import yaml

from tests.ingest.forges import mutations
from tests.upstream import UPSTREAM
from trailmap.graph.declared import Declared
from trailmap.ingest.manifests import MAX_FILE_BYTES, hosts_in, read_manifests, read_objects

DEMO = UPSTREAM / "repositories" / "microservices-demo"

# Written by hand from kubernetes-manifests/*.yaml: each workload's node (named by its `app`
# label), what its image says it is, and the peers its containers' `env` values name.
# frontend's SHOPPING_ASSISTANT_SERVICE_ADDR names `shoppingassistantservice:80`, which no
# manifest here defines (it comes with a Kustomize component), so it is no edge.
DEMO_NODES: dict[str, tuple[str, str | None]] = {
    "adservice": ("service", None),
    "cartservice": ("service", None),
    "checkoutservice": ("service", None),
    "currencyservice": ("service", None),
    "emailservice": ("service", None),
    "frontend": ("service", None),
    "loadgenerator": ("service", None),
    "paymentservice": ("service", None),
    "productcatalogservice": ("service", None),
    "recommendationservice": ("service", None),
    "shippingservice": ("service", None),
    "redis-cart": ("cache", "redis"),  # image redis:alpine
}
DEMO_EDGES = {
    # frontend.yaml: PRODUCT_CATALOG_, CURRENCY_, CART_, RECOMMENDATION_, SHIPPING_,
    # CHECKOUT_ and AD_SERVICE_ADDR
    ("frontend", "productcatalogservice", "calls"),
    ("frontend", "currencyservice", "calls"),
    ("frontend", "cartservice", "calls"),
    ("frontend", "recommendationservice", "calls"),
    ("frontend", "shippingservice", "calls"),
    ("frontend", "checkoutservice", "calls"),
    ("frontend", "adservice", "calls"),
    # checkoutservice.yaml: PRODUCT_CATALOG_, SHIPPING_, PAYMENT_, EMAIL_, CURRENCY_, CART_
    ("checkoutservice", "productcatalogservice", "calls"),
    ("checkoutservice", "shippingservice", "calls"),
    ("checkoutservice", "paymentservice", "calls"),
    ("checkoutservice", "emailservice", "calls"),
    ("checkoutservice", "currencyservice", "calls"),
    ("checkoutservice", "cartservice", "calls"),
    # cartservice.yaml: REDIS_ADDR is redis-cart:6379
    ("cartservice", "redis-cart", "reads_writes"),
    # recommendationservice.yaml names productcatalogservice:3550
    ("recommendationservice", "productcatalogservice", "calls"),
    # loadgenerator.yaml: FRONTEND_ADDR "frontend:80"; the init container `frontend-check`
    # wgets http://${FRONTEND_ADDR} until it answers
    ("loadgenerator", "frontend", "calls"),
    ("loadgenerator", "frontend", "starts_after"),
}


def _recall_precision(
    found: set[tuple[str, str]], truth: set[tuple[str, str]]
) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / len(truth), hits / len(found) if found else 0.0


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _evidence_text(declared: Declared) -> str:
    texts = [repr(ev) for n in declared.nodes.values() for ev in n.evidence]
    texts += [repr(ev) for e in declared.edges.values() for ev in e.evidence]
    return "\n".join(texts) + repr(declared.skipped)


def test_the_demo_manifests_declare_the_graph_written_by_hand() -> None:
    declared = read_manifests(DEMO)
    nodes = {n.name: (n.kind, n.technology) for n in declared.nodes.values()}
    assert nodes == DEMO_NODES
    assert set(declared.edges) == DEMO_EDGES
    assert declared.skipped == []
    assert declared.nodes["frontend"].aliases == {"frontend-external"}
    assert declared.nodes["redis-cart"].attributes["image"] == "redis:alpine"


def test_recall_and_precision_of_the_demo_dependencies_are_at_least_nine_tenths() -> None:
    truth = {(s, t) for s, t, k in DEMO_EDGES if k in ("calls", "reads_writes")}
    recall, precision = _recall_precision(read_manifests(DEMO).dependencies(), truth)
    assert recall >= 0.9
    assert precision >= 0.9
    assert (recall, precision) == (1.0, 1.0)


def test_each_demo_edge_says_which_variable_and_file_declare_it() -> None:
    declared = read_manifests(DEMO)
    edge = declared.edges[("checkoutservice", "paymentservice", "calls")]
    (evidence,) = edge.evidence
    assert evidence.reader == "kubernetes"
    assert evidence.file == "kubernetes-manifests/checkoutservice.yaml"
    assert evidence.detail == "container server env PAYMENT_SERVICE_ADDR names paymentservice"
    waits = declared.edges[("loadgenerator", "frontend", "starts_after")].evidence
    assert waits[0].detail == "init container frontend-check waits for frontend"


def test_hosts_are_read_from_urls_dsns_host_ports_and_lists() -> None:
    assert hosts_in("http://user:pw@orders.shop.svc.cluster.local:8080/x") == [
        "orders.shop.svc.cluster.local"
    ]
    assert hosts_in("mongodb://a:27017,b:27017/db") == ["a", "b"]
    assert hosts_in("jdbc:postgresql://pg:5432/app") == ["pg"]
    assert hosts_in("kafka-0:9092, kafka-1:9092") == ["kafka-0", "kafka-1"]
    assert hosts_in("redis-cart") == ["redis-cart"]
    assert hosts_in("8080") == []
    assert hosts_in("true") == []


_CACHE_URL = base64.b64encode(b"redis://:hunter2@sessions.shop.svc.cluster.local:6379/0").decode()
SHOP = {
    "overlay/kustomization.yaml": """
namespace: shop
namePrefix: dev-
resources:
  - api.yaml
  - db.yaml
  - https://github.com/example/base?ref=v1
  - ../../outside.yaml
configMapGenerator:
  - name: api-config
    literals:
      - DATABASE_URL=postgres://app:s3cretpw@orders-db:5432/orders
      - LOG_LEVEL=debug
patches:
  - path: patch.yaml
""",
    "overlay/api.yaml": """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app.kubernetes.io/name: orders-api}
spec:
  template:
    metadata:
      labels: {app.kubernetes.io/name: orders-api, tier: web}
    spec:
      initContainers:
        - name: wait-db
          image: busybox
          command: ["sh", "-c", "until nc -z orders-db 5432; do sleep 1; done"]
      containers:
        - name: api
          image: ghcr.io/example/orders-api:1.2
          envFrom:
            - configMapRef: {name: api-config}
          env:
            - name: OTEL_SERVICE_NAME
              value: orders
            - name: PAYMENTS_URL
              value: https://payments.example.com/v1
            - name: CACHE_URL
              valueFrom:
                secretKeyRef: {name: api-secrets, key: cache}
---
apiVersion: v1
kind: Secret
metadata: {name: api-secrets}
data:
  cache: "@CACHE@"
---
apiVersion: v1
kind: Service
metadata: {name: payments}
spec:
  type: ExternalName
  externalName: payments.example.com
---
apiVersion: v1
kind: Service
metadata: {name: orders-api}
spec:
  selector: {app.kubernetes.io/name: orders-api}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
    - host: shop.example.com
      http:
        paths:
          - path: /api
            pathType: Prefix
            backend:
              service: {name: orders-api, port: {number: 80}}
""".replace("@CACHE@", _CACHE_URL),
    "overlay/db.yaml": """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: orders-db}
spec:
  template:
    metadata: {labels: {app: orders-db}}
    spec:
      containers: [{name: pg, image: "postgres:16"}]
---
apiVersion: v1
kind: Service
metadata: {name: orders-db}
spec: {selector: {app: orders-db}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: sessions}
spec:
  template:
    metadata: {labels: {app: sessions}}
    spec:
      containers: [{name: redis, image: "docker.io/library/valkey:8"}]
---
apiVersion: v1
kind: Service
metadata: {name: sessions, namespace: shop}
spec: {selector: {app: sessions}}
""",
}


def test_a_kustomize_overlay_is_read_with_its_namespace_prefix_and_generated_configmap(
    tmp_path: Path,
) -> None:
    (tmp_path / "outside.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n")
    root = _write(tmp_path / "repo", SHOP)
    declared = read_manifests(root)
    api = declared.nodes["orders-api"]
    assert api.aliases == {"dev-api", "dev-orders-api", "orders"}
    assert declared.nodes["orders-db"].kind == "database"
    assert declared.nodes["orders-db"].technology == "postgres"
    assert declared.nodes["sessions"].kind == "cache"
    assert declared.nodes["payments.example.com"].kind == "external_api"
    assert declared.nodes["namespace/shop"].kind == "namespace"
    assert declared.nodes["shop.example.com/api"].kind == "endpoint"
    assert set(declared.edges) >= {
        ("orders-api", "orders-db", "reads_writes"),  # DATABASE_URL, from the generator
        ("orders-api", "sessions", "reads_writes"),  # CACHE_URL, from a Secret
        ("orders-api", "payments.example.com", "calls"),  # through the ExternalName
        ("orders-api", "orders-db", "starts_after"),  # until nc -z orders-db 5432
        ("shop.example.com/api", "orders-api", "exposes"),
        ("orders-api", "namespace/shop", "runs_in"),
    }
    reasons = {s.reason for s in declared.skipped}
    assert "remote base https://github.com/example/base?ref=v1 not fetched" in reasons
    assert "resource ../../outside.yaml is outside the repository" in reasons
    assert "patches not applied" in reasons


def test_no_secret_value_reaches_the_evidence(tmp_path: Path) -> None:
    declared = read_manifests(_write(tmp_path, SHOP))
    text = _evidence_text(declared)
    assert "s3cretpw" not in text
    assert "hunter2" not in text
    details = {
        ev.detail for ev in declared.edges[("orders-api", "sessions", "reads_writes")].evidence
    }
    assert details == {"container api env CACHE_URL names sessions.shop.svc.cluster.local"}


def test_a_yaml_bomb_is_refused_fast_and_its_neighbours_are_read(tmp_path: Path) -> None:
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n" + "\n".join(
        "  " + line for line in levels
    )
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "deep.yaml").write_text("apiVersion: v1\nkind: List\nitems: " + "[" * 5000)
    (tmp_path / "ok.yaml").write_text(
        (DEMO / "kubernetes-manifests" / "adservice.yaml").read_text()
    )
    started = time.monotonic()
    declared = read_manifests(tmp_path)
    assert time.monotonic() - started < 2
    reasons = {s.file: s.reason for s in declared.skipped}
    assert reasons["bomb.yaml"] == "too many nodes once aliases are expanded (a YAML bomb?)"
    assert reasons["deep.yaml"] == "nested deeper than 64 levels"
    assert "adservice" in declared.nodes


def test_a_huge_file_and_links_out_of_the_repository_are_skipped_with_a_reason(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "svc.yaml").write_text(
        (DEMO / "kubernetes-manifests" / "emailservice.yaml").read_text()
    )
    root = tmp_path / "repo"
    root.mkdir()
    (root / "huge.yaml").write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    (root / "linked.yaml").symlink_to(outside / "svc.yaml")
    (root / "kustomization.yaml").write_text("resources: [linked.yaml]\n")
    declared = read_manifests(root)
    reasons = {(s.file, s.reason) for s in declared.skipped}
    size = (root / "huge.yaml").stat().st_size
    assert size > MAX_FILE_BYTES
    assert ("huge.yaml", f"larger than 1024 KiB ({size} bytes)") in reasons
    assert ("linked.yaml", "a symbolic link out of the repository") in reasons
    assert ("kustomization.yaml", "resource linked.yaml is outside the repository") in reasons
    assert declared.nodes == {}


def test_yaml_that_is_not_kubernetes_is_passed_over_quietly(tmp_path: Path) -> None:
    (tmp_path / "ci.yml").write_text("on: [push]\njobs: {build: {runs-on: x}}\n")
    (tmp_path / "broken-notes.yaml").write_text("a: [unclosed\n")
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: [\n")
    (tmp_path / "templates.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Values.name }}\n  x: {{ a }\n"
    )
    declared = read_manifests(tmp_path)
    assert {s.file for s in declared.skipped} == {"broken.yaml", "templates.yaml"}
    assert declared.nodes == {}


def test_malformed_objects_never_raise() -> None:
    text = (DEMO / "kubernetes-manifests" / "loadgenerator.yaml").read_text()
    text += (DEMO / "kubernetes-manifests" / "frontend.yaml").read_text().split("---")[1]
    objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]
    objects.append(yaml.safe_load(SHOP["overlay/api.yaml"].split("---")[-1]))
    count = 0
    for index, obj in enumerate(objects):
        for label, damaged in mutations(obj):
            others = [copy.deepcopy(o) for i, o in enumerate(objects) if i != index]
            found = read_objects([("x.yaml", o) for o in [*others, damaged]])
            assert isinstance(found, Declared), label
            count += 1
    assert count > 500


def test_kustomization_cycles_and_fan_outs_end_fast_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "a-loop").mkdir()
    (tmp_path / "a-loop" / "kustomization.yaml").write_text("resources: ['.', '../a-loop']\n")
    for level in range(8):  # each level lists the next twenty times: 20**8 paths
        here = tmp_path / f"k{level}"
        here.mkdir()
        (here / "kustomization.yaml").write_text(
            "resources: [" + ", ".join([f"../k{level + 1}"] * 20) + "]\n"
        )
    (tmp_path / "k8").mkdir()
    (tmp_path / "k8" / "kustomization.yaml").write_text("resources: [svc.yaml]\n")
    (tmp_path / "k8" / "svc.yaml").write_text(
        (DEMO / "kubernetes-manifests" / "emailservice.yaml").read_text()
    )
    started = time.monotonic()
    declared = read_manifests(tmp_path)
    assert time.monotonic() - started < 5
    reasons = {s.reason for s in declared.skipped}
    assert "kustomization nested too deep or in a cycle" in reasons
    assert "more than 500 kustomizations to read: the rest not read" in reasons
    assert set(declared.nodes) == {"emailservice"}


def test_jobs_and_cronjobs_and_their_waits_are_read() -> None:
    db = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "batch"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "mysql:8"}]},
            }
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db", "namespace": "batch"},
        "spec": {"selector": {"app": "db"}},
    }
    pod = {
        "spec": {
            "initContainers": [
                {
                    "name": "dns",
                    "command": [
                        "sh",
                        "-c",
                        "until nslookup db.batch.svc.cluster.local; do sleep 2; done",
                    ],
                },
                {
                    "name": "slow",
                    "command": ["sh", "-c", "wget " + "a" * 100_000 + " nc " + "-z " * 5000],
                },
            ],
            "containers": [
                {
                    "name": "job",
                    "image": "report",
                    "env": [
                        {"name": "MYSQL_SERVICE", "value": "db.batch"},
                        {"name": "MYSQL_URL", "value": "mysql://$(MYSQL_SERVICE):3306/reports"},
                        {"name": "DB_PASSWORD", "value": "db"},
                    ],
                }
            ],
        }
    }
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "batch"},
        "spec": {"jobTemplate": {"spec": {"template": pod}}},
    }
    started = time.monotonic()
    declared = read_objects([("batch.yaml", o) for o in (db, service, cron)])
    assert time.monotonic() - started < 2
    assert declared.nodes["db"].kind == "database"
    assert "DB_PASSWORD" not in _evidence_text(declared)  # its value is no host
    details = {e.detail for e in declared.edges[("report", "db", "reads_writes")].evidence}
    assert details == {
        "container job env MYSQL_SERVICE names db.batch",
        "container job env MYSQL_URL names db.batch",  # $(MYSQL_SERVICE) expanded
    }
    assert set(declared.edges) == {
        ("report", "db", "reads_writes"),
        ("report", "db", "starts_after"),
        ("db", "namespace/batch", "runs_in"),
        ("report", "namespace/batch", "runs_in"),
    }


def test_a_broker_named_in_a_manifest_a_compose_file_and_a_catalog_is_one_publishes_edge(
    tmp_path: Path,
) -> None:
    """Kafka named by a Deployment's env, a Compose service's and a Backstage dependsOn: the
    same `publishes` edge from each reader (as traces show a producer), not `calls` beside it."""
    from trailmap.ingest.repository import read_repository  # noqa: PLC0415

    (tmp_path / "k8s.yaml").write_text(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: kafka}\n"
        "spec:\n  template:\n    metadata: {labels: {app: kafka}}\n"
        "    spec: {containers: [{name: kafka, image: 'apache/kafka:3.8.0'}]}\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: kafka}\n"
        "spec: {clusterIP: None, selector: {app: kafka}}\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: orders}\n"
        "spec:\n  template:\n    metadata: {labels: {app: orders}}\n    spec:\n"
        "      containers:\n      - name: orders\n        image: acme/orders\n"
        "        env: [{name: KAFKA_BROKERS, value: 'kafka-0.kafka:9092'}]\n"
    )
    (tmp_path / "compose.yaml").write_text(
        "services:\n  orders:\n    image: acme/orders\n"
        "    environment: {KAFKA_BROKERS: 'kafka:9092'}\n  kafka:\n    image: apache/kafka:3.8.0\n"
    )
    (tmp_path / "catalog-info.yaml").write_text(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: orders}\n"
        "spec: {type: service, owner: group:shop, dependsOn: ['resource:kafka']}\n---\n"
        "apiVersion: backstage.io/v1alpha1\nkind: Resource\nmetadata: {name: kafka}\n"
        "spec: {type: queue, owner: group:shop}\n"
    )
    declared = read_repository(tmp_path)
    edges = {key for key in declared.edges if key[:2] == ("orders", "kafka")}
    assert edges == {("orders", "kafka", "publishes")}
    readers = {ev.reader for ev in declared.edges["orders", "kafka", "publishes"].evidence}
    assert readers == {"kubernetes", "compose", "backstage"}


def test_a_manifest_naming_a_service_another_reader_declares_is_a_dependency(
    tmp_path: Path,
) -> None:
    """A nightly CronJob's environment names `auth`, which the Helm chart deploys (no manifest
    defines it): read as a repository, it is a dependency; a host nobody declares is none."""
    from trailmap.ingest.repository import read_repository  # noqa: PLC0415

    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "cronjob.yaml").write_text(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: uploads-nightly\n"
        "  labels: {app.kubernetes.io/name: uploads}\n"
        "spec:\n  schedule: '0 2 * * *'\n  jobTemplate:\n    spec:\n      template:\n"
        "        spec:\n          containers:\n          - name: nightly\n"
        "            image: acme/uploads\n            env:\n"
        "            - {name: AUTH_URL, value: 'http://auth.estate.svc.cluster.local:8080'}\n"
        "            - {name: DOCS_URL, value: 'https://auth.example.com/docs'}\n"
        "            - {name: ARCHIVE_URL, value: 'http://archive:8080'}\n"
    )
    (tmp_path / "chart").mkdir()
    (tmp_path / "chart" / "values.yaml").write_text("authService:\n  create: true\n  name: auth\n")
    alone = read_manifests(tmp_path / "k8s")
    assert not [key for key in alone.edges if key[2] == "calls"]
    declared = read_repository(tmp_path)
    calls = {(s, t) for (s, t, kind) in declared.edges if kind == "calls"}
    assert calls == {("uploads", "auth")}
    [evidence] = declared.edges["uploads", "auth", "calls"].evidence
    assert (evidence.reader, evidence.file) == ("kubernetes", "k8s/cronjob.yaml")
    assert "AUTH_URL" in (evidence.detail or "")
    assert declared.references == []
