"""The server's cluster watches: one `run_in_server` task per active kubernetes or eks
integration, on the one app node holding its lease (docs/operations.md, "Scaling out")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trailmap.accounts.organizations import get_org_by_id
from trailmap.errors import Unavailable
from trailmap.graph.learn.declared import DeclaredSource, record_source_error
from trailmap.ingest.cluster_graph import ClusterGraph, ClusterGraphOptions
from trailmap.ingest.kubernetes import EnvironmentMap
from trailmap.ingest.kubernetes_watch import WatchOptions, WatchState, run_in_server
from trailmap.integrations.integrations import Integration, active_cluster_integrations
from trailmap.integrations.kubeconfig import check_kubeconfig
from trailmap.integrations.watches import (
    load_watch_state,
    record_watch_error,
    record_watch_event,
    release_lease,
    save_watch_state,
    take_lease,
)
from trailmap.outbound import NameNotResolved, OutboundError, OutboundPolicy, origin

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient, Configuration

    from trailmap.storage import Database

__all__ = [
    "ClusterRefused",
    "DatabaseStateStore",
    "Supervisor",
    "client_for_integration",
    "node_id",
    "options_for",
]

log = logging.getLogger(__name__)


class ClusterRefused(Exception):
    """The integration cannot be watched as configured; the message says why."""


def node_id() -> str:
    """This app node's name in the leases it holds: host, process and a random part."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class DatabaseStateStore:
    """The watch state in the integration's `integration_watches` row, written only while
    this node holds the lease, and at most once per `min_interval` seconds."""

    db: Database
    org_id: str
    integration_id: str
    node: str
    min_interval: float = 1.0
    _last: float = field(default=-1e9, init=False)

    async def load(self) -> WatchState | None:
        raw = await load_watch_state(self.db, self.org_id, self.integration_id)
        return None if raw is None else WatchState.from_json(raw)

    async def save(self, state: WatchState) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last + self.min_interval - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last = loop.time()
        saved = await save_watch_state(
            self.db, self.org_id, self.integration_id, self.node, state.to_json()
        )
        if not saved:
            log.warning("integration %s: lease lost; the state is not saved", self.integration_id)


def options_for(integration: Integration) -> WatchOptions:
    """The watcher's options from the integration's settings."""
    settings = integration.settings
    texts = settings.texts
    return WatchOptions(
        cluster=texts.get("cluster") or texts.get("context") or integration.name,
        environments=EnvironmentMap(dict(settings.env_map), texts.get("default_env")),
        namespaces=tuple(settings.namespaces),
    )


async def client_for_integration(
    integration: Integration,
    *,
    secret_key: str | None,
    outbound: OutboundPolicy,
    eks_session: Callable[[str], Any] | None = None,
) -> ApiClient:
    """A Kubernetes client for the integration's cluster, connecting only to an address
    `outbound` allows (resolved once and pinned; TLS still checks the host's name)."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    configuration = client.Configuration()
    if integration.kind == "eks":
        return await _eks_client(integration, outbound, eks_session)
    kubeconfig = integration.secret_settings(secret_key).get("kubeconfig")
    if not kubeconfig:
        raise ClusterRefused(
            "no kubeconfig is set (or the server's TRAILMAP_SECRET_KEY cannot open it)"
        )
    loaded = _checked_kubeconfig(kubeconfig)
    private = tempfile.mkdtemp(prefix="trailmap-kube-")  # 0700: client keys and CA, if any
    try:
        from kubernetes_asyncio import config  # noqa: PLC0415

        try:
            await config.load_kube_config_from_dict(
                loaded,
                context=integration.settings.texts.get("context"),
                client_configuration=configuration,
                temp_file_path=private,
            )
        except Exception as error:  # noqa: BLE001 - the library's errors are of many kinds
            raise ClusterRefused(f"the kubeconfig cannot be used: {error}") from None
        await _pin(configuration, outbound)
        return client.ApiClient(configuration)  # reads its key and CA files now
    finally:
        _forget_files(private)


def _checked_kubeconfig(text: str) -> dict[str, Any]:
    try:
        return check_kubeconfig(text)
    except ValueError as error:
        raise ClusterRefused(str(error)) from None


def _forget_files(directory: str) -> None:
    """Remove the private directory the kubeconfig's key and CA were written to, and the
    library's memory of those files (it would hand out their paths again)."""
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(ImportError, AttributeError):
        from kubernetes_asyncio.config import kube_config  # noqa: PLC0415

        remembered = kube_config._temp_files
        for key in [k for k, path in remembered.items() if path.startswith(directory + os.sep)]:
            del remembered[key]


