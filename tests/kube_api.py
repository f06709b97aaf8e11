"""A small Kubernetes API server on loopback speaking the real wire protocol for what the
watcher uses: paged lists (`limit`/`continue`, the list's resourceVersion), chunked watch
streams of JSON lines from a resourceVersion, BOOKMARK events, and the 410 Gone ERROR event
for a compacted resourceVersion. (kmock, tried first, serves watches without bookmarks,
resourceVersions or 410: docs/integrations/kubernetes.md.)"""

from __future__ import annotations

import asyncio
import copy
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

# plural -> (kind, apiVersion, the collection's path prefix)
RESOURCES = {
    "deployments": ("Deployment", "apps/v1", "apis/apps/v1"),
    "statefulsets": ("StatefulSet", "apps/v1", "apis/apps/v1"),
    "daemonsets": ("DaemonSet", "apps/v1", "apis/apps/v1"),
    "pods": ("Pod", "v1", "api/v1"),
    "configmaps": ("ConfigMap", "v1", "api/v1"),
    # What the cluster's graph reader lists too (ingest/cluster_graph.py).
    "jobs": ("Job", "batch/v1", "apis/batch/v1"),
    "cronjobs": ("CronJob", "batch/v1", "apis/batch/v1"),
    "services": ("Service", "v1", "api/v1"),
    "ingresses": ("Ingress", "networking.k8s.io/v1", "apis/networking.k8s.io/v1"),
    "secrets": ("Secret", "v1", "api/v1"),
    "namespaces": ("Namespace", "v1", "api/v1"),  # cluster-scoped
}
CLUSTER_SCOPED = frozenset({"namespaces"})
_PLURAL = {kind: plural for plural, (kind, _v, _p) in RESOURCES.items()}


@dataclass
class Change:
    version: int
    plural: str
    type: str
    obj: dict[str, Any]


