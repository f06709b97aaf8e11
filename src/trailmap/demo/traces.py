"""A simulated shop that emits real OpenTelemetry traces, so the demo graph is learned, not drawn
(docs/internals.md)."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.version import __version__ as _sdk_version
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["DEFAULT_RELEASES", "ENVIRONMENT", "RECENT", "SERVICES", "Release", "shop_traces"]

ENVIRONMENT = "production"
SERVICES = ("api-gateway", "frontend", "checkout", "inventory", "orders", "payments", "shipping")
# Traffic is denser in this window before `end`: it reaches an hour before both recent
# releases in DEFAULT_RELEASES, so a before/after comparison has spans on both sides.
RECENT = timedelta(hours=6)

_MAX_SPANS_PER_REQUEST = 512  # the SDK's BatchSpanProcessor default export size
_FLUSH_EVERY_NS = 3_600 * 10**9  # hourly, not the SDK's 5 s: fewer requests, same spans
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCOPE = "trailmap.demo.traces"
_CHECKOUT_SHARE = 0.35
_SMOKE_AFTER_NS = 5 * 10**9
_CACHE_HIT = 0.8
# Per-call failure rates of what has no Release of its own.
_FAILURE = {"postgresql": 0.0002, "redis": 0.001, "kafka": 0.0002, "stripe": 0.001}
# Median time (ms) a service spends on a request itself, scaled by its release.
_SELF_MS = {"api-gateway": 1.5, "frontend": 8.0, "checkout": 12.0, "inventory": 2.0}
_SELF_MS |= {"orders": 5.0, "payments": 4.0, "shipping": 15.0}
# (server.address, server.port, db.namespace) of each database. `server.address` equals
# `db.system.name`, so the graph names the nodes `postgresql` (one instance, shared by orders
# and inventory) and `redis` whichever of the two it goes by; `peer.service` is left unset.
_DATABASES = {"postgresql": ("postgresql", 5432, "shop"), "redis": ("redis", 6379, "0")}


@dataclass(frozen=True)
class Release:
    """A version of a service that runs in production from `at` until its next release.

    `error_rate` is how often this version fails a request through its own fault. Its
    SERVER spans also fail when a dependency fails and it cannot absorb that, so they show
    a little more: checkout with 0.25% of its own shows about 0.5% in all.
    """

    service: str
    version: str
    at: datetime
    error_rate: float
    latency_factor: float = 1.0


# (service, hours before now, version, own error rate, latency factor). The first row of a
# service is what was already running when the week began.
_HISTORY: tuple[tuple[str, float, str, float, float], ...] = (
    ("api-gateway", 190, "2.14.0", 0.0003, 1.0),
    ("api-gateway", 131, "2.14.1", 0.0003, 1.0),
    ("api-gateway", 58, "2.15.0", 0.0003, 0.9),
    ("frontend", 201, "5.3.0", 0.0005, 1.0),
    ("frontend", 149, "5.3.1", 0.0005, 1.0),
    ("frontend", 101, "5.4.0", 0.0005, 1.1),
    ("frontend", 76, "5.4.1", 0.0005, 1.0),
    ("frontend", 29, "5.5.0", 0.0005, 1.0),
    ("checkout", 230, "3.8.0", 0.0025, 1.0),
    ("checkout", 140, "3.8.1", 0.0025, 1.0),
    ("checkout", 91, "3.9.0", 0.0025, 1.0),
    ("checkout", 40, "3.9.1", 0.0025, 1.0),
    # The bad one: an unhandled case fails about one checkout in twenty.
    ("checkout", 3.5, "3.10.0", 0.047, 1.0),
    ("inventory", 260, "1.21.0", 0.0003, 1.0),
    ("inventory", 119, "1.22.0", 0.0003, 0.8),
    ("inventory", 52, "1.22.1", 0.0003, 0.8),
    ("orders", 180, "4.2.0", 0.0003, 1.0),
    ("orders", 110, "4.3.0", 0.0003, 1.0),
    ("orders", 64, "4.3.1", 0.0003, 1.0),
    ("orders", 20, "4.4.0", 0.0003, 1.0),
    ("payments", 300, "2.6.0", 0.0004, 1.0),
    ("payments", 128, "2.6.1", 0.0004, 1.0),
    # The harmless one: a dependency bump that changes neither errors nor latency. Its two
    # hours before lie inside RECENT, so the verdict has its points at any time of day.
    ("payments", 4.0, "2.7.0", 0.0004, 1.0),
    ("shipping", 220, "0.9.0", 0.001, 1.0),
    ("shipping", 96, "0.9.1", 0.001, 1.0),
    ("shipping", 44, "0.10.0", 0.001, 1.0),
)


def DEFAULT_RELEASES(now: datetime) -> list[Release]:  # noqa: N802 - reads as the constant it stands for
    """A believable week: every service released 2-4 times, checkout badly 3.5 h before now."""
    return [
        Release(service, version, now - timedelta(hours=hours), rate, factor)
        for service, hours, version, rate, factor in _HISTORY
    ]


def shop_traces(
    start: datetime,
    end: datetime,
    *,
    releases: Sequence[Release],
    seed: int = 7,
    traces_per_minute: float = 0.15,
    recent_traces_per_minute: float = 12.0,
) -> Iterator[ExportTraceServiceRequest]:
    """The shop's traces from `start` to `end` (time-zone aware), as its services export them.

    Traffic follows the time of day at `traces_per_minute` on average, and runs at
    `recent_traces_per_minute` during the last `RECENT` before `end`. Each request holds
    the spans of one service version (at most 512), and requests come in time order, an
    hour of simulated time at a time. A service without a release runs "1.0.0".
    """
    rng = random.Random(seed)  # noqa: S311 - simulated traffic, not secrets
    shop = _Shop(releases, rng)
    t, stop, recent_from = _ns(start), _ns(end), _ns(end - RECENT)
    next_flush = t + _FLUSH_EVERY_NS
    # Each release's pipeline ends with a smoke test, a checkout, a few seconds after the
    # release: the new version is in the traces at once, as the deployment CI reported (at
    # night the shop's own traffic may take an hour to reach a service).
    smoke_tests = sorted(_ns(r.at) + _SMOKE_AFTER_NS for r in releases if start <= r.at < end)
    while True:
        recent = t >= recent_from
        rate = recent_traces_per_minute if recent else traces_per_minute * _daily(t)
        arrival = t + int(rng.expovariate(rate) * 60e9)
        if not recent and arrival >= recent_from:
            t = recent_from  # arrivals are memoryless, so restarting at the switch is exact
            continue
        t = arrival
        while smoke_tests and smoke_tests[0] <= min(t, stop):
            shop.trace(smoke_tests.pop(0), checkout=True)
        if t >= stop:
            break
        if t >= next_flush:
            yield from shop.flush(whole=True)
            next_flush += _FLUSH_EVERY_NS * ((t - next_flush) // _FLUSH_EVERY_NS + 1)
        shop.trace(t)
        yield from shop.flush(whole=False)
    yield from shop.flush(whole=True)


def _ns(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000


def _ms(milliseconds: float) -> int:
    return int(milliseconds * 1_000_000)


def _daily(t: int) -> float:
    """Traffic relative to the day's mean: lowest around 03:00 UTC, highest around 15:00."""
    hour = (t // 10**9 % 86_400) / 3_600
    return 1 + 0.6 * math.sin(2 * math.pi * (hour - 9) / 24)


class _SeededIds(IdGenerator):
    """Trace and span ids from the simulation's generator, so a seed fixes them too."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


class _Outbox(SpanExporter):
    """Finished spans of one process, waiting to be batched like a BatchSpanProcessor does."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def take(self, whole: bool) -> Iterator[list[ReadableSpan]]:
        while len(self.spans) >= _MAX_SPANS_PER_REQUEST or (whole and self.spans):
            batch = self.spans[:_MAX_SPANS_PER_REQUEST]
            del self.spans[:_MAX_SPANS_PER_REQUEST]
            yield batch


_Attributes = dict[str, str | int]


@dataclass(slots=True)
class _Process:
    release: Release
    tracer: Tracer
    outbox: _Outbox
    fault_debt: float
    fault_at_debt: float


# What a service does for a route, in order; a failed step ends the request. ("http",
# callee, method, route) calls another service, ("sql", operation, table, statement) asks
# PostgreSQL, and the rest are the shop's own steps below.
_ROUTES: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("api-gateway", "/products/{id}"): (("http", "frontend", "GET", "/products/{id}"),),
    ("api-gateway", "/checkout"): (("http", "frontend", "POST", "/checkout"),),
    ("frontend", "/products/{id}"): (("http", "inventory", "GET", "/stock/{sku}"),),
    ("frontend", "/checkout"): (("http", "checkout", "POST", "/checkout"),),
    ("checkout", "/checkout"): (
        ("http", "inventory", "POST", "/reservations"),
        ("http", "payments", "POST", "/payments"),
        ("http", "orders", "POST", "/orders"),
    ),
    ("inventory", "/stock/{sku}"): (("read_stock",),),
    ("inventory", "/reservations"): (
        ("sql", "UPDATE", "stock", "UPDATE stock SET reserved = reserved + $1 WHERE sku = $2"),
    ),
    ("payments", "/payments"): (("charge",),),
    ("orders", "/orders"): (
        ("sql", "INSERT", "orders", "INSERT INTO orders (id, sku, amount) VALUES ($1, $2, $3)"),
        ("publish",),
    ),
}