async def _pin(configuration: Configuration, outbound: OutboundPolicy) -> None:
    """Check the API server's address with the outbound guard and connect to the checked
    address only, keeping the host's name for TLS (so a name cannot resolve elsewhere later)."""
    url = str(configuration.host or "")
    try:
        scheme, host, port = origin(url)
    except ValueError:
        raise ClusterRefused(f"the API server address {url!r} is not a URL") from None
    if scheme not in ("http", "https"):
        raise ClusterRefused(f"the API server address {url!r} is not http or https")
    try:
        addresses = await outbound.resolve(host, port)
    except NameNotResolved as error:
        raise ClusterRefused(f"the API server cannot be reached: {error}") from None
    except OutboundError as error:
        raise ClusterRefused(f"refused by the outbound guard: {error}") from None
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    path = url.split("://", 1)[1].partition("/")[2]
    configuration.host = f"{scheme}://{literal}:{port}" + (f"/{path}" if path else "")
    if scheme == "https" and not configuration.tls_server_name:
        configuration.tls_server_name = host


async def _eks_client(
    integration: Integration,
    outbound: OutboundPolicy,
    eks_session: Callable[[str], Any] | None,
) -> ApiClient:
    from trailmap.ingest.eks import EksTokens, api_client_for_eks, find_clusters  # noqa: PLC0415

    texts = integration.settings.texts
    region, name = texts.get("region"), texts.get("cluster")
    if not region or not name:
        raise ClusterRefused("an eks integration needs its region and cluster settings")
    if eks_session is None:
        import boto3  # noqa: PLC0415

        def eks_session(region: str) -> Any:
            return boto3.Session(region_name=region)

    session = eks_session(region)
    try:
        (cluster,) = await asyncio.to_thread(find_clusters, session, region, (name,))
        tokens = await asyncio.to_thread(EksTokens, session, name, region)
    except Exception as error:  # noqa: BLE001 - botocore's errors: credentials, not found
        raise ClusterRefused(f"EKS: {type(error).__name__}: {error}") from None
    from kubernetes_asyncio import client  # noqa: PLC0415

    probe = client.Configuration()
    probe.host = cluster.endpoint
    await _pin(probe, outbound)
    api, ca_file = api_client_for_eks(
        cluster, tokens, endpoint=probe.host, tls_server_name=probe.tls_server_name
    )
    if ca_file is not None:
        ca_file.unlink(missing_ok=True)  # read when the client was made
    return api


@dataclass
class _Running:
    integration: Integration
    fingerprint: tuple[Any, ...]
    task: asyncio.Task[None]
    renewed: float  # the event loop's time of the last renewal of its lease
    stopping: bool = False  # until its lease is released


