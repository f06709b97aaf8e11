"""The Backstage reader on Backstage's own example catalog files (against a graph written by
hand from them), and against a loopback stand-in for a running Backstage's catalog API."""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.ingest.forges import mutations
from tests.upstream import UPSTREAM
from trailmap.graph.declared import Declared, Evidence
from trailmap.ingest.backstage import (
    BackstageError,
    EntityRef,
    entity_nodes,
    fetch_catalog,
    read_catalog,
)
from trailmap.outbound import OutboundPolicy

CATALOG = UPSTREAM / "backstage-catalog"
LOOPBACK = OutboundPolicy.parse("127.0.0.0/8")
TOKEN = "test-token"

# Written by hand from the ten files: Components and the Resource as nodes (artists-db is a
# Resource of type database), APIs as `api:` endpoints, owners as teams. www-artist's
# system artist-engagement-portal is in domain artists (the System's spec.domain).
CATALOG_NODES: dict[str, tuple[str, dict[str, str]]] = {
    "artist-lookup": (
        "service",
        {
            "backstage_kind": "component",
            "type": "service",
            "lifecycle": "experimental",
            "system": "artist-engagement-portal",
            "domain": "artists",
        },
    ),
    "www-artist": (
        "service",
        {
            "backstage_kind": "component",
            "type": "website",
            "lifecycle": "production",
            "system": "artist-engagement-portal",
            "domain": "artists",
        },
    ),
    "wayback-archive": (
        "service",
        {"backstage_kind": "component", "type": "service", "lifecycle": "production"},
    ),
    "wayback-search": (
        "service",
        {"backstage_kind": "component", "type": "service", "lifecycle": "production"},
    ),
    "petstore": (
        "service",
        {"backstage_kind": "component", "type": "service", "lifecycle": "experimental"},
    ),
    "artists-db": (
        "database",
        {
            "backstage_kind": "resource",
            "type": "database",
            "system": "artist-engagement-portal",
            "domain": "artists",
        },
    ),
    "api:wayback-archive": (
        "endpoint",
        {"backstage_kind": "api", "type": "openapi", "lifecycle": "production"},
    ),
    # providesApis / consumesApis name these; the catalog files do not define them.
    "api:wayback-search": ("endpoint", {}),
    "api:petstore": ("endpoint", {}),
    "api:streetlights": ("endpoint", {}),
    "api:hello-world": ("endpoint", {}),
    "team-a": ("team", {}),  # the Group
    "team-c": ("team", {}),  # petstore's owner, not defined here
}
CATALOG_EDGES = {
    ("artist-lookup", "team-a", "owned_by"),
    ("www-artist", "team-a", "owned_by"),
    ("wayback-archive", "team-a", "owned_by"),
    ("wayback-search", "team-a", "owned_by"),
    ("artists-db", "team-a", "owned_by"),
    ("api:wayback-archive", "team-a", "owned_by"),
    ("petstore", "team-c", "owned_by"),
    # artist-lookup: dependsOn ['resource:artists-db']
    ("artist-lookup", "artists-db", "reads_writes"),
    ("wayback-archive", "api:wayback-archive", "provides_api"),
    ("wayback-search", "api:wayback-search", "provides_api"),
    ("wayback-search", "api:wayback-archive", "consumes_api"),
    ("petstore", "api:petstore", "provides_api"),
    ("petstore", "api:streetlights", "provides_api"),
    ("petstore", "api:hello-world", "provides_api"),
    # wayback-search consumes the API wayback-archive provides
    ("wayback-search", "wayback-archive", "calls"),
}
CATALOG_DEPENDENCIES = {("artist-lookup", "artists-db"), ("wayback-search", "wayback-archive")}


def _check(declared: Declared) -> None:
    nodes = {n.name: (n.kind, n.attributes) for n in declared.nodes.values()}
    assert nodes == CATALOG_NODES
    assert set(declared.edges) == CATALOG_EDGES
    found = declared.dependencies()
    hits = len(found & CATALOG_DEPENDENCIES)
    assert hits / len(CATALOG_DEPENDENCIES) >= 0.9
    assert hits / len(found) >= 0.9


def test_the_example_catalog_declares_the_graph_written_by_hand() -> None:
    declared = read_catalog(CATALOG)
    _check(declared)
    assert declared.skipped == []
    (evidence,) = declared.edges[("artist-lookup", "artists-db", "reads_writes")].evidence
    assert evidence == Evidence(
        "backstage", "artist-lookup-component.yaml", 1, "dependsOn resource:artists-db"
    )


def test_entity_refs_follow_backstages_rules() -> None:
    assert EntityRef.parse("artists-db", "component") == EntityRef(
        "component", "default", "artists-db"
    )
    assert EntityRef.parse("resource:artists-db", "component") == EntityRef(
        "resource", "default", "artists-db"
    )
    assert EntityRef.parse("group:ops/sre", "group") == EntityRef("group", "ops", "sre")
    assert EntityRef.parse("ops/sre", "group").node == "ops/sre"
    assert EntityRef.parse("user:default/guest", "group").node == "user:guest"


