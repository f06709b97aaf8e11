"""Indexing a repository's declarations (ingest/repository.py, graph/learn/declared.py) on a
generated monorepo, beside a floor of parsing its YAML alone, with the recall and precision of
the service-to-service dependencies found against the generator's own truth.

    .venv/bin/python benchmarks/repository.py [--backend sqlite|postgres|both]
                                              [--services N] [--seed S] [--keep DIR] [--quick]

Setup (not measured): a seeded repository of about 600 files for 30 services (default), as
a monorepo holds them:
- `compose.yaml` with every service and datastore, `compose.override.yaml` (ports, debug
  settings and three dependencies only the developers' setup adds) and `.env`; environment
  values in the forms real files use: URLs, `host:port`, DSNs with credentials,
  `${VAR:-default}` and `.env` interpolation, broker lists;
- Kubernetes manifests under `deploy/k8s`: a Kustomize base per service (Deployment,
  Service, ConfigMap read through `envFrom`, `configMapKeyRef`, `$(VAR)` expansion,
  Secrets by reference, init containers waiting for the database, nightly CronJobs) and
  staging and production overlays with their namespace; datastores as StatefulSets behind
  headless Services (`kafka-0.kafka:9092`);
- a Helm umbrella chart for the six storefront services, in the form microservices-demo's
  values.yaml uses (a block per component, address keys naming peers), its templates left
  unrendered;
- a Backstage `catalog-info.yaml` per service (owner, system, `dependsOn` for most of its
  dependencies, as catalogs are: incomplete, never wrong) and the datastores as Resources;
- `.github/CODEOWNERS` and CI workflows, and the noise of a real repository: source files in
  Python, Go and TypeScript, Dockerfiles, READMEs, OpenAPI documents, package manifests.

The truth is what the generator wrote into those files: each service's calls to other
services and its reads and writes of its datastores and brokers (a dependency only code
makes is not in the files, and not in the truth).

Measured, on each backend:
- floor and read in this process's CPU time (pure computation; their wall-clock times moved
  by 2-3x between consecutive runs on a shared machine), record and snapshot in wall time
  (PostgreSQL's share is in its own processes):
- floor: every `*.yaml`/`*.yml` file read and parsed with the readers' own safe loader
  (`ingest/yaml_safe.load_yaml_documents`), nothing else; best of 9;
- read: `read_repository(root)`; best of 9, interleaved with the floor's runs;
- record: `record_declared` into a fresh database (the first reading of the source);
- snapshot: the organization's graph built with the declarations joined (`snapshot_for`),
  best of 3;
- memory: the Python heap's peak (tracemalloc) of the floor and of read + record + snapshot,
  each in a pass of its own, and this process's peak resident size at the end.

Targets: indexing (read + record + snapshot) within 3x the floor; recall and precision of
service-to-service dependencies in the joined graph at least 0.9 each. The peer (OpenTrace
0.4.0 on a real 20-service repository, issue 21) took 23 s and 452 MB and found none.
`--quick` (10 services) checks that it works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from _common import Backend, bench_database, create_org_with_key, run_backends

from trailmap.graph.ask.snapshots import snapshot_for
from trailmap.graph.learn.declared import DeclaredSource, record_declared
from trailmap.ingest.repository import read_repository
from trailmap.ingest.yaml_safe import YamlRefused, load_yaml_documents
from trailmap.storage import Database

T = TypeVar("T")

_RATIO_TARGET = 3.0
_QUALITY_TARGET = 0.9
_PEER_SECONDS, _PEER_MIB = 23.0, 452.0
_DEPENDENCY_KINDS = frozenset({"calls", "reads_writes", "publishes", "consumes"})
_WEEK_US = 7 * 24 * 3_600_000_000

_NAMES = (
    "gateway", "web", "accounts", "auth", "catalog", "search", "recommendations", "cart",
    "checkout", "payments", "fraud", "orders", "invoices", "shipping", "notifications",
    "email", "sms", "inventory", "pricing", "promotions", "reviews", "ratings", "media",
    "uploads", "reporting", "analytics", "ledger", "loyalty", "support", "scheduler",
)  # fmt: skip
_TEAMS = ("edge", "identity", "discovery", "commerce", "money", "fulfilment", "comms", "data")
# The services the Helm umbrella chart deploys (the first six of the list).
_HELM_COUNT = 6
_LANGUAGES = (("py", "python"), ("go", "go"), ("ts", "node"))


@dataclass
class Service:
    name: str
    team: str
    language: tuple[str, str]
    calls: list[str] = field(default_factory=list)
    database: str | None = None  # its own PostgreSQL or MongoDB
    cache: bool = False
    publishes: bool = False
    consumes: bool = False
    nightly: str | None = None  # a dependency only its nightly CronJob has
    dev_only: str | None = None  # a dependency only compose.override.yaml adds
    helm: bool = False


@dataclass
class Repo:
    services: list[Service]
    truth: set[tuple[str, str]]
    files: int = 0


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def _plan(count: int, seed: int) -> Repo:
    rng = random.Random(seed)
    names = [
        _NAMES[i] if i < len(_NAMES) else f"{_NAMES[i % len(_NAMES)]}-{i}" for i in range(count)
    ]
    services = [
        Service(n, _TEAMS[i * len(_TEAMS) // count], _LANGUAGES[i % 3], helm=i < _HELM_COUNT)
        for i, n in enumerate(names)
    ]
    truth: set[tuple[str, str]] = set()
    for i, svc in enumerate(services):
        # Callers call services further down the list: a layered estate, no cycles.
        later = names[i + 1 :]
        if later:
            svc.calls = sorted(rng.sample(later, min(len(later), rng.choice((1, 2, 2, 3)))))
        if rng.random() < 0.45 and not svc.helm:
            svc.database = f"{svc.name}-db"
        svc.cache = rng.random() < 0.3
        svc.publishes = rng.random() < 0.25
        svc.consumes = not svc.publishes and rng.random() < 0.2
        for callee in svc.calls:
            truth.add((svc.name, callee))
        if svc.database:
            truth.add((svc.name, svc.database))
        if svc.cache:
            truth.add((svc.name, "redis"))
        if svc.publishes or svc.consumes:
            truth.add((svc.name, "kafka"))
    for svc in rng.sample([s for s in services if not s.helm and s.database], 3):
        others = [n for n in names if n != svc.name and (svc.name, n) not in truth]
        svc.nightly = rng.choice(others)
        truth.add((svc.name, svc.nightly))
    for svc in rng.sample([s for s in services if not s.helm], 3):
        others = [n for n in names if n != svc.name and (svc.name, n) not in truth]
        svc.dev_only = rng.choice(others)
        truth.add((svc.name, svc.dev_only))
    return Repo(services, truth)


# -- the files ------------------------------------------------------------------------------


def _write(root: Path, rel: str, text: str, repo: Repo) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    repo.files += 1


def _compose_call(index: int, callee: str) -> tuple[str, str]:
    """A variable naming `callee`, in one of the forms real Compose files use."""
    var = _env_name(callee)
    forms = (
        (f"{var}_URL", f"http://{callee}:8080"),
        (f"{var}_ADDR", f"{callee}:9090"),
        (f"{var}_HOST", f"${{{var}_HOST:-{callee}}}"),
        (f"{var}_SERVICE_ENDPOINT", f"http://${{{var}_HOST:-{callee}}}:${{HTTP_PORT}}/v1"),
    )
    return forms[index % len(forms)]


def _compose(root: Path, repo: Repo) -> None:  # noqa: PLR0912 - one file, written in order
    lines = ["name: estate", "", "services:"]
    for svc in repo.services:
        lines += [
            f"  {svc.name}:",
            f"    build: ./services/{svc.name}",
            f"    image: registry.example/{svc.name}:${{TAG:-latest}}",
            "    environment:",
            f"      OTEL_SERVICE_NAME: {svc.name}",
            "      OTEL_EXPORTER_OTLP_ENDPOINT: http://host.docker.internal:4318",
            "      LOG_FORMAT: json",
        ]
        for i, callee in enumerate(svc.calls):
            var, value = _compose_call(i + len(svc.name), callee)
            lines.append(f"      {var}: {value}")
        if svc.database and svc.database.endswith("-db"):
            user = svc.name.replace("-", "_")
            if len(svc.name) % 2:
                dsn = f"postgres://{user}:${{DB_PASSWORD}}@{svc.database}:5432/{user}"
            else:
                dsn = f"Host={svc.database};Port=5432;Database={user};Username={user}"
            lines.append(f"      DATABASE_URL: {dsn}")
        if svc.cache:
            lines.append("      REDIS_URL: redis://redis:6379/0")
        if svc.publishes or svc.consumes:
            lines.append("      KAFKA_BOOTSTRAP_SERVERS: kafka:9092")
            lines.append(f"      KAFKA_TOPIC: {svc.name}-events")
        depends = [*svc.calls[:1], *([svc.database] if svc.database else [])]
        if depends:
            lines.append(f"    depends_on: [{', '.join(depends)}]")
    for svc in repo.services:
        if svc.database:
            lines += [
                f"  {svc.database}:",
                "    image: postgres:16-alpine",
                "    environment:",
                f"      POSTGRES_DB: {svc.name.replace('-', '_')}",
                "      POSTGRES_PASSWORD: ${DB_PASSWORD}",
            ]
    lines += [
        "  redis:",
        "    image: redis:7-alpine",
        "  kafka:",
        "    image: bitnami/kafka:3.7",
        "    environment:",
        "      KAFKA_CFG_LISTENERS: PLAINTEXT://:9092,CONTROLLER://:9093",
        "",
    ]
    _write(root, "compose.yaml", "\n".join(lines), repo)
    override = ["services:"]
    for index, svc in enumerate(repo.services):
        if index >= 8 and not svc.dev_only:
            continue
        override += [f"  {svc.name}:", "    environment:", "      LOG_LEVEL: debug"]
        if svc.dev_only:
            override.append(f"      {_env_name(svc.dev_only)}_URL: http://{svc.dev_only}:8080/")
        override.append(f'    ports: ["{8000 + index}:8080"]')
    _write(root, "compose.override.yaml", "\n".join(override) + "\n", repo)
    _write(root, ".env", "TAG=dev\nHTTP_PORT=8080\nDB_PASSWORD=devpassword\n", repo)


def _k8s_service(root: Path, svc: Service, repo: Repo) -> None:
    base = f"deploy/k8s/base/{svc.name}"
    labels = f"app.kubernetes.io/name: {svc.name}\n        app.kubernetes.io/part-of: estate"
    config = [f"OTEL_SERVICE_NAME: {svc.name}", "LOG_FORMAT: json"]
    env: list[str] = []
    for i, callee in enumerate(svc.calls):
        var = _env_name(callee)
        form = (i + len(svc.name)) % 4
        if form == 0:
            config.append(f'{var}_URL: "http://{callee}.estate.svc.cluster.local:8080"')
        elif form == 1:
            env += [f"- name: {var}_ADDR", f'  value: "{callee}:9090"']
        elif form == 2:
            config.append(f"{var}_GRPC_TARGET: {callee}:50051")
            env += [
                f"- name: {var}_TARGET",
                "  valueFrom:",
                f"    configMapKeyRef: {{name: {svc.name}-config, key: {var}_GRPC_TARGET}}",
            ]
        else:
            env += [
                f"- name: {var}_HOST",
                f"  value: {callee}",
                f"- name: {var}_URL",
                f'  value: "http://$({var}_HOST):8080/api"',
            ]
    if svc.database:
        env += [
            "- name: DB_PASSWORD",
            "  valueFrom:",
            f"    secretKeyRef: {{name: {svc.name}-db, key: password}}",
            "- name: DATABASE_URL",
            f'  value: "postgres://{svc.name}:$(DB_PASSWORD)@{svc.database}:5432/app"',
        ]
    if svc.cache:
        config.append('REDIS_ADDR: "redis-master.data.svc.cluster.local:6379"')
    if svc.publishes or svc.consumes:
        config.append('KAFKA_BROKERS: "kafka-0.kafka:9092,kafka-1.kafka:9092"')
    init = ""
    if svc.database:
        init = (
            "      initContainers:\n"
            "        - name: wait-for-db\n"
            "          image: busybox:1.36\n"
            '          command: ["sh", "-c", '
            f'"until nc -z {svc.database} 5432; do sleep 2; done"]\n'
        )
    env_text = "".join(f"            {line}\n" for line in env)
    env_block = env_text or "            []\n"
    deployment = f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {svc.name}
  labels:
    app.kubernetes.io/name: {svc.name}
spec:
  replicas: 3
  selector:
    matchLabels:
      app.kubernetes.io/name: {svc.name}
  template:
    metadata:
      labels:
        {labels}
    spec:
{init}      containers:
        - name: app
          image: registry.example/{svc.name}:1.0.0
          ports:
            - containerPort: 8080
          envFrom:
            - configMapRef:
                name: {svc.name}-config
          env:
{env_block}          resources:
            requests: {{cpu: 100m, memory: 128Mi}}
          livenessProbe:
            httpGet: {{path: /healthz, port: 8080}}
"""
    if not env_text:
        deployment = deployment.replace("          env:\n            []\n", "")
    service = f"""apiVersion: v1
kind: Service
metadata:
  name: {svc.name}
  labels:
    app.kubernetes.io/name: {svc.name}
spec:
  selector:
    app.kubernetes.io/name: {svc.name}
  ports:
    - name: http
      port: 8080
    - name: grpc
      port: 50051
"""
    data = "".join(f"  {line}\n" for line in config)
    configmap = (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {svc.name}-config\ndata:\n{data}"
    )
    files = ["deployment.yaml", "service.yaml", "configmap.yaml"]
    _write(root, f"{base}/deployment.yaml", deployment, repo)
    _write(root, f"{base}/service.yaml", service, repo)
    _write(root, f"{base}/configmap.yaml", configmap, repo)
    if svc.nightly:
        files.append("cronjob.yaml")
        cronjob = f"""apiVersion: batch/v1
kind: CronJob
metadata:
  name: {svc.name}-nightly
  labels:
    app.kubernetes.io/name: {svc.name}
    app.kubernetes.io/component: nightly
spec:
  schedule: "15 2 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          labels:
            app.kubernetes.io/name: {svc.name}
            app.kubernetes.io/component: nightly
        spec:
          restartPolicy: OnFailure
          containers:
            - name: nightly
              image: registry.example/{svc.name}:1.0.0
              args: ["nightly-export"]
              env:
                - name: EXPORT_TARGET_URL
                  value: "http://{svc.nightly}:8080/internal/import"
"""
        _write(root, f"{base}/cronjob.yaml", cronjob, repo)
    resources = "".join(f"  - {f}\n" for f in files)
    _write(root, f"{base}/kustomization.yaml", f"resources:\n{resources}", repo)


