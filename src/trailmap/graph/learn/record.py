"""Spans in, graph out: what one OTLP trace request adds to the organization's graph.

The request is read once (graph/spans.py), then written: nodes, edges and per-minute
statistics, a service version never seen before as a deployment on the timeline, and the
request's *halves* (a CLIENT span waiting for its SERVER child, and so on), paired with the
halves waiting in the database or stored to wait there.

`ingest_traces` does all of it in one transaction per request. The HTTP receiver goes
through graph/pairing.py's `TraceIngestion`, which pairs halves in the app node's memory
first and adds statistics up there for a moment; it writes with the functions below.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.graph.model import edge_id, node_id
from trailmap.graph.spans import Half, NodeKey, Observations, observe_request
from trailmap.graph.stats import Stats
from trailmap.storage import Connection, Database
from trailmap.storage import events as event_store
from trailmap.storage import graph as store
from trailmap.timeline.events import DETECTED_SOURCE_PREFIX, validate_event

__all__ = [
    "GraphRows",
    "RecentWrites",
    "Sent",
    "TraceIngestResult",
    "accepted_window",
    "graph_rows",
    "ingest_traces",
    "observe",
    "record_observations",
    "record_request",
    "store_halves",
    "write_graph_rows",
]

_US = 1_000_000
# Spans may be stamped a little ahead of the server's clock (clock skew), not more.
_FUTURE_US = 3600 * _US
_MAX_EVENT_BYTES = 10 * 1024
# Rows remembered as written (nodes, edges, versions) before the memory starts afresh.
_MAX_REMEMBERED = 100_000


@dataclass(slots=True)
class TraceIngestResult:
    """How many spans counted, how many were refused, and why (for OTLP partial success)."""

    accepted_spans: int = 0
    rejected_spans: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def error_message(self) -> str:
        return "; ".join(self.problems[:5])

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

    `request` is an `ExportTraceServiceRequest` or a graph/spans.py `SpanBatch`. Its halves
    are paired against the database and the rest stored there, in the same transaction as
    everything else: nothing stays in memory."""
    now_us, obs = observe(principal, request, now)
    if obs.accepted:
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


def accepted_window(principal: Principal, now: datetime | None) -> tuple[int, int, int]:
    """(now, oldest, newest) in epoch microseconds: what the graph takes is stamped within
    the organization's retention and at most `_FUTURE_US` ahead of the server's clock."""
    now = now or clock.now()
    now_us = clock.to_us(now)
    oldest_us = clock.to_us(now - timedelta(days=principal.retention_days))
    return now_us, oldest_us, now_us + _FUTURE_US


# -- what a write remembers ----------------------------------------------------------------


@dataclass(slots=True)
class Sent:
    """The nodes and edges a write sent (id, first seen, last seen), and the versions it
    recorded: for `RecentWrites` to remember once the write commits."""

    rows: list[tuple[str, int, int]] = field(default_factory=list)
    versions: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Sent) -> None:
        self.rows.extend(other.rows)
        self.versions.extend(other.versions)


