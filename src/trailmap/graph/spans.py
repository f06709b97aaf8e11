"""Reading spans the way the Collector's servicegraph connector does, and a little better.

One pass over an OTLP request turns its spans into observations: services seen (with their
versions), edges that a single span proves on its own (a CLIENT span to a database, cache or
topic), per-minute statistics, and *halves*: a CLIENT or PRODUCER span whose SERVER or
CONSUMER child may arrive later, in another request, at another app node. graph/pairing.py
matches halves; what a matched or expired pair proves is recorded here too, so that one
module knows every rule.

Only the attributes the rules need are read: a request of 512 spans spends most of its time
in this loop, and every attribute looked at costs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from trailmap.graph.model import DEFAULT_ENVIRONMENT, EdgeKind, NodeKind
from trailmap.graph.stats import Stats

__all__ = ["EdgeKey", "Half", "NodeKey", "Observations", "observe_request"]

# A node is known by its kind, environment and name; an edge by source, target and kind.
NodeKey = tuple[NodeKind, str, str]
EdgeKey = tuple[NodeKey, NodeKey, EdgeKind]

_INTERNAL, _SERVER, _CLIENT, _PRODUCER, _CONSUMER = 1, 2, 3, 4, 5
_STATUS_ERROR = 2
_MINUTE_US = 60_000_000
_MAX_NAME = 300
_MAX_ENV = 100
_MAX_VERSION = 100
_MAX_ATTRIBUTE = 300

_CACHES = frozenset({"redis", "valkey", "memcached"})
_QUEUES = frozenset({"rabbitmq", "activemq", "aws_sqs", "jms", "ibm_mq", "servicebus"})

# The span attributes any rule reads; current semantic conventions first, then older names.
_SPAN_KEYS = frozenset(
    {
        "db.system.name",
        "db.system",
        "db.namespace",
        "db.name",
        "peer.service",
        "server.address",
        "net.peer.name",
        "server.port",
        "url.full",
        "http.url",
        "http.host",
        "http.response.status_code",
        "http.status_code",
        "messaging.system",
        "messaging.destination.name",
        "messaging.destination",
        "rpc.service",
    }
)
# Resource attributes kept on a service node.
_RESOURCE_KEYS = (
    "service.namespace",
    "service.version",
    "telemetry.sdk.language",
    "telemetry.sdk.name",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.deployment.name",
    "cloud.provider",
    "cloud.region",
)


@dataclass(slots=True)
class Half:
    """One side of a call that waits for the other: "c" a CLIENT span (paired once), "p" a
    PRODUCER span (it stays until it expires: a message may have many consumers, arriving
    at any time), "s" a SERVER or CONSUMER span."""

    pair_key: str
    side: str
    span_id: str
    payload: dict[str, Any]


@dataclass(slots=True)
class _Seen:
    first_us: int
    last_us: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Observations:
    """Everything one request (and the pairs it completed) says about the graph."""

    nodes: dict[NodeKey, _Seen] = field(default_factory=dict)
    edges: dict[EdgeKey, _Seen] = field(default_factory=dict)
    # (a NodeKey or an EdgeKey, minute) -> statistics
    minutes: dict[tuple[Any, int], Stats] = field(default_factory=dict)
    # (service NodeKey, version) -> first time seen
    versions: dict[tuple[NodeKey, str], int] = field(default_factory=dict)
    halves: list[Half] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    def node(self, key: NodeKey, time_us: int, attributes: dict[str, Any] | None = None) -> None:
        seen = self.nodes.get(key)
        if seen is None:
            self.nodes[key] = _Seen(time_us, time_us, dict(attributes or {}))
            return
        seen.first_us = min(seen.first_us, time_us)
        seen.last_us = max(seen.last_us, time_us)
        if attributes:
            seen.attributes.update(attributes)

    def edge(
        self, source: NodeKey, target: NodeKey, kind: EdgeKind, call: tuple[int, float, bool]
    ) -> None:
        """An edge proved by one call: (start time, duration in ms, failed)."""
        time_us, duration_ms, error = call
        self.node(source, time_us)
        self.node(target, time_us)
        key: EdgeKey = (source, target, kind)
        seen = self.edges.get(key)
        if seen is None:
            self.edges[key] = _Seen(time_us, time_us)
        else:
            seen.first_us = min(seen.first_us, time_us)
            seen.last_us = max(seen.last_us, time_us)
        self.count(key, time_us, duration_ms, error=error)

    def count(self, subject: Any, time_us: int, duration_ms: float, *, error: bool) -> None:
        slot = (subject, time_us - time_us % _MINUTE_US)
        stats = self.minutes.get(slot)
        if stats is None:
            stats = self.minutes[slot] = Stats()
        stats.add(duration_ms, error=error)

    def reject(self, problem: str) -> None:
        self.rejected += 1
        if problem not in self.problems and len(self.problems) < 10:
            self.problems.append(problem)

    # -- what pairs prove ------------------------------------------------------------------

    def pair(self, caller: dict[str, Any], callee: dict[str, Any]) -> None:
        """A caller half met its callee half: a call between two services, or a message."""
        source: NodeKey = ("service", caller["e"], caller["s"])
        target: NodeKey = ("service", callee["e"], callee["s"])
        if callee["k"] == "consumer":
            topic = caller.get("q") or callee.get("q")
            if topic is None:
                topic = ["queue", f"{caller['s']} messages"]
            node: NodeKey = (topic[0], callee["e"], topic[1])
            self.edge(target, node, "consumes", _call(callee))
        elif source != target and caller["k"] == "client":
            self.edge(source, target, "calls", _call(caller))

    def expire(self, half: dict[str, Any]) -> None:
        """A half whose other half never came: an uninstrumented peer, when it is named."""
        if half["k"] == "client" and half.get("p"):
            source: NodeKey = ("service", half["e"], half["s"])
            self.edge(source, ("external_api", half["e"], half["p"]), "calls", _call(half))
        elif half["k"] == "consumer" and half.get("q"):
            kind, name = half["q"]
            self.edge(
                ("service", half["e"], half["s"]), (kind, half["e"], name), "consumes", _call(half)
            )


def _call(half: dict[str, Any]) -> tuple[int, float, bool]:
    return int(half["t"]), float(half["d"]), bool(half["x"])


def _text(value: str, limit: int) -> str:
    # PostgreSQL refuses NUL in text; names longer than the column are cut, not refused.
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[:limit]


def _scalar(value: AnyValue) -> str | int | float | bool | None:
    which = value.WhichOneof("value")
    if which == "string_value":
        return _text(value.string_value, _MAX_ATTRIBUTE)
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    return None


def _resource(attributes: Iterable[KeyValue]) -> tuple[str, str, dict[str, Any]]:
    values: dict[str, Any] = {}
    for kv in attributes:
        values[kv.key] = kv.value
    service = _string(values.get("service.name")) or "unknown_service"
    environment = (
        _string(values.get("deployment.environment.name"))
        or _string(values.get("deployment.environment"))
        or DEFAULT_ENVIRONMENT
    )
    kept: dict[str, Any] = {}
    for key in _RESOURCE_KEYS:
        if key in values:
            scalar = _scalar(values[key])
            if scalar is not None:
                kept[key] = scalar
    return _text(service, _MAX_NAME), _text(environment, _MAX_ENV), kept


def _string(value: AnyValue | None) -> str | None:
    if value is None:
        return None
    scalar = _scalar(value)
    if scalar is None or scalar == "":
        return None
    return str(scalar)


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def _peer(attrs: dict[str, str | int | float | bool | None]) -> str | None:
    for key in ("peer.service", "server.address", "net.peer.name"):
        value = attrs.get(key)
        if value:
            return str(value)
    return (
        _host(_str_or_none(attrs.get("url.full")))
        or _host(_str_or_none(attrs.get("http.url")))
        or _str_or_none(attrs.get("http.host"))
        or _str_or_none(attrs.get("rpc.service"))
    )


def _str_or_none(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _datastore(attrs: dict[str, Any]) -> tuple[NodeKind, str] | None:
    system = attrs.get("db.system.name") or attrs.get("db.system")
    if not system:
        return None
    system = str(system).lower()
    name = (
        attrs.get("peer.service")
        or attrs.get("server.address")
        or attrs.get("net.peer.name")
        or attrs.get("db.namespace")
        or attrs.get("db.name")
        or system
    )
    return ("cache" if system in _CACHES else "database"), _text(str(name), _MAX_NAME)


def _destination(attrs: dict[str, Any]) -> tuple[NodeKind, str] | None:
    system = attrs.get("messaging.system")
    destination = attrs.get("messaging.destination.name") or attrs.get("messaging.destination")
    if not system and not destination:
        return None
    kind: NodeKind = "queue" if str(system).lower() in _QUEUES else "topic"
    return kind, _text(str(destination or system), _MAX_NAME)


def _failed(status_code: int, attrs: dict[str, Any]) -> bool:
    if status_code == _STATUS_ERROR:
        return True
    http = attrs.get("http.response.status_code") or attrs.get("http.status_code")
    try:
        return http is not None and int(http) >= 500
    except (TypeError, ValueError):
        return False


def observe_request(
    request: ExportTraceServiceRequest, *, oldest_us: int, newest_us: int
) -> Observations:
    """What the request's spans say; spans outside [oldest_us, newest_us] are refused."""
    obs = Observations()
    span_keys = _SPAN_KEYS
    for resource_spans in request.resource_spans:
        service, environment, kept = _resource(resource_spans.resource.attributes)
        node: NodeKey = ("service", environment, service)
        version = kept.get("service.version")
        version = _text(str(version), _MAX_VERSION) if version not in (None, "") else None
        first_us: int | None = None
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                if len(trace_id) != 16 or len(span_id) != 8 or not any(trace_id):
                    obs.reject("a span's trace_id must be 16 bytes and its span_id 8 bytes")
                    continue
                start_ns = span.start_time_unix_nano
                end_ns = span.end_time_unix_nano
                start_us = start_ns // 1000
                if end_ns < start_ns:
                    obs.reject("a span's end_time_unix_nano is before its start_time_unix_nano")
                    continue
                if not oldest_us <= start_us <= newest_us:
                    obs.reject(
                        "a span's start time is outside the accepted window (the retention "
                        "window, up to one hour ahead of the server's clock)"
                    )
                    continue
                obs.accepted += 1
                if first_us is None or start_us < first_us:
                    first_us = start_us
                kind = span.kind
                if kind in (_INTERNAL, 0):
                    obs.node(node, start_us)
                    continue
                attrs = {kv.key: _scalar(kv.value) for kv in span.attributes if kv.key in span_keys}
                duration_ms = (end_ns - start_ns) / 1e6
                error = _failed(span.status.code, attrs)
                _observe_span(obs, node, kind, span, attrs, (start_us, duration_ms, error))
        if first_us is not None:
            obs.node(node, first_us, kept)
            if version:
                key = (node, version)
                obs.versions[key] = min(obs.versions.get(key, first_us), first_us)
    return obs


