"""The Collector's `servicegraph` connector samples, recorded into the graph as spans are:
running totals into increments, samples into nodes, edges and statistics (docs/internals.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trailmap.accounts.principal import Principal
from trailmap.graph.learn.record import accepted_window, record_observations
from trailmap.graph.learn.spans import NodeKey, Observations
from trailmap.graph.model import EdgeKind, NodeKind
from trailmap.graph.stats import Stats
from trailmap.storage import Connection, Database
from trailmap.storage import graph as store
from trailmap.storage.tables import LATENCY_BUCKETS

__all__ = [
    "MAX_NAME",
    "EdgeSample",
    "Increment",
    "ServiceGraphResult",
    "record_edge_samples",
    "record_samples",
]

MAX_NAME = 300  # the longest node name a sample carries

_CACHES = frozenset({"redis", "valkey", "memcached"})
_QUEUES = frozenset({"rabbitmq", "activemq", "aws_sqs", "jms", "ibm_mq", "servicebus"})
# A series first seen this soon after it started counts from its start; one that started
# earlier (a Collector running before Trailmap heard of it) only says its edge exists.
_FRESH_US = 120_000_000
# The connector forgets a series after 15 minutes without calls and starts it again from 0,
# with the same start time: a value that comes after a longer silence is all new calls.
_FORGOTTEN_US = 15 * 60_000_000


@dataclass(frozen=True, slots=True)
class EdgeSample:
    """One data point of the connector: which edge, which measure, and its value so far
    (`cumulative`) or over its interval. `buckets` is a latency histogram in graph_minutes'
    buckets (stats.py), empty for a counter; `sum_ms` the latencies' sum."""

    metric: str
    role: str
    series_key: str  # the running total: metric, attributes, Collector and start
    edge_key: str  # the same, but for the metric
    client: str
    server: str
    connection_type: str
    client_environment: str
    server_environment: str
    system: str | None  # the server's db.system or messaging.system dimension, lowercased
    destination: str | None  # the messaging.destination.name dimension
    client_version: str | None  # the service.version dimensions
    server_version: str | None
    start_us: int
    time_us: int
    cumulative: bool
    count: float
    sum_ms: float = 0.0
    buckets: tuple[int, ...] = ()


# -- running totals into increments --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Increment:
    """What a sample adds: calls (or failed calls), the latencies' sum and histogram."""

    count: float
    sum_ms: float
    buckets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Where a running total stood: a stored row of `graph_metric_cursors`, or a sample."""

    start_us: int
    time_us: int
    count: float
    sum_ms: float
    buckets: Sequence[int]


def _increment(
    sample: EdgeSample, cursor: _Cursor | None, collector_seen_us: int | None
) -> Increment | None:
    """What a cumulative sample adds since its cursor; None when it only starts the
    series' count (its edge exists). `collector_seen_us`: the earliest time of a series of
    the same Collector (counted since the same start) that Trailmap holds, if any."""
    whole = Increment(sample.count, sample.sum_ms, sample.buckets)
    if cursor is None:
        # New to Trailmap. If Trailmap heard from the same Collector before, the series is
        # new since then: all its calls are new. Else they are when the Collector started
        # just now; a Collector that ran long before says only that the edge exists.
        if collector_seen_us is not None and collector_seen_us < sample.time_us:
            return whole
        fresh = sample.start_us > 0 and sample.time_us - sample.start_us <= _FRESH_US
        return whole if fresh else None
    if (
        sample.count < cursor.count
        or sample.time_us - cursor.time_us > _FORGOTTEN_US
        or len(cursor.buckets) != len(sample.buckets)
    ):
        # The Collector forgot the series and began it again from 0 (its start unchanged).
        return whole
    return Increment(
        sample.count - cursor.count,
        max(0.0, sample.sum_ms - cursor.sum_ms),
        tuple(max(0, now - then) for now, then in zip(sample.buckets, cursor.buckets, strict=True)),
    )


# -- samples into the graph ----------------------------------------------------------------


@dataclass(slots=True)
class ServiceGraphResult:
    """Which samples (by index) were refused, and why."""

    rejected: list[tuple[int, str]] = field(default_factory=list)


async def record_edge_samples(
    db: Database,
    principal: Principal,
    samples: Sequence[EdgeSample],
    *,
    now: datetime | None = None,
) -> ServiceGraphResult:
    """Record the samples of one export in one transaction (`record_samples`), within the
    window spans are held to: the organization's retention, up to an hour ahead."""
    principal.require_write()
    if not samples:
        return ServiceGraphResult()
    now_us, oldest_us, newest_us = accepted_window(principal, now)
    result: ServiceGraphResult = await db.write(
        record_samples,
        principal.org_id,
        samples,
        now_us,
        oldest_us=oldest_us,
        newest_us=newest_us,
    )
    return result


