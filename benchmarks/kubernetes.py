"""The Kubernetes watcher: a cluster's Deployments listed at start into known state, then one
watch event at a time into the timeline, and the memory it holds.

    .venv/bin/python benchmarks/kubernetes.py [--backend sqlite|postgres|both]
                                              [--deployments N] [--events E] [--quick]

Setup (not measured): the loopback Kubernetes API server of the tests (`tests/kube_api.py`:
paged lists, chunked watch streams, bookmarks) holding N Deployments (default 2,000) in 40
namespaces, an organization in a fresh database, and the watcher of
`ingest/kubernetes_watch.py` reading through the official asyncio client, its events stored
with `timeline.ingest.ingest_events` as in the server.

Measured, in this process (the API server shares it, so its work is counted too):
- start: from the watcher's start to every Deployment being known state (listed in pages of
  500, read, kept); target under 5 s for 2,000;
- latency: E times, a Deployment's finished rollout written to the API server, until its
  deployment event is stored in the timeline; target p95 under 1 s;
- memory: the compact state's size (what the state file holds) and the Python heap the
  watcher and the server hold (tracemalloc), before and after 10x more watch events: bounded
  when the heap does not grow with the events and no Deployment keeps more than 10
  revisions (the history that recognises a rollback).

`--quick` (200 Deployments, 5 events) checks that it works.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _common import Backend, bench_database, create_org_with_key, percentile, run_backends

from trailmap.accounts import get_org
from trailmap.ingest.kubernetes_watch import (
    FileStateStore,
    KubernetesWatcher,
    WatchOptions,
    api_client_for,
    timeline_sink,
)
from trailmap.storage import Database

# The tests' loopback API server, shared rather than copied (the repository root on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
kube_api: Any = importlib.import_module("tests.kube_api")

_START_TARGET_S = 5.0
_LATENCY_TARGET_S = 1.0


def _deployment(index: int, revision: int) -> dict[str, Any]:
    name = f"svc-{index:05d}"
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": name,
            "namespace": f"team-{index % 40:02d}",
            "generation": revision,
            "labels": {"app.kubernetes.io/name": name},
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
        },
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": f"registry.example/{name}:1.{revision}.0"},
                        {"name": "proxy", "image": "registry.example/envoy:1.30"},
                    ]
                },
            },
        },
        "status": {
            "observedGeneration": revision,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        },
    }


async def _run(url: str, slug: str, folder: Path, deployments: int, events: int) -> bool:
    tracemalloc.start()
    cluster = kube_api.KubeApi()
    cluster.load("Deployment", [_deployment(i, 1) for i in range(deployments)])
    await cluster.start()
    config = folder / "kubeconfig"
    config.write_text(kube_api.kubeconfig(cluster.url, cluster.token))
    db = Database(url)
    org = await get_org(db, slug)
    sink = timeline_sink(db, org, max_event_bytes=10 * 1024)
    stored: asyncio.Queue[float] = asyncio.Queue()

    async def timed_sink(batch: list[dict[str, Any]]) -> None:
        await sink(batch)
        stored.put_nowait(time.perf_counter())

    api = await api_client_for(kubeconfig=str(config))
    state_file = folder / "kubernetes-state.json"
    state_file.unlink(missing_ok=True)
    watcher = KubernetesWatcher(
        api,
        timed_sink,
        FileStateStore(state_file),
        WatchOptions(kinds=("Deployment",), page_size=500),
    )
    began = time.perf_counter()
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.ready.wait(), 60)
        start_s = time.perf_counter() - began
        known = len(watcher.state.objects["Deployment:*"])

        async def one_rollout(revision: int) -> float:
            index = revision % deployments
            sent = time.perf_counter()
            await cluster.apply(_deployment(index, revision))
            return await asyncio.wait_for(stored.get(), 10) - sent

        latencies = [await one_rollout(revision) for revision in range(2, 2 + events)]
        await watcher.flush()
        _current, heap_before = tracemalloc.get_traced_memory()
        state_before = len(watcher.state.to_json())
        for revision in range(2 + events, 2 + 11 * events):
            await one_rollout(revision)
        await watcher.flush()
        heap_after, _peak = tracemalloc.get_traced_memory()
        state_after = len(watcher.state.to_json())
        longest = max(
            len(item["history"]) for item in watcher.state.objects["Deployment:*"].values()
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()
        await cluster.stop()
        db.close()
        tracemalloc.stop()
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    print(f"  start: {known} of {deployments} Deployments known in {start_s:.2f} s")
    print(
        f"  latency, watch event -> stored event ({events} rollouts): "
        f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    print(
        f"  memory: state {state_before / 1024:.0f} KiB -> {state_after / 1024:.0f} KiB after "
        f"{10 * events} more events; heap {heap_before / 2**20:.1f} MiB -> "
        f"{heap_after / 2**20:.1f} MiB"
    )
    print(f"  revisions kept per Deployment: at most {longest} (the bound is 10)")
    bounded = longest <= 10 and heap_after <= heap_before * 1.25 + 2**20
    met = known == deployments and start_s < _START_TARGET_S and p95 < _LATENCY_TARGET_S
    print(f"  targets: start < {_START_TARGET_S:.0f} s, p95 < 1 s, bounded: ", end="")
    print("met" if met and bounded else "MISSED")
    return met and bounded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--deployments", type=int, default=2000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    deployments, events = (200, 5) if args.quick else (args.deployments, args.events)

    def run_backend(backend: Backend, directory: Path) -> bool:
        with bench_database(backend, "kubernetes", directory) as bench:
            create_org_with_key(bench.url, "cluster")
            print(f"{backend}: {deployments} Deployments, {events} rollouts", flush=True)
            return asyncio.run(_run(bench.url, "cluster", directory, deployments, events))

    return run_backends("kubernetes", args.backend, run_backend, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
