"""Where the two halves of a call meet: in an app node's memory first, then in the database,
and the sweep that settles halves whose wait is over (docs/internals.md)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from trailmap import clock
from trailmap.accounts import quotas
from trailmap.accounts.principal import Principal
from trailmap.graph.learn.record import (
    GraphRows,
    RecentWrites,
    Sent,
    accepted_window,
    graph_rows,
    record_observations,
    write_graph_rows,
    write_minutes,
)
from trailmap.graph.learn.spans import Half, Observations, observe_request, payload_of
from trailmap.graph.stats import Stats
from trailmap.storage import Connection, Database
from trailmap.storage import graph as store

__all__ = [
    "TraceIngestResult",
    "TraceIngestion",
    "ingest_traces",
    "observe",
    "record_request",
    "store_halves",
    "sweep_pending",
]

log = logging.getLogger(__name__)

_US = 1_000_000
_BATCH = 5000
# Rows of statistics (organization, subject, minute) added up in memory at most: past it,
# the request that adds more writes them all.
_MAX_MINUTES = 50_000
# Entries of halves gone from memory tolerated in the arrival order beyond the live ones.
_SLACK = 1024


@dataclass(slots=True)
class TraceIngestResult:
    """How many spans counted, how many were refused, and why (for OTLP partial success)."""

    accepted_spans: int = 0
    rejected_spans: int = 0
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, obs: Observations) -> TraceIngestResult:
        return cls(obs.accepted, obs.rejected, list(obs.problems))


async def ingest_traces(
    db: Database,
    principal: Principal,
    request: Any,
    *,
    now: datetime | None = None,
    pairing_wait_seconds: int = 30,
) -> TraceIngestResult:
    """Record what the request's spans say; invalid spans are counted and the rest kept.

    `request` is an `ExportTraceServiceRequest` or a graph/learn/spans.py `SpanBatch`. Its halves
    are paired against the database and the rest stored there, in the same transaction as
    everything else: nothing stays in memory."""
    now_us, obs = observe(principal, request, now)
    if obs.accepted:
        await quotas.meter(db, principal, "spans", obs.accepted)
        await db.write(
            record_request, principal.org_id, obs, now_us, now_us + pairing_wait_seconds * _US
        )
    return TraceIngestResult.of(obs)


def observe(
    principal: Principal, request: ExportTraceServiceRequest | Any, now: datetime | None
) -> tuple[int, Observations]:
    """The request's observations, and the moment they were made (epoch microseconds)."""
    principal.require_write()
    now_us, oldest_us, newest_us = accepted_window(principal, now)
    return now_us, observe_request(request, oldest_us=oldest_us, newest_us=newest_us)


# -- halves: paired against the database, or stored -----------------------------------------


def record_request(
    conn: Connection,
    org_id: str,
    obs: Observations,
    now_us: int,
    expires_us: int,
    recent: RecentWrites | None = None,
) -> Sent:
    """Pair the observations' halves against the database, store the rest until
    `expires_us`, and record the rest of what the observations (and those pairs) say."""
    waiting = _pair(conn, org_id, obs)
    if waiting:
        store.add_pending(
            conn,
            org_id,
            [(h[0], h[1], h[2], payload_of(h)) for h in waiting],
            expires_us,
        )
    return record_observations(conn, org_id, obs, now_us, recent=recent)


def store_halves(
    conn: Connection,
    by_org: dict[str, list[Half]],
    now_us: int,
    expires_us: int,
    recent: RecentWrites | None = None,
) -> Sent:
    """Halves leaving an app node's memory: paired with what other nodes stored, or stored."""
    sent = Sent()
    for org_id, halves in by_org.items():
        obs = Observations(halves=halves)
        sent.extend(record_request(conn, org_id, obs, now_us, expires_us, recent))
    return sent


def _grouped(halves: list[Half]) -> tuple[dict[str, Half], dict[str, list[Half]]]:
    callers: dict[str, Half] = {}
    callees: dict[str, list[Half]] = defaultdict(list)
    for half in halves:
        if half[1] == "s":
            callees[half[0]].append(half)
        else:
            callers[half[0]] = half
    return callers, callees


