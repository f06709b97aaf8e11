"""What observations (of spans or servicegraph samples) write: nodes, edges, per-minute
statistics, and a service version never seen before as a deployment on the timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.graph.learn.spans import NodeKey, Observations
from trailmap.graph.model import edge_id, node_id
from trailmap.graph.stats import Stats
from trailmap.storage import Connection
from trailmap.storage import graph as store
from trailmap.timeline.events import DETECTED_SOURCE_PREFIX
from trailmap.timeline.ingest import record_derived_events

__all__ = [
    "GraphRows",
    "RecentWrites",
    "Sent",
    "accepted_window",
    "graph_rows",
    "record_observations",
    "write_graph_rows",
    "write_minutes",
]

_US = 1_000_000
# Spans may be stamped a little ahead of the server's clock (clock skew), not more.
_FUTURE_US = 3600 * _US
# Rows remembered as written (nodes, edges, versions) before the memory starts afresh.
_MAX_REMEMBERED = 100_000


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
        # A datastore's, topic's or model provider's attributes (its technology) are what
        # the spans say of it now: rewritten whenever the row is (a service's only with
        # a new version, above).
        "refresh": kind != "service" and bool(seen.attributes),
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
    events = [
        {
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
        for (_, environment, service), version, first_us in deployments
    ]
    record_derived_events(conn, org_id, events, now=clock.from_us(now_us))