def record_samples(
    conn: Connection,
    org_id: str,
    samples: Sequence[EdgeSample],
    now_us: int,
    *,
    oldest_us: int,
    newest_us: int,
) -> ServiceGraphResult:
    """Record what the samples say, in the caller's transaction; samples stamped outside
    [oldest_us, newest_us] are refused."""
    result = ServiceGraphResult()
    # request_total counts what the latency histograms of the same series count: only
    # where an export carries no histogram of its edge does it prove anything.
    measured = {sample.edge_key for sample in samples if sample.role in ("client", "server")}
    kept: list[EdgeSample] = []
    for index, sample in enumerate(samples):
        if not oldest_us <= sample.time_us <= newest_us:
            result.rejected.append((index, _OUTSIDE_WINDOW))
        elif sample.role != "calls" or sample.edge_key not in measured:
            kept.append(sample)
    cumulative = [sample for sample in kept if sample.cumulative]
    stored = store.cursors_for_update(conn, org_id, {sample.start_us for sample in cumulative})
    cursors = {key: _Cursor(*row) for key, row in stored.items()}
    # For each Collector (by its start), the earliest value Trailmap holds of its series:
    # a series new to Trailmap, from a Collector heard from before it, is new since.
    collectors: dict[int, int] = {}
    for held in cursors.values():
        seen = collectors.get(held.start_us, held.time_us)
        collectors[held.start_us] = min(seen, held.time_us)
    moved: set[str] = set()
    obs = Observations()
    # In time order, so that two values of one series in one export subtract in turn.
    for sample in sorted(kept, key=lambda s: s.time_us):
        key = sample.series_key
        if not sample.cumulative:
            _observe(
                obs, sample, _stats(sample, Increment(sample.count, sample.sum_ms, sample.buckets))
            )
            continue
        cursor = cursors.get(key)
        # Received already (an export sent again) or an older value; but a higher total
        # stamped earlier counts: the Collector's clock went back.
        if cursor is not None and sample.time_us <= cursor.time_us and sample.count <= cursor.count:
            continue
        increment = _increment(sample, cursor, collectors.get(sample.start_us))
        cursors[key] = _Cursor(
            sample.start_us,
            max(sample.time_us, cursor.time_us if cursor else 0),
            sample.count,
            sample.sum_ms,
            sample.buckets,
        )
        moved.add(key)
        if increment is None or increment.count > 0:
            _observe(obs, sample, _stats(sample, increment))
    store.put_cursors(
        conn,
        org_id,
        [
            (key, cursor.start_us, cursor.time_us, cursor.count, cursor.sum_ms, cursor.buckets)
            for key, cursor in ((key, cursors[key]) for key in moved)
        ],
    )
    if obs.nodes:
        record_observations(conn, org_id, obs, now_us)
    return result


_OUTSIDE_WINDOW = (
    "its time is outside the accepted window (the retention window, up to one hour ahead "
    "of the server's clock)"
)