def _k8s_datastores(root: Path, repo: Repo) -> list[str]:
    folders = []
    for svc in repo.services:
        if not svc.database:
            continue
        folders.append(svc.database)
        text = f"""apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {svc.database}
spec:
  serviceName: {svc.database}
  selector:
    matchLabels: {{app: {svc.database}}}
  template:
    metadata:
      labels: {{app: {svc.database}}}
    spec:
      containers:
        - name: postgres
          image: postgres:16
          ports: [{{containerPort: 5432}}]
  volumeClaimTemplates:
    - metadata: {{name: data}}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {{requests: {{storage: 10Gi}}}}
---
apiVersion: v1
kind: Service
metadata:
  name: {svc.database}
spec:
  clusterIP: None
  selector: {{app: {svc.database}}}
  ports: [{{port: 5432}}]
"""
        _write(root, f"deploy/k8s/base/{svc.database}/statefulset.yaml", text, repo)
        _write(
            root,
            f"deploy/k8s/base/{svc.database}/kustomization.yaml",
            "resources:\n  - statefulset.yaml\n",
            repo,
        )
    shared = """apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: kafka
  namespace: data
spec:
  serviceName: kafka
  selector:
    matchLabels: {app: kafka}
  template:
    metadata:
      labels: {app: kafka}
    spec:
      containers:
        - name: kafka
          image: bitnami/kafka:3.7
---
apiVersion: v1
kind: Service
metadata:
  name: kafka
  namespace: data
spec:
  clusterIP: None
  selector: {app: kafka}
  ports: [{port: 9092}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
  namespace: data
spec:
  selector:
    matchLabels: {app: redis}
  template:
    metadata:
      labels: {app: redis}
    spec:
      containers:
        - name: redis
          image: redis:7
---
apiVersion: v1
kind: Service
metadata:
  name: redis-master
  namespace: data
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
"""
    _write(root, "deploy/k8s/data/shared.yaml", shared, repo)
    return folders


