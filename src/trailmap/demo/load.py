"""The demo organization: a simulated shop whose graph is learned from OpenTelemetry traces
(demo/traces.py) and a week of changes, both through the real ingest paths (docs/internals.md)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from trailmap import clock
from trailmap.accounts import Principal, create_org, get_org
from trailmap.demo.traces import DEFAULT_RELEASES, ENVIRONMENT, SERVICES, Release, shop_traces
from trailmap.errors import Conflict
from trailmap.graph.learn.pairing import ingest_traces, sweep_pending
from trailmap.storage import Database
from trailmap.storage import graph as graph_store
from trailmap.timeline.ingest import ingest_events

__all__ = ["load_demo"]

_WEEK = timedelta(days=7)
# Requests merged into one ingestion call: the demo loads a week at once, and one
# transaction per few thousand spans is what a Collector's batch would give.
_MERGE = 24
_OTHER_CHANGES = (
    ("config-change", "LOW", "Raised the connection pool of {service} to {n}"),
    ("feature-flag", "LOW", "Turned on flag new-{service}-flow-{n} for 10% of users"),
    ("data-load", None, "Loaded the nightly catalogue export ({n}k rows) for {service}"),
    ("incident", "MAJOR", "Elevated latency on {service}, resolved after {n} minutes"),
)


async def load_demo(db: Database, slug: str = "demo", *, seed: int = 7) -> str:
    """Create the organization when missing, with its graph and week of changes (idempotent:
    events by id, and the traces only into an organization that has no graph yet)."""
    try:
        org = await create_org(db, slug, name="Demo (Acme Shop)")
    except Conflict:
        org = await get_org(db, slug)
    principal = Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope="READ_WRITE",
    )
    now = clock.now()
    releases = DEFAULT_RELEASES(now)
    spans = 0
    if await db.read(graph_store.graph_version, org.id) == 0:
        for request in _merged(shop_traces(now - _WEEK, now, releases=releases, seed=seed)):
            spans += (await ingest_traces(db, principal, request, now=now)).accepted_spans
        # The demo's halves need not wait: every span of the week is already in.
        await sweep_pending(db, now_us=clock.to_us(now + timedelta(hours=2)), max_pending=10**6)
    events: list[object] = list(_changes(releases, now, seed))
    result = await ingest_events(db, principal, events, max_event_bytes=10 * 1024, now=now)
    return (
        f"demo organization {org.slug}: {spans:,} spans of traces, "
        f"{len(result.accepted)} events added, {len(result.duplicates)} already there"
    )


def _merged(requests: Iterable[ExportTraceServiceRequest]) -> Iterator[ExportTraceServiceRequest]:
    batch = ExportTraceServiceRequest()
    count = 0
    for request in requests:
        batch.resource_spans.extend(request.resource_spans)
        count += 1
        if count == _MERGE:
            yield batch
            batch, count = ExportTraceServiceRequest(), 0
    if count:
        yield batch


def _changes(releases: list[Release], now: datetime, seed: int) -> Iterator[dict[str, object]]:
    """Deployments as CI pushes them (one per release, matching the versions in the traces),
    and the other changes of a week: config, flags, data loads, an incident."""
    week_ago = now - _WEEK
    for release in releases:
        if release.at < week_ago:
            continue
        yield {
            "specversion": "1.0",
            "id": f"deploy-{release.service}-{release.version}",
            "type": "deployment",
            "source": f"//github.com/acme/{release.service}",
            "time": release.at.isoformat(),
            "subject": ENVIRONMENT,
            "service": release.service,
            "version": release.version,
            "data": {
                "description": f"Deployed {release.service} {release.version} to {ENVIRONMENT}",
                "pipeline": f"https://ci.acme.example/{release.service}/{release.version}",
            },
        }
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    for n in range(40):
        kind, severity, text = rng.choice(_OTHER_CHANGES)
        service = rng.choice(SERVICES)
        when = now - timedelta(minutes=rng.randint(20, 7 * 24 * 60))
        event: dict[str, object] = {
            "specversion": "1.0",
            "id": f"demo-change-{n}",
            "type": kind,
            "source": f"//github.com/acme/{service}",
            "time": when.isoformat(),
            "subject": "production" if rng.random() < 0.7 else "staging",
            "service": service,
            "data": {"description": text.format(service=service, n=rng.randint(2, 90))},
        }
        if severity:
            event["severity"] = severity
        yield event
