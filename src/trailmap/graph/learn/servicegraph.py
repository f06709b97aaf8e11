"""The OpenTelemetry Collector's `servicegraph` connector, read into the graph.

At volume, a Collector pairs the spans itself (the connector) and sends, every
`metrics_flush_interval`, one running total per edge instead of every span: calls
(`traces_service_graph_request_total`), failed calls (`..._request_failed_total`) and the
latency seen by each side (`..._request_client` and `..._request_server` histograms, with a
`_seconds` suffix in older Collectors). Each data point names the edge in its attributes:
`client`, `server`, `connection_type` ("", "database", "messaging_system" or
"virtual_node"), `failed`, and the `dimensions` the connector was configured with as
`client_<attribute>` and `server_<attribute>`. Its resource is empty.

Those metrics arrive at the OTLP metrics receiver, which hands them here as `EdgeSample`s.
They build the same nodes, edges and per-minute statistics as spans do (graph/spans.py has
the rules for spans; the ones here follow them):

- "" : a `calls` edge from the client service to the server service;
- "database": a `reads_writes` edge to a database named by `server`, a cache when the
  `db.system` dimension says redis, valkey or memcached;
- "messaging_system": the client `publishes` to a topic and the server `consumes` it (the
  topic named by the `messaging.destination.name` dimension, else "<client> messages");
- "virtual_node": from the client to an external API named `server` (nothing when the
  connector could not name it: "unknown"); a client named "user" is traffic from outside,
  which counts in the server's own statistics only.

An edge's calls and latency are the client side's histogram (the caller's view, as for
spans), a service's the server side's; `request_failed_total` counts errors against the edge
and the service it reached; `request_total` counts what the histograms count, and is read
only to prove an edge an export has no histogram of. Running totals (CUMULATIVE, the
connector's way) become what each interval added: the value minus the one received before,
kept in `graph_metric_cursors` so that any app node can subtract. A running total is known
by its metric, its attributes and its Collector (its `service.instance.id`, if set, and its
start time), so replicas of a scaled-out connector, and a Collector that restarts, each
count their own. A series Trailmap has not seen counts whole when its Collector was heard
from before (the series is new since) or started within two minutes; otherwise it says only
that its edge exists. A value after more than 15 minutes of silence, or lower than the one
before, is a series the connector forgot and began again: it counts whole. DELTA points
(after a `cumulativetodelta` processor) count as they are.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from trailmap.accounts.principal import Principal
from trailmap.graph.ingest import accepted_window, record_observations
from trailmap.graph.model import DEFAULT_ENVIRONMENT, EdgeKind, NodeKind
from trailmap.graph.spans import NodeKey, Observations
from trailmap.graph.stats import Stats, bucket_of
from trailmap.storage import Connection, Database
from trailmap.storage import graph as store
from trailmap.storage.tables import LATENCY_BUCKETS

__all__ = [
    "EdgeSample",
    "Increment",
    "ServiceGraphResult",
    "edge_sample",
    "latency_buckets",
    "record_edge_samples",
    "record_samples",
    "role_of",
]

_ROLES = {
    "traces_service_graph_request_total": "calls",
    "traces_service_graph_request_failed_total": "failed",
    "traces_service_graph_request_client": "client",
    "traces_service_graph_request_client_seconds": "client",
    "traces_service_graph_request_server": "server",
    "traces_service_graph_request_server_seconds": "server",
    # Collectors with the legacyLatencyMetricNames gate: the server side's latency alone.
    "traces_service_graph_request_duration": "server",
    "traces_service_graph_request_duration_seconds": "server",
}
_CACHES = frozenset({"redis", "valkey", "memcached"})
_QUEUES = frozenset({"rabbitmq", "activemq", "aws_sqs", "jms", "ibm_mq", "servicebus"})
_CONNECTION_TYPES = frozenset({"", "database", "messaging_system", "virtual_node"})
# A series first seen this soon after it started counts from its start; one that started
# earlier (a Collector running before Trailmap heard of it) only says its edge exists.
_FRESH_US = 120_000_000
# The connector forgets a series after 15 minutes without calls and starts it again from 0,
# with the same start time: a value that comes after a longer silence is all new calls.
_FORGOTTEN_US = 15 * 60_000_000
_MAX_NAME = 300
_MAX_ENV = 100
_MAX_VERSION = 100


def role_of(metric_name: str) -> str | None:
    """What a metric of the connector says ("calls", "failed", "client", "server"), or None
    for any other metric."""
    return _ROLES.get(metric_name)


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


def latency_buckets(
    buckets: Sequence[tuple[float, float, int]], *, unit_ms: float
) -> tuple[int, ...]:
    """A histogram given as (lower, upper, count) in `unit_ms` milliseconds, re-counted in
    graph_minutes' buckets: each source bucket's calls go where its middle falls (the
    geometric middle, the upper bound halved for a bucket from zero)."""
    out = [0] * LATENCY_BUCKETS
    for low, high, count in buckets:
        if count <= 0:
            continue
        if low > 0 and math.isfinite(high) and high > low:
            middle = math.sqrt(low * high)
        elif math.isfinite(high) and high > 0:
            middle = high / 2 if low <= 0 else high
        else:
            middle = max(low, 0.0)
        out[bucket_of(middle * unit_ms)] += count
    return tuple(out)


def edge_sample(
    *,
    metric_name: str,
    attributes: Mapping[str, Any],
    resource_environment: str | None,
    instance: str = "",
    start_us: int,
    time_us: int,
    cumulative: bool,
    count: float,
    sum_ms: float = 0.0,
    buckets: tuple[int, ...] = (),
) -> EdgeSample:
    """The sample a data point of `metric_name` (a `role_of` name) makes; `ValueError` says
    why a data point cannot be one."""
    role = _ROLES[metric_name]
    client = _name(attributes.get("client"))
    server = _name(attributes.get("server"))
    connection_type = attributes.get("connection_type", "")
    if not isinstance(connection_type, str) or connection_type not in _CONNECTION_TYPES:
        raise ValueError(
            f"connection_type {str(connection_type)[:50]!r} is not one the servicegraph "
            "connector sends ('', database, messaging_system, virtual_node)"
        )
    if not server or (not client and connection_type != "virtual_node"):
        raise ValueError("a servicegraph data point needs its client and server attributes")
    if not math.isfinite(count) or count < 0 or not math.isfinite(sum_ms):
        raise ValueError("a servicegraph data point needs a finite, non-negative count")
    environment = _name(resource_environment, _MAX_ENV) or DEFAULT_ENVIRONMENT
    system = _dimension(attributes, "db.system") or _dimension(attributes, "messaging.system")
    # A running total is its metric and attributes as counted by one Collector since one
    # start: replicas of a scaled-out connector send the same series, told apart by their
    # resource's service.instance.id when they set one, and always by their start times.
    labels = sorted((str(k), str(v)) for k, v in attributes.items())
    identity = orjson.dumps([labels, instance, start_us])
    return EdgeSample(
        metric=metric_name,
        role=role,
        series_key=hashlib.sha256(metric_name.encode() + b"\n" + identity).hexdigest(),
        edge_key=hashlib.sha256(identity).hexdigest(),
        client=client,
        server=server,
        connection_type=connection_type,
        client_environment=_environment(attributes, "client") or environment,
        server_environment=_environment(attributes, "server") or environment,
        system=system.lower() if system else None,
        destination=_dimension(attributes, "messaging.destination.name")
        or _dimension(attributes, "messaging.destination"),
        client_version=_name(attributes.get("client_service.version"), _MAX_VERSION) or None,
        server_version=_name(attributes.get("server_service.version"), _MAX_VERSION) or None,
        start_us=start_us,
        time_us=time_us,
        cumulative=cumulative,
        count=count,
        sum_ms=sum_ms,
        buckets=buckets,
    )


def _name(value: object, limit: int = _MAX_NAME) -> str:
    if value is None or isinstance(value, bool):
        return ""
    return str(value).replace("\x00", "")[:limit]


def _dimension(attributes: Mapping[str, Any], name: str) -> str:
    return _name(attributes.get(f"server_{name}")) or _name(attributes.get(f"client_{name}"))


def _environment(attributes: Mapping[str, Any], side: str) -> str:
    for key in ("deployment.environment.name", "deployment.environment"):
        found = _name(attributes.get(f"{side}_{key}"), _MAX_ENV)
        if found:
            return found
    return ""


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
                kind_of, topic = "queue", f"{sample.client} messages"[:_MAX_NAME]
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
