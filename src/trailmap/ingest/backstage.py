"""Backstage's software catalog read into a `Declared`: `catalog-info.yaml` files in a
repository, or the entities of a running Backstage through its catalog API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import anyio
import httpx
import orjson

from trailmap.graph.declared import Declared, DeclaredEdgeKind, Evidence, Skipped, dependency_kind
from trailmap.graph.model import NodeKind
from trailmap.ingest.manifests import YamlRefused, load_yaml, read_text, yaml_files
from trailmap.outbound import OutboundError, OutboundPolicy

__all__ = ["BackstageError", "EntityRef", "entity_nodes", "fetch_catalog", "read_catalog"]

READER: Final = "backstage"
KINDS: Final = ("Component", "API", "Resource", "System", "Domain", "Group", "User")
_PAGE: Final = 500
_MAX_PAGES: Final = 200
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_TIMEOUT_SECONDS: Final = 30.0
_RESOURCE_KINDS: Final[dict[str, NodeKind]] = {
    "database": "database",
    "cache": "cache",
    "queue": "queue",
    "topic": "topic",
    "kafka-topic": "topic",
}


class BackstageError(Exception):
    """The running Backstage could not be read: refused by the outbound policy, not
    reachable, or its answers are not the catalog API's."""


@dataclass(frozen=True, slots=True)
class EntityRef:
    """`[kind:][namespace/]name`, with Backstage's defaults filled in."""

    kind: str
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str, default_kind: str, default_namespace: str = "default") -> EntityRef:
        kind, sep, rest = text.partition(":")
        if not sep:
            kind, rest = default_kind, text
        namespace, sep, name = rest.partition("/")
        if not sep:
            namespace, name = default_namespace, rest
        return cls(kind.strip().lower(), namespace.strip().lower(), name.strip())

    @property
    def node(self) -> str:
        """The node it names: a component's or resource's own name (with its namespace when
        not `default`), `api:name` for an API, `user:name` for a user; a group's name."""
        base = self.name if self.namespace == "default" else f"{self.namespace}/{self.name}"
        return f"{self.kind}:{base}" if self.kind in ("api", "user") else base


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _refs(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, str) and v.strip()]


def entity_nodes(entities: Iterable[tuple[dict[str, Any], Evidence]]) -> Declared:
    """The graph some catalog entities declare. Components and Resources become nodes
    (a Resource of type database, cache, queue or topic that kind), APIs `endpoint` nodes
    named `api:<name>`, Groups and the owners named `team` nodes; Systems and Domains are
    attributes (`system`, `domain`) of what belongs to them, not nodes."""
    declared = Declared()
    entities = list(entities)
    domain_of: dict[str, str] = {}
    for body, _ in entities:
        ref = _ref_of(body)
        domain = _str(_map(body.get("spec")).get("domain"))
        if ref is not None and ref.kind == "system" and domain:
            domain_of[ref.name] = domain
    relations: list[tuple[dict[str, Any], Evidence, EntityRef]] = []
    for body, ev in entities:
        ref = _ref_of(body)
        if ref is not None and ref.kind in ("component", "api", "resource", "group"):
            _entity_node(declared, ref, _map(body.get("spec")), ev, domain_of)
            relations.append((_map(body.get("spec")), ev, ref))
    for spec, ev, ref in relations:
        _relations(declared, ref, spec, ev)
    _api_calls(declared)
    return declared


def _entity_node(
    declared: Declared,
    ref: EntityRef,
    spec: dict[str, Any],
    ev: Evidence,
    domain_of: dict[str, str],
) -> None:
    if ref.kind == "group":
        declared.node(ref.node, "team", ev)
        return
    kind: NodeKind = "service"
    if ref.kind == "api":
        kind = "endpoint"
    elif ref.kind == "resource":
        kind = _RESOURCE_KINDS.get(_str(spec.get("type")).lower(), "service")
    node = declared.node(ref.node, kind, ev)
    node.attributes.setdefault("backstage_kind", ref.kind)
    for key in ("type", "lifecycle"):
        if _str(spec.get(key)):
            node.attributes.setdefault(key, _str(spec[key]))
    if _str(spec.get("system")):
        system = EntityRef.parse(_str(spec["system"]), "system", ref.namespace)
        node.attributes.setdefault("system", system.name)
        if system.name in domain_of:
            node.attributes.setdefault("domain", domain_of[system.name])


