"""The watcher against a Kubernetes API server on loopback that speaks the wire protocol:
paged lists, watch streams, bookmarks, 410 Gone, and a restart from the state file."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.kube_api import KubeApi, kubeconfig
from tests.upstream import UPSTREAM
from trailmap.ingest.kubernetes import EnvironmentMap
from trailmap.ingest.kubernetes_watch import (
    FileStateStore,
    KubernetesWatcher,
    WatchOptions,
    api_client_for,
    run_in_server,
)
from trailmap.storage import Database

pytestmark = pytest.mark.anyio
FIXTURES = UPSTREAM / "kubernetes"


def _deployment() -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((FIXTURES / "deployment.available.json").read_text())
    return obj


def _new_revision(obj: dict[str, Any], revision: int, tag: str, *, done: bool) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    meta = new["metadata"]
    meta["annotations"]["deployment.kubernetes.io/revision"] = str(revision)
    meta["generation"] = revision
    new["spec"]["template"]["spec"]["containers"][0]["image"] = f"gcr.io/heptio-images/demo:{tag}"
    new["status"]["observedGeneration"] = revision
    new["status"]["updatedReplicas"] = 1 if done else 0
    new["status"]["conditions"][1]["reason"] = (
        "NewReplicaSetAvailable" if done else "ReplicaSetUpdated"
    )
    return new


@pytest.fixture
async def cluster() -> AsyncIterator[KubeApi]:
    api = KubeApi()
    api.load("Deployment", [_deployment()])
    listed = json.loads((FIXTURES / "deploymentlist.kube-system.json").read_text())
    api.load("Deployment", listed["items"])
    api.load("Pod", json.loads((FIXTURES / "podlist.kube-system.json").read_text())["items"])
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@asynccontextmanager
async def watching(
    cluster: KubeApi, tmp_path: Path, events: list[dict[str, Any]], **options: Any
) -> AsyncIterator[KubernetesWatcher]:
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig(cluster.url, cluster.token))
    client = await api_client_for(kubeconfig=str(config))

    async def sink(batch: list[dict[str, Any]]) -> None:
        events.extend(batch)

    settings = {
        "cluster": "test",
        "environments": EnvironmentMap({"default": "production"}),
        "save_interval": 0.05,
        "page_size": 2,
        **options,
    }
    watcher = KubernetesWatcher(
        client, sink, FileStateStore(tmp_path / "state.json"), WatchOptions(**settings)
    )
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.ready.wait(), 10)
        yield watcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def test_the_first_list_reports_nothing_and_a_finished_rollout_becomes_one_deployment(
    cluster: KubeApi, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    async with watching(cluster, tmp_path, events) as watcher:
        assert watcher.state.objects["Deployment:*"].keys() >= {
            "default/guestbook-ui",
            "kube-system/coredns",
        }
        await asyncio.sleep(0.3)
        assert events == []
        await cluster.apply(_new_revision(_deployment(), 6, "0.3", done=False))
        await cluster.apply(_new_revision(_deployment(), 6, "0.3", done=True))
        await until(lambda: len(events) == 1)
        (event,) = events
        assert (event["type"], event["version"], event["subject"]) == (
            "deployment",
            "0.3",
            "production",
        )
        await asyncio.sleep(0.3)
        assert len(events) == 1
    watches = cluster.watch_requests()
    assert watches
    assert all("allowwatchbookmarks=true" in line.lower() for line in watches)
    assert all("resourceVersion=" in line for line in watches)
    assert any("limit=2" in line and "continue=" in line for line in cluster.requests)


async def test_bookmarks_move_the_resource_version_the_watcher_would_resume_from(
    cluster: KubeApi, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    async with watching(cluster, tmp_path, events) as watcher:
        before = int(watcher.state.versions["Pod:*"])
        await cluster.apply(_new_revision(_deployment(), 6, "0.3", done=False))  # not a pod
        await until(lambda: int(watcher.state.versions["Pod:*"]) > before)
    saved = json.loads((tmp_path / "state.json").read_text())
    assert int(saved["versions"]["Pod:*"]) > before


async def test_a_410_gone_lists_again_and_reports_only_what_changed_meanwhile(
    cluster: KubeApi, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    cluster.bookmark_interval = 5.0  # no bookmark may carry the watcher past the gap
    async with watching(cluster, tmp_path, events):
        await cluster.apply(_new_revision(_deployment(), 6, "0.3", done=False))
        await asyncio.sleep(0.2)
        # The rollout finishes while the history since the watcher's resourceVersion is
        # compacted away and its watch is cut: it hears 410 Gone when it comes back.
        cluster.change_unseen(
            _new_revision(_deployment(), 6, "0.3", done=True) | {"kind": "Deployment"}
        )
        await cluster.compact()
        await until(lambda: len(events) >= 1)
        await asyncio.sleep(0.3)
    assert [(event["type"], event["version"]) for event in events] == [("deployment", "0.3")]
    gone = [line for line in cluster.watch_requests() if "resourceVersion=" in line]
    assert len(gone) >= 2


async def test_a_restart_from_the_state_file_reports_nothing_old(
    cluster: KubeApi, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    async with watching(cluster, tmp_path, events):
        await cluster.apply(_new_revision(_deployment(), 6, "0.3", done=False))
        await cluster.apply(_new_revision(_deployment(), 6, "0.3", done=True))
        await until(lambda: len(events) == 1)
        await asyncio.sleep(0.2)
    again: list[dict[str, Any]] = []
    async with watching(cluster, tmp_path, again):
        await asyncio.sleep(0.5)
        assert again == []
        await cluster.apply(_new_revision(_deployment(), 7, "0.4", done=True))
        await until(lambda: len(again) == 1)
    assert again[0]["version"] == "0.4"
    # Resumed from the saved resourceVersion, not listed again.
    lists = [
        line
        for line in cluster.requests
        if "watch=true" not in line.lower() and "/deployments" in line
    ]
    assert len([line for line in lists if "continue=" not in line]) == 1


async def test_a_crashlooping_pod_is_one_incident_per_episode_through_the_watch(
    cluster: KubeApi, tmp_path: Path
) -> None:
    import yaml  # noqa: PLC0415

    pod = json.loads(
        json.dumps(
            yaml.safe_load((FIXTURES / "pod.crashloopbackoff.yaml").read_text()),
            default=lambda when: when.isoformat(),
        )
    )
    pod["metadata"]["namespace"] = "default"
    events: list[dict[str, Any]] = []
    async with watching(cluster, tmp_path, events):
        await cluster.apply(pod)
        await until(lambda: len(events) == 1)
        for restarts in (4, 5, 6):
            pod["status"]["containerStatuses"][0]["restartCount"] = restarts
            await cluster.apply(pod)
        await asyncio.sleep(0.4)
        assert [event["type"] for event in events] == ["incident"]
        assert events[0]["subject"] == "production"
        await cluster.delete("Pod", "default", "my-pod")
        await asyncio.sleep(0.2)
        await cluster.apply(pod)  # a new pod of the same name crashing: a new episode
        await until(lambda: len(events) == 2)


async def test_watching_named_namespaces_only_lists_and_watches_those(
    cluster: KubeApi, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    async with watching(cluster, tmp_path, events, namespaces=("default",)) as watcher:
        assert list(watcher.state.objects["Deployment:default"]) == ["default/guestbook-ui"]
        other = copy.deepcopy(_new_revision(_deployment(), 6, "0.3", done=True))
        other["metadata"]["namespace"] = "elsewhere"
        await cluster.apply(other)
        await asyncio.sleep(0.3)
        assert events == []
    assert all("/namespaces/default/" in line for line in cluster.requests)


async def test_in_the_server_a_rollout_lands_on_the_organizations_timeline(
    cluster: KubeApi, tmp_path: Path, db: Database, tenant: Tenant, client: httpx.AsyncClient
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig(cluster.url, cluster.token))
    api = await api_client_for(kubeconfig=str(config))
    store = FileStateStore(tmp_path / "state.json")
    options = WatchOptions(cluster="in-server", kinds=("Deployment",), save_interval=0.05)
    task = asyncio.create_task(
        run_in_server(db, tenant.org, api, store, options, max_event_bytes=10 * 1024)
    )

    async def timeline() -> list[dict[str, Any]]:
        response = await client.get(
            "/api/v1/events", params={"from": "-1h", "type": "deployment"}, headers=tenant.auth()
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["data"]["events"]
        return events

    try:
        await until((tmp_path / "state.json").exists)
        assert await timeline() == []
        await cluster.apply(_new_revision(_deployment(), 6, "1.0", done=True))
        found: list[dict[str, Any]] = []
        for _ in range(100):
            found = await timeline()
            if found:
                break
            await asyncio.sleep(0.05)
        (event,) = found
        assert (event["version"], event["subject"]) == ("1.0", "default")
        assert event["source"] == (
            "//in-server/apis/apps/v1/namespaces/default/deployments/guestbook-ui"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_list_is_tried_again_with_backoff_until_it_is_allowed(
    cluster: KubeApi, tmp_path: Path
) -> None:
    cluster.refusals = 3
    events: list[dict[str, Any]] = []
    async with watching(cluster, tmp_path, events, kinds=("Deployment",)) as watcher:
        assert "default/guestbook-ui" in watcher.state.objects["Deployment:*"]
    assert cluster.refusals == 0
    assert events == []


async def test_a_configmap_change_through_the_watch_never_writes_its_values_anywhere(
    cluster: KubeApi, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {
        "kind": "ConfigMap",
        "metadata": {"name": "checkout", "namespace": "default"},
        "data": {"PAYMENT_URL": "http://pay:8080", "API_TOKEN": "s3cr3t-value"},
    }
    cluster.load("ConfigMap", [settings])
    events: list[dict[str, Any]] = []
    async with watching(cluster, tmp_path, events) as watcher:
        changed = copy.deepcopy(settings)
        changed["data"]["API_TOKEN"] = "n3w-s3cr3t"
        await cluster.apply(changed)
        await until(lambda: len(events) == 1)
        await watcher.flush()
    (event,) = events
    assert event["type"] == "config-change"
    assert event["data"]["description"] == "ConfigMap default/checkout: changed API_TOKEN"
    written = json.dumps(event) + (tmp_path / "state.json").read_text()
    for value in ("s3cr3t-value", "n3w-s3cr3t", "http://pay:8080"):
        assert value not in written