class RecentWrites:
    """Nodes, edges and versions an app node committed lately. A node or edge whose first
    and last seen times would not move past the stored ones by `store.SEEN_RESOLUTION_US`,
    and a version already recorded, need no statement at all. (The database itself keeps
    last seen to that resolution; with this, first and last seen are both kept to within a
    minute.) A cache of what is committed (rows are only deleted with their organization):
    losing it costs statements, never correctness."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[int, int]] = {}
        self._versions: set[tuple[str, str]] = set()

    def unchanged(self, row_id: str, first_us: int, last_us: int) -> bool:
        known = self._rows.get(row_id)
        return (
            known is not None
            and first_us > known[0] - store.SEEN_RESOLUTION_US
            and last_us < known[1] + store.SEEN_RESOLUTION_US
        )

    def has_version(self, node: str, version: str) -> bool:
        return (node, version) in self._versions

    def remember(self, sent: Sent) -> None:
        if len(self._rows) > _MAX_REMEMBERED:
            self._rows.clear()
        if len(self._versions) > _MAX_REMEMBERED:
            self._versions.clear()
        rows = self._rows
        for row_id, first_us, last_us in sent.rows:
            known = rows.get(row_id)
            rows[row_id] = (
                (first_us, last_us)
                if known is None
                else (min(first_us, known[0]), max(last_us, known[1]))
            )
        self._versions.update(sent.versions)


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
            [(h.pair_key, h.side, h.span_id, h.payload) for h in waiting],
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
        if half.side == "s":
            callees[half.pair_key].append(half)
        else:
            callers[half.pair_key] = half
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
                obs.pair(caller_payload, callee.payload)
    paired: set[str] = set()
    if callers:
        for key, callee_payload in store.claim_pending(conn, org_id, callers, "s"):
            found = callers.get(key)
            if found is not None:
                obs.pair(found.payload, callee_payload)
                if found.side == "c":
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
        if caller.side == "c":
            del callers[key]
        for callee in callees.pop(key):
            obs.pair(caller.payload, callee.payload)


# -- nodes, edges, statistics, versions ----------------------------------------------------


# Ids are hashes of what a row is; a request names the same few again and again.
_node_id = lru_cache(maxsize=65_536)(node_id)
_edge_id = lru_cache(maxsize=65_536)(edge_id)


@dataclass(slots=True)
class GraphRows:
    """What observations write, worked out before the transaction: the versions, nodes and
    edges not known to be stored already, and every minute of statistics (by subject id)."""

    obs: Observations
    versions: list[tuple[str, str, int]] = field(default_factory=list)
    nodes: dict[NodeKey, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)
    minutes: dict[tuple[str, int], Stats] = field(default_factory=dict)
    sent: Sent = field(default_factory=Sent)

    @property
    def changes_graph(self) -> bool:
        """Whether anything but statistics is to be written."""
        return bool(self.versions or self.nodes or self.edges)


def graph_rows(org_id: str, obs: Observations, recent: RecentWrites | None = None) -> GraphRows:
    """The rows to write for `obs`; with `recent`, those it knows unchanged are left out."""
    rows = GraphRows(obs)
    for (key, version), first in obs.versions.items():
        node = _node_id(org_id, *key)
        if recent is None or not recent.has_version(node, version):
            rows.versions.append((node, version, first))
            rows.sent.versions.append((node, version))
    ids: dict[NodeKey, str] = {}
    for key, seen in obs.nodes.items():
        this_id = ids[key] = _node_id(org_id, *key)
        if recent is None or not recent.unchanged(this_id, seen.first_us, seen.last_us):
            rows.nodes[key] = _node_row(this_id, key, seen, force=False)
            rows.sent.rows.append((this_id, seen.first_us, seen.last_us))
    edge_ids: dict[Any, str] = {}
    for (source, target, kind), seen in obs.edges.items():
        source_id, target_id = ids[source], ids[target]
        this_id = edge_ids[(source, target, kind)] = _edge_id(org_id, source_id, target_id, kind)
        if recent is not None and recent.unchanged(this_id, seen.first_us, seen.last_us):
            continue
        rows.sent.rows.append((this_id, seen.first_us, seen.last_us))
        rows.edges.append(
            {
                "id": this_id,
                "source_id": source_id,
                "target_id": target_id,
                "kind": kind,
                "attributes": {},
                "sources": ["otel"],
                "first_seen_us": seen.first_us,
                "last_seen_us": seen.last_us,
            }
        )
    for (subject, minute_us), stats in obs.minutes.items():
        # An edge key starts with a node key (a tuple); a node key with its kind (a string).
        subject_id = edge_ids[subject] if isinstance(subject[0], tuple) else ids[subject]
        rows.minutes[(subject_id, minute_us)] = stats
    return rows


def _node_row(this_id: str, key: NodeKey, seen: Any, *, force: bool) -> dict[str, Any]:
    kind, environment, name = key
    return {
        "id": this_id,
        "kind": kind,
        "name": name,
        "environment": environment,
        "attributes": seen.attributes,
        "sources": ["otel"],
        "first_seen_us": seen.first_us,
        "last_seen_us": seen.last_us,
        "force": force,
    }


def record_observations(
    conn: Connection,
    org_id: str,
    obs: Observations,
    now_us: int,
    *,
    recent: RecentWrites | None = None,
) -> Sent:
    """Nodes, edges, statistics and versions; the graph's version moves when anything is new.
    Returns what was sent, for `recent` to remember once the transaction commits."""
    rows = graph_rows(org_id, obs, recent)
    write_graph_rows(conn, org_id, rows, now_us, minutes=True)
    return rows.sent


def write_graph_rows(
    conn: Connection, org_id: str, rows: GraphRows, now_us: int, *, minutes: bool
) -> None:
    """Write `rows` (their statistics too when `minutes`)."""
    obs = rows.obs
    fresh: list[tuple[NodeKey, str, int, bool]] = []
    if rows.versions:
        names = {_node_id(org_id, *key): key for key, _ in obs.versions}
        fresh = [
            (names[node], version, first, deployed)
            for node, version, first, deployed in store.new_versions(conn, org_id, rows.versions)
        ]
    # Only a service whose version changed has its attributes (service.version) rewritten;
    # the others are touched at most once a minute, for their last-seen time.
    for key, _, _, _ in fresh:
        rows.nodes[key] = _node_row(_node_id(org_id, *key), key, obs.nodes[key], force=True)
    created = store.upsert_nodes(conn, org_id, list(rows.nodes.values()))
    created += store.upsert_edges(conn, org_id, rows.edges)
    if created:
        store.bump_version(conn, org_id, now_us)
    if minutes:
        write_minutes(conn, org_id, rows.minutes)
    deployments = [(key, version, first) for key, version, first, deployed in fresh if deployed]
    if deployments:
        _add_deployments(conn, org_id, deployments, now_us)


def write_minutes(conn: Connection, org_id: str, minutes: dict[tuple[str, int], Stats]) -> None:
    """Per-minute statistics by (subject id, minute), added to what is stored."""
    store.add_minutes(
        conn,
        org_id,
        [
            (subject_id, minute_us, stats.calls, stats.errors, stats.duration_ms, stats.buckets)
            for (subject_id, minute_us), stats in minutes.items()
        ],
    )


def _add_deployments(
    conn: Connection, org_id: str, deployments: list[tuple[NodeKey, str, int]], now_us: int
) -> None:
    rows: list[dict[str, Any]] = []
    now = clock.from_us(now_us)
    for (_, environment, service), version, first_us in deployments:
        event = {
            "specversion": "1.0",
            "id": f"{environment}/{service}/{version}"[:200],
            "source": f"{DETECTED_SOURCE_PREFIX}{service}"[:500],
            "type": "deployment",
            "time": datetime.fromtimestamp(first_us / _US, tz=UTC).isoformat(),
            "subject": environment[:50],
            "service": service,
            "version": version[:50],
            "data": {
                "description": f"{service} {version} first seen in traces ({environment})",
                "detected_from": "traces",
            },
        }
        outcome = validate_event(event, index=len(rows), now=now, max_bytes=_MAX_EVENT_BYTES)
        if not isinstance(outcome, list):
            rows.append(outcome.values)
    if rows:
        event_store.insert_events(conn, org_id, rows)
