"""The Compose reader: real awesome-compose projects against a ground truth written by hand,
Compose's merging and interpolation, and hostile or broken files."""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path

import pytest
import yaml

from tests.ingest.forges import mutations
from trailmap.graph.declared import Declared
from trailmap.ingest import compose
from trailmap.ingest.compose import read_compose, service_directories, technology_of_image

AWESOME = Path(__file__).parents[1] / "fixtures/upstream/repositories/awesome-compose"

# Read by hand from the six compose files. Names: a service name used by two projects
# (db, backend, frontend) is prefixed by its project's folder; the others keep their name.
TRUTH_NODES: dict[str, tuple[str, str | None]] = {
    # nextcloud-redis-mariadb: nextcloud's image, redis:alpine, mariadb:10.5
    "nc": ("service", None),
    "redis": ("cache", "redis"),
    "nextcloud-redis-mariadb/db": ("database", "mariadb"),
    # nginx-golang-postgres: backend built from ./backend, postgres, nginx as the proxy
    "nginx-golang-postgres/backend": ("service", None),
    "nginx-golang-postgres/db": ("database", "postgres"),
    "proxy": ("service", "nginx"),
    # prometheus-grafana
    "prometheus": ("service", None),
    "grafana": ("service", None),
    # react-express-mongodb
    "react-express-mongodb/frontend": ("service", None),
    "react-express-mongodb/backend": ("service", None),
    "mongo": ("database", "mongodb"),
    # react-java-mysql: db runs mariadb (the mysql image is commented out)
    "react-java-mysql/backend": ("service", None),
    "react-java-mysql/db": ("database", "mariadb"),
    "react-java-mysql/frontend": ("service", None),
    # wasmedge-kafka-mysql: redpanda (a Kafka broker), etl, mariadb
    "redpanda": ("queue", "redpanda"),
    "etl": ("service", None),
    "wasmedge-kafka-mysql/db": ("database", "mariadb"),
}
# Dependencies the files declare through environment values. (The Go, Node and Java backends
# name their databases in code, which Compose does not show: those are `starts_after` only.)
TRUTH_DEPENDENCIES: dict[tuple[str, str], str] = {
    ("nc", "redis"): "reads_writes",  # REDIS_HOST=redis
    ("nc", "nextcloud-redis-mariadb/db"): "reads_writes",  # MYSQL_HOST=db
    ("react-java-mysql/backend", "react-java-mysql/db"): "reads_writes",  # MYSQL_HOST: db
    ("etl", "wasmedge-kafka-mysql/db"): "reads_writes",  # DATABASE_URL: mysql://...@db:3306
    ("etl", "redpanda"): "publishes",  # KAFKA_URL: kafka://redpanda:9092/order
}
TRUTH_STARTS_AFTER: set[tuple[str, str]] = {
    ("nginx-golang-postgres/backend", "nginx-golang-postgres/db"),
    ("proxy", "nginx-golang-postgres/backend"),
    ("react-express-mongodb/frontend", "react-express-mongodb/backend"),
    ("react-express-mongodb/backend", "mongo"),
    ("react-java-mysql/backend", "react-java-mysql/db"),
    ("react-java-mysql/frontend", "react-java-mysql/backend"),
}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def deps(declared: Declared) -> dict[tuple[str, str], str]:
    return {(s, t): k for (s, t, k) in declared.edges if k not in {"starts_after", "owned_by"}}


def reasons(declared: Declared) -> list[str]:
    return [f"{s.file}: {s.reason}" for s in declared.skipped]


def test_the_awesome_compose_projects_read_as_the_hand_written_truth() -> None:
    declared = read_compose(AWESOME)
    assert declared.skipped == []
    assert {n: (v.kind, v.technology) for n, v in declared.nodes.items()} == TRUTH_NODES
    assert deps(declared) == TRUTH_DEPENDENCIES
    starts = {(s, t) for (s, t, k) in declared.edges if k == "starts_after"}
    assert starts == TRUTH_STARTS_AFTER
    found, truth = declared.dependencies(), set(TRUTH_DEPENDENCIES)
    recall = len(found & truth) / len(truth)
    precision = len(found & truth) / len(found)
    assert recall >= 0.9
    assert precision >= 0.9
    assert (recall, precision) == (1.0, 1.0)


