"""Docker Compose files read into a `Declared`: services, what their images say they are, and
the peers their environment names (docs/declared-graph.md)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from trailmap.graph.declared import Declared, Evidence, Skipped, dependency_kind
from trailmap.graph.model import NodeKind
from trailmap.ingest.yaml_safe import (
    YamlDoc,
    YamlRefused,
    as_list,
    as_mapping,
    inside_root,
    load_yaml_documents,
    read_text_inside,
)

__all__ = ["read_compose", "service_directories", "technology_of_image"]

READER: Final = "compose"
PROJECT_FILES: Final[tuple[str, ...]] = (
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
)
OVERRIDE_FILES: Final[tuple[str, ...]] = (
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
)
_OVERLAY: Final = re.compile(r"^(?:docker-)?compose\.[A-Za-z0-9_-]+\.ya?ml$")
MAX_WALK_DEPTH: Final = 8
MAX_COMPOSE_FILES: Final = 200
MAX_FOLDERS: Final = 20_000
MAX_INCLUDE_DEPTH: Final = 5
_SKIP_DIRS: Final = frozenset({"node_modules", "vendor", "__pycache__", "dist", "build"})

# An image's last path segment, without tag or digest, naming what the container is.
_TECHNOLOGIES: Final[dict[str, tuple[NodeKind, str, str | None]]] = {
    **dict.fromkeys(("postgres", "postgresql", "postgis"), ("database", "postgres", None)),
    "timescaledb": ("database", "postgres", None),
    "mysql": ("database", "mysql", None),
    "mariadb": ("database", "mariadb", None),
    **dict.fromkeys(("mongo", "mongodb"), ("database", "mongodb", None)),
    "cassandra": ("database", "cassandra", None),
    "cockroach": ("database", "cockroachdb", None),
    "clickhouse-server": ("database", "clickhouse", None),
    "elasticsearch": ("database", "elasticsearch", None),
    "opensearch": ("database", "opensearch", None),
    "redis": ("cache", "redis", None),
    "redis-stack": ("cache", "redis", None),
    "valkey": ("cache", "valkey", None),
    "memcached": ("cache", "memcached", None),
    "keydb": ("cache", "keydb", None),
    "dragonfly": ("cache", "dragonfly", None),
    **dict.fromkeys(("kafka", "cp-kafka", "cp-server"), ("queue", "kafka", None)),
    "redpanda": ("queue", "redpanda", None),
    "rabbitmq": ("queue", "rabbitmq", None),
    "nats": ("queue", "nats", None),
    "activemq": ("queue", "activemq", None),
    "artemis": ("queue", "activemq", None),
    "pulsar": ("queue", "pulsar", None),
    "nginx": ("service", "nginx", "proxy"),
    "envoy": ("service", "envoy", "proxy"),
    "traefik": ("service", "traefik", "proxy"),
    "haproxy": ("service", "haproxy", "proxy"),
    "caddy": ("service", "caddy", "proxy"),
}

# A variable whose whole value may be a bare host name (`MYSQL_HOST=db`); other variables
# name a peer only through `host:port`, a URL, a DSN or `Host=...;`.
_HOST_VARIABLE: Final = re.compile(
    r"(?:HOST|HOSTNAME|HOSTS|SERVER|SERVERS|ADDR|ADDRESS|ENDPOINT|URL|URI|DSN|BROKER|BROKERS)$",
    re.IGNORECASE,
)
# The scheme's length is bounded, so that a long run of letters costs no backtracking.
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}://([^/\s;?#'\"]{1,300})")
MAX_VALUE_CHARS: Final = 8192  # a longer environment value is not searched for peers
MAX_INTERPOLATION_DEPTH: Final = 10
_ADO: Final = re.compile(
    r"(?:^|;)\s*(?:host|server|data source|address|addr|hostname)\s*=\s*([^;]+)", re.IGNORECASE
)
_HOST_PORT: Final = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*):(\d{1,5})$")
_NAME: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class _Unset(Exception):
    """A `${VAR:?message}` whose variable is not set (Compose refuses it, and so do we), or
    defaults nested too deep to expand."""

    def __init__(self, variable: str, *, deep: bool = False) -> None:
        super().__init__(variable)
        self.reason = (
            f"defaults nested deeper than {MAX_INTERPOLATION_DEPTH} levels"
            if deep
            else f"required variable {variable} is not set"
        )


@dataclass(slots=True)
class _Loc:
    value: str | None
    file: str
    line: int | None


@dataclass(slots=True)
class _Service:
    name: str
    origins: list[tuple[str, int | None]] = field(default_factory=list)
    image: str | None = None
    directory: str | None = None  # the build context, else the folder of its compose file
    build_context: str | None = None
    container_name: str | None = None
    hostname: str | None = None
    network_aliases: set[str] = field(default_factory=set)
    environment: dict[str, _Loc] = field(default_factory=dict)
    depends_on: dict[str, _Loc] = field(default_factory=dict)
    links: dict[str, _Loc] = field(default_factory=dict)

    def overlay(self, other: _Service) -> None:
        """Merge `other` on top, as Compose merges a later file: scalars replace, mappings
        merge by key (environment, depends_on), names add up."""
        self.origins.extend(o for o in other.origins if o not in self.origins)
        self.image = other.image or self.image
        self.build_context = other.build_context or self.build_context
        self.directory = other.build_context or self.directory or other.directory
        self.container_name = other.container_name or self.container_name
        self.hostname = other.hostname or self.hostname
        self.network_aliases |= other.network_aliases
        self.environment.update(other.environment)
        self.depends_on.update(other.depends_on)
        self.links.update(other.links)


@dataclass(slots=True)
class _Project:
    directory: str  # relative to the root, posix; "." for the root
    files: list[str] = field(default_factory=list)
    services: dict[str, _Service] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


# ---------------------------------------------------------------- interpolation and .env


_VARIABLE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(text: str, env: Mapping[str, str], depth: int = 0) -> str:
    """`${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`,
    `${VAR:?err}` / `${VAR?err}` (raise `_Unset`) and `$$`, as Compose interpolates."""
    if "$" not in text:
        return text
    if depth > MAX_INTERPOLATION_DEPTH:
        raise _Unset("", deep=True)
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        start = text.find("$", i)
        if start < 0 or start + 1 >= n:
            out.append(text[i:])
            break
        out.append(text[i:start])
        nxt = text[start + 1]
        if nxt == "$":
            out.append("$")
            i = start + 2
        elif nxt == "{":
            end = _closing_brace(text, start + 2)
            if end < 0:  # no closing brace: kept as written
                out.append(text[start:])
                break
            out.append(_expand(text[start + 2 : end], env, depth))
            i = end + 1
        elif match := _VARIABLE.match(text, start + 1):
            out.append(env.get(match.group(0), ""))
            i = match.end()
        else:
            out.append("$")
            i = start + 1
    return "".join(out)


def _closing_brace(text: str, pos: int) -> int:
    """The index of the `}` closing a `${` whose content starts at `pos`, or -1."""
    level = 1
    for index in range(pos, len(text)):
        if text[index] == "{":
            level += 1
        elif text[index] == "}":
            level -= 1
            if not level:
                return index
    return -1


def _expand(inner: str, env: Mapping[str, str], depth: int) -> str:
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-+?])?(.*)\Z", inner, re.DOTALL)
    if match is None:
        return ""
    name, op, rest = match.group(1), match.group(2), match.group(3)
    value = env.get(name)
    if op is None:
        return value or ""
    is_set = value is not None and (value != "" or not op.startswith(":"))
    if op.endswith("-"):
        return value if is_set and value is not None else _interpolate(rest, env, depth + 1)
    if op.endswith("+"):
        return _interpolate(rest, env, depth + 1) if is_set else ""
    if not is_set:
        raise _Unset(name)
    return value or ""


def _interpolate_tree(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _interpolate(value, env)
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(v, env) for v in value]
    return value


def _dotenv(text: str) -> Iterator[tuple[str, str, int]]:
    """`KEY=VALUE` lines of a `.env` or `env_file` (comments, `export`, quotes), with lines."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.match(key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        yield key, value, number


