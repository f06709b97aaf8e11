"""`trailmap agent kubernetes` and `trailmap agent eks`: the watcher run beside a cluster,
its events pushed to a remote Trailmap with `trailmap send`'s retrying client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trailmap.cli.send import RetryPolicy, SendFailed, send_event
from trailmap.ingest.kubernetes_watch import (
    EventSink,
    FileStateStore,
    KubernetesWatcher,
    WatchOptions,
    api_client_for,
)

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = ["Remote", "remote_sink", "run_eks_agent", "run_kubernetes_agent", "run_until_stopped"]

log = logging.getLogger(__name__)

# Refusals of the events themselves: sending them again cannot help.
_REFUSED_FOR_GOOD = {400, 413, 422}


def run_until_stopped(work: Coroutine[Any, Any, None]) -> None:
    """Run the agent until SIGTERM or SIGINT, then let it save its state and close."""

    async def main() -> None:
        task = asyncio.create_task(work)
        loop = asyncio.get_running_loop()
        for stop in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


@dataclass(frozen=True, slots=True)
class Remote:
    url: str
    api_key: str
    attempts: int = 8


def remote_sink(remote: Remote, report: Callable[[str], None] | None = None) -> EventSink:
    """POST each batch to `<url>/api/v1/events`, retrying 429 and 5xx (`cli/send.py`); a
    batch that still fails raises, so the watcher retries it from its last resourceVersion."""

    async def sink(batch: list[dict[str, Any]]) -> None:
        try:
            result = await asyncio.to_thread(
                send_event,
                remote.url,
                remote.api_key,
                batch,
                policy=RetryPolicy(attempts=remote.attempts),
            )
        except SendFailed as error:
            if error.status not in _REFUSED_FOR_GOOD:
                raise  # unreachable, a bad key, a quota: the watcher tries again later
            message = f"{len(batch)} events refused: {error}"
            log.warning("%s", message)
            if report is not None:
                report(message)
            return
        data = result.body.get("data") or {}
        for rejected in data.get("rejected") or []:
            message = f"event refused: {rejected.get('code')}: {rejected.get('message')}"
            log.warning("%s", message)
            if report is not None:
                report(message)
        if report is not None:
            stored = len(data.get("accepted") or [])
            duplicates = len(data.get("duplicates") or [])
            report(f"sent {len(batch)} events: {stored} stored, {duplicates} already stored")

    return sink


async def run_kubernetes_agent(
    remote: Remote,
    options: WatchOptions,
    state_file: Path,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool = False,
    report: Callable[[str], None] | None = None,
) -> None:
    client = await api_client_for(kubeconfig=kubeconfig, context=context, in_cluster=in_cluster)
    await _watch(client, remote, options, state_file, report)


async def run_eks_agent(
    remote: Remote,
    options: WatchOptions,
    state_dir: Path,
    *,
    region: str,
    clusters: tuple[str, ...],
    report: Callable[[str], None] | None = None,
) -> None:
    """Every named cluster of the region (or all of them), each watched as its own cluster."""
    import boto3  # noqa: PLC0415

    from trailmap.ingest.eks import EksTokens, api_client_for_eks, find_clusters  # noqa: PLC0415

    session = boto3.Session(region_name=region)
    found = await asyncio.to_thread(find_clusters, session, region, clusters)
    if not found:
        raise RuntimeError(f"no EKS cluster found in {region}")
    watches = []
    ca_files: list[Path] = []
    for cluster in found:
        if report is not None:
            report(f"watching EKS cluster {cluster.name} ({cluster.endpoint})")
        client, ca_file = api_client_for_eks(cluster, EksTokens(session, cluster.name, region))
        if ca_file is not None:
            ca_files.append(ca_file)
        cluster_options = WatchOptions(
            cluster=cluster.name,
            environments=options.environments,
            namespaces=options.namespaces,
            kinds=options.kinds,
        )
        watches.append(
            _watch(client, remote, cluster_options, state_dir / f"{cluster.name}.json", report)
        )
    try:
        await asyncio.gather(*watches)
    finally:
        for path in ca_files:
            path.unlink(missing_ok=True)


async def _watch(
    client: ApiClient,
    remote: Remote,
    options: WatchOptions,
    state_file: Path,
    report: Callable[[str], None] | None,
) -> None:
    watcher = KubernetesWatcher(
        client, remote_sink(remote, report), FileStateStore(state_file), options
    )
    try:
        await watcher.run()
    finally:
        await client.close()