@dataclass
class KubeApi:
    token: str = "test-token"
    accept: Callable[[str], bool] | None = None  # a check of the bearer token instead of `token`
    bookmark_interval: float = 0.2
    version: int = 100
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    history: list[Change] = field(default_factory=list)
    compacted: int = 0  # a watch from a resourceVersion below this is 410 Gone
    refusals: int = 0  # this many requests are answered 403 first (RBAC not yet granted)
    requests: list[str] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)  # plurals RBAC does not let be listed
    url: str = ""
    _tick: asyncio.Event = field(default_factory=asyncio.Event)  # replaced at each change
    _watches: set[web.StreamResponse] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    # -- what a test does to the cluster ---------------------------------------------

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object; a watch sees ADDED or MODIFIED."""
        obj = copy.deepcopy(obj)
        plural = _PLURAL[obj["kind"]]
        meta = obj.setdefault("metadata", {})
        key = f"{meta.get('namespace', '')}/{meta['name']}"
        existing = self.objects.setdefault(plural, {}).get(key)
        meta["uid"] = (
            existing["metadata"]["uid"] if existing else meta.get("uid") or str(uuid.uuid4())
        )
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        self.objects[plural][key] = obj
        await self._record(plural, "MODIFIED" if existing else "ADDED", obj)
        return obj

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        plural = _PLURAL[kind]
        obj = self.objects[plural].pop(f"{namespace}/{name}")
        self.version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.version)
        await self._record(plural, "DELETED", obj)

    def load(self, kind: str, items: list[dict[str, Any]]) -> None:
        """Objects present before anyone watches (no history)."""
        plural = _PLURAL[kind]
        for item in items:
            obj = copy.deepcopy(item)
            obj["kind"] = kind
            meta = obj["metadata"]
            meta.setdefault("uid", str(uuid.uuid4()))
            self.version += 1
            meta["resourceVersion"] = str(self.version)
            self.objects.setdefault(plural, {})[f"{meta.get('namespace', '')}/{meta['name']}"] = obj
        self.compacted = self.version

    def change_unseen(self, obj: dict[str, Any]) -> None:
        """Replace an object with no history of it (a change lost to compaction)."""
        obj = copy.deepcopy(obj)
        plural = _PLURAL[obj["kind"]]
        meta = obj["metadata"]
        key = f"{meta.get('namespace', '')}/{meta['name']}"
        meta["uid"] = self.objects[plural][key]["metadata"]["uid"]
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        self.objects[plural][key] = obj

    async def compact(self) -> None:
        """Forget the history (as etcd compaction does) and end every open watch."""
        self.compacted = self.version + 1
        self.history.clear()
        for response in list(self._watches):
            if response.task is not None:
                response.task.cancel()
        self._notify()

    async def drop_watches(self) -> None:
        for response in list(self._watches):
            if response.task is not None:
                response.task.cancel()

    def watch_requests(self) -> list[str]:
        return [line for line in self.requests if "watch=true" in line.lower()]

    async def _record(self, plural: str, type_: str, obj: dict[str, Any]) -> None:
        self.history.append(Change(self.version, plural, type_, obj))
        self._notify()

    def _notify(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # -- the HTTP side ---------------------------------------------------------------

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        for plural, (_kind, _version, prefix) in RESOURCES.items():
            app.router.add_get(f"/{prefix}/{plural}", self._serve(plural, None))
            if plural not in CLUSTER_SCOPED:
                app.router.add_get(
                    f"/{prefix}/namespaces/{{namespace}}/{plural}", self._serve(plural, "")
                )
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        await self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def _serve(self, plural: str, namespaced: str | None) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.requests.append(str(request.rel_url))
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not (self.accept(given) if self.accept else given == self.token):
                return _status(401, "Unauthorized", "Unauthorized")
            if self.refusals > 0 or plural in self.forbidden:
                self.refusals = max(0, self.refusals - 1)
                return _status(403, "Forbidden", f"cannot list resource {plural!r}")
            namespace = request.match_info.get("namespace") if namespaced is not None else None
            if (request.query.get("watch") or "").lower() in {"true", "1"}:
                return await self._watch(request, plural, namespace)
            return self._list(request, plural, namespace)

        return handler

    def _selected(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return [
            obj
            for key, obj in sorted(self.objects.get(plural, {}).items())
            if namespace is None or key.startswith(f"{namespace}/")
        ]

    def _list(self, request: web.Request, plural: str, namespace: str | None) -> web.Response:
        kind, api_version, _prefix = RESOURCES[plural]
        token = request.query.get("continue")
        if token:
            offset_text, _, version = token.partition(":")
            offset = int(offset_text)
        else:
            offset, version = 0, str(self.version)
        limit = int(request.query.get("limit") or 0) or 10**9
        everything = self._selected(plural, namespace)
        page = [
            {k: v for k, v in obj.items() if k not in {"kind", "apiVersion"}}
            for obj in everything[offset : offset + limit]
        ]
        metadata: dict[str, Any] = {"resourceVersion": version}
        if offset + limit < len(everything):
            metadata["continue"] = f"{offset + limit}:{version}"
            metadata["remainingItemCount"] = len(everything) - offset - limit
        body = {
            "kind": f"{kind}List",
            "apiVersion": api_version,
            "metadata": metadata,
            "items": page,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _watch(
        self, request: web.Request, plural: str, namespace: str | None
    ) -> web.StreamResponse:
        kind, api_version, _prefix = RESOURCES[plural]
        since = int(request.query.get("resourceVersion") or self.version)
        bookmarks = (request.query.get("allowWatchBookmarks") or "").lower() in {"true", "1"}
        timeout = float(request.query.get("timeoutSeconds") or 300)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if since < self.compacted:
            gone = {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {since} ({self.compacted})",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            await response.write(orjson.dumps(gone) + b"\n")
            await response.write_eof()
            return response
        self._watches.add(response)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent = since
        try:
            while loop.time() < deadline:
                tick = self._tick  # a change after this point sets it
                for change in list(self.history):
                    if change.version <= sent:
                        continue
                    sent = change.version
                    if change.plural != plural:
                        continue
                    if (
                        namespace is not None
                        and change.obj["metadata"].get("namespace") != namespace
                    ):
                        continue
                    line = orjson.dumps({"type": change.type, "object": change.obj}) + b"\n"
                    await response.write(line)
                try:
                    await asyncio.wait_for(tick.wait(), self.bookmark_interval)
                except TimeoutError:
                    if bookmarks:
                        mark = {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": kind,
                                "apiVersion": api_version,
                                "metadata": {"resourceVersion": str(sent)},
                            },
                        }
                        await response.write(orjson.dumps(mark) + b"\n")
            await response.write_eof()
        finally:
            self._watches.discard(response)
        return response


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


def kubeconfig(url: str, token: str) -> str:
    """A kubeconfig naming this server and a bearer token."""
    return (
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters:\n- name: test\n  cluster:\n    server: {url}\n"
        "contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n"
        f"users:\n- name: test\n  user:\n    token: {token}\n"
    )