# ---------------------------------------------------------------- reading one project


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


class _Reader:
    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root.resolve()
        self.outer_env = dict(env)
        self.included: set[str] = set()

    def project(self, directory: Path, files: list[Path]) -> _Project:
        rel_dir = _rel(self.root, directory)
        project = _Project(rel_dir)
        env = self._project_env(directory, project)
        for path in files:
            self._read_file(path, env, project, depth=0, seen=set())
        return project

    def _project_env(self, directory: Path, project: _Project) -> dict[str, str]:
        env: dict[str, str] = {}
        dotenv = directory / ".env"
        if dotenv.exists() or dotenv.is_symlink():
            rel = _rel(self.root, dotenv.parent) + "/.env"
            try:
                env.update((k, v) for k, v, _ in _dotenv(read_text_inside(self.root, dotenv)))
            except YamlRefused as exc:
                project.skipped.append(Skipped(rel.removeprefix("./"), str(exc)))
        env.update(self.outer_env)  # the caller's environment wins over .env, as in Compose
        return env

    def _load(self, path: Path, project: _Project) -> tuple[str, YamlDoc] | None:
        resolved = inside_root(self.root, path)
        rel = (
            _rel(self.root, resolved)
            if resolved
            else Path(os.path.relpath(path, self.root)).as_posix()
        )
        try:
            text = read_text_inside(self.root, path)
            docs = load_yaml_documents(text, file=rel)
        except YamlRefused as exc:
            project.skipped.append(Skipped(rel, str(exc)))
            return None
        if not docs or not isinstance(docs[0].data, dict):
            project.skipped.append(Skipped(rel, "not a Compose file (no top-level mapping)"))
            return None
        return rel, docs[0]

    def _read_file(
        self, path: Path, env: Mapping[str, str], project: _Project, *, depth: int, seen: set[str]
    ) -> None:
        loaded = self._load(path, project)
        if loaded is None:
            return
        rel, doc = loaded
        if rel in seen:
            project.skipped.append(Skipped(rel, "included in a loop"))
            return
        seen = seen | {rel}
        if depth:
            self.included.add(rel)
        project.files.append(rel)
        data: dict[str, Any] = doc.data
        base_dir = (self.root / rel).parent
        for index, item in enumerate(as_list(data.get("include"))):
            self._include(item, index, base_dir, env, project, rel, depth, seen)
        services = as_mapping(data.get("services"))
        if "services" in data and not isinstance(data.get("services"), dict):
            project.skipped.append(Skipped(rel, "`services` is not a mapping"))
        for name in services:
            service = self._service(name, rel, doc, env, project, depth=0, seen=seen)
            if service is None:
                continue
            found = project.services.get(name)
            if found is None:
                project.services[name] = service
            else:
                found.overlay(service)

    def _include(
        self,
        item: Any,
        index: int,
        base_dir: Path,
        env: Mapping[str, str],
        project: _Project,
        rel: str,
        depth: int,
        seen: set[str],
    ) -> None:
        try:
            item = _interpolate_tree(item, env)
        except _Unset as exc:
            project.skipped.append(Skipped(rel, f"include #{index + 1}: {exc.reason}"))
            return
        paths = item.get("path") if isinstance(item, dict) else item
        for target in [paths] if isinstance(paths, str) else as_list(paths):
            if not isinstance(target, str) or not target:
                project.skipped.append(Skipped(rel, f"include #{index + 1}: no path"))
                continue
            if depth >= MAX_INCLUDE_DEPTH:
                project.skipped.append(Skipped(rel, f"include {target}: nested too deep"))
                continue
            candidate = base_dir / target
            if inside_root(self.root, candidate) is None:
                project.skipped.append(
                    Skipped(rel, f"include {target}: outside the repository, not followed")
                )
                continue
            self._read_file(candidate, env, project, depth=depth + 1, seen=seen)

    def _service(
        self,
        name: str,
        rel: str,
        doc: YamlDoc,
        env: Mapping[str, str],
        project: _Project,
        *,
        depth: int,
        seen: set[str],
    ) -> _Service | None:
        raw = doc.data.get("services", {}).get(name)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            project.skipped.append(Skipped(rel, f"service {name}: not a mapping"))
            return None
        try:
            raw = _interpolate_tree(raw, env)
        except _Unset as exc:
            project.skipped.append(Skipped(rel, f"service {name}: {exc.reason}"))
            return None
        base: _Service | None = None
        extends = raw.get("extends")
        if extends is not None:
            base = self._extends(name, extends, rel, doc, env, project, depth=depth, seen=seen)
        service = self._normalize(name, raw, rel, doc, project)
        if base is None:
            return service
        base.name = name
        base.overlay(service)
        return base

    def _extends(
        self,
        name: str,
        extends: Any,
        rel: str,
        doc: YamlDoc,
        env: Mapping[str, str],
        project: _Project,
        *,
        depth: int,
        seen: set[str],
    ) -> _Service | None:
        """The service `extends` names, read from this file or from `file:` (within the
        repository); None, with the reason among the skipped, when it cannot be."""
        target = extends if isinstance(extends, str) else as_mapping(extends).get("service")
        file = None if isinstance(extends, str) else as_mapping(extends).get("file")
        key = f"{file or rel}#{target}"
        reason = None
        if not isinstance(target, str) or (file is not None and not isinstance(file, str)):
            reason = "extends not understood"
        elif depth >= MAX_INCLUDE_DEPTH:
            reason = "extends nested too deep"
        elif key in seen:
            reason = "extends in a loop"
        elif file and inside_root(self.root, (self.root / rel).parent / file) is None:
            reason = f"extends file {file} outside the repository, not followed"
        if reason is not None or not isinstance(target, str):
            project.skipped.append(Skipped(rel, f"service {name}: {reason}"))
            return None
        found: tuple[str, YamlDoc] | None = (rel, doc)
        if file:
            found = self._load((self.root / rel).parent / file, project)
        if found is None:
            return None
        other_rel, other = found
        if target not in as_mapping(other.data.get("services")):
            project.skipped.append(
                Skipped(rel, f"service {name}: extends unknown {target} in {other_rel}")
            )
            return None
        return self._service(
            target, other_rel, other, env, project, depth=depth + 1, seen=seen | {key}
        )

    def _normalize(
        self, name: str, raw: dict[str, Any], rel: str, doc: YamlDoc, project: _Project
    ) -> _Service:
        """What the graph needs of one service as one file says it."""
        service = _Service(name, origins=[(rel, doc.line("services", name))])
        folder = PurePosixPath(rel).parent
        service.directory = folder.as_posix()
        image = raw.get("image")
        if isinstance(image, str) and image:
            service.image = image
        self._build(service, raw.get("build"), folder)
        for key in ("container_name", "hostname"):
            value = _scalar(raw.get(key))
            if value:
                setattr(service, key, value)
        for net in as_mapping(raw.get("networks")).values():
            for alias in as_list(as_mapping(net).get("aliases")):
                if _scalar(alias):
                    service.network_aliases.add(str(alias))
        self._env_files(service, raw.get("env_file"), rel, project)
        _environment(service, raw.get("environment"), rel, doc)
        _peers(service.depends_on, raw.get("depends_on"), rel, doc, name, "depends_on")
        _peers(service.links, raw.get("links"), rel, doc, name, "links")
        return service

    def _build(self, service: _Service, build: Any, folder: PurePosixPath) -> None:
        context = build if isinstance(build, str) else as_mapping(build).get("context", ".")
        if build is None or not isinstance(context, str) or not context:
            return
        if "://" in context or context.startswith("git@"):
            return  # a remote context: no folder in this repository
        joined = posixpath.normpath((folder / context).as_posix())
        if inside_root(self.root, Path(joined)) is not None:
            service.build_context = joined
            service.directory = joined

    def _env_files(self, service: _Service, value: Any, rel: str, project: _Project) -> None:
        entries = [value] if isinstance(value, str) else as_list(value)
        folder = (self.root / rel).parent
        for entry in entries:
            path = entry if isinstance(entry, str) else as_mapping(entry).get("path")
            required = as_mapping(entry).get("required", True) if isinstance(entry, dict) else True
            if not isinstance(path, str) or not path:
                continue
            candidate = folder / path
            resolved = inside_root(self.root, candidate)
            if resolved is None:
                project.skipped.append(
                    Skipped(rel, f"service {service.name}: env_file {path} outside the repository")
                )
                continue
            env_rel = _rel(self.root, resolved)
            try:
                text = read_text_inside(self.root, candidate)
            except YamlRefused as exc:
                if required is not False:
                    project.skipped.append(
                        Skipped(rel, f"service {service.name}: env_file {path}: {exc}")
                    )
                continue
            for key, val, line in _dotenv(text):
                service.environment[key] = _Loc(val, env_rel, line)


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _environment(service: _Service, environment: Any, rel: str, doc: YamlDoc) -> None:
    """`environment` as a mapping or a `KEY=VALUE` list; a later key replaces an env_file's."""
    path = ("services", service.name, "environment")
    if isinstance(environment, dict):
        for key, value in environment.items():
            service.environment[str(key)] = _Loc(_scalar(value), rel, doc.line(*path, str(key)))
        return
    for index, item in enumerate(as_list(environment)):
        if isinstance(item, str):
            key, sep, value = item.partition("=")
            if key.strip():
                line = doc.line(*path, index)
                service.environment[key.strip()] = _Loc(value if sep else None, rel, line)