def _pair(conn: Connection, org_id: str, obs: Observations) -> list[Half]:
    """Pair the request's halves with each other, then with those waiting in the database;
    return the halves still waiting."""
    callers, callees = _grouped(obs.halves)
    _pair_within(obs, callers, callees)
    if callees:
        stored = store.claim_pending(conn, org_id, callees, "c")
        stored += store.find_pending(conn, org_id, callees, "p")
        for key, caller_payload in stored:
            for callee in callees.pop(key, ()):
                obs.pair(caller_payload, payload_of(callee))
    paired: set[str] = set()
    if callers:
        for key, callee_payload in store.claim_pending(conn, org_id, callers, "s"):
            found = callers.get(key)
            if found is not None:
                obs.pair(payload_of(found), callee_payload)
                if found[1] == "c":
                    # A CLIENT span has one SERVER child; once matched it waits no more.
                    paired.add(key)
    waiting = [h for key, h in callers.items() if key not in paired]
    waiting.extend(h for hs in callees.values() for h in hs)
    return waiting


def _pair_within(
    obs: Observations, callers: dict[str, Half], callees: dict[str, list[Half]]
) -> None:
    """Pairs whose two halves came together (in one request, through a Collector, say)."""
    for key in [k for k in callees if k in callers]:
        caller = callers[key]
        if caller[1] == "c":
            del callers[key]
        for callee in callees.pop(key):
            obs.pair(payload_of(caller), payload_of(callee))


