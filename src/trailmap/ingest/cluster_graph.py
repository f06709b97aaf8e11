"""A live cluster as a source of the declared graph: its namespaces, workloads, Services,
Ingresses and ConfigMaps (and the Secrets its workloads' environment names, when the
integration's RBAC lets them be read) listed, read by `manifests.read_objects` as the
`cluster` reader and recorded as the integration's declarations (graph/learn/declared.py).

The supervisor runs one `ClusterGraph` beside each cluster watch (ingest/kubernetes_supervisor.py):
it reads the cluster when the watch starts, again soon after the watch sees a workload or a
ConfigMap change (at most once per `min_seconds`), and every `every_seconds` in any case (for
the kinds the watch does not follow: Services, Ingresses, Jobs, CronJobs, namespaces)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from trailmap.graph.declared import Declared, Evidence, Skipped
from trailmap.graph.learn.declared import (
    DeclaredSource,
    Recorded,
    record_declared,
    record_source_error,
)
from trailmap.ingest.manifests import read_objects

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

    from trailmap.storage import Database

__all__ = [
    "READER",
    "SYSTEM_NAMESPACES",
    "ClusterGraph",
    "ClusterGraphOptions",
    "declared_from_cluster",
    "list_cluster_objects",
    "settled",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

READER: Final = "cluster"
# Not read unless the integration's `namespaces` names them: the cluster's own workloads
# (DNS, proxies, the cloud's agents) are not the organization's services.
SYSTEM_NAMESPACES: Final = frozenset({"kube-system", "kube-public", "kube-node-lease"})

# kind -> (API class, the cluster-wide list, the namespaced list; None: cluster-scoped)
_LISTS: Final[dict[str, tuple[str, str, str | None]]] = {
    "Namespace": ("CoreV1Api", "list_namespace", None),
    "Deployment": ("AppsV1Api", "list_deployment_for_all_namespaces", "list_namespaced_deployment"),
    "StatefulSet": (
        "AppsV1Api",
        "list_stateful_set_for_all_namespaces",
        "list_namespaced_stateful_set",
    ),
    "DaemonSet": ("AppsV1Api", "list_daemon_set_for_all_namespaces", "list_namespaced_daemon_set"),
    "Job": ("BatchV1Api", "list_job_for_all_namespaces", "list_namespaced_job"),
    "CronJob": ("BatchV1Api", "list_cron_job_for_all_namespaces", "list_namespaced_cron_job"),
    "Service": ("CoreV1Api", "list_service_for_all_namespaces", "list_namespaced_service"),
    "Ingress": ("NetworkingV1Api", "list_ingress_for_all_namespaces", "list_namespaced_ingress"),
    "ConfigMap": ("CoreV1Api", "list_config_map_for_all_namespaces", "list_namespaced_config_map"),
    "Secret": ("CoreV1Api", "list_secret_for_all_namespaces", "list_namespaced_secret"),
}
_WORKLOADS: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"})
_MAX_OBJECTS: Final = 20_000  # of each kind; past it the kind is cut, with a reason
_PAGE: Final = 500
_LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"


class ListRefused(Exception):
    """The API server refused a list (the message says which and why)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ClusterGraphOptions:
    """What to read and how often: the watched `namespaces` (empty: every one but the
    system ones), `env_map` and `default_env` (a namespace's environment; neither: the
    organization's main environment), `every_seconds` between readings, `min_seconds` at
    least between two."""

    namespaces: tuple[str, ...] = ()
    env_map: Mapping[str, str] = field(default_factory=dict)
    default_env: str | None = None
    every_seconds: float = 120.0
    min_seconds: float = 10.0

    def environment(self, namespace: str | None) -> str | None:
        if namespace and namespace in self.env_map:
            return self.env_map[namespace]
        return self.default_env


# -- reading the objects (pure) --------------------------------------------------------------