def _observe_span(
    obs: Observations,
    node: NodeKey,
    kind: int,
    span: Any,
    attrs: dict[str, Any],
    call: tuple[int, float, bool],
) -> None:
    start_us, duration_ms, error = call
    environment, service = node[1], node[2]
    trace_hex = span.trace_id.hex()
    if kind in (_SERVER, _CONSUMER):
        obs.count(node, start_us, duration_ms, error=error)
        destination = _destination(attrs) if kind == _CONSUMER else None
        named = attrs.get("messaging.destination.name") or attrs.get("messaging.destination")
        if destination is not None and named:
            obs.edge(node, (destination[0], environment, destination[1]), "consumes", call)
        elif span.parent_span_id:
            obs.halves.append(
                Half(
                    trace_hex + span.parent_span_id.hex(),
                    "s",
                    span.span_id.hex(),
                    {
                        "k": "server" if kind == _SERVER else "consumer",
                        "s": service,
                        "e": environment,
                        "t": start_us,
                        "d": duration_ms,
                        "x": int(error),
                        "q": list(destination) if destination else None,
                    },
                )
            )
        return
    # CLIENT or PRODUCER
    datastore = _datastore(attrs) if kind == _CLIENT else None
    if datastore is not None:
        obs.edge(node, (datastore[0], environment, datastore[1]), "reads_writes", call)
        return
    destination = _destination(attrs)
    if kind == _PRODUCER or (kind == _CLIENT and destination is not None):
        if destination is not None:
            obs.edge(node, (destination[0], environment, destination[1]), "publishes", call)
        half_kind = "producer"
        peer = None
    else:
        half_kind = "client"
        peer = _peer(attrs)
        peer = _text(peer, _MAX_NAME) if peer else None
    obs.halves.append(
        Half(
            trace_hex + span.span_id.hex(),
            "p" if half_kind == "producer" else "c",
            span.span_id.hex(),
            {
                "k": half_kind,
                "s": service,
                "e": environment,
                "t": start_us,
                "d": duration_ms,
                "x": int(error),
                "p": peer,
                "q": list(destination) if destination else None,
            },
        )
    )