def _relations(declared: Declared, ref: EntityRef, spec: dict[str, Any], ev: Evidence) -> None:
    def said(detail: str) -> Evidence:
        return Evidence(READER, ev.file, ev.line, detail)

    for owner in _refs(spec.get("owner"))[:1]:
        team = EntityRef.parse(owner, "group", ref.namespace)
        declared.node(team.node, "team", said(f"owner {owner}"))
        declared.edge(ref.node, team.node, "owned_by", said(f"owner {owner}"))
    if ref.kind not in ("component", "resource"):
        return
    for target in _refs(spec.get("dependsOn")):
        to = EntityRef.parse(target, "component", ref.namespace)
        found = declared.nodes.get(to.node)
        kind: NodeKind = found.kind if found is not None else "service"
        declared.node(to.node, kind, said(f"dependsOn {target}"))
        edge = dependency_kind(kind)
        declared.edge(ref.node, to.node, edge, said(f"dependsOn {target}"))
    if _str(spec.get("subcomponentOf")):
        parent = EntityRef.parse(_str(spec["subcomponentOf"]), "component", ref.namespace)
        declared.node(parent.node, "service", said(f"subcomponentOf {spec['subcomponentOf']}"))
        declared.edge(ref.node, parent.node, "part_of", said(f"subcomponentOf {parent.name}"))
    apis: tuple[tuple[str, DeclaredEdgeKind], ...] = (
        ("providesApis", "provides_api"),
        ("consumesApis", "consumes_api"),
    )
    for field_, edge_kind in apis:
        for api in _refs(spec.get(field_)):
            to = EntityRef.parse(api, "api", ref.namespace)
            declared.node(to.node, "endpoint", said(f"{field_} {api}"))
            declared.edge(ref.node, to.node, edge_kind, said(f"{field_} {api}"))


def _api_calls(declared: Declared) -> None:
    """A component that consumes an API calls each component that provides it."""
    providers: dict[str, list[str]] = {}
    for source, target, kind in list(declared.edges):
        if kind == "provides_api":
            providers.setdefault(target, []).append(source)
    for (source, target, kind), edge in list(declared.edges.items()):
        if kind != "consumes_api":
            continue
        for provider in providers.get(target, []):
            if provider != source:
                ev = edge.evidence[0]
                detail = f"consumes {target}, which {provider} provides"
                declared.edge(source, provider, "calls", Evidence(READER, ev.file, ev.line, detail))


def _ref_of(body: dict[str, Any]) -> EntityRef | None:
    meta = _map(body.get("metadata"))
    kind, name = _str(body.get("kind")), _str(meta.get("name"))
    if kind not in KINDS or not name:
        return None
    return EntityRef(kind.lower(), (_str(meta.get("namespace")) or "default").lower(), name)


def read_catalog(root: Path) -> Declared:
    """The graph the Backstage entity files under `root` declare (every YAML file whose
    documents have a `backstage.io/` apiVersion). Never raises on what the files say."""
    root = root.resolve()
    found = Declared()
    entities: list[tuple[dict[str, Any], Evidence]] = []
    for path in yaml_files(root):
        text = read_text(path, root, found, walked=True)
        if text is None or "backstage.io/" not in text:
            # An entity's apiVersion names backstage.io: other YAML need not be parsed.
            continue
        rel = path.relative_to(root).as_posix()
        try:
            docs = load_yaml(text)
        except YamlRefused as refused:
            if "backstage.io/" in text or "not valid YAML" not in str(refused):
                found.skipped.append(Skipped(rel, str(refused)))
            continue
        for line, doc in docs:
            if isinstance(doc, dict) and _str(doc.get("apiVersion")).startswith("backstage.io/"):
                name = _str(_map(doc.get("metadata")).get("name"))
                entities.append((doc, Evidence(READER, rel, line, f"{doc.get('kind')} {name}")))
    declared = entity_nodes(entities)
    declared.skipped[:0] = found.skipped
    return declared


