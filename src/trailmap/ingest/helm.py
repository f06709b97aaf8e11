"""Helm charts' values files and Skaffold's build artifacts read into a `Declared`, without
rendering a template: what the values themselves name, nothing the templates would add."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from trailmap.graph.declared import Declared, Evidence, Skipped, dependency_kind
from trailmap.graph.model import NodeKind
from trailmap.ingest.manifests import (
    YamlRefused,
    datastore_kind,
    hosts_in,
    load_yaml,
    looks_secret,
    read_text,
    yaml_files,
)

__all__ = ["read_helm_values", "read_skaffold"]

READER: Final = "helm"
_MAX_WALK: Final = 8
# A values key whose string value is an address another component is reached at.
_ADDRESS_KEY = re.compile(r"(addr|address|url|uri|host|endpoint|dsn|connection)", re.IGNORECASE)
_DATASTORE_KEY = re.compile(r"^(?P<owner>[a-z][A-Za-z0-9]*?)(Database|Db|Cache|Redis|Store)$")
_TECHNOLOGIES: Final[dict[str, tuple[NodeKind, str]]] = {
    "redis": ("cache", "redis"),
    "memcached": ("cache", "memcached"),
    "postgres": ("database", "postgres"),
    "postgresql": ("database", "postgres"),
    "mysql": ("database", "mysql"),
    "mongodb": ("database", "mongodb"),
    "spanner": ("database", "spanner"),
    "alloydb": ("database", "postgres"),
}


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _load(path: Path, root: Path, declared: Declared) -> tuple[str, dict[str, Any]] | None:
    text = read_text(path, root, declared)
    if text is None:
        return None
    try:
        docs = load_yaml(text)
    except YamlRefused as refused:
        declared.skipped.append(Skipped(path.relative_to(root).as_posix(), str(refused)))
        return None
    return text, (_map(docs[0][1]) if docs else {})


def _strings(value: Any, key: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(key, string) leaves of a values block, a few levels deep."""
    if depth > _MAX_WALK:
        return []
    if isinstance(value, str):
        return [(key, value)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _strings(v, str(k), depth + 1)]
    if isinstance(value, list):
        return [p for v in value for p in _strings(v, key, depth + 1)]
    return []


def read_helm_values(root: Path) -> Declared:
    """The graph the Helm charts' `values.yaml` files under `root` declare. A top-level block
    with a `name` (and `create` not false) is a component of the chart; a block named
    `<component>Database` (or `Db`, `Cache`, `Redis`, `Store`) with a `type` is that
    component's datastore, its in-cluster name taken from a nested block's `name` or its
    `connectionString`; values under address-like keys (`*Addr`, `*Url`, `*Host`, `dsn` ...)
    naming another component are calls. `Chart.yaml` gives the chart's name and version as
    attributes. Templates are not rendered, so nothing only a template says is read."""
    declared = Declared()
    root = root.resolve()
    for path in yaml_files(root):
        if path.name not in ("values.yaml", "values.yml"):
            continue
        loaded = _load(path, root, declared)
        if loaded is None:
            continue
        text, values = loaded
        rel = path.relative_to(root).as_posix()
        chart: dict[str, Any] = {}
        for name in ("Chart.yaml", "Chart.yml"):
            if (path.parent / name).is_file():
                chart = (_load(path.parent / name, root, declared) or ("", {}))[1]
                break
        _read_values(values, text, rel, chart, declared)
    return declared


def _line(text: str, key: str) -> int | None:
    """The line of a top-level key, for evidence."""
    match = re.search(rf"^{re.escape(key)}\s*:", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _read_values(
    values: dict[str, Any], text: str, rel: str, chart: dict[str, Any], declared: Declared
) -> None:
    components: dict[str, str] = {}  # values key -> component name
    for key, raw in values.items():
        block = _map(raw)
        name = _str(block.get("name"))
        if not name or block.get("create") is False or _DATASTORE_KEY.match(str(key)):
            continue
        components[str(key)] = name
        ev = Evidence(READER, rel, _line(text, str(key)), f"{key}.name")
        node = declared.node(name, "service", ev)
        if _str(chart.get("name")):
            node.attributes.setdefault("helm_chart", _str(chart["name"]))
        for attr, field_ in (("chart_version", "version"), ("app_version", "appVersion")):
            if chart.get(field_) is not None:
                node.attributes.setdefault(attr, str(chart[field_]))
    owners = {key.lower().removesuffix("service"): name for key, name in components.items()}
    for key, raw in values.items():
        match = _DATASTORE_KEY.match(str(key))
        if match and _map(raw):
            owner = owners.get(match.group("owner").lower())
            _datastore(
                str(key), _map(raw), owner, Evidence(READER, rel, _line(text, str(key))), declared
            )
    for key, name in components.items():
        _address_calls(
            key, name, values.get(key), Evidence(READER, rel, _line(text, key)), declared
        )


def _datastore(
    key: str, block: dict[str, Any], owner: str | None, at: Evidence, declared: Declared
) -> None:
    """`cartDatabase: {type: redis, connectionString: ..., inClusterRedis: {name: ...}}`."""
    technology = _str(block.get("type")).lower()
    kind, tech = (
        _TECHNOLOGIES.get(technology) or datastore_kind(technology) or ("database", technology)
    )
    names = [
        _str(v.get("name"))
        for v in block.values()
        if isinstance(v, dict) and _str(v.get("name")) and v.get("create") is not False
    ]
    names += hosts_in(_str(block.get("connectionString")))
    for name in [n for n in names if n][:1]:
        ev = Evidence(READER, at.file, at.line, f"{key}.type {technology}")
        declared.node(name, kind, ev, technology=tech or None)
        if owner:
            declared.edge(owner, name, "reads_writes", ev)


def _address_calls(key: str, name: str, block: Any, at: Evidence, declared: Declared) -> None:
    """Values under address-like keys of a component's block naming another component."""
    known = {n.lower(): n for n in declared.nodes}
    for leaf, value in _strings(block):
        if not _ADDRESS_KEY.search(leaf):
            continue
        for host in hosts_in(value, bare=not looks_secret(leaf)):
            target = known.get(host.split(".", 1)[0])
            if target and target != name:
                ev = Evidence(READER, at.file, at.line, f"{key} {leaf} names {host}")
                kind = declared.nodes[target].kind
                edge = dependency_kind(kind)
                declared.edge(name, target, edge, ev)


def read_skaffold(root: Path) -> Declared:
    """`skaffold.yaml`'s build artifacts under `root`: a node per image (named as the image's
    last path part) with its `image` and `build_context` as attributes."""
    declared = Declared()
    root = root.resolve()
    for path in yaml_files(root):
        if path.name not in ("skaffold.yaml", "skaffold.yml"):
            continue
        text = read_text(path, root, declared)
        if text is None:
            continue
        rel = path.relative_to(root).as_posix()
        try:
            docs = load_yaml(text)
        except YamlRefused as refused:
            declared.skipped.append(Skipped(rel, str(refused)))
            continue
        for line, doc in docs:
            for artifact in (_map(a) for a in _list(_map(_map(doc).get("build")).get("artifacts"))):
                image = _str(artifact.get("image"))
                if not image:
                    continue
                name = image.rsplit("/", 1)[-1].split(":", 1)[0]
                node = declared.node(
                    name, "service", Evidence("skaffold", rel, line, f"artifact {image}")
                )
                node.attributes.setdefault("image", image)
                node.attributes.setdefault("build_context", _str(artifact.get("context")) or ".")
    return declared
