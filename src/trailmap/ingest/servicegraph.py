"""The Collector's `servicegraph` connector metrics, read into the graph's `EdgeSample`s
(what each metric and attribute means: docs/opentelemetry.md, "servicegraph connector")."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from trailmap.graph.learn.servicegraph import MAX_NAME, EdgeSample
from trailmap.graph.model import DEFAULT_ENVIRONMENT
from trailmap.graph.stats import LATENCY_BUCKETS, bucket_of

__all__ = ["edge_sample", "latency_buckets", "role_of"]

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
_CONNECTION_TYPES = frozenset({"", "database", "messaging_system", "virtual_node"})
_MAX_ENV = 100
_MAX_VERSION = 100


def role_of(metric_name: str) -> str | None:
    """What a metric of the connector says ("calls", "failed", "client", "server"), or None
    for any other metric."""
    return _ROLES.get(metric_name)


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


def _name(value: object, limit: int = MAX_NAME) -> str:
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