def _kubernetes(root: Path, repo: Repo) -> None:
    plain = [s for s in repo.services if not s.helm]
    for svc in plain:
        _k8s_service(root, svc, repo)
    stores = _k8s_datastores(root, repo)
    listed = "".join(f"  - {name}\n" for name in [*(s.name for s in plain), *stores])
    _write(root, "deploy/k8s/base/kustomization.yaml", f"resources:\n{listed}", repo)
    for env, replicas in (("staging", 1), ("production", 3)):
        _write(
            root,
            f"deploy/k8s/overlays/{env}/kustomization.yaml",
            f"namespace: estate\nresources:\n  - ../../base\n  - ../../data\n"
            f"replicas:\n  - name: gateway\n    count: {replicas}\n",
            repo,
        )
    _write(root, "deploy/k8s/data/kustomization.yaml", "resources:\n  - shared.yaml\n", repo)


def _helm(root: Path, repo: Repo) -> None:
    """The storefront's umbrella chart: a block per component, as microservices-demo's."""
    lines = ["# Values of the storefront chart.", "images:", "  repository: registry.example", ""]
    helm = [s for s in repo.services if s.helm]
    for svc in helm:
        key = svc.name.replace("-", "") + "Service"
        lines += [f"{key}:", "  create: true", f"  name: {svc.name}", "  resources:"]
        lines += ["    requests: {cpu: 100m, memory: 64Mi}"]
        for callee in svc.calls:
            lines.append(f"  {callee.replace('-', '')}Addr: {callee}:8080")
        if svc.cache:
            lines.append("  cacheUrl: redis://redis:6379")
        if svc.publishes or svc.consumes:
            lines.append("  brokerAddress: kafka:9092")
        lines.append("")
    _write(root, "deploy/helm/storefront/values.yaml", "\n".join(lines), repo)
    _write(
        root,
        "deploy/helm/storefront/Chart.yaml",
        "apiVersion: v2\nname: storefront\nversion: 0.4.2\nappVersion: 1.9.0\n",
        repo,
    )
    for svc in helm:
        key = svc.name.replace("-", "") + "Service"
        template = (
            f"{{{{- if .Values.{key}.create }}}}\napiVersion: apps/v1\nkind: Deployment\n"
            f"metadata:\n  name: {{{{ .Values.{key}.name }}}}\nspec:\n  template:\n    spec:\n"
            f"      containers:\n        - name: server\n"
            f'          image: "{{{{ .Values.images.repository }}}}/{svc.name}"\n{{{{- end }}}}\n'
        )
        _write(root, f"deploy/helm/storefront/templates/{svc.name}.yaml", template, repo)