def test_evidence_names_the_variable_and_host_never_the_password() -> None:
    declared = read_compose(AWESOME)
    (evidence,) = declared.edges[("etl", "wasmedge-kafka-mysql/db", "reads_writes")].evidence
    assert evidence.file == "wasmedge-kafka-mysql/compose.yml"
    assert evidence.line == 27
    assert evidence.detail == "DATABASE_URL → db:3306"
    evidences = [ev for n in declared.nodes.values() for ev in n.evidence]
    evidences += [ev for e in declared.edges.values() for ev in e.evidence]
    details = " ".join(str(ev.detail) for ev in evidences)
    assert "whalehello" not in details
    assert "root" not in details
    proxy = declared.nodes["proxy"]
    assert proxy.attributes["role"] == "proxy"
    assert proxy.evidence[0].line == 31
    broker = declared.edges[("etl", "redpanda", "publishes")].evidence[0]
    assert "cannot tell" in str(broker.detail)


def test_service_directories_are_build_contexts_or_the_compose_folder() -> None:
    folders = service_directories(read_compose(AWESOME))
    assert folders["nginx-golang-postgres/backend"] == "nginx-golang-postgres/backend"
    assert folders["react-java-mysql/backend"] == "react-java-mysql/backend"
    assert folders["redis"] == "nextcloud-redis-mariadb"
    assert folders["etl"] == "wasmedge-kafka-mysql/etl"


def test_only_names_two_projects_share_are_prefixed(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": "services:\n  gateway:\n    image: traefik\n"
            "  db:\n    image: postgres\n",
            "shop/compose.yaml": "services:\n  db:\n    image: mysql\n  api:\n    build: .\n"
            "    environment:\n      DB: db:3306\n",
            "blog/docker-compose.yml": "services:\n  web:\n    environment:\n"
            "      DATABASE_URL: postgres://u:p@db/blog\n  db:\n    image: postgres:16\n",
        },
    )
    declared = read_compose(tmp_path)
    assert set(declared.nodes) == {"gateway", "db", "shop/db", "api", "web", "blog/db"}
    assert deps(declared) == {
        ("api", "shop/db"): "reads_writes",
        ("web", "blog/db"): "reads_writes",
    }
    assert declared.nodes["gateway"].technology == "traefik"
    assert declared.nodes["shop/db"].technology == "mysql"