def _stats(sample: EdgeSample, increment: Increment | None) -> Stats | None:
    """What the sample adds to a statistics row: a histogram adds calls and latencies,
    `request_failed_total` errors, `request_total` nothing a histogram does not. (Errors
    are not read off the `failed` attribute: before 2024 the connector did not split its
    series by it, and the attribute said only whether the last call failed.)"""
    if increment is None or sample.role == "calls":
        return None
    if sample.role == "failed":
        return Stats(calls=0, errors=round(increment.count))
    return Stats(
        calls=round(increment.count),
        duration_ms=increment.sum_ms,
        buckets=list(increment.buckets) or [0] * LATENCY_BUCKETS,
    )


_Edge = tuple[NodeKey, NodeKey, EdgeKind]


@dataclass(frozen=True, slots=True)
class _Route:
    """Where a sample's data goes: the caller's edge (the client side's statistics), the
    service it reached (the server side's), a `consumes` edge (the server side's too), and
    a node seen with no edge."""

    caller: _Edge | None = None
    served: NodeKey | None = None
    consumes: _Edge | None = None
    seen: NodeKey | None = None


def _route(sample: EdgeSample) -> _Route:  # noqa: PLR0911 - a table: one case, one return
    """What the connector's `connection_type` and names mean in Trailmap's graph."""
    client: NodeKey = ("service", sample.client_environment, sample.client)
    server: NodeKey = ("service", sample.server_environment, sample.server)
    environment = sample.client_environment
    match sample.connection_type:
        case "virtual_node" if not sample.client or sample.client == "user":
            return _Route(served=server)  # called from outside: the server's own traffic
        case "virtual_node" if sample.server == "unknown":
            return _Route(seen=client)  # the connector could not name the peer
        case "virtual_node":
            return _Route(caller=(client, ("external_api", environment, sample.server), "calls"))
        case "database":
            kind: NodeKind = "cache" if sample.system in _CACHES else "database"
            return _Route(caller=(client, (kind, environment, sample.server), "reads_writes"))
        case "messaging_system":
            # Each side's topic in its own environment, as with spans.
            kind_of: NodeKind = "queue" if sample.system in _QUEUES else "topic"
            topic = sample.destination
            if not topic:
                kind_of, topic = "queue", f"{sample.client} messages"[:MAX_NAME]
            return _Route(
                caller=(client, (kind_of, environment, topic), "publishes"),
                served=server,
                consumes=(server, (kind_of, sample.server_environment, topic), "consumes"),
            )
        case _ if client == server:
            return _Route(seen=client)
        case _:
            return _Route(caller=(client, server, "calls"), served=server)


def _observe(obs: Observations, sample: EdgeSample, stats: Stats | None) -> None:
    """The nodes and edges the sample names, seen at its time, and what it adds to their
    statistics: the client side's to the caller's edge, the server side's to the service
    reached and its `consumes` edge."""
    time_us = sample.time_us
    route = _route(sample)
    # A version named by the `service.version` dimension, new for its service, is a
    # deployment detected from traces, as a span's resource would make it.
    for version, service in (
        (sample.client_version, route.caller and route.caller[0]),
        (sample.server_version, route.served),
    ):
        if version and service:
            key = (service, version)
            obs.versions[key] = min(obs.versions.get(key, time_us), time_us)
    for edge in (route.caller, route.consumes):
        if edge is not None:
            obs.link(*edge, time_us)
            # The `db.system` or `messaging.system` dimension: the datastore's or topic's.
            if sample.system and edge[1][0] != "service" and edge[1][0] != "external_api":
                obs.node(edge[1], time_us, {"technology": sample.system})
    for node in (route.served, route.seen):
        if node is not None:
            obs.node(node, time_us)
    if stats is None:
        return
    # A failed call counts against the edge and against the service it reached.
    subjects: tuple[Any, ...] = (route.caller,)
    if sample.role == "server":
        subjects = (route.served, route.consumes)
    elif sample.role == "failed":
        subjects = (route.caller, route.served, route.consumes)
    for subject in subjects:
        if subject is not None:
            obs.add(subject, time_us, stats)