def test_malformed_entities_never_raise() -> None:
    entities = [
        doc
        for path in sorted(CATALOG.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    count = 0
    for index in (1, 4, 8):  # artist-lookup, petstore, wayback-search
        for label, damaged in mutations(entities[index]):
            others = [copy.deepcopy(e) for i, e in enumerate(entities) if i != index]
            found = entity_nodes((e, Evidence("backstage", "x")) for e in [*others, damaged])
            assert isinstance(found, Declared), label
            count += 1
    assert count > 100


# -- a running Backstage ---------------------------------------------------------------------


def _served_entities() -> list[dict[str, Any]]:
    """The fixture entities as the catalog API returns them: namespace filled in, a uid and
    an etag added, and the `relations` the processors compute (left empty here)."""
    served = []
    for index, path in enumerate(sorted(CATALOG.glob("*.yaml"))):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            entity = copy.deepcopy(doc)
            entity["metadata"].setdefault("namespace", "default")
            entity["metadata"]["uid"] = f"00000000-0000-4000-8000-{index:012d}"
            entity["metadata"]["etag"] = base64.b64encode(path.name.encode()).decode()
            entity["relations"] = []
            served.append(entity)
    return served


class _Catalog(BaseHTTPRequestHandler):
    entities: ClassVar[list[dict[str, Any]]] = []
    by_query = True
    answer: bytes | None = None  # when set, every answer: 200 with this body
    requests: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.answer is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.answer)))
            self.end_headers()
            self.wfile.write(self.answer)
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"error": {"name": "AuthenticationError", "message": "no token"}})
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        limit = int(query.get("limit", ["20"])[0])
        if url.path == "/api/catalog/entities/by-query" and self.by_query:
            if "cursor" in query:
                offset = int(base64.b64decode(query["cursor"][0]))
            else:
                kinds = {f.removeprefix("kind=") for f in query.get("filter", [])}
                assert "component" in kinds
                offset = 0
            page = self.entities[offset : offset + limit]
            more = offset + limit < len(self.entities)
            info = (
                {"nextCursor": base64.b64encode(str(offset + limit).encode()).decode()}
                if more
                else {}
            )
            self._send(200, {"items": page, "totalItems": len(self.entities), "pageInfo": info})
        elif url.path == "/api/catalog/entities":
            offset = int(query.get("offset", ["0"])[0])
            self._send(200, self.entities[offset : offset + limit])
        else:
            self._send(404, {"error": {"name": "NotFoundError", "message": "no route"}})


@pytest.fixture
def backstage() -> Iterator[tuple[str, type[_Catalog]]]:
    handler = type("Catalog", (_Catalog,), {"entities": _served_entities(), "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_a_running_backstage_is_read_through_its_paged_catalog_api(
    backstage: tuple[str, type[_Catalog]],
) -> None:
    url, handler = backstage
    declared = await fetch_catalog(url, TOKEN, LOOPBACK, page_size=4)
    _check(declared)
    assert len(handler.requests) == 4  # 15 entities, 4 a page
    assert all(r.startswith("/api/catalog/entities/by-query?") for r in handler.requests)
    evidence = declared.nodes["artist-lookup"].evidence[0]
    assert evidence.file == "catalog component:default/artist-lookup"


@pytest.mark.anyio
async def test_an_older_backstage_is_read_with_limit_and_offset(
    backstage: tuple[str, type[_Catalog]],
) -> None:
    url, handler = backstage
    handler.by_query = False
    _check(await fetch_catalog(url + "/", TOKEN, LOOPBACK, page_size=4))
    assert handler.requests[1].startswith("/api/catalog/entities?filter=kind%3Dcomponent")


@pytest.mark.anyio
async def test_a_refused_token_and_a_refused_address_are_errors_not_graphs(
    backstage: tuple[str, type[_Catalog]],
) -> None:
    url, handler = backstage
    with pytest.raises(BackstageError, match="answered 401"):
        await fetch_catalog(url, "wrong", LOOPBACK)
    with pytest.raises(BackstageError, match="loopback"):
        await fetch_catalog(url, TOKEN, OutboundPolicy.default())
    assert len(handler.requests) == 1  # the refused address was never connected to


def test_catalog_files_that_are_not_backstage_or_are_hostile_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "catalog-info.yaml").write_text(
        (CATALOG / "petstore-component.yaml").read_text() + "\n---\n- not an entity\n"
    )
    (tmp_path / "values.yaml").write_text("a: [unclosed\n")
    (tmp_path / "bad-entity.yaml").write_text("apiVersion: backstage.io/v1alpha1\nkind: [\n")
    declared = read_catalog(tmp_path)
    assert set(declared.nodes) == {
        "petstore",
        "team-c",
        "api:petstore",
        "api:streetlights",
        "api:hello-world",
    }
    assert [s.file for s in declared.skipped] == ["bad-entity.yaml"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"<html>sign in</html>", "not JSON"),
        (b'{"entities": []}', "not a page of entities"),
        (b'{"items": [1, "x", null], "pageInfo": {}}', None),
    ],
)
async def test_answers_that_are_not_the_catalogs_are_errors(
    backstage: tuple[str, type[_Catalog]], answer: bytes, error: str | None
) -> None:
    url, handler = backstage
    handler.answer = answer
    if error is None:
        assert (await fetch_catalog(url, TOKEN, LOOPBACK)).nodes == {}
        return
    with pytest.raises(BackstageError, match=error):
        await fetch_catalog(url, TOKEN, LOOPBACK)