async def fetch_catalog(
    base_url: str,
    token: str | None,
    outbound: OutboundPolicy,
    *,
    client: httpx.AsyncClient | None = None,
    page_size: int = _PAGE,
) -> Declared:
    """The graph a running Backstage's catalog declares: its Components, APIs, Resources,
    Systems, Domains, Groups and Users through `GET /api/catalog/entities/by-query` (cursor
    paging), or the older `GET /api/catalog/entities` (limit and offset) when the former is
    not there; every request through the outbound guard. Raises BackstageError."""
    base = base_url.rstrip("/") + "/api/catalog"
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    filters = [("filter", f"kind={kind.lower()}") for kind in KINDS]
    items: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(_TIMEOUT_SECONDS * 4):
            cursor: str | None = None
            for page in range(_MAX_PAGES):
                query = [("limit", str(page_size))] + ([("cursor", cursor)] if cursor else filters)
                status, body = await _get(
                    f"{base}/entities/by-query?{urlencode(query)}", headers, outbound, client
                )
                if status == 404 and page == 0:
                    items = await _offset_pages(base, filters, headers, outbound, client, page_size)
                    break
                if (
                    status != 200
                    or not isinstance(body, dict)
                    or not isinstance(body.get("items"), list)
                ):
                    raise BackstageError(f"the catalog answered {status}, not a page of entities")
                items += [i for i in body["items"] if isinstance(i, dict)]
                cursor = _str(_map(body.get("pageInfo")).get("nextCursor")) or None
                if cursor is None or not body["items"]:
                    break
    except TimeoutError:
        raise BackstageError("the catalog did not answer in time") from None
    except OutboundError as error:
        raise BackstageError(str(error)) from None
    except httpx.HTTPError:
        raise BackstageError("the catalog could not be reached") from None
    return entity_nodes(
        (item, Evidence(READER, f"catalog {_entity_name(item)}", None, f"{item.get('kind')}"))
        for item in items
    )


def _entity_name(item: dict[str, Any]) -> str:
    meta = _map(item.get("metadata"))
    namespace = _str(meta.get("namespace")) or "default"
    return f"{_str(item.get('kind')).lower()}:{namespace}/{_str(meta.get('name'))}"


async def _offset_pages(
    base: str,
    filters: list[tuple[str, str]],
    headers: dict[str, str],
    outbound: OutboundPolicy,
    client: httpx.AsyncClient | None,
    page_size: int,
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in range(_MAX_PAGES):
        query = [*filters, ("limit", str(page_size)), ("offset", str(page * page_size))]
        status, body = await _get(f"{base}/entities?{urlencode(query)}", headers, outbound, client)
        if status != 200 or not isinstance(body, list):
            raise BackstageError(f"the catalog answered {status}, not a list of entities")
        items += [i for i in body if isinstance(i, dict)]
        if len(body) < page_size:
            break
    return items


async def _get(
    url: str,
    headers: dict[str, str],
    outbound: OutboundPolicy,
    client: httpx.AsyncClient | None,
) -> tuple[int, Any]:
    async with outbound.get(
        url, io_timeout_seconds=_TIMEOUT_SECONDS, headers=headers, client=client
    ) as response:
        if response.status_code != 200:
            return response.status_code, None
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > _MAX_BODY_BYTES:
                raise BackstageError(f"a catalog page is larger than {_MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    try:
        return 200, orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise BackstageError("the catalog's answer is not JSON") from None