class TraceIngestion:
    """What one app node keeps between OTLP requests, none of which another node needs:
    halves waiting for their partner (`memory_seconds`, at most `max_waiting` of them),
    statistics being added up (`stats_seconds`), and the rows it wrote lately.

    `open()` starts keeping them; `store_due()`, run every so often (jobs/pairing.py),
    stores the halves whose time in memory is over and the statistics added up so far;
    `close()` stores everything. Until opened, `ingest` writes each request whole, as
    `ingest_traces` does.

    When a request is answered, what it proves about the graph (new nodes, edges, versions)
    is committed; its statistics are within `stats_seconds`, its halves within
    `memory_seconds`, and all of them once the app stops cleanly. A crash loses what was in
    memory: those seconds' statistics, and the calls whose halves waited there.

    A request's work runs whole on a worker thread, at most `workers` at a time (the OTLP
    receiver's limiter, shared with metrics): reading its spans, pairing them in memory and
    writing what they prove. None of it runs on the event loop, and the memory changes it
    makes and the write they go with are done, or undone, together on that thread even when
    the request is cancelled. The memory is shared between threads under one lock.
    """

    def __init__(
        self,
        db: Database,
        *,
        wait_seconds: int,
        memory_seconds: float,
        max_waiting: int,
        stats_seconds: float = 0.0,
        workers: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.db = db
        self._wait_us = wait_seconds * _US
        self._memory_us = int(memory_seconds * _US)
        self._max_waiting = max_waiting if memory_seconds > 0 else 0
        self._stats_us = int(stats_seconds * _US)
        self._waiting = _WaitingHalves()
        self._minutes: dict[tuple[str, str, int], Stats] = {}
        self._recent = RecentWrites()
        self._lock = threading.Lock()
        self._open = False
        self._workers = workers if workers is not None else anyio.CapacityLimiter(2)

    @property
    def waiting(self) -> int:
        """How many halves wait in memory."""
        return len(self._waiting)

    @property
    def store_every_seconds(self) -> float:
        """How often `store_due` should run: every second, or as often as the statistics
        and a quarter of the halves' time in memory ask, up to ten times a second."""
        asked = [s / _US for s in (self._stats_us, self._memory_us // 4) if s > 0]
        return max(0.1, min([1.0, *asked]))

    def open(self) -> None:
        self._open = True

    async def close(self) -> int:
        """Keep nothing in memory any more, and store what is there; returns how many halves
        were stored."""
        self._open = False
        return await self.store_due(everything=True)

    async def ingest(
        self, principal: Principal, request: Any, *, now: datetime | None = None
    ) -> TraceIngestResult:
        """`ingest_traces`, keeping halves and statistics in memory while open."""
        return await self.ingest_export(principal, lambda: request, now=now)

    async def ingest_export(
        self, principal: Principal, read: Callable[[], Any], *, now: datetime | None = None
    ) -> TraceIngestResult:
        """`ingest`, for the request `read()` returns (decoding the body, say): called on the
        worker thread, so that the whole request runs in one hop off the event loop."""
        return await anyio.to_thread.run_sync(
            self._ingest, principal, read, now, limiter=self._workers
        )

    def _ingest(
        self, principal: Principal, read: Callable[[], Any], now: datetime | None
    ) -> TraceIngestResult:
        now_us, obs = observe(principal, read(), now)
        if not obs.accepted:
            return TraceIngestResult.of(obs)
        # The plan's spans a day, all of the export's or none (an exporter retries a 429).
        quotas.meter_sync(self.db, principal, "spans", obs.accepted)
        org_id = principal.org_id
        expires_us = now_us + self._wait_us
        if not self._open:
            sent = self.db.write_sync(record_request, org_id, obs, now_us, expires_us, self._recent)
            self._remember(sent)
            return TraceIngestResult.of(obs)
        with self._lock:
            undo = self._waiting.match(org_id, obs, now_us)
            # Past the cap, the oldest halves are stored by this request's own transaction.
            excess = self._waiting.take(count=len(self._waiting) - self._max_waiting)
        # RecentWrites is only a cache of what is stored: read without the lock, a stale
        # answer costs a statement, never a row.
        rows = graph_rows(org_id, obs, self._recent)
        add_up = self._stats_us > 0
        if rows.changes_graph or excess or not add_up:
            try:
                sent = self.db.write_sync(
                    _record_matched,
                    org_id,
                    rows,
                    now_us,
                    _by_org(excess),
                    expires_us,
                    add_up,
                    self._recent,
                )
            except Exception:
                # Nothing was stored: memory goes back to what it was, and the client's retry
                # brings this request's halves again.
                with self._lock:
                    self._waiting.undo(undo)
                    self._waiting.restore(excess)
                raise
            sent.extend(rows.sent)
            self._remember(sent)
        with self._lock:
            if add_up:
                _add_minutes(self._minutes, org_id, rows.minutes)
            crowded = len(self._minutes) > _MAX_MINUTES
        if crowded:
            try:
                self._store_due(now_us, everything=False)
            except Exception:  # noqa: BLE001 - this request is stored; the job tries again
                log.warning("could not store the statistics added up in memory; will retry")
        return TraceIngestResult.of(obs)

    async def store_due(self, *, now_us: int | None = None, everything: bool = False) -> int:
        """Store the statistics added up so far, and the halves whose time in memory is over
        (every half with `everything`); returns how many halves were stored. A failure puts
        all of it back in memory, for the next attempt."""
        # A worker thread of its own, as a database write (not the requests' limiter: the
        # stores must go on while requests queue); it finishes even when cancelled.
        return await anyio.to_thread.run_sync(self._store_due, now_us, everything)

    def _store_due(self, now_us: int | None, everything: bool) -> int:
        now_us = clock.now_us() if now_us is None else now_us
        with self._lock:
            if everything:
                halves = self._waiting.take(count=len(self._waiting))
            else:
                halves = self._waiting.take(since_before_us=now_us - self._memory_us)
            minutes, self._minutes = self._minutes, {}
        if not halves and not minutes:
            return 0
        try:
            sent = self.db.write_sync(
                _store_due,
                _minutes_by_org(minutes),
                _by_org(halves),
                now_us,
                self._wait_us,
                self._recent,
            )
        except Exception:
            with self._lock:
                self._waiting.restore(halves)
                for (org_id, subject_id, minute_us), stats in minutes.items():
                    _add_minutes(self._minutes, org_id, {(subject_id, minute_us): stats})
            raise
        self._remember(sent)
        return len(halves)

    def _remember(self, sent: Sent) -> None:
        with self._lock:
            self._recent.remember(sent)


def _record_matched(
    conn: Connection,
    org_id: str,
    rows: GraphRows,
    now_us: int,
    spilled: dict[str, list[Half]],
    expires_us: int,
    add_up: bool,
    recent: RecentWrites,
) -> Sent:
    """A request whose halves were paired in memory (its statistics too, unless they are
    being added up), and the halves pushed out of memory."""
    write_graph_rows(conn, org_id, rows, now_us, minutes=not add_up)
    return store_halves(conn, spilled, now_us, expires_us, recent)


def _store_due(
    conn: Connection,
    minutes: dict[str, dict[tuple[str, int], Stats]],
    halves: dict[str, list[Half]],
    now_us: int,
    wait_us: int,
    recent: RecentWrites,
) -> Sent:
    for org_id, rows in minutes.items():
        write_minutes(conn, org_id, rows)
    # A stored half waits its whole wait again: its partner may still be in another app
    # node's memory, and reach the database up to `memory_seconds` from now.
    return store_halves(conn, halves, now_us, now_us + wait_us, recent)


def _add_minutes(
    into: dict[tuple[str, str, int], Stats], org_id: str, minutes: dict[tuple[str, int], Stats]
) -> None:
    for (subject_id, minute_us), stats in minutes.items():
        key = (org_id, subject_id, minute_us)
        total = into.get(key)
        if total is None:
            into[key] = stats
        else:
            total.merge(stats)


def _minutes_by_org(
    minutes: dict[tuple[str, str, int], Stats],
) -> dict[str, dict[tuple[str, int], Stats]]:
    by_org: dict[str, dict[tuple[str, int], Stats]] = defaultdict(dict)
    for (org_id, subject_id, minute_us), stats in minutes.items():
        by_org[org_id][(subject_id, minute_us)] = stats
    return by_org


# -- halves in memory -----------------------------------------------------------------------


# A waiting half: (arrival, organization, then the half: pair key, side, own span id, and
# its payload's values: kind, service, environment, start, duration, error, peer, topic).
# A flat tuple of text and numbers, which the garbage collector stops tracking at its next
# pass (a tuple holding a dict or an object stays tracked): tens of thousands wait at once,
# and each tracked object that outlives a few requests brings the collector's next full
# pass over the whole process sooner (measured: five full passes of 130 ms per thousand
# requests with objects, one with these tuples).
_Entry = tuple[Any, ...]


def _entry(since_us: int, org_id: str, half: Half) -> _Entry:
    return (since_us, org_id, *half)


def _payload(entry: _Entry) -> dict[str, Any]:
    return payload_of(entry[2:])


@dataclass(slots=True, eq=False)
class _Undo:
    """What one request changed in memory, to be put back if its write fails. (A half it
    added that another request paired meanwhile stays paired: the retry's copy of it then
    waits alone, and may end as an edge to an external API named like the callee.)"""

    added: list[_Entry] = field(default_factory=list)
    taken: list[_Entry] = field(default_factory=list)


class _WaitingHalves:
    """Halves by (organization, pair key), and in arrival order for storing the oldest.

    The rules are those of pairing against the database (`_pair`): a SERVER
    or CONSUMER half takes the CLIENT half it answers (a PRODUCER half stays, for more
    consumers), a CLIENT or PRODUCER half takes every SERVER or CONSUMER half waiting for
    it, and a half already waiting under the same span id (an export sent again) is not
    added twice, as `pending_spans`' key refuses it.

    A half that leaves stays in `_order` until it reaches the front or the order is swept
    of them: it is waiting while it is in its key's tuple of `_callers` or `_callees`.
    """

    def __init__(self) -> None:
        self._callers: dict[tuple[str, str], tuple[_Entry, ...]] = {}  # CLIENT, PRODUCER
        self._callees: dict[tuple[str, str], tuple[_Entry, ...]] = {}  # SERVER, CONSUMER
        self._order: deque[_Entry] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def match(self, org_id: str, obs: Observations, now_us: int) -> _Undo:
        """Pair the request's halves with those waiting (its own included, so that two
        halves sent together pair too); record what pairs in `obs`, keep the rest waiting.
        Returns how to undo it."""
        undo = _Undo()
        callers, callees = self._callers, self._callees
        for half in obs.halves:
            side = half[1]
            key = (org_id, half[0])
            if side == "s":
                waiting = callers.get(key)
                if waiting:
                    caller = waiting[0]
                    obs.pair(_payload(caller), payload_of(half))
                    if caller[3] == "c":
                        self._drop(caller)
                        undo.taken.append(caller)
                    continue
            else:
                waiting = callees.get(key)
                if waiting:
                    payload = payload_of(half)
                    for callee in waiting:
                        obs.pair(payload, _payload(callee))
                        self._drop(callee)
                        undo.taken.append(callee)
                    if side == "c":
                        continue
            entry = _entry(now_us, org_id, half)
            if self._add(entry):
                undo.added.append(entry)
        obs.halves = []
        # A half this request added and then paired itself needs no putting back.
        if undo.added and undo.taken:
            added = {id(entry) for entry in undo.added}
            undo.taken = [entry for entry in undo.taken if id(entry) not in added]
        return undo

    def undo(self, undo: _Undo) -> None:
        """The request's write failed: remove what it added, put back what it took."""
        for entry in undo.added:
            if self._waiting(entry):
                self._drop(entry)
        self.restore(undo.taken)

    def take(self, *, count: int = 0, since_before_us: int | None = None) -> list[_Entry]:
        """Remove the oldest: at least `count`, and all that arrived before `since_before_us`."""
        taken: list[_Entry] = []
        order = self._order
        while order:
            entry = order[0]
            if not self._waiting(entry):
                order.popleft()
                continue
            if len(taken) >= count and (since_before_us is None or entry[0] > since_before_us):
                break
            order.popleft()
            self._drop(entry)
            taken.append(entry)
        return taken

    def restore(self, entries: list[_Entry]) -> None:
        """Put back halves taken out, as the oldest."""
        for entry in reversed(entries):
            self._add(entry, oldest=True)

    def _chains(self, entry: _Entry) -> dict[tuple[str, str], tuple[_Entry, ...]]:
        return self._callees if entry[3] == "s" else self._callers

    def _waiting(self, entry: _Entry) -> bool:
        # By equality, not identity: an equal entry is the same half, put back.
        return entry in self._chains(entry).get((entry[1], entry[2]), ())

    def _add(self, entry: _Entry, *, oldest: bool = False) -> bool:
        chains = self._chains(entry)
        key = (entry[1], entry[2])
        waiting = chains.get(key)
        if waiting is None:
            chains[key] = (entry,)
        elif any(other[4] == entry[4] for other in waiting):
            return False
        else:
            chains[key] = (*waiting, entry)
        if oldest:
            self._order.appendleft(entry)
        else:
            self._order.append(entry)
        self._count += 1
        if len(self._order) > 2 * self._count + _SLACK:
            # Most halves pair within moments and leave their entry behind in `_order`:
            # sweep those out once they are half of it.
            self._order = deque(kept for kept in self._order if self._waiting(kept))
        return True

    def _drop(self, entry: _Entry) -> None:
        chains = self._chains(entry)
        key = (entry[1], entry[2])
        waiting = chains[key]
        if len(waiting) == 1:
            del chains[key]
        else:
            chains[key] = tuple(other for other in waiting if other != entry)
        self._count -= 1


def _by_org(entries: list[_Entry]) -> dict[str, list[Half]]:
    by_org: dict[str, list[Half]] = defaultdict(list)
    for entry in entries:
        by_org[entry[1]].append(entry[2:])
    return by_org


# -- the sweep ------------------------------------------------------------------------------


async def sweep_pending(db: Database, *, now_us: int | None = None, max_pending: int) -> int:
    """Settle the halves whose wait is over; returns how many halves were settled."""
    settled = 0
    while True:
        moment = clock.now_us() if now_us is None else now_us
        count = await db.write(_sweep_once, moment, max_pending)
        settled += count
        if count < _BATCH:
            return settled


def _sweep_once(conn: Connection, now_us: int, max_pending: int) -> int:
    """Take every expired half together with every half of the same key (deleting them, so
    that two sweeping nodes never take the same row), pair what matches, expire the rest."""
    rows = store.claim_expired(conn, now_us, limit=_BATCH, max_pending=max_pending)
    by_org: dict[str, dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]] = defaultdict(
        lambda: defaultdict(lambda: ([], []))
    )
    for row in rows:
        callers, callees = by_org[row.org_id][row.pair_key]
        (callees if row.side == "s" else callers).append(row.payload)
    for org_id, keys in by_org.items():
        obs = Observations()
        for callers, callees in keys.values():
            if callers and callees:
                for callee in callees:
                    obs.pair(callers[0], callee)
            else:
                for half in callers or callees:
                    obs.expire(half)
        if obs.nodes:
            record_observations(conn, org_id, obs, now_us)
    return len(rows)