class Supervisor:
    """Every `poll_seconds`, the active cluster integrations are listed: a watch starts for
    each whose lease this node takes, stops for one deleted, disabled or taken over, and
    starts again when its settings change. Leases last `lease_seconds`, renewed at each
    tick (a third of that at most)."""

    def __init__(
        self,
        db: Database,
        *,
        secret_key: str | None,
        outbound: OutboundPolicy,
        max_event_bytes: int,
        poll_seconds: float = 30.0,
        lease_seconds: float = 30.0,
        node: str | None = None,
        save_interval: float = 1.0,
        retry_seconds: float = 60.0,
        eks_session: Callable[[str], Any] | None = None,
        graph_seconds: float = 120.0,
        graph_min_seconds: float = 10.0,
    ) -> None:
        self.db = db
        self.node = node or node_id()
        self._secret_key = secret_key
        self._outbound = outbound
        self._max_event_bytes = max_event_bytes
        self._poll = poll_seconds
        self._lease = lease_seconds
        self._save_interval = save_interval
        self._retry = retry_seconds
        self._eks_session = eks_session
        self._graph_seconds = graph_seconds  # 0: the clusters are not read into the graph
        self._graph_min_seconds = graph_min_seconds
        self._running: dict[str, _Running] = {}
        self._failed: dict[str, tuple[tuple[Any, ...], float]] = {}

    @property
    def watching(self) -> set[str]:
        """The ids of the integrations this node watches now."""
        return {i for i, r in self._running.items() if r.stopping or not r.task.done()}

    async def run(self) -> None:
        """Supervise until cancelled; then stop every watch and release every lease."""
        tick = max(0.05, min(self._poll, self._lease / 3))
        try:
            while True:
                try:
                    await self.reconcile()
                except asyncio.CancelledError:
                    raise
                except Unavailable as error:
                    # A database outage: one line, not a traceback (rendering one runs on
                    # the event loop and held every request for seconds after an outage).
                    log.warning("the Kubernetes supervisor's round: %s; trying again", error)
                except Exception:
                    log.exception("the Kubernetes supervisor's round failed; trying again")
                await self._stop_unrenewed()
                await asyncio.sleep(tick)
        finally:
            with anyio_shield():
                await self.stop()

    async def reconcile(self) -> None:
        """One round: renew or take leases, start, stop and restart watches."""
        wanted = {i.id: i for i in await active_cluster_integrations(self.db)}
        for integration_id in list(self._running):
            running = self._running[integration_id]
            integration = wanted.get(integration_id)
            if (
                integration is None
                or _fingerprint(integration) != running.fingerprint
                or running.task.done()
            ):
                await self._stop_one(integration_id)
            elif await self._lease_of(integration):
                running.renewed = asyncio.get_running_loop().time()
            else:
                log.warning("integration %s: lease lost; its watch stops", integration_id)
                await self._stop_one(integration_id, release=False)
        now = asyncio.get_running_loop().time()
        for integration_id, integration in wanted.items():
            if integration_id in self._running:
                continue
            failed = self._failed.get(integration_id)
            if failed and failed[0] == _fingerprint(integration) and now < failed[1]:
                continue
            if await self._lease_of(integration):
                self._start(integration)

    async def _stop_unrenewed(self) -> None:
        """Stop the watches whose lease could not be renewed (the database did not answer)
        before it may expire: another node may take them over then."""
        now = asyncio.get_running_loop().time()
        for integration_id, running in list(self._running.items()):
            if now - running.renewed > self._lease * 2 / 3:
                log.warning("integration %s: lease not renewed; its watch stops", integration_id)
                await self._stop_one(integration_id, release=False)

    async def stop(self) -> None:
        for integration_id in list(self._running):
            await self._stop_one(integration_id)

    async def _lease_of(self, integration: Integration) -> bool:
        return await take_lease(
            self.db, integration.org_id, integration.id, self.node, seconds=self._lease
        )

    def _start(self, integration: Integration) -> None:
        task = asyncio.create_task(self._watch(integration), name=f"watch {integration.id}")
        self._running[integration.id] = _Running(
            integration, _fingerprint(integration), task, asyncio.get_running_loop().time()
        )
        self._failed.pop(integration.id, None)

    async def _stop_one(self, integration_id: str, *, release: bool = True) -> None:
        """Cancel the watch (its state is saved as it ends), then release its lease."""
        running = self._running[integration_id]
        running.stopping = True
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
        try:
            if release:
                integration = running.integration
                await release_lease(self.db, integration.org_id, integration.id, self.node)
        except Exception:
            log.exception("integration %s: could not release its lease", integration_id)
        finally:
            del self._running[integration_id]

    async def _watch(self, integration: Integration) -> None:
        org_id, integration_id = integration.org_id, integration.id

        async def on_error(message: str | None) -> None:
            await record_watch_error(self.db, org_id, integration_id, message)

        async def on_events() -> None:
            await record_watch_event(self.db, org_id, integration_id)

        try:
            org = await get_org_by_id(self.db, org_id)
            api = await client_for_integration(
                integration,
                secret_key=self._secret_key,
                outbound=self._outbound,
                eks_session=self._eks_session,
            )
        except ClusterRefused as refused:
            await self._failed_with(integration, str(refused))
            return
        except Exception as error:
            log.exception("integration %s: the watch could not start", integration_id)
            await self._failed_with(integration, f"could not start: {_named(error)}")
            return
        store = DatabaseStateStore(
            self.db, org_id, integration_id, self.node, min_interval=self._save_interval
        )
        options = options_for(integration)
        options = WatchOptions(
            cluster=options.cluster,
            environments=options.environments,
            namespaces=options.namespaces,
            save_interval=self._save_interval,
        )
        graph = self._graph_of(integration, api)
        log.info("integration %s: watching on node %s", integration_id, self.node)
        try:
            try:
                await on_error(None)  # an earlier error (a refused address) is over
            except BaseException:
                await api.close()  # run_in_server, which closes it, is not reached
                raise
            await run_in_server(
                self.db,
                org,
                api,
                store,
                options,
                max_event_bytes=self._max_event_bytes,
                on_error=on_error,
                on_events=on_events,
                on_change=None if graph is None else graph.poke,
                beside=None if graph is None else graph.run,
            )
        except Exception as error:
            log.exception("integration %s: the watch stopped", integration_id)
            await self._failed_with(integration, f"the watch stopped: {_named(error)}")

    def _graph_of(self, integration: Integration, api: ApiClient) -> ClusterGraph | None:
        """The cluster read into the graph beside its watch (docs/integrations/kubernetes.md,
        "The cluster in the graph"), as the integration's declared source."""
        if self._graph_seconds <= 0:
            return None
        settings = integration.settings
        source = DeclaredSource(
            key=integration.id, kind=integration.kind, label=integration.name, environment=None
        )
        options = ClusterGraphOptions(
            namespaces=tuple(settings.namespaces),
            env_map=dict(settings.env_map),
            default_env=settings.texts.get("default_env"),
            every_seconds=self._graph_seconds,
            min_seconds=min(self._graph_min_seconds, self._graph_seconds),
        )
        return ClusterGraph.for_api(self.db, integration.org_id, source, options, api)

    async def _failed_with(self, integration: Integration, message: str) -> None:
        """Show why on the integration; try again after `retry_seconds` or a change."""
        log.warning("integration %s: %s", integration.id, message)
        self._failed[integration.id] = (
            _fingerprint(integration),
            asyncio.get_running_loop().time() + self._retry,
        )
        try:
            await record_watch_error(self.db, integration.org_id, integration.id, message)
            if self._graph_seconds > 0:  # the graph's source says it too
                source = DeclaredSource(integration.id, integration.kind, integration.name)
                await record_source_error(self.db, integration.org_id, source, message)
        except Exception:
            log.exception("integration %s: could not record its error", integration.id)


def _named(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _fingerprint(integration: Integration) -> tuple[Any, ...]:
    """What, changed, restarts a watch: the settings and the sealed kubeconfig."""
    return (
        integration.kind,
        _frozen(integration.settings.as_json()),
        integration.sealed_settings,
    )


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


@contextlib.contextmanager
def anyio_shield() -> Any:
    """A cancel-shielded scope, so the leases are released while the lifespan is cancelled."""
    import anyio  # noqa: PLC0415

    with anyio.CancelScope(shield=True):
        yield