def _namespace_of(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    if obj.get("kind") == "Namespace":
        return str(meta.get("name") or "") or None
    return str(meta.get("namespace") or "") or None


def _where(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    kind = obj.get("kind")
    if kind == "Namespace":
        return f"Namespace/{meta.get('name')}"
    return f"{kind}/{meta.get('namespace') or ''}/{meta.get('name')}"


def declared_from_cluster(
    objects: Iterable[dict[str, Any]], options: ClusterGraphOptions
) -> list[Declared]:
    """What the objects declare, one `Declared` per environment their namespaces are in
    (so that two environments' `redis` stay two nodes), each node's `environment` attribute
    set when the namespace has one. Evidence: reader `cluster`, file `<kind>/<namespace>/<name>`."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for obj in objects:
        groups.setdefault(options.environment(_namespace_of(obj)), []).append(obj)
    out: list[Declared] = []
    for env, members in sorted(groups.items(), key=lambda item: item[0] or ""):
        declared = read_objects(((_where(o), o) for o in members), reader=READER)
        for obj in members:
            if obj.get("kind") == "Namespace":
                name = _namespace_of(obj)
                ev = Evidence(READER, _where(obj), None, f"namespace {name}")
                declared.node(f"namespace/{name}", "namespace", ev)
        if env:
            for node in declared.nodes.values():
                node.attributes["environment"] = env
        out.append(declared)
    return out


def _referenced_secrets(objects: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, name) of every Secret a workload's container environment names."""
    found: set[tuple[str, str]] = set()
    for obj in objects:
        if obj.get("kind") not in _WORKLOADS:
            continue
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")
        spec = obj.get("spec") or {}
        if obj.get("kind") == "CronJob":
            spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
        pod = (spec.get("template") or {}).get("spec") or {}
        for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
            if not isinstance(container, dict):
                continue
            for ref in container.get("envFrom") or []:
                name = ((ref or {}).get("secretRef") or {}).get("name")
                if isinstance(name, str):
                    found.add((namespace, name))
            for var in container.get("env") or []:
                name = (((var or {}).get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                if isinstance(name, str):
                    found.add((namespace, name))
    return found


def _slim(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """What the reader needs of an object: its managed fields, its status and the copy
    `kubectl apply` keeps in an annotation (a Secret's values, for a Secret) left out."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and _LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
    slim = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    slim["metadata"] = meta
    slim["kind"] = kind
    slim.setdefault("apiVersion", "v1")
    return slim


# -- listing them --------------------------------------------------------------------------


async def list_cluster_objects(
    api: ApiClient, namespaces: tuple[str, ...]
) -> tuple[list[dict[str, Any]], list[Skipped], str]:
    """Every object the graph reads, in `namespaces` (empty: every namespace but the system
    ones), the kinds the cluster refuses to list (403, 404) in `skipped` with the reason, and
    the lists' resourceVersions joined. Secrets are kept only when a workload names them,
    and only their data (to find the hosts they name; never recorded)."""
    objects: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    versions: list[str] = []
    secrets: list[dict[str, Any]] = []
    for kind in _LISTS:
        if kind == "Namespace" and namespaces:
            continue  # the namespaces watched are those named; no cluster-wide list needed
        try:
            found, version = await _list_kind(api, kind, namespaces)
        except ListRefused as refused:
            if refused.status in (401,) or refused.status >= 500:
                raise
            if kind != "Secret":  # Secrets are read only where RBAC already allows
                skipped.append(Skipped(kind, str(refused)))
            continue
        versions.append(f"{kind}={version}")
        if len(found) > _MAX_OBJECTS:
            skipped.append(Skipped(kind, f"more than {_MAX_OBJECTS} objects; the rest not read"))
            found = found[:_MAX_OBJECTS]
        if kind == "Secret":
            secrets = found
        else:
            objects.extend(found)
    if not namespaces:
        objects = [o for o in objects if _namespace_of(o) not in SYSTEM_NAMESPACES]
    wanted = _referenced_secrets(objects)
    for secret in secrets:
        meta = secret.get("metadata") or {}
        if (str(meta.get("namespace") or ""), str(meta.get("name") or "")) in wanted:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
                    "data": secret.get("data") or {},
                    "stringData": secret.get("stringData") or {},
                }
            )
    return objects, skipped, ",".join(versions)


async def _list_kind(
    api: ApiClient, kind: str, namespaces: tuple[str, ...]
) -> tuple[list[dict[str, Any]], str]:
    found: list[dict[str, Any]] = []
    versions: list[str] = []
    scopes: tuple[str | None, ...] = namespaces if namespaces else (None,)
    for namespace in scopes:
        token: str | None = None
        while True:
            body = await _get(api, kind, namespace, token)
            metadata = body.get("metadata") or {}
            for item in body.get("items") or []:
                if isinstance(item, dict) and len(found) <= _MAX_OBJECTS:
                    found.append(_slim(item, kind))
            token = metadata.get("continue") or None
            if token is None:
                versions.append(str(metadata.get("resourceVersion") or ""))
                break
    return found, "/".join(versions)


async def _get(
    api: ApiClient, kind: str, namespace: str | None, token: str | None
) -> dict[str, Any]:
    from kubernetes_asyncio import client  # noqa: PLC0415 - loaded by the watcher alone

    api_class, cluster_wide, namespaced = _LISTS[kind]
    caller = getattr(client, api_class)(api)
    options: dict[str, Any] = {"limit": _PAGE, "_preload_content": False, "_request_timeout": 60}
    if token:
        options["_continue"] = token
    try:
        if namespace and namespaced:
            response = await getattr(caller, namespaced)(namespace, **options)
        else:
            response = await getattr(caller, cluster_wide)(**options)
    except Exception as error:
        status = getattr(error, "status", None)
        if isinstance(status, int):
            reason = getattr(error, "reason", "")
            raise ListRefused(f"listing {kind}: {status} {reason}", status) from None
        raise
    try:
        raw = await response.read()
    finally:
        response.release()
    if response.status >= 400:
        raise ListRefused(f"listing {kind}: {response.status} {_message(raw)}", response.status)
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise ListRefused(f"listing {kind}: not a list", 502)
    return body


def _message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace")
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or "")
    return ""


def _digest(declared: list[Declared]) -> str:
    """The reading's revision: a digest of what it declares, so it moves only when the graph
    does (a list's resourceVersion moves with every status update)."""
    shape = [
        (
            sorted(
                (
                    n.name,
                    n.kind,
                    n.technology,
                    sorted(n.aliases),
                    sorted(n.attributes.items()),
                    [(e.file, e.detail) for e in n.evidence],
                )
                for n in d.nodes.values()
            ),
            sorted((k, [(e.file, e.detail) for e in v.evidence]) for k, v in d.edges.items()),
        )
        for d in declared
    ]
    return hashlib.sha256(orjson.dumps(shape)).hexdigest()[:12]


# -- keeping it current ----------------------------------------------------------------------


@dataclass
class ClusterGraph:
    """Reads one cluster into the graph, now, when poked (debounced) and periodically."""

    db: Database
    org_id: str
    source: DeclaredSource
    options: ClusterGraphOptions
    lister: Callable[[], Awaitable[tuple[list[dict[str, Any]], list[Skipped], str]]]
    readings: int = 0
    writes: int = 0
    last: Recorded | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _written: tuple[str, float] | None = None  # the last revision written, and when

    @classmethod
    def for_api(
        cls,
        db: Database,
        org_id: str,
        source: DeclaredSource,
        options: ClusterGraphOptions,
        api: ApiClient,
    ) -> ClusterGraph:
        async def lister() -> tuple[list[dict[str, Any]], list[Skipped], str]:
            return await list_cluster_objects(api, options.namespaces)

        return cls(db, org_id, source, options, lister)

    def poke(self, kind: str = "") -> None:  # noqa: ARG002 - the watcher names the kind
        """Something changed in the cluster (an object of `kind`): read it again soon."""
        self._wake.set()

    async def read_once(self) -> Recorded | None:
        """List, read and record; None when nothing changed since this reader last wrote,
        not long ago (half of `every_seconds`): a busy cluster's pokes then cost no write,
        and the periodic reading still moves the declarations' last-seen times."""
        objects, skipped, _versions = await self.lister()
        declared = declared_from_cluster(objects, self.options)
        if not declared:
            declared = [Declared()]
        declared[0].skipped.extend(skipped)
        revision = _digest(declared)
        self.readings += 1
        now = asyncio.get_running_loop().time()
        if (
            self._written is not None
            and self._written[0] == revision
            and now - self._written[1] < self.options.every_seconds / 2
        ):
            return None
        source = DeclaredSource(
            key=self.source.key,
            kind=self.source.kind,
            label=self.source.label,
            revision=revision,
            environment=None,
        )
        recorded = await settled(record_declared(self.db, self.org_id, source, declared))
        self._written = (revision, now)
        self.writes += 1
        self.last = recorded
        return recorded

    async def run(self) -> None:
        """Read until cancelled; a failed reading is recorded on the source (what it declared
        before stays) and tried again at the next turn."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self._wake.clear()
            try:
                await self.read_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure: said on the source, retried
                message = f"reading the cluster: {_named(error)}"
                log.warning("%s: %s", self.source.key, message)
                with contextlib.suppress(Exception):
                    await settled(record_source_error(self.db, self.org_id, self.source, message))
            await asyncio.sleep(max(0.0, started + self.options.min_seconds - loop.time()))
            remaining = started + self.options.every_seconds - loop.time()
            if remaining > 0 and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)


async def settled(work: Coroutine[Any, Any, T]) -> T:
    """`work` run to its end even when the caller is cancelled meanwhile (then cancelled
    after it): a write stopped halfway would hold a database connection past the watch."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 30)
        raise


def _named(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, ListRefused) else f"{type(error).__name__}: {text}"