class _Shop:
    """The services and what each request does; every method takes and returns sim time."""

    def __init__(self, releases: Sequence[Release], rng: random.Random) -> None:
        self._rng = rng
        self._ids = _SeededIds(rng)
        self._propagator = TraceContextTextMapPropagator()
        self._processes: dict[Release, _Process] = {}
        self._history: dict[str, tuple[list[int], list[Release]]] = {}
        for service in SERVICES:
            own = sorted((r for r in releases if r.service == service), key=lambda r: r.at)
            own = own or [Release(service, "1.0.0", _EPOCH, 0.001)]
            self._history[service] = ([_ns(r.at) for r in own], own)
        self._sku = 0
        self._own_steps: dict[str, Callable[[_Process, Context, int], tuple[int, bool]]] = {
            "read_stock": self._read_stock,
            "charge": self._charge,
            "publish": self._publish,
        }

    def flush(self, *, whole: bool) -> Iterator[ExportTraceServiceRequest]:
        for process in self._processes.values():
            for batch in process.outbox.take(whole):
                yield encode_spans(batch)

    def trace(self, t: int, *, checkout: bool | None = None) -> None:
        """One visitor request, entering at the gateway with no parent: a checkout (which
        every service takes part in) or a product page, by chance unless `checkout` says."""
        self._sku = self._rng.randint(1000, 9999)
        if checkout is None:
            checkout = self._rng.random() < _CHECKOUT_SHARE
        method, route = ("POST", "/checkout") if checkout else ("GET", "/products/{id}")
        self._serve("api-gateway", method, route, Context(), t)

    def _process(self, service: str, t: int) -> _Process:
        """The version of `service` that was running at `t`, with its own SDK."""
        times, releases = self._history[service]
        release = releases[max(bisect.bisect_right(times, t) - 1, 0)]
        if release not in self._processes:
            resource = Resource(
                {"service.name": service, "service.version": release.version}
                | {"deployment.environment.name": ENVIRONMENT, "telemetry.sdk.language": "python"}
                | {"telemetry.sdk.name": "opentelemetry", "telemetry.sdk.version": _sdk_version}
            )
            provider = TracerProvider(
                sampler=ALWAYS_ON, resource=resource, id_generator=self._ids, shutdown_on_exit=False
            )
            outbox = _Outbox()
            provider.add_span_processor(SimpleSpanProcessor(outbox))
            tracer = provider.get_tracer(_SCOPE)
            first_fault = self._rng.random()
            self._processes[release] = _Process(release, tracer, outbox, 0.0, first_fault)
        return self._processes[release]

    def _serve(
        self, service: str, method: str, route: str, parent: Context, t: int
    ) -> tuple[int, int]:
        """A SERVER span: the service's own work around its steps; returns (end, status)."""
        process = self._process(service, t)
        path = route.replace("{id}", str(self._sku)).replace("{sku}", str(self._sku))
        attributes: _Attributes = {
            "http.request.method": method,
            "http.route": route,
            "url.path": path,
            "url.scheme": "http",
            "server.address": service,
            "server.port": 8080,
        }
        span = process.tracer.start_span(
            f"{method} {route}", parent, SpanKind.SERVER, attributes, start_time=t
        )
        inner = set_span_in_context(span)
        steps = _ROUTES[service, route]
        # A version failing by its own fault does so before some step or after all of them.
        fault_at = self._rng.randint(0, len(steps)) if self._faults(process) else -1
        now, status = t + self._self_time(process) // 2, 200
        for index, (step, *args) in enumerate(steps):
            if index == fault_at:
                break
            if step == "http":
                now, failed = self._http(process, inner, now, *args)
            elif step == "sql":
                now, failed = self._db(process, inner, now, "postgresql", *args)
            else:
                now, failed = self._own_steps[step](process, inner, now)
            if failed:
                status = 502
                break
        if fault_at >= 0 and status == 200:
            status = 500
        end = now + self._self_time(process) // 2
        _answer(span, end, status)
        return end, status

    def _http(
        self, process: _Process, parent: Context, t: int, callee: str, method: str, route: str
    ) -> tuple[int, bool]:
        """A CLIENT span in the caller, the callee's SERVER span under it through the wire."""
        path = route.replace("{id}", str(self._sku)).replace("{sku}", str(self._sku))
        attributes: _Attributes = {
            "http.request.method": method,
            "url.full": f"http://{callee}:8080{path}",
            "url.template": route,
            "server.address": callee,
            "server.port": 8080,
        }
        span = process.tracer.start_span(
            f"{method} {route}", parent, SpanKind.CLIENT, attributes, start_time=t
        )
        headers: dict[str, str] = {}
        self._propagator.inject(headers, context=set_span_in_context(span))
        callee_context = self._propagator.extract(headers)
        served, status = self._serve(callee, method, route, callee_context, t + self._wire())
        end = served + self._wire()
        _answer(span, end, status)
        return end, status >= 500

    def _charge(self, process: _Process, parent: Context, t: int) -> tuple[int, bool]:
        """The card payment at Stripe: a CLIENT span with nobody instrumented behind it."""
        attributes: _Attributes = {
            "http.request.method": "POST",
            "url.full": "https://api.stripe.com/v1/payment_intents",
            "server.address": "api.stripe.com",
            "server.port": 443,
        }
        span = process.tracer.start_span("POST", parent, SpanKind.CLIENT, attributes, start_time=t)
        failed = self._rng.random() < _FAILURE["stripe"]
        end = t + _ms(self._lognormal(3_000 if failed else 220))
        _answer(span, end, self._rng.choice((502, 503)) if failed else 200)
        return end, failed

    def _read_stock(self, process: _Process, parent: Context, t: int) -> tuple[int, bool]:
        """Redis first; on a miss or a Redis failure, PostgreSQL, then refill the cache."""
        key = f"stock:{self._sku}"
        t, failed = self._db(process, parent, t, "redis", "GET", "", f"GET {key}")
        if not failed and self._rng.random() < _CACHE_HIT:
            return t, False
        sql = "SELECT quantity FROM stock WHERE sku = $1"
        t, failed = self._db(process, parent, t, "postgresql", "SELECT", "stock", sql)
        if failed:
            return t, True
        t, _ = self._db(process, parent, t, "redis", "SET", "", f"SET {key} ? EX 60")
        return t, False  # a failed cache refill costs time, not the answer

    def _db(
        self, process: _Process, parent: Context, t: int, system: str, op: str, table: str, sql: str
    ) -> tuple[int, bool]:
        """A database CLIENT span: a `postgresql` or `redis` node for the graph."""
        host, port, namespace = _DATABASES[system]
        attributes: _Attributes = {
            "db.system.name": system,
            "db.namespace": namespace,
            "db.operation.name": op,
            "db.query.text": sql,
            "server.address": host,
            "server.port": port,
        }
        if table:
            attributes["db.collection.name"] = table
        name = f"{op} {table}" if table else op
        span = process.tracer.start_span(name, parent, SpanKind.CLIENT, attributes, start_time=t)
        failed = self._rng.random() < _FAILURE[system]
        end = t + _ms(self._lognormal(0.4 if system == "redis" else 2.5) * (200 if failed else 1))
        _end(span, end, "timeout" if failed else "", f"{system} did not answer")
        return end, failed

    def _publish(self, process: _Process, parent: Context, t: int) -> tuple[int, bool]:
        """An order-events message to Kafka; shipping consumes it with the producer as parent."""
        attributes = _messaging("send") | {"server.address": "kafka", "server.port": 9092}
        span = process.tracer.start_span(
            "send order-events", parent, SpanKind.PRODUCER, attributes, start_time=t
        )
        headers: dict[str, str] = {}  # the Kafka message's headers
        self._propagator.inject(headers, context=set_span_in_context(span))
        failed = self._rng.random() < _FAILURE["kafka"]
        end = t + _ms(self._lognormal(3))
        _end(span, end, "timeout" if failed else "", "kafka did not acknowledge")
        if not failed:
            self._consume(headers, end + _ms(self._lognormal(40)))
        return end, failed

    def _consume(self, headers: dict[str, str], t: int) -> None:
        process = self._process("shipping", t)
        attributes = _messaging("process") | {"messaging.consumer.group.name": "shipping"}
        parent = self._propagator.extract(headers)
        span = process.tracer.start_span(
            "process order-events", parent, SpanKind.CONSUMER, attributes, start_time=t
        )
        error = "LabelServiceError" if self._faults(process) else ""
        _end(span, t + self._self_time(process), error, "could not book the parcel")

    def _faults(self, process: _Process) -> bool:
        """Whether this request fails by the version's own fault.

        Faults come at the release's rate, spread with jitter rather than drawn one by one:
        coin flips over the few hundred checkouts after a release could show 3% or 7% for
        5%, and the demo's before/after story must not depend on when it is loaded.
        """
        process.fault_debt += process.release.error_rate
        if process.fault_debt < process.fault_at_debt:
            return False
        process.fault_debt -= 1
        process.fault_at_debt = self._rng.random()
        return True

    def _self_time(self, process: _Process) -> int:
        base = _SELF_MS[process.release.service] * process.release.latency_factor
        return _ms(self._lognormal(base))

    def _wire(self) -> int:
        return _ms(self._rng.uniform(0.2, 1.5))

    def _lognormal(self, median: float) -> float:
        return median * math.exp(self._rng.gauss(0, 0.5))


def _answer(span: Span, end: int, status: int) -> None:
    """Ends an HTTP span; 5xx answers are errors on both the client and the server side."""
    span.set_attribute("http.response.status_code", status)
    _end(span, end, str(status) if status >= 500 else "", "")


def _end(span: Span, end: int, error: str, message: str) -> None:
    if error:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, message or None))
    span.end(end_time=end)


def _messaging(operation: str) -> _Attributes:
    return {
        "messaging.system": "kafka",
        "messaging.destination.name": "order-events",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