def _peers(
    into: dict[str, _Loc], value: Any, rel: str, doc: YamlDoc, name: str, section: str
) -> None:
    """`depends_on` (a list or a mapping of conditions) or `links` (`service[:alias]`)."""
    path = ("services", name, section)
    if isinstance(value, dict):
        for key in value:
            into[str(key)] = _Loc(None, rel, doc.line(*path, str(key)))
        return
    for index, item in enumerate(as_list(value)):
        if isinstance(item, str) and item:
            into[item.partition(":")[0]] = _Loc(None, rel, doc.line(*path, index))


# ---------------------------------------------------------------- finding and recording


def _find_projects(root: Path, skipped: list[Skipped]) -> Iterator[tuple[Path, list[Path]]]:
    """Each folder with a Compose file, its files in the order Compose merges them: the
    project file, `compose.override.yaml`, then other `compose.<name>.yaml` overlays."""
    count = 0
    base_depth = len(root.parts)
    for visited, (folder, dirs, files) in enumerate(os.walk(root, followlinks=False)):
        if visited >= MAX_FOLDERS:
            skipped.append(Skipped(".", f"more than {MAX_FOLDERS} folders; the rest not searched"))
            return
        here = Path(folder)
        dirs[:] = (
            sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
            if len(here.parts) - base_depth < MAX_WALK_DEPTH
            else []
        )
        names = set(files)
        main = next((f for f in PROJECT_FILES if f in names), None)
        if main is None:
            continue
        ordered = [main]
        ordered += [f for f in OVERRIDE_FILES if f in names][:1]
        ordered += sorted(
            f for f in names if _OVERLAY.match(f) and f not in PROJECT_FILES + OVERRIDE_FILES
        )
        count += len(ordered)
        if count > MAX_COMPOSE_FILES:
            skipped.append(
                Skipped(".", f"more than {MAX_COMPOSE_FILES} Compose files; the rest not read")
            )
            return
        yield here, [here / f for f in ordered]


