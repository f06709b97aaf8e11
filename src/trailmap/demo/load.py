"""The demo organization: a simulated shop whose graph is learned from OpenTelemetry traces
(demo/traces.py) and a week of changes, both through the real ingest paths (docs/internals.md)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from trailmap import clock
from trailmap.accounts import Organization, create_org, get_org
from trailmap.demo.history import delivery_history
from trailmap.demo.live import (
    LEAD,
    advance_demo,
    deployment_event,
    forget_clock,
    ingest_merged,
    live_changes,
    live_releases,
    principal_of,
    start_clock,
)
from trailmap.demo.repository import ReadRepository, record_shop_repository
from trailmap.demo.traces import DEFAULT_RELEASES, SERVICES, Release, shop_traces
from trailmap.errors import Conflict, NotFound
from trailmap.graph.learn.pairing import sweep_pending
from trailmap.storage import Connection, Database
from trailmap.storage import events as event_store
from trailmap.storage import graph as graph_store
from trailmap.storage import metrics as metric_store
from trailmap.timeline.ingest import ingest_events

__all__ = ["Repository", "load_demo", "reset_demo"]

_WEEK = timedelta(days=7)
_OTHER_CHANGES = (
    ("config-change", "LOW", "Raised the connection pool of {service} to {n}"),
    ("feature-flag", "LOW", "Turned on flag new-{service}-flow-{n} for 10% of users"),
    ("data-load", None, "Loaded the nightly catalogue export ({n}k rows) for {service}"),
    ("incident", "MAJOR", "Elevated latency on {service}, resolved after {n} minutes"),
)


@dataclass(frozen=True, slots=True)
class Repository:
    """How the demo reads its shop's repository (demo/repository.py): the readers, which
    live in a layer above, and the server's secret key, which its integration needs."""

    read: ReadRepository
    secret_key: str | None = None


async def load_demo(
    db: Database, slug: str = "demo", *, seed: int = 7, repository: Repository | None = None
) -> str:
    """Create the organization when missing, with its graph and week of changes; an
    organization already loaded has its shop run from where it stopped to now instead
    (at most `RECENT` of it: demo/live.py). With `repository`, the shop's repository is
    read as well (its history the first time)."""
    try:
        org = await create_org(db, slug, name="Demo (Acme Shop)")
    except Conflict:
        org = await get_org(db, slug)
    if await db.read(graph_store.graph_version, org.id) == 0:
        return await _load_week(db, org, seed, repository)
    advance = await advance_demo(db, org, seed=seed, settle_all=True)
    read = await _read_repository(db, org, repository, clock.now())
    if advance is None:
        return f"demo organization {org.slug}: already up to date{read}"
    seconds = int((advance.end - advance.start).total_seconds())
    ran = f"{seconds} seconds" if seconds < 120 else f"{seconds // 60} minutes"
    return (
        f"demo organization {org.slug}: its shop ran the {ran} up to now, "
        f"{advance.spans:,} spans of traces and {advance.events} events added{read}"
    )


async def reset_demo(
    db: Database, slug: str = "demo", *, seed: int = 7, repository: Repository | None = None
) -> str:
    """Delete what the organization's graph, timeline and metrics hold (its members, keys,
    settings and audit log stay), then load the demo afresh. Touches no other organization."""
    try:
        org = await get_org(db, slug)
    except NotFound:
        return await load_demo(db, slug, seed=seed, repository=repository)

    def clear(conn: Connection) -> int:
        removed = event_store.clear_org(conn, org.id) + metric_store.clear_org(conn, org.id)
        return removed + graph_store.clear_org(conn, org.id)

    # The clock goes first: a server running this demo's shop finds nothing to run on until
    # the week below is in.
    await forget_clock(db, org.id)
    await db.write(clear)
    return await _load_week(db, org, seed, repository)


async def _read_repository(
    db: Database, org: Organization, repository: Repository | None, now: datetime
) -> str:
    if repository is None:
        return ""
    said = await record_shop_repository(
        db, org, repository.read, now=now, secret_key=repository.secret_key
    )
    return f"; {said}"


async def _load_week(
    db: Database, org: Organization, seed: int, repository: Repository | None
) -> str:
    """The week before now, in full: traces and changes."""
    principal = principal_of(org)
    now = clock.now()
    # Set first: a server running this shop takes the time from now on, not this week again.
    await start_clock(db, org.id, now)
    # The week's releases, and the live schedule's of its last hours (demo/live.py).
    week = DEFAULT_RELEASES(now)
    releases = week + live_releases(now, now, seed=seed)
    spans = await ingest_merged(
        db, principal, shop_traces(now - _WEEK, now, releases=releases, seed=seed), now=now
    )
    # The demo's halves need not wait: every span of the week is already in.
    await sweep_pending(db, now_us=clock.to_us(now + timedelta(hours=2)), max_pending=10**6)
    events: list[object] = list(_changes(week, now, seed))
    events += delivery_history(now, seed=seed)
    events += live_changes(now, now - LEAD, now, seed=seed)
    result = await ingest_events(db, principal, events, max_event_bytes=10 * 1024, now=now)
    read = await _read_repository(db, org, repository, now)
    return (
        f"demo organization {org.slug}: {spans:,} spans of traces, "
        f"{len(result.accepted)} events added, {len(result.duplicates)} already there{read}"
    )


def _changes(releases: list[Release], now: datetime, seed: int) -> Iterator[dict[str, object]]:
    """Deployments as CI pushes them (one per release, matching the versions in the traces),
    and the other changes of a week: config, flags, data loads, an incident."""
    week_ago = now - _WEEK
    for release in releases:
        if release.at >= week_ago:
            yield deployment_event(release)
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