def _catalog(root: Path, repo: Repo, rng: random.Random) -> None:
    for svc in repo.services:
        deps = [f"component:{c}" for c in svc.calls if rng.random() < 0.7]
        if svc.database and rng.random() < 0.7:
            deps.append(f"resource:{svc.database}")
        depends = "".join(f"    - {d}\n" for d in deps)
        text = (
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
            f"  name: {svc.name}\n  description: The {svc.name} service.\n  annotations:\n"
            f"    github.com/project-slug: example/estate\n  tags: [{svc.language[1]}]\n"
            f"spec:\n  type: service\n  lifecycle: production\n  owner: group:{svc.team}\n"
            f"  system: estate\n" + (f"  dependsOn:\n{depends}" if deps else "")
        )
        _write(root, f"services/{svc.name}/catalog-info.yaml", text, repo)
    head = "apiVersion: backstage.io/v1alpha1\n"
    docs = [f"{head}kind: System\nmetadata:\n  name: estate\nspec:\n  owner: group:platform\n"]
    docs += [
        f"{head}kind: Group\nmetadata:\n  name: {team}\nspec:\n  type: team\n  children: []\n"
        for team in (*_TEAMS, "platform")
    ]
    docs += [
        f"{head}kind: Resource\nmetadata:\n  name: {svc.database}\nspec:\n  type: database\n"
        f"  owner: group:{svc.team}\n"
        for svc in repo.services
        if svc.database
    ]
    _write(root, "catalog-info.yaml", "---\n".join(docs), repo)
    owners = ["# Reviews", "*  @example/platform"]
    owners += [f"/services/{s.name}/  @example/{s.team}" for s in repo.services]
    owners += ["/deploy/  @example/platform", ""]
    _write(root, ".github/CODEOWNERS", "\n".join(owners), repo)