@pytest.mark.parametrize(
    ("variable", "value", "target"),
    [
        ("API", "http://api:8080/v1", "api"),
        ("UPSTREAM", "api:8080", "api"),
        ("DATABASE_URL", "postgres://user:secret@db:5432/x?sslmode=disable", "db"),
        ("SPRING_DATASOURCE_URL", "jdbc:mysql://db:3306/x", "db"),
        ("ConnectionStrings__Default", "Host=db;Port=5432;Username=u;Password=p", "db"),
        ("SQL", "Server=tcp:db,1433;Database=x", "db"),
        ("MONGO_URL", "mongodb://mongo:27017,db:27017/x?replicaSet=rs", "mongo"),
        ("REDIS_URL", "redis://cache", "cache"),
        ("AMQP", "amqp://guest:guest@rabbit:5672/", "rabbit"),
        ("KAFKA_BROKERS", "kafka:9092,other:9092", "kafka"),
        ("MYSQL_HOST", "db", "db"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317", "otel"),
        ("BACKEND", "http://be-alias:80", "api"),  # a network alias
        ("LEGACY", "http://legacy-api", "api"),  # the container_name
    ],
)
def test_an_environment_value_naming_a_peer_is_a_dependency(
    tmp_path: Path, variable: str, value: str, target: str
) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": f"""
services:
  app:
    build: ./app
    environment:
      {variable}: "{value}"
  api:
    container_name: legacy-api
    networks:
      front:
        aliases: [be-alias]
  db: {{image: postgres}}
  mongo: {{image: mongo}}
  cache: {{image: valkey/valkey:8}}
  rabbit: {{image: rabbitmq:3-management}}
  kafka: {{image: confluentinc/cp-kafka}}
  otel: {{image: otel/opentelemetry-collector}}
"""
        },
    )
    declared = read_compose(tmp_path)
    assert ("app", target) in declared.dependencies(), reasons(declared)
    for edge in declared.edges.values():
        for ev in edge.evidence:
            assert "secret" not in str(ev.detail)
            assert "guest" not in str(ev.detail)
            assert "Password" not in str(ev.detail)


def test_values_that_only_look_like_names_are_not_dependencies(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": """
services:
  app:
    environment:
      POSTGRES_USER: postgres
      MODE: db
      URL: http://localhost:8080
      SELF: http://app:80
      EXTERNAL: https://api.example.com
  postgres: {image: postgres}
  db: {image: mysql}
"""
        },
    )
    assert read_compose(tmp_path).dependencies() == set()


def test_kinds_come_from_the_image() -> None:
    assert technology_of_image("postgres:16-alpine") == ("database", "postgres", None)
    assert technology_of_image("docker.io/library/redis@sha256:ab") == ("cache", "redis", None)
    assert technology_of_image("bitnami/kafka:3") == ("queue", "kafka", None)
    assert technology_of_image("nats") == ("queue", "nats", None)
    assert technology_of_image("envoyproxy/envoy:v1.30") == ("service", "envoy", "proxy")
    assert technology_of_image("registry:5000/team/mongo-express") == ("service", None, None)


def test_aliases_include_container_hostname_network_and_otel_names(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": """
services:
  api:
    container_name: api-1
    hostname: api.internal
    networks: {default: {aliases: [backend]}}
    environment: [OTEL_SERVICE_NAME=checkout-api]
  worker:
    environment:
      OTEL_RESOURCE_ATTRIBUTES: deployment.environment=prod, service.name=checkout-worker
"""
        },
    )
    declared = read_compose(tmp_path)
    assert declared.nodes["api"].aliases == {"api-1", "api.internal", "backend", "checkout-api"}
    assert declared.nodes["worker"].aliases == {"checkout-worker"}


def test_overlays_merge_as_compose_merges_them(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": """
services:
  app:
    image: app
    environment:
      CACHE: redis://cache
      DB: postgres://db/x
  cache: {image: redis}
  db: {image: postgres}
""",
            "compose.override.yaml": """
services:
  app:
    environment:
      - DB=postgres://replica/x
    depends_on: {cache: {condition: service_started}}
  replica: {image: postgres}
""",
            "compose.prod.yaml": "services:\n  app:\n    links: ['db:database']\n",
        },
    )
    declared = read_compose(tmp_path)
    assert deps(declared) == {("app", "cache"): "reads_writes", ("app", "replica"): "reads_writes"}
    starts = {(s, t) for (s, t, k) in declared.edges if k == "starts_after"}
    assert starts == {("app", "cache"), ("app", "db")}
    files = {ev.file for ev in declared.nodes["app"].evidence}
    assert files == {"compose.yaml", "compose.override.yaml", "compose.prod.yaml"}
    (ev,) = declared.edges[("app", "replica", "reads_writes")].evidence
    assert (ev.file, ev.line) == ("compose.override.yaml", 5)


def test_interpolation_uses_dotenv_then_the_given_environment(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".env": "# hosts\nDB_HOST=db\nexport CACHE_HOST='cache'\nPORT=5432\n",
            "compose.yaml": """
services:
  app:
    environment:
      A: postgres://${DB_HOST}:${PORT}/x
      B: ${MISSING:-http://api:8080}
      C: ${CACHE_HOST-nothing}:6379
      D: $$NOT_A_VAR
      E: http://$QUEUE_HOST:5672
      F: ${UNSET_EMPTY:+http://never:1}
  db: {image: postgres}
  api: {image: api}
  cache: {image: redis}
  queue: {image: rabbitmq}
  never: {image: never}
""",
        },
    )
    declared = read_compose(tmp_path, env={"QUEUE_HOST": "queue", "PORT": "6543"})
    assert deps(declared) == {
        ("app", "db"): "reads_writes",
        ("app", "api"): "calls",
        ("app", "cache"): "reads_writes",
        ("app", "queue"): "publishes",
    }
    (ev,) = declared.edges[("app", "db", "reads_writes")].evidence
    assert ev.detail == "A → db:6543"


def test_env_files_name_peers_with_their_own_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "svc/compose.yaml": """
services:
  app:
    env_file:
      - config/app.env
      - path: missing.env
        required: false
    environment:
      OVERRIDDEN: http://cache:6379
  db: {image: postgres}
  cache: {image: memcached}
""",
            "svc/config/app.env": "# app\nDATABASE_URL=postgres://u:hunter2@db/x\n"
            "OVERRIDDEN=http://db:1\n",
        },
    )
    declared = read_compose(tmp_path)
    assert deps(declared) == {("app", "db"): "reads_writes", ("app", "cache"): "reads_writes"}
    (ev,) = declared.edges[("app", "db", "reads_writes")].evidence
    assert (ev.file, ev.line, ev.detail) == ("svc/config/app.env", 2, "DATABASE_URL → db")
    assert declared.skipped == []


def test_a_required_variable_missing_skips_that_service_only(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": """
services:
  app:
    image: ${IMAGE:?set IMAGE first}
  worker:
    environment: {API: "http://api:80"}
  api: {image: api}
"""
        },
    )
    declared = read_compose(tmp_path)
    assert "app" not in declared.nodes
    assert ("worker", "api") in declared.dependencies()
    assert reasons(declared) == ["compose.yaml: service app: required variable IMAGE is not set"]


def test_hostile_values_cost_little_and_skip_only_their_service(tmp_path: Path) -> None:
    nested = "${A:-" * 50 + "x" + "}" * 50
    write(
        tmp_path,
        {
            "compose.yaml": f"""
services:
  deep:
    image: "{nested}"
  long:
    environment:
      LETTERS: "{"a" * 300_000}"
      DOLLARS: "{"$" * 100_001}{"${{B}}" * 20_000}"
      UNCLOSED: "{"${{" * 20_000}"
      URLS: "{"http://x" * 30_000}"
      API_URL: http://api:80
  api: {{image: api}}
"""
        },
    )
    started = time.monotonic()
    declared = read_compose(tmp_path)
    assert time.monotonic() - started < 1.0
    assert set(declared.nodes) == {"long", "api"}
    assert ("long", "api") in declared.dependencies()
    assert reasons(declared) == [
        "compose.yaml: service deep: defaults nested deeper than 10 levels"
    ]


def test_include_and_extends_are_followed_within_the_repository(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "app/compose.yaml": """
include:
  - ../infra/compose.yaml
  - path: [../infra/extra.yaml]
services:
  web:
    extends: {service: base, file: common.yaml}
    environment: {STORE: "mongodb://store:27017"}
  worker:
    extends: web
""",
            "app/common.yaml": "services:\n  base:\n    build: ./src\n"
            "    environment: {QUEUE: 'amqp://mq'}\n",
            "infra/compose.yaml": "services:\n  store: {image: mongo}\n",
            "infra/extra.yaml": "services:\n  mq: {image: rabbitmq}\n",
        },
    )
    declared = read_compose(tmp_path)
    assert set(declared.nodes) == {"web", "worker", "store", "mq"}
    assert deps(declared) == {
        ("web", "store"): "reads_writes",
        ("web", "mq"): "publishes",
        ("worker", "store"): "reads_writes",
        ("worker", "mq"): "publishes",
    }
    assert declared.nodes["web"].attributes["directory"] == "app/src"
    assert declared.skipped == []


def test_paths_out_of_the_repository_are_skipped_with_a_reason(tmp_path: Path) -> None:
    outside = write(
        tmp_path / "outside",
        {"compose.yaml": "services:\n  evil: {image: postgres}\n", "secrets.env": "A=http://x:1\n"},
    )
    root = write(
        tmp_path / "repo",
        {
            "compose.yaml": f"""
include: [../outside/compose.yaml, {outside}/compose.yaml, linked/compose.yaml]
services:
  app:
    env_file: [../outside/secrets.env, linked/secrets.env]
    environment: {{API: "http://api:80"}}
  api:
    extends: {{service: evil, file: ../outside/compose.yaml}}
"""
        },
    )
    (root / "linked").symlink_to(outside)
    declared = read_compose(root)
    # api is kept with what it says itself; what it would extend outside is not read.
    assert set(declared.nodes) == {"app", "api"}
    assert ("app", "api") in declared.dependencies()
    found = reasons(declared)
    assert len(found) == 6, found
    assert all("outside the repository" in r for r in found), found


def test_a_compose_file_symlinked_out_of_the_repository_is_not_read(tmp_path: Path) -> None:
    write(tmp_path / "outside", {"compose.yaml": "services:\n  evil: {image: redis}\n"})
    root = tmp_path / "repo"
    (root / "svc").mkdir(parents=True)
    (root / "svc" / "compose.yaml").symlink_to(tmp_path / "outside" / "compose.yaml")
    declared = read_compose(root)
    assert declared.nodes == {}
    assert [s.reason for s in declared.skipped] == [
        "outside the repository (or through a symlink out of it)"
    ]


def test_a_yaml_bomb_and_a_huge_file_are_refused_fast(tmp_path: Path) -> None:
    lines = ["x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"x-{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("services:\n  app:\n    environment: {A: *i}")
    write(
        tmp_path,
        {
            "bomb/compose.yaml": "\n".join(lines) + "\n",
            "big/compose.yaml": "services:\n  app:\n    image: " + "x" * (2 * 1024 * 1024) + "\n",
            "fine/compose.yaml": "services:\n  ok: {image: redis}\n",
        },
    )
    started = time.monotonic()
    declared = read_compose(tmp_path)
    assert time.monotonic() - started < 1.0
    assert set(declared.nodes) == {"ok"}
    found = reasons(declared)
    assert any(r.startswith("bomb/compose.yaml: too many nodes") for r in found), found
    assert any(r.startswith("big/compose.yaml: larger than") for r in found), found


def test_a_repository_with_too_many_compose_files_is_read_in_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compose, "MAX_COMPOSE_FILES", 3)
    for name in "abcde":
        write(tmp_path, {f"{name}/compose.yaml": f"services:\n  {name}: {{}}\n"})
    declared = read_compose(tmp_path)
    assert set(declared.nodes) == {"a", "b", "c"}
    assert reasons(declared) == [".: more than 3 Compose files; the rest not read"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "services: [a, b]",
        "services:\n  a: 5\n  b: [1]\n",
        "- just a list",
        "services:\n  a: {environment: 5, depends_on: 7, links: {x: 1}, build: [1]}\n",
        "services:\n  a: {extends: {service: a}}\n",
        "services:\n  a: {extends: b}\n  b: {extends: a}\n",
        "include: [compose.yaml]\nservices: {a: {}}\n",
        "services:\n  a: {environment: {X: '${'}, image: '$'}\n",
        "\xff\xfe",
    ],
)
def test_a_broken_compose_file_gives_reasons_not_exceptions(tmp_path: Path, text: str) -> None:
    write(tmp_path, {"compose.yaml": text, "ok/compose.yaml": "services:\n  ok: {}\n"})
    declared = read_compose(tmp_path)
    assert "ok" in declared.nodes


@pytest.mark.timeout(120)
def test_every_damaged_fixture_reads_without_an_exception(tmp_path: Path) -> None:
    count = 0
    for source in sorted(AWESOME.glob("*/compose.y*ml")):
        original = yaml.safe_load(source.read_text())
        root = tmp_path / source.parent.name
        root.mkdir()
        # Every third damage: each field meets several odd values, in a few seconds.
        for label, damaged in islice(mutations(original), 0, None, 3):
            (root / source.name).write_text(yaml.safe_dump(damaged), errors="surrogatepass")
            try:
                declared = read_compose(root)
            except Exception as exc:  # noqa: BLE001 - the assertion names the damage
                pytest.fail(f"{source.parent.name} {label}: {exc!r}")
            assert isinstance(declared, Declared)
            count += 1
    assert count > 700