def technology_of_image(image: str) -> tuple[NodeKind, str | None, str | None]:
    """What an image says a container is: (kind, technology, role), e.g. `postgres:16` →
    ("database", "postgres", None), `nginx` → ("service", "nginx", "proxy")."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    last = last.split(":", 1)[0].lower()
    found = _TECHNOLOGIES.get(last)
    if found is None:
        return "service", None, None
    return found


def _hosts_in(variable: str, value: str) -> Iterator[tuple[str, str | None]]:
    """Every (host, port) a value names: URLs and DSNs (userinfo dropped), `Host=...;`,
    `host:port` items of a list, and the whole value when the variable names a host."""
    if len(value) > MAX_VALUE_CHARS:
        return
    for match in _URL.finditer(value):
        netloc = match.group(1).rsplit("@", 1)[-1]
        for part in netloc.split(","):
            yield _split_host(part)
    for match in _ADO.finditer(value):
        part = match.group(1).strip()
        part = part.removeprefix("tcp:")
        host, _, port = part.partition(",")
        yield _split_host(host if not port else f"{host}:{port.strip()}")
    for token in re.split(r"[\s,;]+", value):
        found = _HOST_PORT.match(token)
        if found:
            yield found.group(1), found.group(2)
    stripped = value.strip()
    if _HOST_VARIABLE.search(variable) and _NAME.match(stripped):
        yield stripped, None


def _split_host(part: str) -> tuple[str, str | None]:
    part = part.strip()
    if part.startswith("["):  # an IPv6 literal never names a service
        return "", None
    host, _, port = part.partition(":")
    return host, (port if port.isdigit() else None)


def _otel_service_name(environment: Mapping[str, _Loc]) -> str | None:
    """What traces will call the service: `OTEL_SERVICE_NAME`, else the `service.name` in
    `OTEL_RESOURCE_ATTRIBUTES` (the SDKs' order)."""
    named = environment.get("OTEL_SERVICE_NAME")
    if named and named.value:
        return named.value.strip() or None
    attributes = environment.get("OTEL_RESOURCE_ATTRIBUTES")
    for pair in (attributes.value or "").split(",") if attributes else ():
        key, _, value = pair.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return None


def _record_nodes(project: _Project, names: Mapping[str, str], declared: Declared) -> None:
    for service in project.services.values():
        node_name = names[service.name]
        kind: NodeKind = "service"
        technology = role = None
        if service.image:
            kind, technology, role = technology_of_image(service.image)
        detail = f"service {service.name}" + (f", image {service.image}" if service.image else "")
        for file, line in service.origins:
            evidence = Evidence(READER, file, line, detail)
            node = declared.node(node_name, kind, evidence, technology=technology)
        attributes = {
            "role": role,
            "image": service.image,
            "compose_project": project.directory,
            "directory": service.directory,
            "build_context": service.build_context,
        }
        node.attributes.update({k: v for k, v in attributes.items() if v})
        for alias in (
            service.container_name,
            service.hostname,
            *service.network_aliases,
            _otel_service_name(service.environment),
        ):
            if alias and alias != node_name:
                node.aliases.add(alias)


def _record_edges(
    project: _Project, names: Mapping[str, str], declared: Declared, lookup: Mapping[str, str]
) -> None:
    for service in project.services.values():
        source = names[service.name]
        for variable, loc in service.environment.items():
            for host, port in _hosts_in(variable, loc.value or ""):
                peer = lookup.get(host.lower())
                if peer is None or peer == service.name:
                    continue
                target = names[peer]
                edge_kind = dependency_kind(declared.nodes[target].kind)
                detail = f"{variable} → {host}:{port}" if port else f"{variable} → {host}"
                if edge_kind == "publishes":
                    detail += " (a broker: publishing or consuming, Compose cannot tell)"
                evidence = Evidence(READER, loc.file, loc.line, detail)
                declared.edge(source, target, edge_kind, evidence)
        for how, entries in (("depends_on", service.depends_on), ("links", service.links)):
            for peer_name, loc in entries.items():
                peer = lookup.get(peer_name.lower())
                if peer is None or peer == service.name:
                    continue
                evidence = Evidence(READER, loc.file, loc.line, f"{how}: {peer_name}")
                declared.edge(source, names[peer], "starts_after", evidence)


def _record(project: _Project, names: Mapping[str, str], declared: Declared) -> None:
    """Nodes and edges of one project; `names` maps a service to its node's name. A peer is
    found by its service name, else its container_name, hostname or a network alias."""
    lookup: dict[str, str] = {}
    for service in project.services.values():
        for alias in (service.container_name, service.hostname, *service.network_aliases):
            if alias:
                lookup.setdefault(alias.lower(), service.name)
    for service in project.services.values():  # a service's own name wins over an alias
        lookup[service.name.lower()] = service.name
    _record_nodes(project, names, declared)
    _record_edges(project, names, declared, lookup)


def read_compose(root: Path, *, env: Mapping[str, str] | None = None) -> Declared:
    """Every Compose project under `root` (a clone), read into one `Declared`. `env` stands
    for the shell's environment in interpolation (the server's own is never used). A service
    is named by its service name, or `<project folder>/<name>` when two projects share it."""
    declared = Declared()
    reader = _Reader(root, env or {})
    found = _find_projects(reader.root, declared.skipped)
    projects = [reader.project(folder, files) for folder, files in found]
    projects = [p for p in projects if not p.files or p.files[0] not in reader.included]
    counts: dict[str, int] = {}
    for project in projects:
        for name in project.services:
            counts[name] = counts.get(name, 0) + 1
    for project in projects:
        names = {
            name: (
                f"{project.directory}/{name}"
                if counts[name] > 1 and project.directory != "."
                else name
            )
            for name in project.services
        }
        _record(project, names, declared)
        declared.skipped.extend(project.skipped)
    return declared


def service_directories(declared: Declared) -> dict[str, str]:
    """Each service's folder within the repository (its build context, else its Compose
    file's folder), for `read_codeowners`."""
    return {
        name: node.attributes["directory"]
        for name, node in declared.nodes.items()
        if "directory" in node.attributes
    }
