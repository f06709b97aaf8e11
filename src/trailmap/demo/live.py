"""The demo shop keeps running: its traffic, and through the day its releases and other
changes, go in through the real ingestion paths as time passes (docs/internals.md).

Where the simulation stands is one instance setting per demo organization, `demo.live:<id>`,
holding the moment it was loaded (the anchor: releases are numbered from it) and the moment
its traffic reaches (the cursor). A tick claims the time up to now, ten minutes at a time,
by replacing that value only if it is still the one it read, so two app nodes never
simulate the same minutes and a restart resumes where the database says.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from trailmap import clock
from trailmap.accounts import Organization, Principal, get_org
from trailmap.demo.traces import (
    DEFAULT_RELEASES,
    ENVIRONMENT,
    RECENT,
    SERVICES,
    Release,
    shop_traces,
)
from trailmap.errors import NotFound, TrailmapError
from trailmap.graph.learn.pairing import ingest_traces, sweep_pending
from trailmap.storage import Database, instance
from trailmap.storage import graph as graph_store
from trailmap.timeline.ingest import ingest_events

__all__ = [
    "BUSY_TRACES_PER_MINUTE",
    "LEAD",
    "RELEASE_EVERY",
    "Advance",
    "advance_demo",
    "deployment_event",
    "forget_clock",
    "ingest_merged",
    "live_changes",
    "live_releases",
    "principal_of",
    "run_live_demo",
    "start_clock",
]

log = logging.getLogger(__name__)

# The shop's traffic while it runs live: the rate of its loaded week's busy last hours.
BUSY_TRACES_PER_MINUTE = 12.0
# A release on a grid of the UTC day (16 a day, the first one on the stroke of midnight), a
# few minutes into its slot: any two hours hold one, and so does any day from 00:00 UTC.
RELEASE_EVERY = timedelta(minutes=90)
_JITTER_MINUTES = (1, 25)
# The schedule begins this long before the demo is loaded, so a demo just loaded has its
# recent changes too ("what changed in the last 2 hours?" at once).
LEAD = timedelta(hours=3)
_REST = timedelta(hours=4)  # a service is not released again sooner than this
_BAD_SHARE = 0.15  # releases that fail one request of theirs in twenty-five
_BAD_ERROR_RATE = 0.04
_MINOR_SHARE = 0.3
# A config change or a feature flag in every half hour, between 5 and 25 minutes into it:
# never an hour without a change, so "what changed near checkout in the last hour?" (every
# service is within two hops of checkout) has an answer at any minute.
_CHANGE_EVERY = timedelta(minutes=30)
_LIVE_CHANGES = (
    ("config-change", "Raised the connection pool of {service} to {n}"),
    ("config-change", "Lowered the request timeout of {service} to {n}00 ms"),
    ("feature-flag", "Turned on flag new-{service}-flow-{n} for 10% of users"),
    ("feature-flag", "Rolled flag {service}-fast-path-{n} out to every user"),
)
# Requests merged into one ingestion call: one transaction per few thousand spans, as a
# Collector's batch would give.
_MERGE = 24
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Simulated time claimed and run at once: what a failure half way through may leave out.
_CHUNK = timedelta(minutes=10)


def _state_name(org_id: str) -> str:
    return f"demo.live:{org_id}"


def principal_of(org: Organization) -> Principal:
    """What the demo's own producers write as: the organization's CI and SDKs."""
    return Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope="READ_WRITE",
    )


# -- the schedule ---------------------------------------------------------------------------


def _slot_rng(seed: int, slot: int, what: str) -> random.Random:
    return random.Random(f"{seed}:{slot}:{what}")  # noqa: S311 - demo data, not secrets


def _slot_of(moment: datetime) -> int:
    return (moment - _EPOCH) // RELEASE_EVERY


def _slot_start(slot: int) -> datetime:
    return _EPOCH + slot * RELEASE_EVERY


def _release_time(slot: int, rng: random.Random) -> datetime:
    # The day's first slot releases on the stroke of midnight, so "what was deployed today?"
    # has an answer at any minute of the day.
    first_of_day = (slot * RELEASE_EVERY) % timedelta(days=1) == timedelta(0)
    minutes = 0 if first_of_day else rng.randint(*_JITTER_MINUTES)
    return _slot_start(slot) + timedelta(minutes=minutes)


def _bumped(version: str, minor: bool) -> str:
    major, middle, patch = (int(part) for part in version.split("."))
    return f"{major}.{middle + 1}.0" if minor else f"{major}.{middle}.{patch + 1}"


def live_releases(anchor: datetime, until: datetime, *, seed: int = 7) -> list[Release]:
    """The releases of the demo loaded at `anchor`, from `LEAD` before it up to `until`, one
    per slot of `RELEASE_EVERY`: each a service chosen by the seed among those not released
    in the last `_REST`, its version one patch (now and then one minor) above the service's
    last, usually as sound as its usual; after the load, now and then a bad one that the
    service's next release repairs. Before the load they are all sound, and the loaded
    week's two stories (checkout's bad 3.10.0, payments' harmless 2.7.0) stay the last
    release of their services for a while. Deterministic given the anchor, seed and slot."""
    history = sorted(DEFAULT_RELEASES(anchor), key=lambda r: r.at)
    current = {r.service: r.version for r in history}
    last_at = {r.service: r.at for r in history}
    usual = {s: min(r.error_rate for r in history if r.service == s) for s in SERVICES}
    begin = anchor - LEAD
    releases: list[Release] = []
    slot = _slot_of(begin)
    while _slot_start(slot) <= until:
        rng = _slot_rng(seed, slot, "release")
        at = _release_time(slot, rng)
        pick, minor, bad = rng.random(), rng.random() < _MINOR_SHARE, rng.random() < _BAD_SHARE
        slot += 1
        if at <= begin or at > until:
            continue
        rested = [s for s in SERVICES if at - last_at[s] >= _REST] or list(SERVICES)
        service = rested[int(pick * len(rested))]
        current[service], last_at[service] = _bumped(current[service], minor), at
        rate = _BAD_ERROR_RATE if bad and at > anchor else usual[service]
        releases.append(Release(service, current[service], at, rate))
    return releases


def deployment_event(release: Release) -> dict[str, object]:
    """A release as its CI pipeline reports it."""
    return {
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


def live_changes(
    anchor: datetime, start: datetime, end: datetime, *, seed: int = 7
) -> list[dict[str, object]]:
    """The changes made in [start, end): each release's deployment, and between releases,
    in every half hour, a config change or a feature flag."""
    changes = [
        deployment_event(r) for r in live_releases(anchor, end, seed=seed) if start <= r.at < end
    ]
    for slot in range((start - _EPOCH) // _CHANGE_EVERY, (end - _EPOCH) // _CHANGE_EVERY + 1):
        rng = _slot_rng(seed, slot, "change")
        at = _EPOCH + slot * _CHANGE_EVERY + timedelta(minutes=rng.randint(5, 25))
        kind, text = rng.choice(_LIVE_CHANGES)
        service = rng.choice(SERVICES)
        if not (start <= at < end) or at <= anchor - LEAD:
            continue
        changes.append(
            {
                "specversion": "1.0",
                "id": f"demo-live-change-{slot}",
                "type": kind,
                "source": f"//github.com/acme/{service}",
                "time": at.isoformat(),
                "subject": ENVIRONMENT,
                "service": service,
                "severity": "LOW",
                "data": {"description": text.format(service=service, n=rng.randint(2, 90))},
            }
        )
    return sorted(changes, key=lambda change: str(change["time"]))


# -- ticks ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advance:
    """What one tick added: the simulated time from `start` to `end`."""

    start: datetime
    end: datetime
    spans: int
    events: int

    def then(self, later: Advance) -> Advance:
        return Advance(self.start, later.end, self.spans + later.spans, self.events + later.events)


async def start_clock(db: Database, org_id: str, now: datetime) -> None:
    """The demo was loaded up to `now`: the live simulation starts there."""
    us = str(clock.to_us(now))
    await db.write(instance.set_setting, _state_name(org_id), f"{us} {us}")


async def forget_clock(db: Database, org_id: str) -> None:
    await db.write(instance.delete_setting, _state_name(org_id))


async def _state(db: Database, org_id: str) -> str | None:
    """The stored "anchor cursor"; a demo loaded before the simulation ran live gets one
    from its newest per-minute figures (None: the organization has no traffic at all)."""
    name = _state_name(org_id)
    value = await db.read(instance.get_setting, name)
    if value is not None:
        return value
    newest = await db.read(graph_store.newest_minute, org_id)
    if newest is None:
        return None
    us = str(newest + 60_000_000)
    return str(await db.write(instance.first_setting, name, f"{us} {us}"))


async def advance_demo(
    db: Database,
    org: Organization,
    *,
    now: datetime | None = None,
    seed: int = 7,
    traces_per_minute: float | None = None,
    settle_all: bool = False,
) -> Advance | None:
    """Run the shop from where it stopped to `now`, at most `RECENT` of it (a server down
    for longer resumes its shop that long before now): its traces through `ingest_traces`,
    its changes through `ingest_events`, `_CHUNK` of simulated time at a time, each claimed
    before it is run. None when another caller took this time first, or there is nothing to
    run. `settle_all` settles every waiting half at the end, as a one-off load does; a
    running server's own sweeps settle them otherwise. The traffic runs at
    `traces_per_minute` (default `BUSY_TRACES_PER_MINUTE`)."""
    now = now or clock.now()
    rate = BUSY_TRACES_PER_MINUTE if traces_per_minute is None else traces_per_minute
    done: Advance | None = None
    while True:
        # A stop (the server's shutdown) comes between chunks: one that has begun is
        # finished, so no write of it is cut off half way.
        await anyio.lowlevel.checkpoint()
        with anyio.CancelScope(shield=True):
            chunk = await _next_chunk(db, org, now, seed, rate)
        if chunk is None:
            break
        done = chunk.advance() if done is None else done.then(chunk.advance())
    later = now + timedelta(hours=2) if settle_all else now
    with anyio.CancelScope(shield=True):
        await sweep_pending(db, now_us=clock.to_us(later), max_pending=10**6)
    return done


async def _next_chunk(
    db: Database, org: Organization, now: datetime, seed: int, rate: float
) -> _Chunk | None:
    """Claim the next chunk of time and run it; None when there is none to take."""
    name = _state_name(org.id)
    value = await _state(db, org.id)
    if value is None:
        return None
    anchor_us, cursor_us = (int(part) for part in value.split())
    start = max(clock.from_us(cursor_us), now - RECENT)
    if now <= start:
        return None
    end = min(now, start + _CHUNK)
    claimed = f"{anchor_us} {clock.to_us(end)}"
    if not await db.write(instance.replace_setting, name, value, claimed):
        return None
    chunk = _Chunk(org, clock.from_us(anchor_us), start, end, now)
    try:
        await chunk.run(db, seed, rate)
    except Exception:
        # Nothing of it in yet (the database went away, say): the time goes back to the
        # next tick. Part of it in: it stays claimed, a gap rather than traffic twice.
        if not chunk.spans:
            await db.write(instance.replace_setting, name, claimed, value)
        raise
    return chunk


@dataclass(slots=True)
class _Chunk:
    """Some minutes of the shop, from `start` to `end`, ingested as of `now`."""

    org: Organization
    anchor: datetime
    start: datetime
    end: datetime
    now: datetime
    spans: int = 0
    events: int = 0

    async def run(self, db: Database, seed: int, rate: float) -> None:
        principal = principal_of(self.org)
        # The changes first: what CI reported is in even if the traffic fails half way.
        changes: list[object] = list(live_changes(self.anchor, self.start, self.end, seed=seed))
        result = await ingest_events(
            db, principal, changes, max_event_bytes=10 * 1024, now=self.now
        )
        self.events = len(result.accepted)
        traffic = shop_traces(
            self.start,
            self.end,
            releases=DEFAULT_RELEASES(self.anchor)
            + live_releases(self.anchor, self.end, seed=seed),
            seed=_slot_rng(seed, clock.to_us(self.start), "traffic").getrandbits(32),
            traces_per_minute=rate,
            recent_traces_per_minute=rate,
        )
        for request in _merged(traffic):
            ingested = await ingest_traces(db, principal, request, now=self.now)
            self.spans += ingested.accepted_spans

    def advance(self) -> Advance:
        return Advance(self.start, self.end, self.spans, self.events)


async def ingest_merged(
    db: Database,
    principal: Principal,
    requests: Iterable[ExportTraceServiceRequest],
    *,
    now: datetime,
) -> int:
    """Ingest the requests a few at a time; returns the spans accepted."""
    spans = 0
    for request in _merged(requests):
        spans += (await ingest_traces(db, principal, request, now=now)).accepted_spans
    return spans


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


async def run_live_demo(db: Database, slug: str, *, interval_seconds: float, seed: int = 7) -> None:
    """Keep the demo shop running: a tick every `interval_seconds`; a failure is logged and
    the next tick takes the time it missed. Safe on several app nodes (each tick claims its
    time), though one is enough: `trailmap serve --demo` starts it."""
    while True:
        try:
            org = await get_org(db, slug)
            advance = await advance_demo(db, org, seed=seed)
            if advance is not None and advance.events:
                log.info("demo %s: %d changes made", slug, advance.events)
        except NotFound:
            log.warning("the demo organization %r is gone; its shop stops", slug)
            return
        except TrailmapError as error:
            log.warning("demo tick skipped: %s", error.message)
        except Exception:
            log.exception("demo tick failed; trying again at the next interval")
        await anyio.sleep(interval_seconds)