_SOURCE = {
    "py": "import os\n\nimport httpx\n\n\ndef handler(request):\n    url = os.environ['{var}']\n"
    "    return httpx.get(url + '/v1/items').json()\n",
    "go": 'package main\n\nimport (\n\t"net/http"\n\t"os"\n)\n\nfunc handler() {{\n'
    '\thttp.Get(os.Getenv("{var}") + "/v1/items")\n}}\n',
    "ts": "export async function handler(): Promise<unknown> {{\n"
    "  const res = await fetch(`${{process.env.{var}}}/v1/items`);\n  return res.json();\n}}\n",
}


def _noise(root: Path, repo: Repo, target_files: int, rng: random.Random) -> None:
    """Source files, Dockerfiles, READMEs, OpenAPI documents and CI workflows."""
    for svc in repo.services:
        ext, lang = svc.language
        base = f"services/{svc.name}"
        _write(root, f"{base}/README.md", f"# {svc.name}\n\nOwned by {svc.team}.\n", repo)
        _write(root, f"{base}/Dockerfile", f"FROM {lang}:latest\nCOPY . /app\n", repo)
        manifest = {"py": "pyproject.toml", "go": "go.mod", "ts": "package.json"}[ext]
        _write(root, f"{base}/{manifest}", f"# {svc.name}\n", repo)
        paths = "".join(
            f"  /v1/{r}:\n    get:\n      responses:\n        '200': {{description: ok}}\n"
            for r in ("items", "items/{id}", "health")
        )
        openapi = f"openapi: 3.0.3\ninfo: {{title: {svc.name}, version: 1.0.0}}\npaths:\n{paths}"
        _write(root, f"{base}/api/openapi.yaml", openapi, repo)
    workflow = (
        "name: ci\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n      - run: make test\n"
    )
    _write(root, ".github/workflows/ci.yml", workflow, repo)
    _write(root, "README.md", "# estate\n\nThe monorepo.\n", repo)
    index = 0
    while repo.files < target_files:
        svc = repo.services[index % len(repo.services)]
        ext, _ = svc.language
        var = f"{_env_name(svc.calls[0])}_URL" if svc.calls else "UPSTREAM_URL"
        folder = rng.choice(("src", "src/handlers", "src/clients", "tests"))
        text = _SOURCE[ext].format(var=var)
        _write(root, f"services/{svc.name}/{folder}/module_{index}.{ext}", text, repo)
        index += 1


