"""Spans in, graph out: what one OTLP trace request adds to the organization's graph.

The request is read once (graph/spans.py), then one write transaction pairs its halves with
those waiting in the database, records nodes, edges and per-minute statistics, and turns a
service version never seen before into a deployment on the timeline.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.graph.model import edge_id, node_id
from trailmap.graph.spans import Half, NodeKey, Observations, observe_request
from trailmap.storage import Connection, Database
from trailmap.storage import events as event_store
from trailmap.storage import graph as store
from trailmap.timeline.events import validate_event

__all__ = ["TraceIngestResult", "ingest_traces", "record_observations"]

_US = 1_000_000
# Spans may be stamped a little ahead of the server's clock (clock skew), not more.
_FUTURE_US = 3600 * _US
_MAX_EVENT_BYTES = 10 * 1024


@dataclass(slots=True)
class TraceIngestResult:
    """How many spans counted, how many were refused, and why (for OTLP partial success)."""

    accepted_spans: int = 0
    rejected_spans: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def error_message(self) -> str:
        return "; ".join(self.problems[:5])


async def ingest_traces(
    db: Database,
    principal: Principal,
    request: ExportTraceServiceRequest,
    *,
    now: datetime | None = None,
    pairing_wait_seconds: int = 30,
) -> TraceIngestResult:
    """Record what the request's spans say; invalid spans are counted and the rest kept."""
    principal.require_write()
    now = now or clock.now()
    now_us = clock.to_us(now)
    oldest_us = clock.to_us(now - timedelta(days=principal.retention_days))
    obs = observe_request(request, oldest_us=oldest_us, newest_us=now_us + _FUTURE_US)
    if obs.accepted:
        await db.write(
            _record_request, principal.org_id, obs, now_us, now_us + pairing_wait_seconds * _US
        )
    return TraceIngestResult(obs.accepted, obs.rejected, list(obs.problems))


def _record_request(
    conn: Connection, org_id: str, obs: Observations, now_us: int, expires_us: int
) -> None:
    waiting = _pair(conn, org_id, obs)
    if waiting:
        store.add_pending(
            conn,
            org_id,
            [(h.pair_key, h.side, h.span_id, h.payload) for h in waiting],
            expires_us,
        )
    record_observations(conn, org_id, obs, now_us)


def _pair(conn: Connection, org_id: str, obs: Observations) -> list[Half]:
    """Pair the request's halves with each other, then with those waiting in the database;
    return the halves still waiting."""
    callers: dict[str, Half] = {}
    callees: dict[str, list[Half]] = defaultdict(list)
    for half in obs.halves:
        if half.side == "s":
            callees[half.pair_key].append(half)
        else:
            callers[half.pair_key] = half
    _pair_within(obs, callers, callees)
    if callees:
        stored = store.claim_pending(conn, org_id, callees, "c")
        stored += store.find_pending(conn, org_id, callees, "p")
        for key, caller_payload in stored:
            for callee in callees.pop(key, ()):
                obs.pair(caller_payload, callee.payload)
    if callers:
        for key, callee_payload in store.claim_pending(conn, org_id, callers, "s"):
            found = callers.get(key)
            if found is not None:
                obs.pair(found.payload, callee_payload)
                if found.side == "c":
                    # A CLIENT span has one SERVER child; once matched it waits no more.
                    found.payload["paired"] = True
    waiting = [h for h in callers.values() if not h.payload.get("paired")]
    waiting.extend(h for hs in callees.values() for h in hs)
    return waiting


def _pair_within(
    obs: Observations, callers: dict[str, Half], callees: dict[str, list[Half]]
) -> None:
    """Pairs whose two halves came in the same request (through a Collector, say)."""
    for key in [k for k in callees if k in callers]:
        caller = callers[key]
        if caller.side == "c":
            del callers[key]
        for callee in callees.pop(key):
            obs.pair(caller.payload, callee.payload)


def _node_row(org_id: str, key: NodeKey, seen: Any, *, force: bool) -> dict[str, Any]:
    kind, environment, name = key
    return {
        "id": node_id(org_id, kind, environment, name),
        "kind": kind,
        "name": name,
        "environment": environment,
        "attributes": seen.attributes,
        "sources": ["otel"],
        "first_seen_us": seen.first_us,
        "last_seen_us": seen.last_us,
        "force": force,
    }


def record_observations(conn: Connection, org_id: str, obs: Observations, now_us: int) -> None:
    """Nodes, edges, statistics and versions; the graph's version moves when anything is new."""
    fresh = _new_versions(conn, org_id, obs)
    # Only a service whose version changed has its attributes (service.version) rewritten;
    # the others are touched at most once a minute, for their last-seen time.
    changed = {key for key, _, _, _ in fresh}
    ids: dict[NodeKey, str] = {}
    node_rows = []
    for key, seen in obs.nodes.items():
        row = _node_row(org_id, key, seen, force=key in changed)
        ids[key] = row["id"]
        node_rows.append(row)
    edge_ids: dict[Any, str] = {}
    edge_rows = []
    for (source, target, kind), seen in obs.edges.items():
        source_id, target_id = ids[source], ids[target]
        this_id = edge_id(org_id, source_id, target_id, kind)
        edge_ids[(source, target, kind)] = this_id
        edge_rows.append(
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
    created = store.upsert_nodes(conn, org_id, node_rows)
    created += store.upsert_edges(conn, org_id, edge_rows)
    if created:
        store.bump_version(conn, org_id, now_us)
    minute_rows = []
    for (subject, minute_us), stats in obs.minutes.items():
        # An edge key starts with a node key (a tuple); a node key with its kind (a string).
        subject_id = edge_ids[subject] if isinstance(subject[0], tuple) else ids[subject]
        minute: dict[str, Any] = {
            "subject_id": subject_id,
            "minute_us": minute_us,
            "calls": stats.calls,
            "errors": stats.errors,
            "duration_ms": stats.duration_ms,
        }
        minute.update(zip(store.BUCKET_COLUMNS, stats.buckets, strict=True))
        minute_rows.append(minute)
    store.add_minutes(conn, org_id, minute_rows)
    deployments = [(key, version, first) for key, version, first, deployed in fresh if deployed]
    if deployments:
        _add_deployments(conn, org_id, deployments, now_us)


def _new_versions(
    conn: Connection, org_id: str, obs: Observations
) -> list[tuple[NodeKey, str, int, bool]]:
    """The versions never seen before: (service, version, first seen, is a deployment)."""
    if not obs.versions:
        return []
    names = {node_id(org_id, *key): key for key, _ in obs.versions}
    seen = [
        (node_id(org_id, *key), version, first) for (key, version), first in obs.versions.items()
    ]
    return [
        (names[node], version, first, deployed)
        for node, version, first, deployed in store.new_versions(conn, org_id, seen)
    ]


def _add_deployments(
    conn: Connection, org_id: str, deployments: list[tuple[NodeKey, str, int]], now_us: int
) -> None:
    rows: list[dict[str, Any]] = []
    now = clock.from_us(now_us)
    for (_, environment, service), version, first_us in deployments:
        event = {
            "specversion": "1.0",
            "id": f"{environment}/{service}/{version}"[:200],
            "source": f"otel://{service}"[:500],
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
