"""Reading spans into observations: services, versions, edges a span proves alone, per-minute
statistics, and the halves of calls still to pair (docs/internals.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

# protobuf ships no type information (types-protobuf is not a dependency); its use here is
# confined to building the view's message class and parsing values, typed below.
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from trailmap.graph.model import DEFAULT_ENVIRONMENT, EdgeKind, NodeKind
from trailmap.graph.stats import Stats

__all__ = [
    "EdgeKey",
    "Half",
    "NodeKey",
    "Observations",
    "SpanBatch",
    "observe_request",
    "payload_of",
]

# A node is known by its kind, environment and name; an edge by source, target and kind.
NodeKey = tuple[NodeKind, str, str]
EdgeKey = tuple[NodeKey, NodeKey, EdgeKind]

_UNSPECIFIED, _INTERNAL, _SERVER, _CLIENT, _PRODUCER, _CONSUMER = 0, 1, 2, 3, 4, 5
_ZERO_TRACE = bytes(16)
_STATUS_ERROR = 2
_MINUTE_US = 60_000_000
_MAX_NAME = 300
_MAX_ENV = 100
_MAX_VERSION = 100
_MAX_ATTRIBUTE = 300
# The links of a CONSUMER span read (OTEL_SPAN_LINK_COUNT_LIMIT's default).
_MAX_LINKS = 128
# Distinct attribute encodings, and combinations of them, remembered with what they mean.
_REMEMBERED = 8192

_CACHES = frozenset({"redis", "valkey", "memcached"})
_QUEUES = frozenset({"rabbitmq", "activemq", "aws_sqs", "jms", "ibm_mq", "servicebus"})

# The attributes that say where a CLIENT or PRODUCER span goes (current semantic conventions
# first, then older names), in the order `_target` reads them.
_TARGET_KEYS = (
    "db.system.name",
    "db.system",
    "peer.service",
    "server.address",
    "net.peer.name",
    "db.namespace",
    "db.name",
    "messaging.system",
    "messaging.destination.name",
    "messaging.destination",
    "rpc.system",
    "gen_ai.provider.name",
    "gen_ai.system",
    "upstream_cluster.name",
    "upstream_cluster",
)
# The cluster a proxy (Envoy) routed a request to, on its SERVER span too.
_UPSTREAM_KEYS = ("upstream_cluster.name", "upstream_cluster")
_MESSAGING_KEYS = ("messaging.system", "messaging.destination.name", "messaging.destination")
# When no key above names a CLIENT span's peer: its URL's host, its Host header, its RPC service.
_PEER_FALLBACK_KEYS = ("url.full", "http.url", "http.host", "rpc.service")
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


def _span_batch_class() -> Any:
    """`ExportTraceServiceRequest` as the rules read it: the same field numbers and types
    for what is declared, attributes (a repeated KeyValue on the wire, which is how a map is
    encoded) as map<string, bytes> holding each encoded AnyValue."""
    F = descriptor_pb2.FieldDescriptorProto  # noqa: N806 - protobuf's own name
    optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(
        name="trailmap/span_batch.proto", package="trailmap.spans", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str], attributes: int = 0) -> None:
        described = proto.message_type.add(name=name)
        if attributes:
            entry = described.nested_type.add(name="AttributesEntry")
            entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=optional)
            entry.field.add(name="value", number=2, type=F.TYPE_BYTES, label=optional)
            entry.options.map_entry = True
            described.field.add(
                name="attributes",
                number=attributes,
                type=F.TYPE_MESSAGE,
                label=repeated,
                type_name=f".trailmap.spans.{name}.AttributesEntry",
            )
        for field_name, number, kind, label, type_name in fields:
            added = described.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = f".trailmap.spans.{type_name}"

    message("Status", ("code", 3, F.TYPE_INT32, optional, ""))
    message("Resource", attributes=1)
    message(
        "Link",
        ("trace_id", 1, F.TYPE_BYTES, optional, ""),
        ("span_id", 2, F.TYPE_BYTES, optional, ""),
    )
    message(
        "Span",
        ("trace_id", 1, F.TYPE_BYTES, optional, ""),
        ("span_id", 2, F.TYPE_BYTES, optional, ""),
        ("parent_span_id", 4, F.TYPE_BYTES, optional, ""),
        ("kind", 6, F.TYPE_INT32, optional, ""),
        ("start_time_unix_nano", 7, F.TYPE_FIXED64, optional, ""),
        ("end_time_unix_nano", 8, F.TYPE_FIXED64, optional, ""),
        ("links", 13, F.TYPE_MESSAGE, repeated, "Link"),
        ("status", 15, F.TYPE_MESSAGE, optional, "Status"),
        attributes=9,
    )
    message("ScopeSpans", ("spans", 2, F.TYPE_MESSAGE, repeated, "Span"))
    message(
        "ResourceSpans",
        ("resource", 1, F.TYPE_MESSAGE, optional, "Resource"),
        ("scope_spans", 2, F.TYPE_MESSAGE, repeated, "ScopeSpans"),
    )
    message("SpanBatch", ("resource_spans", 1, F.TYPE_MESSAGE, repeated, "ResourceSpans"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("trailmap.spans.SpanBatch"))


# Parse an OTLP trace request body with `SpanBatch.FromString(body)`.
SpanBatch: Any = _span_batch_class()


# One side of a call that waits for the other, flat: (pair key, side, its own span id, then
# its payload's values: kind, service, environment, start, duration, error, peer, topic, and
# optionally the peer's technology and whether the peer is named as a service).
# The side is "c" for a CLIENT span (paired once), "p" for a PRODUCER span (it stays until
# it expires: a message may have many consumers, arriving at any time), "s" for a SERVER or
# CONSUMER span. A plain tuple of text and numbers, which the garbage collector stops
# tracking at its first pass over it: a request may hold tens of thousands of halves, and
# tracked objects that outlive a few passes bring a full pass over the whole process
# (every thread stopped, the event loop's too) sooner. (An object, a dict or a NamedTuple
# stays tracked: measured, a full pass of 100 to 150 ms per request of 50,000 spans.)
Half = tuple[Any, ...]


def payload_of(half: Half) -> dict[str, Any]:
    """A half's payload, as pairs read it and `pending_spans` stores it. A topic `q` is
    [kind, name] or [kind, name, technology]; `y` (the peer's technology) and `v` (the peer
    is named as a service: `peer.service`, a proxy's upstream cluster) only when known."""
    k, s, e, t, d, x, p, q = half[3:11]
    payload = {"k": k, "s": s, "e": e, "t": t, "d": d, "x": x, "p": p, "q": q}
    if len(half) > 11:
        technology, named_service = half[11:13]
        if technology:
            payload["y"] = technology
        if named_service:
            payload["v"] = 1
    return payload


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
    # GenAI CLIENT spans of this request (trace id + span id): the HTTP client span their
    # SDK makes under each is the same call, already counted on the model provider's edge.
    gen_ai_spans: set[bytes] = field(default_factory=set)
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
        key = self.link(source, target, kind, time_us)
        self.count(key, time_us, duration_ms, error=error)

    def link(self, source: NodeKey, target: NodeKey, kind: EdgeKind, time_us: int) -> EdgeKey:
        """Two nodes and the edge between them, seen at `time_us` (no call counted)."""
        self.node(source, time_us)
        self.node(target, time_us)
        key: EdgeKey = (source, target, kind)
        seen = self.edges.get(key)
        if seen is None:
            self.edges[key] = _Seen(time_us, time_us)
        else:
            seen.first_us = min(seen.first_us, time_us)
            seen.last_us = max(seen.last_us, time_us)
        return key

    def count(self, subject: Any, time_us: int, duration_ms: float, *, error: bool) -> None:
        slot = (subject, time_us - time_us % _MINUTE_US)
        stats = self.minutes.get(slot)
        if stats is None:
            stats = self.minutes[slot] = Stats()
        stats.add(duration_ms, error=error)

    def add(self, subject: Any, time_us: int, stats: Stats) -> None:
        """Calls already added up (`stats`, added, never kept) to a node's or an edge's
        minute: one `stats` may go to several subjects."""
        slot = (subject, time_us - time_us % _MINUTE_US)
        total = self.minutes.get(slot)
        if total is None:
            total = self.minutes[slot] = Stats()
        total.merge(stats)

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
            self._technology(node, callee["t"], topic[2:])
        elif source != target and caller["k"] == "client":
            self.edge(source, target, "calls", _call(caller))

    def expire(self, half: dict[str, Any]) -> None:
        """A half whose other half never came: an uninstrumented peer, when it is named."""
        if half["k"] == "client" and half.get("p"):
            source: NodeKey = ("service", half["e"], half["s"])
            # A peer named as a service (`peer.service`, a proxy's upstream cluster) is one,
            # uninstrumented; a host name is an external API.
            kind_of: NodeKind = "service" if half.get("v") else "external_api"
            target: NodeKey = (kind_of, half["e"], half["p"])
            if target != source:
                self.edge(source, target, "calls", _call(half))
                if kind_of == "external_api":
                    self._technology(target, half["t"], [half.get("y")])
        elif half["k"] == "consumer" and half.get("q"):
            topic = half["q"]
            node: NodeKey = (topic[0], half["e"], topic[1])
            self.edge(("service", half["e"], half["s"]), node, "consumes", _call(half))
            self._technology(node, half["t"], topic[2:])

    def _technology(self, node: NodeKey, time_us: Any, technology: Any) -> None:
        """`technology`: a list holding the node's technology first, if it is known."""
        if technology and technology[0]:
            self.node(node, int(time_us), {"technology": technology[0]})


def _call(half: dict[str, Any]) -> tuple[int, float, bool]:
    return int(half["t"]), float(half["d"]), bool(half["x"])


def _text(value: str, limit: int) -> str:
    # PostgreSQL refuses NUL in text; names longer than the column are cut, not refused.
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[:limit]


Scalar = str | int | float | bool | None


@lru_cache(maxsize=_REMEMBERED)
def _value(encoded: bytes | None) -> Scalar:
    """An attribute's value from its encoded AnyValue: text, a number, a boolean, or None
    (absent, or an array, a key-value list or bytes, which no rule reads)."""
    if encoded is None:
        return None
    try:
        value = AnyValue.FromString(encoded)
    except DecodeError:
        return None
    which = value.WhichOneof("value")
    if which == "string_value":
        return _text(value.string_value, _MAX_ATTRIBUTE)
    if which in ("int_value", "double_value", "bool_value"):
        scalar: Scalar = getattr(value, which)
        return scalar
    return None


def _string(encoded: bytes | None) -> str | None:
    scalar = _value(encoded)
    if scalar is None or scalar == "":
        return None
    return str(scalar)


def _resource(attributes: Any) -> tuple[str, str, dict[str, Any]]:
    get = attributes.get
    service = _string(get("service.name")) or "unknown_service"
    environment = (
        _string(get("deployment.environment.name"))
        or _string(get("deployment.environment"))
        or DEFAULT_ENVIRONMENT
    )
    kept: dict[str, Any] = {}
    for key in _RESOURCE_KEYS:
        scalar = _value(get(key))
        if scalar is not None:
            kept[key] = scalar
    return _text(service, _MAX_NAME), _text(environment, _MAX_ENV), kept


@dataclass(frozen=True, slots=True)
class _Target:
    """What a CLIENT or PRODUCER span's attributes say about where it goes: a node it proves
    on its own (a datastore, a model provider), or a half to wait with (a producer's topic
    or a client's peer); and the technology of the node proved or the peer (`db.system.name`,
    `rpc.system` ...; a topic's is its third item)."""

    proved: tuple[NodeKind, str] | None = None
    destination: Destination | None = None
    producer: bool = False
    peer: str | None = None
    technology: str | None = None
    # The peer is named as a service (`peer.service`, a proxy's upstream cluster).
    named_service: bool = False


@lru_cache(maxsize=_REMEMBERED)
def _target(kind: int, encoded: tuple[bytes | None, ...]) -> _Target:
    """`encoded`: the span's values of `_TARGET_KEYS`, in that order."""
    (
        system_name,
        system,
        peer_service,
        address,
        peer_name,
        namespace,
        db_name,
        messaging,
        destination_name,
        destination,
        rpc_system,
        provider,
        gen_ai_system,
        cluster_name,
        cluster,
    ) = map(_value, encoded)
    db_system = system_name or system
    if kind == _CLIENT and db_system:
        db_system = _technology(db_system)
        name = peer_service or address or peer_name or namespace or db_name or db_system
        kind_of: NodeKind = "cache" if db_system in _CACHES else "database"
        return _Target(proved=(kind_of, _text(str(name), _MAX_NAME)), technology=db_system)
    gen_ai = provider or gen_ai_system
    if kind == _CLIENT and gen_ai:
        name = peer_service or address or peer_name or gen_ai
        return _Target(
            proved=("ai_model", _text(str(name), _MAX_NAME)), technology=_technology(gen_ai)
        )
    topic = _destination(messaging, destination_name or destination)
    if kind == _PRODUCER or (kind == _CLIENT and topic is not None):
        return _Target(destination=topic, producer=True)
    upstream = _upstream(cluster_name or cluster)
    peer = peer_service or upstream or address or peer_name
    return _Target(
        destination=topic,
        peer=_text(str(peer), _MAX_NAME) if peer else None,
        technology=_technology(rpc_system) if rpc_system else None,
        named_service=bool(peer_service or upstream),
    )


def _technology(value: Scalar) -> str:
    return _text(str(value).lower(), _MAX_NAME)


def _upstream(cluster: Scalar) -> str | None:
    """The service a proxy's upstream cluster names: the cluster's name, or in Istio's form
    (`outbound|9080||reviews.default.svc.cluster.local`) the Kubernetes service's."""
    if not cluster:
        return None
    name = str(cluster).rsplit("|", 1)[-1]
    if ".svc." in name or name.endswith(".svc"):
        name = name.split(".", 1)[0]
    return _text(name, _MAX_NAME) or None


# A topic or queue: (kind, name, the messaging system when known).
Destination = tuple[NodeKind, str, str | None]


def _destination(system: Scalar, destination: Scalar) -> Destination | None:
    if not system and not destination:
        return None
    technology = _technology(system) if system else None
    kind: NodeKind = "queue" if technology in _QUEUES else "topic"
    return kind, _text(str(destination or system), _MAX_NAME), technology


@lru_cache(maxsize=_REMEMBERED)
def _consumed(encoded: tuple[bytes | None, ...]) -> tuple[Destination | None, bool]:
    """A CONSUMER span's topic, and whether the span names it (else its producer's counts)."""
    system, destination_name, destination = map(_value, encoded)
    named = destination_name or destination
    return _destination(system, named), bool(named)


@lru_cache(maxsize=_REMEMBERED)
def _peer_fallback(encoded: tuple[bytes | None, ...]) -> str | None:
    url_full, http_url, http_host, rpc_service = map(_value, encoded)
    peer = (
        _host(_str_or_none(url_full))
        or _host(_str_or_none(http_url))
        or _str_or_none(http_host)
        or _str_or_none(rpc_service)
    )
    return _text(peer, _MAX_NAME) if peer else None


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def _str_or_none(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


@lru_cache(maxsize=_REMEMBERED)
def _http_failed(response_status: bytes | None, status: bytes | None) -> bool:
    http = _value(response_status) or _value(status)
    try:
        return http is not None and int(http) >= 500
    except (TypeError, ValueError):
        return False


def observe_request(request: Any, *, oldest_us: int, newest_us: int) -> Observations:
    """What the request's spans say; spans outside [oldest_us, newest_us] are refused.

    `request` is a `SpanBatch`, or an `ExportTraceServiceRequest` (read as one: the same
    bytes parsed again, which the HTTP receiver avoids by parsing its body as a `SpanBatch`).
    """
    if isinstance(request, ExportTraceServiceRequest):
        request = SpanBatch.FromString(request.SerializeToString())
    obs = Observations()
    for resource_spans in request.resource_spans:
        _observe_resource(obs, resource_spans, oldest_us, newest_us)
    if obs.gen_ai_spans:
        _drop_gen_ai_transport(obs, request)
    return obs


def _drop_gen_ai_transport(obs: Observations, request: Any) -> None:
    """Forget the CLIENT halves whose parent is a GenAI span of the request (the SDK's own
    HTTP call, instrumented by httpx or requests): left waiting, each would end as an
    external API named like the model provider, and count its call twice."""
    parents = obs.gen_ai_spans
    transport = {
        (span.trace_id + span.span_id).hex()
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
        if span.kind == _CLIENT and span.trace_id + span.parent_span_id in parents
    }
    if transport:
        obs.halves = [h for h in obs.halves if not (h[1] == "c" and h[0] in transport)]


def _observe_resource(  # noqa: PLR0912 - the hot loop, one function: calls cost here
    obs: Observations, resource_spans: Any, oldest_us: int, newest_us: int
) -> None:
    """One resource's spans. Each span's fields are read once, an INTERNAL span's attributes
    never (it only says its service was there)."""
    service, environment, kept = _resource(resource_spans.resource.attributes)
    node: NodeKey = ("service", environment, service)
    zero_trace = _ZERO_TRACE
    accepted = 0
    first_us = last_us = -1
    for scope_spans in resource_spans.scope_spans:
        for span in scope_spans.spans:
            trace_id = span.trace_id
            span_id = span.span_id
            if len(trace_id) != 16 or len(span_id) != 8 or trace_id == zero_trace:
                obs.reject("a span's trace_id must be 16 bytes and its span_id 8 bytes")
                continue
            start_ns = span.start_time_unix_nano
            end_ns = span.end_time_unix_nano
            if end_ns < start_ns:
                obs.reject("a span's end_time_unix_nano is before its start_time_unix_nano")
                continue
            start_us = start_ns // 1000
            if not oldest_us <= start_us <= newest_us:
                obs.reject(
                    "a span's start time is outside the accepted window (the retention "
                    "window, up to one hour ahead of the server's clock)"
                )
                continue
            accepted += 1
            if first_us < 0 or start_us < first_us:
                first_us = start_us
            last_us = max(last_us, start_us)
            kind = span.kind
            if kind in (_INTERNAL, _UNSPECIFIED):
                continue
            get = span.attributes.get
            error = span.status.code == _STATUS_ERROR
            if not error:
                response_status, status = get("http.response.status_code"), get("http.status_code")
                if response_status is not None or status is not None:
                    error = _http_failed(response_status, status)
            call = (start_us, (end_ns - start_ns) / 1e6, error)
            if kind in (_SERVER, _CONSUMER):
                _observe_served(obs, node, kind, span, get, call)
            else:
                _observe_outbound(obs, node, kind, span, get, call)
    if accepted:
        obs.accepted += accepted
        obs.node(node, last_us)
        obs.node(node, first_us, kept)
        version = kept.get("service.version")
        if version not in (None, ""):
            key = (node, _text(str(version), _MAX_VERSION))
            obs.versions[key] = min(obs.versions.get(key, first_us), first_us)


def _observe_served(
    obs: Observations, node: NodeKey, kind: int, span: Any, get: Any, call: tuple[int, float, bool]
) -> None:
    """A SERVER or CONSUMER span: its service's own statistics, and a half waiting for its
    caller, unless a CONSUMER span names its topic (then it proves its edge alone). A
    CONSUMER span with links (a new trace per message) waits for the PRODUCER spans it links
    to; a proxy's SERVER span naming its upstream cluster is a caller too."""
    start_us, duration_ms, error = call
    obs.count(node, start_us, duration_ms, error=error)
    destination, named = (
        _consumed(tuple(map(get, _MESSAGING_KEYS))) if kind == _CONSUMER else (None, False)
    )
    if destination is not None and named:
        obs.edge(node, (destination[0], node[1], destination[1]), "consumes", call)
        obs.node((destination[0], node[1], destination[1]), start_us, _about(destination[2]))
        return
    if kind == _CONSUMER and span.links:
        # Each link is a message this span consumed, from the PRODUCER span it names; as
        # many as an SDK keeps by default, so that one span cannot make a flood of halves.
        causes = [
            link.trace_id + link.span_id
            for link in span.links[:_MAX_LINKS]
            if len(link.trace_id) == 16 and len(link.span_id) == 8
        ]
    elif span.parent_span_id:
        causes = [span.trace_id + span.parent_span_id]
    else:
        causes = []
    span_hex = span.span_id.hex()
    for cause in causes:
        obs.halves.append(
            (
                cause.hex(),
                "s",
                span_hex,
                "server" if kind == _SERVER else "consumer",
                node[2],
                node[1],
                start_us,
                duration_ms,
                int(error),
                None,
                destination,
            )
        )
    if kind == _SERVER:
        upstream = _upstream(_value(get(_UPSTREAM_KEYS[0]) or get(_UPSTREAM_KEYS[1])))
        if upstream is not None:
            _wait_for_callee(obs, node, span, call, upstream, named_service=True)


def _about(technology: str | None) -> dict[str, Any] | None:
    return {"technology": technology} if technology else None


def _wait_for_callee(
    obs: Observations,
    node: NodeKey,
    span: Any,
    call: tuple[int, float, bool],
    peer: str | None,
    *,
    named_service: bool = False,
    technology: str | None = None,
) -> None:
    """A CLIENT half: the SERVER span this span causes pairs with it, else (named) its peer
    becomes a node once the wait is over."""
    span_hex = span.span_id.hex()
    obs.halves.append(
        (
            span.trace_id.hex() + span_hex,
            "c",
            span_hex,
            "client",
            node[2],
            node[1],
            call[0],
            call[1],
            int(call[2]),
            peer,
            None,
            technology,
            int(named_service),
        )
    )


def _observe_outbound(
    obs: Observations, node: NodeKey, kind: int, span: Any, get: Any, call: tuple[int, float, bool]
) -> None:
    """A CLIENT or PRODUCER span: an edge to a datastore, model provider or topic it names,
    and a half waiting for the SERVER or CONSUMER span it causes."""
    target = _target(kind, tuple(map(get, _TARGET_KEYS)))
    environment = node[1]
    if target.proved is not None:
        kind_of, name = target.proved
        proved: NodeKey = (kind_of, environment, name)
        if kind_of == "ai_model":
            obs.edge(node, proved, "calls", call)
            obs.gen_ai_spans.add(span.trace_id + span.span_id)
        else:
            obs.edge(node, proved, "reads_writes", call)
        obs.node(proved, call[0], _about(target.technology))
        return
    destination = target.destination
    if not target.producer:
        peer = target.peer or _peer_fallback(tuple(map(get, _PEER_FALLBACK_KEYS)))
        _wait_for_callee(
            obs,
            node,
            span,
            call,
            peer,
            named_service=target.named_service,
            technology=target.technology,
        )
        return
    if destination is not None:
        topic: NodeKey = (destination[0], environment, destination[1])
        obs.edge(node, topic, "publishes", call)
        obs.node(topic, call[0], _about(destination[2]))
    span_hex = span.span_id.hex()
    obs.halves.append(
        (
            span.trace_id.hex() + span_hex,
            "p",
            span_hex,
            "producer",
            node[2],
            environment,
            call[0],
            call[1],
            int(call[2]),
            None,
            destination,
        )
    )