def generate(root: Path, services: int, seed: int, target_files: int) -> Repo:
    repo = _plan(services, seed)
    rng = random.Random(seed + 1)
    _compose(root, repo)
    _kubernetes(root, repo)
    _helm(root, repo)
    _catalog(root, repo, rng)
    _noise(root, repo, target_files, rng)
    return repo


# -- measuring ------------------------------------------------------------------------------


def _floor(root: Path) -> int:
    """Every YAML file read and parsed with the readers' safe loader: documents parsed."""
    documents = 0
    for path in sorted(root.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            with contextlib.suppress(YamlRefused):
                documents += len(load_yaml_documents(path.read_text(), file=path.name))
    return documents


def _timed(work: Callable[[], T]) -> tuple[float, T]:
    """The process's CPU time `work` took: the floor and the reading are pure computation,
    and on a shared machine their wall-clock times moved by 2-3x between runs."""
    began = time.process_time()
    result = work()
    return time.process_time() - began, result


async def _index(url: str, slug: str, root: Path) -> tuple[float, float, float, Any]:
    from trailmap.accounts import get_org  # noqa: PLC0415

    db = Database(url)
    try:
        org = await get_org(db, slug)
        began = time.perf_counter()
        declared = read_repository(root)
        read_s = time.perf_counter() - began
        source = DeclaredSource(key="bench-repo", kind="repository", label="estate")
        began = time.perf_counter()
        await record_declared(db, org.id, source, declared)
        record_s = time.perf_counter() - began
        began = time.perf_counter()
        snapshot = await snapshot_for(db, org.id, at_us=None, stale_after_us=_WEEK_US)
        snapshot_s = time.perf_counter() - began
    finally:
        db.close()
    return read_s, record_s, snapshot_s, snapshot


def _found(snapshot: Any) -> set[tuple[str, str]]:
    names = {n.id: n.name for n in snapshot.nodes}
    return {
        (names[e.source_id], names[e.target_id])
        for e in snapshot.edges
        if e.kind in _DEPENDENCY_KINDS and names[e.source_id] != names[e.target_id]
    }


def _run(backend: Backend, directory: Path, args: argparse.Namespace) -> bool:
    root = directory / f"estate-{backend}"
    repo = generate(root, args.services, args.seed, args.files)
    yaml_files = sum(1 for p in root.rglob("*") if p.suffix in (".yaml", ".yml"))
    print(
        f"{backend}: {repo.files} files ({yaml_files} YAML), {len(repo.services)} services, "
        f"{len(repo.truth)} dependencies in the truth",
        flush=True,
    )
    # Interleaved, so that the floor and the reading see the same load on a shared machine.
    floor_s = read_s = float("inf")
    documents = 0
    for _ in range(9):
        took, documents = _timed(lambda: _floor(root))
        floor_s = min(floor_s, took)
        took, _ = _timed(lambda: read_repository(root))
        read_s = min(read_s, took)
    # The first reading of the source into a fresh organization, and its first graph: three
    # organizations of one fresh database, the best of each figure.
    record_s = snapshot_s = first_read_s = float("inf")
    with bench_database(backend, "repository", directory) as bench:
        for n in range(3):
            create_org_with_key(bench.url, f"estate-{n}")
            one_read_s, one_record_s, one_snapshot_s, snapshot = asyncio.run(
                _index(bench.url, f"estate-{n}", root)
            )
            first_read_s = min(first_read_s, one_read_s)
            record_s, snapshot_s = min(record_s, one_record_s), min(snapshot_s, one_snapshot_s)
    with bench_database(backend, "repository-mem", directory) as bench:
        create_org_with_key(bench.url, "estate")
        tracemalloc.start()
        _floor(root)
        _, floor_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        asyncio.run(_index(bench.url, "estate", root))
        _, index_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    index_s = read_s + record_s + snapshot_s
    ratio = index_s / floor_s
    found = _found(snapshot)
    hits = found & repo.truth
    recall = len(hits) / len(repo.truth)
    precision = len(hits) / len(found) if found else 0.0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  floor: {documents} YAML documents parsed in {floor_s * 1000:.0f} ms")
    print(
        f"  read_repository {read_s * 1000:.0f} ms "
        f"(wall time in the indexing runs: {first_read_s * 1000:.0f} ms), "
        f"record {record_s * 1000:.0f} ms ({len(snapshot.nodes)} nodes, "
        f"{len(snapshot.edges)} edges in the graph), snapshot {snapshot_s * 1000:.0f} ms"
    )
    print(
        f"  indexing {index_s * 1000:.0f} ms = {ratio:.2f}x the floor "
        f"(read alone {read_s / floor_s:.2f}x); the peer: {_PEER_SECONDS:.0f} s"
    )
    print(
        f"  memory: heap peak {index_peak / 2**20:.1f} MiB indexing, {floor_peak / 2**20:.1f} MiB "
        f"the floor ({index_peak / max(floor_peak, 1):.1f}x); this process's peak RSS "
        f"{rss_mib:.0f} MiB (Python, Trailmap and both passes); the peer: {_PEER_MIB:.0f} MB"
    )
    print(
        f"  dependencies: recall {recall:.3f} ({len(hits)} of {len(repo.truth)}), "
        f"precision {precision:.3f} ({len(hits)} of {len(found)})"
    )
    for missing in sorted(repo.truth - found)[:10]:
        print(f"    missed: {missing[0]} -> {missing[1]}")
    for extra in sorted(found - repo.truth)[:10]:
        print(f"    not in the truth: {extra[0]} -> {extra[1]}")
    met = ratio <= _RATIO_TARGET and min(recall, precision) >= _QUALITY_TARGET
    print(
        f"  targets: indexing <= {_RATIO_TARGET:.0f}x the floor, recall and precision >= "
        f"{_QUALITY_TARGET}: " + ("met" if met else "MISSED")
    )
    if args.keep:
        import shutil  # noqa: PLC0415

        shutil.copytree(root, Path(args.keep) / root.name, dirs_exist_ok=True)
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--services", type=int, default=30)
    parser.add_argument("--files", type=int, default=600, help="files in the repository")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--keep", help="copy the generated repository into this folder")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.services, args.files = 10, 150
    return run_backends("repository", args.backend, lambda b, d: _run(b, d, args), quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
