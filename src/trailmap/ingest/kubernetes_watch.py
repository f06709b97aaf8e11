"""The Kubernetes watcher: list, then watch from the list's resourceVersion with bookmarks,
relist on 410 Gone; each change read by `ingest/kubernetes.py` and sent to a sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from trailmap.ingest.kubernetes import (
    KINDS,
    EnvironmentMap,
    State,
    WatchContext,
    baseline,
    observe,
)

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

    from trailmap.accounts import Organization
    from trailmap.storage import Database

__all__ = [
    "EventSink",
    "FileStateStore",
    "Gone",
    "KubernetesWatcher",
    "StateStore",
    "WatchOptions",
    "WatchState",
    "api_client_for",
    "run_in_server",
    "timeline_sink",
]

log = logging.getLogger(__name__)

EventSink = Callable[[list[dict[str, Any]]], Awaitable[None]]
# Told why the watch fails (a message naming the stream), and None once it works again.
ErrorReport = Callable[[str | None], Awaitable[None]]

# kind -> (API class, the cluster-wide list, the namespaced list)
_LISTS = {
    "Deployment": ("AppsV1Api", "list_deployment_for_all_namespaces", "list_namespaced_deployment"),
    "StatefulSet": (
        "AppsV1Api",
        "list_stateful_set_for_all_namespaces",
        "list_namespaced_stateful_set",
    ),
    "DaemonSet": ("AppsV1Api", "list_daemon_set_for_all_namespaces", "list_namespaced_daemon_set"),
    "Pod": ("CoreV1Api", "list_pod_for_all_namespaces", "list_namespaced_pod"),
    "ConfigMap": ("CoreV1Api", "list_config_map_for_all_namespaces", "list_namespaced_config_map"),
}


class Gone(Exception):
    """The resourceVersion is too old (410): list again."""


class ApiRefused(Exception):
    """The API server answered an error status (the message says which)."""


@dataclass
class WatchState:
    """What resuming needs: per stream (kind and namespace), the resourceVersion reached and
    the compact state of each object (`ingest/kubernetes.py`), keyed `namespace/name`."""

    versions: dict[str, str] = field(default_factory=dict)
    objects: dict[str, dict[str, State]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps({"format": 1, "versions": self.versions, "objects": self.objects})

    @classmethod
    def from_json(cls, raw: bytes) -> WatchState:
        loaded = orjson.loads(raw)
        if not isinstance(loaded, dict) or loaded.get("format") != 1:
            raise ValueError("not a Trailmap Kubernetes watch state (format 1)")
        return cls(dict(loaded.get("versions") or {}), dict(loaded.get("objects") or {}))


class StateStore(Protocol):
    """Where the watch state lives between runs: a file for the agent, the integration's row
    in the server (docs/integrations/kubernetes.md)."""

    async def load(self) -> WatchState | None: ...

    async def save(self, state: WatchState) -> None: ...


@dataclass(frozen=True, slots=True)
class FileStateStore:
    """A JSON file, replaced atomically (written beside it, then renamed)."""

    path: Path

    async def load(self) -> WatchState | None:
        try:
            raw = await asyncio.to_thread(self.path.read_bytes)
        except FileNotFoundError:
            return None
        return WatchState.from_json(raw)

    async def save(self, state: WatchState) -> None:
        await asyncio.to_thread(self._write, state.to_json())

    def _write(self, raw: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(raw)
                out.flush()
                os.fsync(out.fileno())
            Path(temporary).replace(self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


@dataclass(frozen=True, slots=True)
class WatchOptions:
    cluster: str = "kubernetes"
    environments: EnvironmentMap = field(default_factory=EnvironmentMap)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    kinds: tuple[str, ...] = KINDS
    page_size: int = 500
    watch_timeout: int = 300  # the server ends each watch after this; it is opened again
    save_interval: float = 1.0
    max_backoff: float = 30.0


class KubernetesWatcher:
    """Follows every (kind, namespace) stream of one cluster until cancelled."""

    def __init__(
        self,
        api: ApiClient,
        sink: EventSink,
        store: StateStore,
        options: WatchOptions,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_error: ErrorReport | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._api = api
        self._on_error = on_error
        self._on_change = on_change  # told the kind of each object added, changed or deleted
        self._failing: set[str] = set()
        self._sink = sink
        self._store = store
        self._options = options
        self._clock = clock
        self._state = WatchState()
        self._dirty = False
        self.ready = asyncio.Event()  # every stream has listed (or resumed)
        self._listed: set[str] = set()

    @property
    def state(self) -> WatchState:
        return self._state

    async def run(self) -> None:
        """Load the saved state, follow every stream, save the state as it moves."""
        self._state = await self._store.load() or WatchState()
        streams = [
            (kind, namespace)
            for kind in self._options.kinds
            for namespace in (self._options.namespaces or ("",))
        ]
        saver = asyncio.create_task(self._save_periodically())
        try:
            await asyncio.gather(*(self._follow(kind, namespace) for kind, namespace in streams))
        finally:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver
            await self.flush()

    async def flush(self) -> None:
        if self._dirty:
            self._dirty = False
            try:
                await self._store.save(self._state)
            except BaseException:
                # A save cut short (the periodic saver cancelled mid-write as the watch
                # stops) leaves the state unsaved: the final flush must write it.
                self._dirty = True
                raise

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._options.save_interval)
            try:
                await self.flush()
            except OSError:
                log.exception("could not save the Kubernetes watch state")

    def _mark_listed(self, stream: str) -> None:
        self._listed.add(stream)
        wanted = len(self._options.kinds) * max(1, len(self._options.namespaces))
        if len(self._listed) >= wanted:
            self.ready.set()

    # -- one stream ---------------------------------------------------------------------

    async def _follow(self, kind: str, namespace: str) -> None:
        stream = f"{kind}:{namespace or '*'}"
        failures = 0
        while True:
            try:
                if stream not in self._state.versions:
                    await self._list(kind, namespace, stream)
                self._mark_listed(stream)
                await self._recovered(stream)
                await self._watch(kind, namespace, stream)
                failures = 0
            except Gone:
                log.info("%s: resourceVersion too old (410 Gone); listing again", stream)
                self._state.versions.pop(stream, None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - any failure of one stream: back off, retry
                failures += 1
                wait = random.uniform(0, min(self._options.max_backoff, 0.25 * 2**failures))  # noqa: S311 - jitter
                log.warning("%s: %s; again in %.1fs", stream, error, wait)
                await self._report(stream, f"{stream}: {_describe(error)}")
                await asyncio.sleep(wait)

    async def _report(self, stream: str, message: str) -> None:
        self._failing.add(stream)
        if self._on_error is not None:
            try:
                await self._on_error(message)
            except Exception:
                log.exception("could not record the Kubernetes watch's error")

    async def _recovered(self, stream: str) -> None:
        if stream not in self._failing:
            return
        self._failing.discard(stream)
        if not self._failing and self._on_error is not None:
            try:
                await self._on_error(None)
            except Exception:
                log.exception("could not record the Kubernetes watch's recovery")

    async def _list(self, kind: str, namespace: str, stream: str) -> None:
        """List every page; the first list of a stream is known state, a later one (after a
        410) is compared with what was known, so only what changed meanwhile is reported."""
        first = stream not in self._state.objects
        known = self._state.objects.get(stream, {})
        seen: dict[str, State] = {}
        events: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        context = self._context()
        while True:
            body = await self._get_list(kind, namespace, token)
            metadata = body.get("metadata") or {}
            for obj in body.get("items") or []:
                obj.setdefault("kind", kind)
                key = _key(obj)
                if first:
                    state = baseline(obj)
                else:
                    reading = observe(known.get(key), obj, context)
                    state = reading.state
                    events.extend(reading.events)
                if state is not None:
                    seen[key] = state
            token = metadata.get("continue") or None
            version = str(metadata.get("resourceVersion") or version)
            if token is None:
                break
        if events:
            await self._send(events)
        self._state.objects[stream] = seen
        self._state.versions[stream] = version
        self._dirty = True

    async def _get_list(self, kind: str, namespace: str, token: str | None) -> dict[str, Any]:
        arguments: dict[str, Any] = {"limit": self._options.page_size}
        if token:
            arguments["_continue"] = token
        response = await self._call(kind, namespace, arguments, seconds=60)
        try:
            raw = await response.read()
        finally:
            response.release()
        if response.status == 410:
            raise Gone
        if response.status >= 400:
            raise ApiRefused(f"listing {kind}: {response.status} {_message(raw)}")
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            raise ApiRefused(f"listing {kind}: not a list")
        return body

    async def _watch(self, kind: str, namespace: str, stream: str) -> None:
        """Follow one watch until the server ends it (one that ends at once with nothing
        counts as a failure, so a misbehaving server or proxy is not hammered)."""
        opened = asyncio.get_running_loop().time()
        arguments = {
            "watch": True,
            "allow_watch_bookmarks": True,
            "resource_version": self._state.versions[stream],
            "timeout_seconds": self._options.watch_timeout,
        }
        response = await self._call(
            kind, namespace, arguments, seconds=self._options.watch_timeout + 30
        )
        try:
            if response.status == 410:
                raise Gone
            if response.status >= 400:
                body = await response.read()
                raise ApiRefused(f"watching {kind}: {response.status} {_message(body)}")
            buffer = b""
            read = 0
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        read += 1
                        await self._handle(kind, stream, orjson.loads(line))
        finally:
            response.release()
        if read == 0 and asyncio.get_running_loop().time() - opened < 1.0:
            raise ApiRefused("the watch ended at once with nothing")

    async def _handle(self, kind: str, stream: str, event: dict[str, Any]) -> None:
        type_ = event.get("type")
        obj = event.get("object") or {}
        if type_ == "ERROR":
            if obj.get("code") == 410:
                raise Gone
            raise ApiRefused(f"watch error: {obj.get('code')} {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if type_ in {"ADDED", "MODIFIED", "DELETED"}:
            if self._on_change is not None:
                self._on_change(kind)
            obj.setdefault("kind", kind)
            objects = self._state.objects.setdefault(stream, {})
            key = _key(obj)
            if type_ == "DELETED":
                objects.pop(key, None)
            else:
                reading = observe(objects.get(key), obj, self._context())
                if reading.events:
                    await self._send(list(reading.events))
                if reading.state is None:
                    objects.pop(key, None)
                else:
                    objects[key] = reading.state
        if version:  # BOOKMARK carries only this
            self._state.versions[stream] = str(version)
            self._dirty = True

    async def _send(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 1000):
            await self._sink(events[start : start + 1000])

    async def _call(
        self, kind: str, namespace: str, arguments: dict[str, Any], *, seconds: float
    ) -> Any:
        from kubernetes_asyncio import client  # noqa: PLC0415 - loaded by the watcher alone

        api_class, cluster_wide, namespaced = _LISTS[kind]
        api = getattr(client, api_class)(self._api)
        options = {**arguments, "_preload_content": False, "_request_timeout": seconds}
        if namespace:
            return await getattr(api, namespaced)(namespace, **options)
        return await getattr(api, cluster_wide)(**options)

    def _context(self) -> WatchContext:
        return WatchContext(self._options.cluster, self._options.environments, self._clock())


def _describe(error: BaseException) -> str:
    """An error in words for the integration's status: the API's answer, or what failed
    (a connection refused, a TLS certificate not trusted, a timeout)."""
    text = str(error) or type(error).__name__
    return text if isinstance(error, ApiRefused) else f"{type(error).__name__}: {text}"


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace")
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or "")
    return ""


async def api_client_for(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool = False,
) -> ApiClient:
    """A client of the official asyncio Kubernetes library: the in-cluster service account,
    or a kubeconfig file (its current context unless `context` names one)."""
    from kubernetes_asyncio import client, config  # noqa: PLC0415

    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    return client.ApiClient(configuration)


# -- inside the server --------------------------------------------------------------------


def timeline_sink(db: Database, org: Organization, *, max_event_bytes: int) -> EventSink:
    """Events stored for `org` through `timeline.ingest.ingest_events`, as the organization's
    own producer; a refused item is logged (it cannot become valid by retrying)."""
    from trailmap.accounts.principal import Principal  # noqa: PLC0415
    from trailmap.timeline.ingest import ingest_events  # noqa: PLC0415

    principal = Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope="READ_WRITE",
        key_name="kubernetes watcher",
    )

    async def sink(batch: list[dict[str, Any]]) -> None:
        items: list[object] = list(batch)
        result = await ingest_events(db, principal, items, max_event_bytes=max_event_bytes)
        for rejected in result.rejected:
            log.warning("%s: Kubernetes event refused: %s", org.slug, rejected)

    return sink


async def run_in_server(
    db: Database,
    org: Organization,
    api: ApiClient,
    store: StateStore,
    options: WatchOptions,
    *,
    max_event_bytes: int,
    on_error: ErrorReport | None = None,
    on_events: Callable[[], Awaitable[None]] | None = None,
    on_change: Callable[[str], None] | None = None,
    beside: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Watch one cluster for one organization until cancelled: the in-server mode. The
    integration (its settings, its secret kubeconfig or EKS role) decides `api`, `store` and
    `options`; see docs/integrations/kubernetes.md for what the wiring needs. `beside` runs
    as long as the watch, on the same client (the cluster read into the graph,
    ingest/cluster_graph.py), and `on_change` is told the kind of each object that changes."""
    stored = timeline_sink(db, org, max_event_bytes=max_event_bytes)

    async def sink(batch: list[dict[str, Any]]) -> None:
        await stored(batch)
        if on_events is not None:
            await on_events()

    watcher = KubernetesWatcher(api, sink, store, options, on_error=on_error, on_change=on_change)
    companion: asyncio.Task[None] | None = None
    if beside is not None:
        companion = asyncio.create_task(beside())
    try:
        await watcher.run()
    finally:
        if companion is not None:
            companion.cancel()
            await asyncio.gather(companion, return_exceptions=True)
        await api.close()
