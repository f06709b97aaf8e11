"""Kubernetes manifests (plain files and Kustomize bases) read into a `Declared`: workloads,
the Services and Ingresses in front of them, and the peers their environment names."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from trailmap.graph.declared import Declared, Evidence, Reference, Skipped, dependency_kind
from trailmap.graph.model import NodeKind
from trailmap.ingest.yaml_safe import YamlRefused, load_yaml_documents

__all__ = [
    "MAX_FILE_BYTES",
    "YamlRefused",
    "datastore_kind",
    "hosts_in",
    "load_yaml",
    "looks_secret",
    "one_walk",
    "read_manifests",
    "read_objects",
    "read_text",
    "yaml_files",
]

READER: Final = "kubernetes"
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_FILES: Final = 5000
_MAX_KUSTOMIZE_DEPTH: Final = 10
_MAX_KUSTOMIZE_VISITS: Final = 500  # kustomizations read, counting each time one is listed
_WORKLOADS: Final = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
_SKIP_DIRS: Final = frozenset({".git", "node_modules", ".venv", "vendor"})

# An image's last path part (without tag) -> (node kind, technology).
_DATASTORES: Final[dict[str, tuple[NodeKind, str]]] = {
    "redis": ("cache", "redis"),
    "valkey": ("cache", "valkey"),
    "memcached": ("cache", "memcached"),
    "postgres": ("database", "postgres"),
    "postgresql": ("database", "postgres"),
    "postgis": ("database", "postgres"),
    "mysql": ("database", "mysql"),
    "mariadb": ("database", "mariadb"),
    "mongo": ("database", "mongodb"),
    "mongodb": ("database", "mongodb"),
    "cassandra": ("database", "cassandra"),
    "couchdb": ("database", "couchdb"),
    "elasticsearch": ("database", "elasticsearch"),
    "opensearch": ("database", "opensearch"),
    "kafka": ("queue", "kafka"),
    "rabbitmq": ("queue", "rabbitmq"),
    "nats": ("queue", "nats"),
}


def load_yaml(text: str) -> list[tuple[int, Any]]:
    """Every document of `text` with its first line, read through `yaml_safe`'s limits (size,
    depth, aliases expanded); `YamlRefused` with the reason otherwise."""
    return [(doc.line() or 1, doc.data) for doc in load_yaml_documents(text, file="")]


def read_text(path: Path, root: Path, declared: Declared, *, walked: bool = False) -> str | None:
    """The file's text, or None with a reason in `declared.skipped` (too large, outside the
    root through a symbolic link, not UTF-8). `walked`: the path came from `yaml_files(root)`
    of a resolved root, which follows no folder link, so only the file itself may be one."""
    rel = _rel(path, root)
    try:
        real = path.resolve() if not walked or path.is_symlink() else path
        if not real.is_relative_to(root):
            declared.skipped.append(Skipped(rel, "a symbolic link out of the repository"))
            return None
        size = real.stat().st_size
        if size > MAX_FILE_BYTES:
            declared.skipped.append(
                Skipped(rel, f"larger than {MAX_FILE_BYTES // 1024} KiB ({size} bytes)")
            )
            return None
        return real.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        declared.skipped.append(Skipped(rel, "not UTF-8 text"))
    except OSError as error:
        declared.skipped.append(Skipped(rel, f"not readable ({error.strerror or 'error'})"))
    return None


# Within `one_walk()`: the files found under each root, so that the readers of one repository
# walk it once between them.
_WALKED: ContextVar[dict[Path, tuple[Path, ...]] | None] = ContextVar("_WALKED", default=None)


@contextmanager
def one_walk() -> Iterator[None]:
    """Within it, `yaml_files` walks each root once (`ingest/repository.py`'s readers)."""
    token = _WALKED.set({})
    try:
        yield
    finally:
        _WALKED.reset(token)


def yaml_files(root: Path) -> Iterator[Path]:
    """`*.yaml` and `*.yml` under `root`, in a stable order, without following directory
    links or entering `.git` and dependency folders; at most 5,000."""
    walked = _WALKED.get()
    if walked is None:
        yield from _yaml_files(root)
        return
    if root not in walked:
        walked[root] = tuple(_yaml_files(root))
    yield from walked[root]


def _yaml_files(root: Path) -> Iterator[Path]:
    count = 0
    for here, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            if name.endswith((".yaml", ".yml")):
                count += 1
                if count > MAX_FILES:
                    return
                yield Path(here) / name


def datastore_kind(image: str) -> tuple[NodeKind, str] | None:
    """(kind, technology) when an image is a known database, cache or broker."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0].lower()
    if base in _DATASTORES:
        return _DATASTORES[base]
    for prefix, found in _DATASTORES.items():
        if base.startswith(prefix + "-"):
            return found
    return None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class _Transform:
    namespace: str | None = None
    prefix: str = ""
    suffix: str = ""

    def inside(self, inner: _Transform) -> _Transform:
        """This (outer) kustomization's transform applied over an inner one's."""
        return _Transform(
            self.namespace or inner.namespace,
            self.prefix + inner.prefix,
            inner.suffix + self.suffix,
        )

    def name(self, name: str) -> str:
        return f"{self.prefix}{name}{self.suffix}" if name else name


@dataclass(slots=True)
class _Object:
    body: dict[str, Any]
    file: str
    line: int | None
    transform: _Transform
    reader: str = READER

    @property
    def kind(self) -> str:
        return _str(self.body.get("kind"))

    @property
    def meta(self) -> dict[str, Any]:
        return _map(self.body.get("metadata"))

    @property
    def name(self) -> str:
        return self.transform.name(_str(self.meta.get("name")))

    @property
    def original_name(self) -> str:
        return _str(self.meta.get("name"))

    @property
    def namespace(self) -> str | None:
        return self.transform.namespace or _str(self.meta.get("namespace")) or None

    def evidence(self, detail: str) -> Evidence:
        return Evidence(self.reader, self.file, self.line, detail)


@dataclass(slots=True)
class _Workload:
    node: str
    obj: _Object
    labels: dict[str, str]
    pod: dict[str, Any]
    aliases: set[str] = field(default_factory=set)


def _is_object(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("apiVersion"), str)
        and isinstance(doc.get("kind"), str)
        and isinstance(doc.get("metadata"), dict)
    )


def _looks_kubernetes(text: str) -> bool:
    return "apiVersion:" in text and "kind:" in text


_KUSTOMIZATIONS: Final = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def _remote(ref: str) -> bool:
    return "://" in ref or "?ref=" in ref or ref.startswith(("github.com/", "git@", "gitlab.com/"))


@dataclass(slots=True)
class _Kustomize:
    """Which transforms each file a kustomization lists is read with (a file listed by an
    overlay and its base is read once per transform), and the ConfigMaps it generates."""

    root: Path
    declared: Declared
    transforms: dict[Path, list[_Transform]] = field(default_factory=dict)
    generated: list[_Object] = field(default_factory=list)
    bodies: dict[Path, dict[str, Any]] = field(default_factory=dict)
    visits: int = 0

    def visit(self, kfile: Path, outer: _Transform, seen: tuple[Path, ...] = ()) -> None:
        rel = _rel(kfile, self.root)
        if len(seen) > _MAX_KUSTOMIZE_DEPTH or kfile in seen:
            self.declared.skipped.append(
                Skipped(rel, "kustomization nested too deep or in a cycle")
            )
            return
        self.visits += 1
        if self.visits > _MAX_KUSTOMIZE_VISITS:
            if self.visits == _MAX_KUSTOMIZE_VISITS + 1:
                reason = (
                    f"more than {_MAX_KUSTOMIZE_VISITS} kustomizations to read: the rest not read"
                )
                self.declared.skipped.append(Skipped(rel, reason))
            return
        body = self.bodies.get(kfile)
        if body is None:
            # Parsed once however many overlays list it (a base under every environment).
            body = self.bodies[kfile] = self._parse(kfile, rel)
        own = _Transform(
            _str(body.get("namespace")) or None,
            _str(body.get("namePrefix")),
            _str(body.get("nameSuffix")),
        )
        transform = outer.inside(own)
        for entry in _list(body.get("resources")) + _list(body.get("bases")):
            if _str(entry):
                self._resource(kfile, _str(entry), transform, (*seen, kfile))
        for key in ("patches", "patchesStrategicMerge", "patchesJson6902", "components"):
            if body.get(key):
                self.declared.skipped.append(Skipped(rel, f"{key} not applied"))
        for generator in (_map(g) for g in _list(body.get("configMapGenerator"))):
            pairs = (_str(literal).partition("=") for literal in _list(generator.get("literals")))
            configmap = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": _str(generator.get("name"))},
                "data": {k.strip(): v.strip() for k, sep, v in pairs if sep},
            }
            self.generated.append(_Object(configmap, rel, 1, transform))

    def _parse(self, kfile: Path, rel: str) -> dict[str, Any]:
        text = read_text(kfile, self.root, self.declared)
        try:
            docs = load_yaml(text) if text is not None else []
        except YamlRefused as refused:
            self.declared.skipped.append(Skipped(rel, str(refused)))
            docs = []
        return _map(docs[0][1]) if docs else {}

    def _resource(
        self, kfile: Path, ref: str, transform: _Transform, seen: tuple[Path, ...]
    ) -> None:
        rel = _rel(kfile, self.root)
        if _remote(ref):
            self.declared.skipped.append(Skipped(rel, f"remote base {ref} not fetched"))
            return
        target = (kfile.parent / ref).resolve()
        if not target.is_relative_to(self.root):
            self.declared.skipped.append(Skipped(rel, f"resource {ref} is outside the repository"))
        elif target.is_file():
            known = self.transforms.setdefault(target, [])
            if transform not in known:
                known.append(transform)
        elif not target.is_dir():
            self.declared.skipped.append(Skipped(rel, f"resource {ref} does not exist"))
        elif inner := next((target / n for n in _KUSTOMIZATIONS if (target / n).is_file()), None):
            self.visit(inner, transform, seen)
        else:
            self.declared.skipped.append(Skipped(rel, f"resource {ref} has no kustomization"))


def _refusal(text: str, refused: YamlRefused) -> str | None:
    """Why a file was not read, when it matters: a limit always; a YAML error only when the
    file looks like Kubernetes objects (other YAML is not this reader's)."""
    if "not valid YAML" not in str(refused):
        return str(refused)
    if not _looks_kubernetes(text):
        return None
    return "a template, not rendered" if "{{" in text else str(refused)


def _objects(root: Path, declared: Declared) -> list[_Object]:
    # The root is resolved and the walk follows no folder link: a file's real path is its
    # own unless it is a link itself.
    files = [(p, p.resolve() if p.is_symlink() else p) for p in yaml_files(root)]
    kustomize = _Kustomize(root, declared)
    for path, real in files:
        if path.name in _KUSTOMIZATIONS:
            kustomize.visit(real, _Transform())
    transforms, objects = kustomize.transforms, kustomize.generated
    for path, real in files:
        if path.name in _KUSTOMIZATIONS:
            continue
        rel = _rel(path, root)
        text = read_text(path, root, declared, walked=True)
        if text is None or "apiVersion" not in text or "kind" not in text:
            # No object without both keys (in any quoting): other YAML is not parsed.
            continue
        try:
            docs = load_yaml(text)
        except YamlRefused as refused:
            if reason := _refusal(text, refused):
                declared.skipped.append(Skipped(rel, reason))
            continue
        for line, doc in docs:
            if not _is_object(doc):
                continue
            items = _list(doc.get("items")) if str(doc["kind"]).endswith("List") else [doc]
            for item in items:
                if _is_object(item):
                    for transform in transforms.get(real, [_Transform()]):
                        objects.append(_Object(item, rel, line, transform))
    return objects


def _service_name(obj: _Object, template_labels: Mapping[str, Any]) -> str:
    """As the live reader names it: app.kubernetes.io/name, else `app`, else the name."""
    labels = _map(obj.meta.get("labels"))
    for source in (labels, template_labels):
        for label in ("app.kubernetes.io/name", "app"):
            value = source.get(label)
            if isinstance(value, str | int) and str(value):
                return str(value)
    return obj.name


def _pod_template(obj: _Object) -> dict[str, Any]:
    spec = _map(obj.body.get("spec"))
    if obj.kind == "CronJob":
        spec = _map(_map(spec.get("jobTemplate")).get("spec"))
    return _map(spec.get("template"))


def _containers(pod: dict[str, Any], key: str = "containers") -> list[dict[str, Any]]:
    return [c for c in (_map(x) for x in _list(_map(pod.get("spec")).get(key))) if c]


_HOST_PORT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
_WORDS = frozenset({"true", "false", "yes", "no", "on", "off"})
# A variable whose value may be a secret: its value is read only for a URL's, a DSN's or a
# `host:port`'s host, never taken whole as a host name (which evidence would repeat).
_SECRET_NAME = re.compile(
    r"PASS|PWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|(^|_)KEY$", re.IGNORECASE
)


def looks_secret(name: str) -> bool:
    """Whether a variable's or key's name says its value may be a secret."""
    return _SECRET_NAME.search(name) is not None


def hosts_in(value: str, *, bare: bool = True) -> list[str]:
    """The hosts a configuration value names: a URL's or DSN's (several for a multi-host
    DSN), `host:port` (comma-separated lists too), or, when `bare`, the value itself when it
    is a bare host name. Lower-cased, in order, once each."""
    found: list[str] = []
    value = value.strip()
    if value.startswith("jdbc:"):
        value = value[5:]
    for raw in value.split(",") if "://" not in value else [value]:
        part = raw.strip()
        if "://" in part:
            try:
                netloc = urlsplit(part).netloc
            except ValueError:
                continue
            netloc = netloc.rpartition("@")[2]
            for hostport in netloc.split(","):
                host = hostport.strip().strip("[]").rsplit(":", 1)[0] if hostport else ""
                if host and _HOST.match(host):
                    found.append(host)
            continue
        match = _HOST_PORT.match(part)
        if match:
            found.append(match.group(1))
        elif bare and _HOST.match(part) and not part.isdigit() and part.lower() not in _WORDS:
            found.append(part)
    return list(dict.fromkeys(h.lower().rstrip(".") for h in found))


class _Resolver:
    """Host names -> the node they reach: Services (and their DNS forms) to the workload
    they select, ExternalName Services to an external node."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def add(self, service: str, namespace: str | None, node: str) -> None:
        keys = [service.lower()]
        if namespace:
            ns = namespace.lower()
            keys += [f"{service}.{ns}", f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local"]
        for key in keys:
            self.names.setdefault(key.lower(), node)

    def resolve(self, host: str) -> str | None:
        host = host.lower()
        found = self.names.get(host)
        if found is None and "." in host:
            # A StatefulSet pod's name: pod-0.headless.ns.svc.cluster.local
            found = self.names.get(host.split(".", 1)[1])
        return found


def _env_values(
    container: dict[str, Any],
    configmaps: Mapping[tuple[str | None, str], dict[str, str]],
    secrets: Mapping[tuple[str | None, str], dict[str, str]],
    namespace: str | None,
    transform: _Transform,
) -> list[tuple[str, str]]:
    """(variable, value) pairs: literal `env` values, `configMapKeyRef`/`secretKeyRef`
    values and every key of `envFrom` ConfigMaps and Secrets defined in the manifests."""

    def source(kind: str, name: str) -> dict[str, str]:
        table = configmaps if kind == "configmap" else secrets
        name = transform.name(name)
        return table.get((namespace, name)) or table.get((None, name)) or {}

    pairs: list[tuple[str, str]] = []
    for ref in (_map(r) for r in _list(container.get("envFrom"))):
        prefix = _str(ref.get("prefix"))
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            name = _str(_map(ref.get(key)).get("name"))
            if name:
                pairs += [(prefix + k, v) for k, v in source(kind, name).items()]
    for var in (_map(v) for v in _list(container.get("env"))):
        name = _str(var.get("name"))
        if isinstance(var.get("value"), str):
            pairs.append((name, var["value"]))
            continue
        frm = _map(var.get("valueFrom"))
        for kind, key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
            ref = _map(frm.get(key))
            if ref.get("name") and ref.get("key"):
                value = source(kind, _str(ref["name"])).get(_str(ref["key"]))
                if value is not None:
                    pairs.append((name, value))
    return pairs


def _data(obj: _Object, secret: bool) -> dict[str, str]:
    data: dict[str, str] = {}
    for key, raw in _map(obj.body.get("data")).items():
        if not isinstance(raw, str):
            continue
        value = raw
        if secret:
            try:
                value = base64.b64decode(raw, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue
        data[str(key)] = value
    for key, value in _map(obj.body.get("stringData")).items():
        if secret and isinstance(value, str):
            data[str(key)] = value
    return data


# Every repetition bounded, so that no script makes a pattern backtrack for long.
_NAME = r"([A-Za-z][\w.-]{0,252})"
_WAITS = (
    re.compile(r"\bnslookup\s{1,9}" + _NAME),
    re.compile(
        r"\bnc\s{1,9}(?:-[a-zA-Z]{1,9}\s{1,9}(?:\d{1,6}\s{1,9})?){0,6}" + _NAME + r"(?:\s{1,9}|:)\d"
    ),
    re.compile(r"\bwait-for(?:-it)?(?:\.sh)?\s{1,9}(?:-[a-z]{1,9}\s{1,9})?" + _NAME),
    re.compile(r"\b(?:pg_isready|mysqladmin|redis-cli)\b[^\n;|&]{0,200}?\s-h\s{0,9}" + _NAME),
    re.compile(r"\b(?:wget|curl)\b[^\n;|&]{0,200}?\b[a-z]{2,9}://" + _NAME),
)
_MAX_SCRIPT = 20_000  # characters of an init container's command read
_MAX_EXPANDED = 2048
_DEPENDENT = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]{0,252})\)")
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def _waited_for(container: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    words = [_str(w) for w in _list(container.get("command")) + _list(container.get("args"))]
    script = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), " ".join(words)[:_MAX_SCRIPT])
    return list(dict.fromkeys(m.group(1).lower() for p in _WAITS for m in p.finditer(script)))


def read_manifests(root: Path) -> Declared:
    """The graph the Kubernetes manifests under `root` declare. Never raises on what the
    files say: what cannot be read is in `skipped`, with the reason."""
    declared = Declared()
    _declare(declared, _objects(root.resolve(), declared))
    declared.skipped = list(dict.fromkeys(declared.skipped))  # a base listed twice: once
    return declared


def read_objects(
    objects: Iterable[tuple[str, dict[str, Any]]], *, reader: str = READER
) -> Declared:
    """The graph some Kubernetes objects declare, already parsed: (where from, object). A live
    cluster's objects are read with `reader="cluster"`: their evidence names the object
    (`Deployment/shop/cart`), with no line."""
    declared = Declared()
    line = 1 if reader == READER else None
    found = [
        _Object(body, where, line, _Transform(), reader)
        for where, body in objects
        if _is_object(body)
    ]
    _declare(declared, found)
    return declared


def _declare(declared: Declared, objects: list[_Object]) -> None:
    reading = _Reading(declared, objects)
    reading.workloads_and_data()
    reading.workload_nodes()
    reading.services()
    for workload in reading.workloads:
        reading.environment(workload)
        reading.init_containers(workload)
    for obj in reading.objects:
        if obj.kind == "Ingress":
            _ingress(obj, reading.resolver, declared)


@dataclass(slots=True)
class _Reading:
    declared: Declared
    objects: list[_Object]
    workloads: list[_Workload] = field(default_factory=list)
    configmaps: dict[tuple[str | None, str], dict[str, str]] = field(default_factory=dict)
    secrets: dict[tuple[str | None, str], dict[str, str]] = field(default_factory=dict)
    resolver: _Resolver = field(default_factory=_Resolver)

    def workloads_and_data(self) -> None:
        for obj in self.objects:
            if obj.kind in _WORKLOADS:
                pod = _pod_template(obj)
                labels = {
                    str(k): str(v)
                    for k, v in _map(_map(pod.get("metadata")).get("labels")).items()
                    if isinstance(v, str | int)
                }
                self.workloads.append(_Workload(_service_name(obj, labels), obj, labels, pod))
            elif obj.kind in ("ConfigMap", "Secret"):
                table = self.configmaps if obj.kind == "ConfigMap" else self.secrets
                data = _data(obj, secret=obj.kind == "Secret")
                table.setdefault((obj.namespace, obj.name), {}).update(data)
                table.setdefault((None, obj.name), {}).update(data)

    def workload_nodes(self) -> None:
        for workload in self.workloads:
            obj = workload.obj
            containers = _containers(workload.pod)
            kind: NodeKind = "service"
            technology = None
            for container in containers:
                datastore = datastore_kind(_str(container.get("image")))
                if datastore:
                    kind, technology = datastore
                    break
            ev = obj.evidence(f"{obj.kind} {obj.name}")
            node = self.declared.node(workload.node, kind, ev, technology=technology)
            if containers and _str(containers[0].get("image")):
                node.attributes.setdefault("image", _str(containers[0]["image"]))
            if obj.name != workload.node:
                node.aliases.add(obj.name)
            self.resolver.add(obj.name, obj.namespace, workload.node)
            if obj.original_name and obj.original_name != obj.name:
                self.resolver.add(obj.original_name, obj.namespace, workload.node)
            if obj.namespace:
                ns = f"namespace/{obj.namespace}"
                self.declared.node(ns, "namespace", obj.evidence(f"namespace {obj.namespace}"))
                self.declared.edge(workload.node, ns, "runs_in", ev)

    def services(self) -> None:
        # A Service selects workloads of its own namespace; a namespace left to `kubectl
        # apply` (None), on either side, matches any. The workloads by namespace, so that a
        # Service is compared with those only: a cluster of thousands stays linear.
        by_namespace: dict[str | None, list[int]] = {}
        for index, workload in enumerate(self.workloads):
            by_namespace.setdefault(workload.obj.namespace, []).append(index)
        for obj in self.objects:
            if obj.kind != "Service":
                continue
            spec = _map(obj.body.get("spec"))
            if spec.get("type") == "ExternalName" and _str(spec.get("externalName")):
                host = _str(spec["externalName"]).lower().rstrip(".")
                ev = obj.evidence(f"Service {obj.name} is ExternalName {host}")
                self.declared.node(host, "external_api", ev).aliases.add(obj.name)
                for name in {obj.name, obj.original_name, host}:
                    self.resolver.add(name, obj.namespace, host)
                continue
            selector = {str(k): str(v) for k, v in _map(spec.get("selector")).items()}
            if not selector:
                continue
            if obj.namespace is None:
                candidates: list[_Workload] = self.workloads
            else:
                indexes = by_namespace.get(obj.namespace, []) + by_namespace.get(None, [])
                candidates = [self.workloads[i] for i in sorted(indexes)]
            for workload in candidates:
                if selector.items() <= workload.labels.items():
                    self._selects(obj, workload)

    def _selects(self, service: _Object, workload: _Workload) -> None:
        self.resolver.add(service.name, service.namespace, workload.node)
        if service.original_name != service.name:
            self.resolver.add(service.original_name, service.namespace, workload.node)
        node = self.declared.nodes[workload.node]
        if service.name != workload.node:
            node.aliases.add(service.name)
        ev = service.evidence(f"Service {service.name} selects {workload.obj.name}")
        self.declared.node(workload.node, node.kind, ev)

    def _env(self, workload: _Workload, container: dict[str, Any]) -> list[tuple[str, str]]:
        obj = workload.obj
        return _env_values(container, self.configmaps, self.secrets, obj.namespace, obj.transform)

    def environment(self, workload: _Workload) -> None:
        """`calls` and `reads_writes` from the peers the containers' environment names."""
        for container in _containers(workload.pod):
            cname = _str(container.get("name"))
            earlier: dict[str, str] = {}
            for var, raw in self._env(workload, container):
                # Kubernetes expands $(NAME) from the variables defined before it.
                value = _expand(raw, earlier)
                earlier[var] = value
                if var == "OTEL_SERVICE_NAME" and value and value != workload.node:
                    self.declared.nodes[workload.node].aliases.add(value)
                    continue
                for host in hosts_in(value, bare=not _SECRET_NAME.search(var)):
                    target = self.resolver.resolve(host)
                    detail = f"container {cname} env {var} names {host}"
                    if target is None:
                        # Perhaps declared by another reader (a service the Helm chart or
                        # Compose declares): the repository's reading decides.
                        ev = workload.obj.evidence(detail)
                        self.declared.references.append(Reference(workload.node, host, ev))
                        continue
                    if target == workload.node:
                        continue
                    kind = self.declared.nodes[target].kind
                    edge = dependency_kind(kind)
                    self.declared.edge(workload.node, target, edge, workload.obj.evidence(detail))

    def init_containers(self, workload: _Workload) -> None:
        """`starts_after` the peers an init container waits for."""
        for container in _containers(workload.pod, "initContainers"):
            cname = _str(container.get("name"))
            env = {
                var: value
                for var, value in self._env(workload, container)
                if not _SECRET_NAME.search(var)
            }
            for host in _waited_for(container, env):
                target = self.resolver.resolve(host)
                if target is not None and target != workload.node:
                    ev = workload.obj.evidence(f"init container {cname} waits for {host}")
                    self.declared.edge(workload.node, target, "starts_after", ev)


def _expand(value: str, earlier: Mapping[str, str]) -> str:
    """`$(NAME)` references expanded, for a value of at most 2,048 characters with at most
    eight of them (so that no chain of references grows without bound)."""
    if len(value) > _MAX_EXPANDED or value.count("$(") > 8:
        return value
    return _DEPENDENT.sub(lambda m: earlier.get(m.group(1), m.group(0)), value)[:_MAX_EXPANDED]


def _ingress(obj: _Object, resolver: _Resolver, declared: Declared) -> None:
    spec = _map(obj.body.get("spec"))

    def backend_service(backend: dict[str, Any]) -> str:
        service = _map(backend.get("service"))
        return _str(service.get("name")) or _str(backend.get("serviceName"))

    routes: list[tuple[str, str]] = []
    default = backend_service(_map(spec.get("defaultBackend") or spec.get("backend")))
    if default:
        routes.append(("*/", default))
    for rule in (_map(r) for r in _list(spec.get("rules"))):
        host = _str(rule.get("host")) or "*"
        for path in (_map(p) for p in _list(_map(rule.get("http")).get("paths"))):
            service = backend_service(_map(path.get("backend")))
            if service:
                routes.append((f"{host}{_str(path.get('path')) or '/'}", service))
    for endpoint, service in routes:
        target = resolver.resolve(obj.transform.name(service)) or resolver.resolve(service)
        if target is None:
            continue
        ev = obj.evidence(f"Ingress {obj.name} routes {endpoint} to Service {service}")
        declared.node(endpoint, "endpoint", ev)
        declared.edge(endpoint, target, "exposes", ev)
